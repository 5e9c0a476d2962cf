package kme

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/link"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestRealLinkFillsBothPools runs the simulated BB84 link between the two
// KMEs and fetches a key end to end.
func TestRealLinkFillsBothPools(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the link simulator")
	}
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, nil)
	cfg := link.DefaultConfig(10)
	cfg.Blocks = 1
	err := e.p.RunLink(context.Background(), func(ctx context.Context, a, b qkd.Sink) error {
		_, err := link.Run(ctx, cfg, a, b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.p.A.Stored() == 0 || e.p.A.Stored() != e.p.B.Stored() {
		t.Fatalf("stored A=%d B=%d", e.p.A.Stored(), e.p.B.Stored())
	}
	ctx := context.Background()
	ks, err := etsi014.New(e.p.AURL, e.tls["SAE_A1"]).EncKeys(ctx, "SAE_B1", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := etsi014.New(e.p.BURL, e.tls["SAE_B1"]).DecKeys(ctx, "SAE_A1", ks[0].ID)
	if err != nil || string(got[0].Key) != string(ks[0].Key) {
		t.Fatalf("link key: %v", err)
	}
	if st := e.p.A.Link().State; st != LinkDown {
		t.Fatalf("link state after the session: %s", st)
	}
}

// TestLinkAbortedReported: an eavesdropper stops the link; the status says so
// and enc_keys, once the pool is dry, answers 503 naming the abort.
func TestLinkAbortedReported(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, nil)
	err := e.p.RunLink(context.Background(), func(ctx context.Context, a, b qkd.Sink) error {
		keys := qkd.RandomKeys(2, 32)
		if err := a(ctx, keys); err != nil {
			return err
		}
		if err := b(ctx, keys); err != nil {
			return err
		}
		return fmt.Errorf("block 2: QBER 0.25: %w", qkd.ErrAborted)
	})
	if !errors.Is(err, qkd.ErrAborted) {
		t.Fatalf("RunLink: %v", err)
	}
	ctx := context.Background()
	c := etsi014.New(e.p.AURL, e.tls["SAE_A1"])
	st, err := c.Status(ctx, "SAE_B1")
	if err != nil || !strings.Contains(string(st.StatusExtension), `"state":"aborted"`) || st.StoredKeyCount != 2 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if _, err := c.EncKeys(ctx, "SAE_B1", 2, 0); err != nil {
		t.Fatal(err)
	}
	_, err = c.EncKeys(ctx, "SAE_B1", 1, 0)
	var ee *etsi014.Error
	if !errors.As(err, &ee) || ee.StatusCode != 503 || !strings.Contains(ee.Message, "link is aborted") {
		t.Fatalf("dry pool after an abort: %v", err)
	}
}

// TestTamperedUnitNotDelivered: a modified ciphertext fails authentication,
// the request fails with 503 and nothing is deleted at the master's KME.
func TestTamperedUnitNotDelivered(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := startEnv(t, db, nil)
	e.fill(3)
	first := e.p.A.AvailableIDs()[0] // KME_A takes the oldest unit first
	if _, err := db.Exec(`UPDATE kme_keys SET key_enc = key_enc || x'00' WHERE kme_id = 'KME_A' AND key_id = ?`, first); err != nil {
		t.Fatal(err)
	}
	// The request skips the bad unit (removed from the pool) and delivers a
	// good one; the tampered bytes are never handed out.
	ks, err := etsi014.New(e.p.AURL, e.tls["SAE_A1"]).EncKeys(context.Background(), "SAE_B1", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ks[0].ID == first {
		t.Fatal("tampered unit delivered")
	}
	var n int
	db.QueryRow(`SELECT COUNT(*) FROM kme_keys WHERE kme_id = 'KME_A'`).Scan(&n)
	if n != 1 || slices.Contains(e.p.A.AvailableIDs(), first) {
		t.Fatalf("rows at A: %d, available %v", n, e.p.A.AvailableIDs())
	}
	// With only corrupt units left nothing is delivered.
	if _, err := db.Exec(`UPDATE kme_keys SET key_enc = x'00' WHERE kme_id = 'KME_A'`); err != nil {
		t.Fatal(err)
	}
	r := e.do("SAE_A1", "GET", e.p.AURL, "/api/v1/keys/SAE_B1/enc_keys", "")
	if r.status != 503 {
		t.Fatalf("corrupt pool: %d %s", r.status, r.body)
	}
}
