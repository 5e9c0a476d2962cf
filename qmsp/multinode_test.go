package qmsp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/qmsp/paycode"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// onceKeys is the key manager's contract as the PPS sees it: each key is
// handed out once (ETSI 014 dec_keys deletes it); a second request for it
// fails. It counts deliveries.
type onceKeys struct {
	mu        sync.Mutex
	keys      map[string][]byte
	delivered atomic.Int64
}

func (k *onceKeys) DecKeys(ctx context.Context, master string, ids ...string) ([]etsi014.KeyMaterial, error) {
	time.Sleep(20 * time.Millisecond) // a network round trip: lets racers overlap
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.keys[ids[0]]
	if !ok {
		return nil, errors.New("key not found (already delivered)")
	}
	delete(k.keys, ids[0])
	k.delivered.Add(1)
	return []etsi014.KeyMaterial{{ID: ids[0], Key: b}}, nil
}

// TestPPSFetchOnceAcrossNodes: PPS processes of several nodes asking for
// the same new quantum key at once all get it, and the key manager delivers
// it once. Only one process could fetch it; the others failed the payment
// with unknown_key.
func TestPPSFetchOnceAcrossNodes(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t) // several processes share one PostgreSQL database
	ctx := context.Background()
	const keyID = "5d0a4b8e-1c3f-4b7a-9e2d-0f6b8a4c2e11"
	material := make([]byte, MaxBatchSize)
	rand.Read(material)
	keys := &onceKeys{keys: map[string][]byte{keyID: material}}
	storage := make([]byte, 32)
	rand.Read(storage)
	nodes := ppsNodes(t, dsn, keys, 3)
	var wg sync.WaitGroup
	for i, p := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.material(ctx, keyID)
			if err != nil {
				t.Errorf("node %d: %v", i, err)
				return
			}
			if string(b) != string(material) {
				t.Errorf("node %d: different material", i)
			}
		}()
	}
	wg.Wait()
	if n := keys.delivered.Load(); n != 1 {
		t.Fatalf("key delivered %d times", n)
	}
}

// ppsNodes opens n PPS processes on dsn, each with its own pool and ledger,
// as separate nodes would have.
func ppsNodes(t *testing.T, dsn string, keys SlaveKeys, n int) []*PPS {
	t.Helper()
	ctx := context.Background()
	storage := make([]byte, 32)
	rand.Read(storage)
	var nodes []*PPS
	for range n {
		ndb, err := sqldb.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ndb.Close() })
		led, err := ledger.Open(ctx, ndb)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { led.Close() })
		p, err := NewPPS(ctx, PPSConfig{DB: ndb, Keys: keys, MasterSAE: "css", Ledger: led, StorageKey: storage})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		nodes = append(nodes, p)
	}
	return nodes
}

// TestRegisterPayerAcrossNodes: nodes registering the same payer number at
// once (a phone enrolled through each node, or a retried enrolment) all
// succeed with one binding; the same number for another account or phone is
// refused with ErrPayerExists on every node and changes nothing. The second
// node's registration failed with a duplicate key on qmsp_pps_payers_pkey.
func TestRegisterPayerAcrossNodes(t *testing.T) {
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn := b.DSN(t)
			nodes := ppsNodes(t, dsn, &onceKeys{}, 3)
			if b.Name == "sqlite" {
				nodes = nodes[:1] // one process owns a SQLite file
			}
			ctx := context.Background()
			for _, acct := range []string{"alice", "bob"} {
				if _, err := nodes[0].cfg.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: acct, Owner: acct, Kind: ledger.KindUser, Currency: "CNY"}); err != nil {
					t.Fatal(err)
				}
			}
			for round := range 3 {
				var wg sync.WaitGroup
				errs := make([]error, len(nodes)*2)
				for i, p := range nodes {
					wg.Add(2)
					go func() { defer wg.Done(); errs[2*i] = p.RegisterPayer(ctx, 7001, "alice", "phone-alice") }()
					go func() { defer wg.Done(); errs[2*i+1] = p.RegisterPayer(ctx, 7001, "alice", "phone-alice") }()
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("round %d, registration %d of the same binding: %v", round, i, err)
					}
				}
			}
			for i, p := range nodes {
				for _, c := range []struct{ account, phone string }{{"bob", "phone-alice"}, {"alice", "phone-mallory"}, {"bob", "phone-bob"}} {
					if err := p.RegisterPayer(ctx, 7001, c.account, c.phone); !errors.Is(err, ErrPayerExists) {
						t.Fatalf("node %d rebinding payer 7001 to %s/%s: %v, want ErrPayerExists", i, c.account, c.phone, err)
					}
				}
				acct, phone, err := p.PayerBinding(ctx, 7001)
				if err != nil || acct != "alice" || phone != "phone-alice" {
					t.Fatalf("node %d: binding %s/%s (%v) after refused rebinding", i, acct, phone, err)
				}
			}
			if _, _, err := nodes[0].PayerBinding(ctx, 7002); !errors.Is(err, ErrUnknownPayer) {
				t.Fatalf("unregistered payer: %v", err)
			}
			for _, bad := range []struct {
				payer          uint64
				account, phone string
			}{{1 << 63, "alice", "p"}, {7003, "", "p"}, {7003, "alice", ""}, {7003, "nobody", "p"}} {
				if err := nodes[0].RegisterPayer(ctx, bad.payer, bad.account, bad.phone); err == nil {
					t.Fatalf("registered %+v", bad)
				}
			}
			if _, _, err := nodes[0].PayerBinding(ctx, 7003); !errors.Is(err, ErrUnknownPayer) {
				t.Fatalf("a refused registration left a binding: %v", err)
			}
		})
	}
}

