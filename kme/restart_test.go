package kme

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/qshield/qshield/qkd"
	"net"
	"slices"
	"testing"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// site is one standalone KME (as `qshield kme serve` runs it) that a test
// can stop and start again on the same address.
type site struct {
	t      *testing.T
	db     *sqldb.DB
	cfg    Config
	addr   string
	srvTLS *tls.Config
	k      *KME
	cancel context.CancelFunc
	done   chan error
}

func (s *site) start() {
	s.t.Helper()
	k, err := New(context.Background(), s.db, s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.k, s.cancel, s.done = k, cancel, make(chan error, 1)
	go func() { s.done <- k.Serve(ctx, ln, s.srvTLS) }()
}

func (s *site) stop() {
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Error(err)
	}
	s.k.Close()
}

func TestRestartOneSide(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ca := newCA(t, db)
		mk := func(id, peer string, saes []string) *site {
			srv, err := ca.IssueTLS(ctx, pki.RoleServer, id, nil, []net.IP{net.ParseIP("127.0.0.1")})
			if err != nil {
				t.Fatal(err)
			}
			cli, err := ca.IssueTLS(ctx, pki.RoleClient, id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			return &site{t: t, db: db, addr: addr, srvTLS: ca.ServerTLS(ctx, srv),
				cfg: Config{KMEID: id, PeerKMEID: peer, SAEs: saes, MasterKey: testMaster, SyncGrace: -1, ReconcileEvery: -1,
					PeerTLS: ca.ClientTLS(ctx, cli, "127.0.0.1")}}
		}
		a := mk("KME_A", "KME_B", []string{"SAE_A"})
		b := mk("KME_B", "KME_A", []string{"SAE_B"})
		a.cfg.PeerURL, b.cfg.PeerURL = "https://"+b.addr, "https://"+a.addr
		a.start()
		b.start()
		defer func() { a.stop(); b.stop() }()
		sae := func(id string) *tls.Config {
			c, err := ca.IssueTLS(ctx, pki.RoleApplication, id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return ca.ClientTLS(ctx, c, "127.0.0.1")
		}
		saeA, saeB := sae("SAE_A"), sae("SAE_B")
		keys := qkd.RandomKeys(40, 32)
		for _, s := range []*site{a, b} {
			if err := s.k.Deposit(ctx, keys); err != nil {
				t.Fatal(err)
			}
		}
		toB, err := etsi014.New("https://"+a.addr, saeA).EncKeys(ctx, "SAE_B", 4, 0)
		if err != nil {
			t.Fatal(err)
		}

		// Stop B. A cannot hand out keys meanwhile (503), and changes nothing.
		b.stop()
		before := a.k.AvailableIDs()
		if _, err := etsi014.New("https://"+a.addr, saeA).EncKeys(ctx, "SAE_B", 1, 0); !errors.Is(err, etsi014.ErrUnavailable) {
			t.Fatalf("peer down: %v", err)
		}
		if !slices.Equal(before, a.k.AvailableIDs()) {
			t.Fatal("A's pool changed while B was down")
		}
		// A block reached A only (B was down when the link delivered it).
		if err := a.k.Deposit(ctx, qkd.RandomKeys(3, 32)); err != nil {
			t.Fatal(err)
		}
		b.start()
		if _, err := a.k.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if x, y := sorted(a.k.AvailableIDs()), sorted(b.k.AvailableIDs()); !slices.Equal(x, y) || len(x) != 36 {
			t.Fatalf("after B's restart: A %d, B %d units", len(x), len(y))
		}
		// B still holds the keys for SAE_B, once.
		got, err := etsi014.New("https://"+b.addr, saeB).DecKeys(ctx, "SAE_A", toB[3].ID, toB[0].ID)
		if err != nil || string(got[0].Key) != string(toB[3].Key) {
			t.Fatalf("after restart: %v", err)
		}

		// Now restart A, with traffic from B's side.
		a.stop()
		a.start()
		fromB, err := etsi014.New("https://"+b.addr, saeB).EncKeys(ctx, "SAE_A", 2, 512)
		if err != nil {
			t.Fatal(err)
		}
		got, err = etsi014.New("https://"+a.addr, saeA).DecKeys(ctx, "SAE_B", fromB[0].ID, fromB[1].ID)
		if err != nil || string(got[1].Key) != string(fromB[1].Key) {
			t.Fatalf("after A's restart: %v", err)
		}
		if x, y := sorted(a.k.AvailableIDs()), sorted(b.k.AvailableIDs()); !slices.Equal(x, y) || len(x) != 32 {
			t.Fatalf("after A's restart: A %d, B %d units", len(x), len(y))
		}
	})
}