// TestPaymentsRaceAcrossNodes: three PPS nodes on one PostgreSQL database,
// each group-committing its own batches, receive at once a different
// payment for each of the same ten units: each unit pays exactly once, the
// others are ErrKeyUsed, and the money moved is exact.
func TestPaymentsRaceAcrossNodes(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	ctx := context.Background()
	const keyID = "6e1b5c9f-2d40-4c8b-8f3e-1a7c9b5d3f22"
	material := make([]byte, MaxBatchSize)
	rand.Read(material)
	batch, err := DivQ(material)
	if err != nil {
		t.Fatal(err)
	}
	nodes := ppsNodes(t, dsn, &onceKeys{keys: map[string][]byte{keyID: material}}, 3)
	led := nodes[0].cfg.Ledger
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "CNY"},
		{ID: "market", Owner: "market", Kind: ledger.KindMerchant, Currency: "CNY"},
	} {
		if _, err := led.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "alice", Amount: 1_000_000, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].RegisterPayer(ctx, 42, "alice", "phone-alice"); err != nil {
		t.Fatal(err)
	}
	gwKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "GW-1"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, gwKey.Public(), gwKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := nodes[0].RegisterGateway(ctx, "GW-1", 7, "market", cert); err != nil {
		t.Fatal(err)
	}
	kid, _ := parseKeyID(keyID)
	const units = 10
	type attempt struct {
		node int
		unit int
		req  *PaymentRequest
		err  error
	}
	var atts []*attempt
	for u := range units {
		d := Display{Gateway: "GW-1", Merchant: 7, Ref: KeyRef{KeyID: kid, Unit: uint16(u)}, Expires: time.Now().Add(time.Minute).Truncate(time.Second)}
		d.Pad, d.MACKey = UnitKeys(&batch.Units[u])
		digest := sha256Hash(d.SignedBytes())
		d.Sig, _ = ecdsa.SignASN1(rand.Reader, gwKey, digest[:])
		for n := range nodes {
			req, err := paycode.Build(&d, 42, 100, 156)
			if err != nil {
				t.Fatal(err)
			}
			atts = append(atts, &attempt{node: n, unit: u, req: req})
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, a := range atts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, a.err = nodes[a.node].Pay(ctx, "phone-alice", fmt.Sprintf("k%d", i), *a.req)
		}()
	}
	close(start)
	wg.Wait()
	paid := make([]int, units)
	for _, a := range atts {
		switch {
		case a.err == nil:
			paid[a.unit]++
		case !errors.Is(a.err, ErrKeyUsed):
			t.Errorf("node %d, unit %d: %v", a.node, a.unit, a.err)
		}
	}
	for u, n := range paid {
		if n != 1 {
			t.Errorf("unit %d paid %d times", u, n)
		}
	}
	if a, err := led.Account(ctx, "alice"); err != nil || a.Balance != 1_000_000-units*100 {
		t.Fatalf("alice %d (%v), want %d", a.Balance, err, 1_000_000-units*100)
	}
}
