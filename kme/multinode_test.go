package kme

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestTwoProcessesOneDatabase: two KMEs with one ID on one database (two
// platform nodes) start at the same time on an empty database and deposit
// concurrently. Start-up failed with a duplicate key on kme_meta_pkey
// (check-then-insert) and deposits with a duplicate key on kme_keys_pkey
// (sequence numbers from an in-memory counter).
func TestTwoProcessesOneDatabase(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		// Second connection pool: another process.
		var other *sqldb.DB
		if db.Dialect == sqldb.Postgres {
			other = db // one pool behaves like two processes here (separate connections)
		} else {
			var err error
			if other, err = sqldb.Open(ctx, db.Path); err != nil {
				t.Fatal(err)
			}
			defer other.Close()
		}
		for round := 0; round < 5; round++ {
			id := "KME_MULTI_" + string(rune('A'+round))
			var kmes [2]*KME
			var errs [2]error
			var wg sync.WaitGroup
			for i, d := range []*sqldb.DB{db, other} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					kmes[i], errs[i] = New(ctx, d, Config{KMEID: id, SAEs: []string{"SAE"}, MasterKey: testMaster, SyncGrace: -1, ReconcileEvery: -1})
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("round %d: node %d failed to start: %v", round, i, err)
				}
				defer kmes[i].Close()
			}
			for i, k := range kmes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < 10; j++ {
						if err := k.Deposit(ctx, qkd.RandomKeys(20, 32)); err != nil {
							errs[i] = err
							return
						}
					}
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("round %d: node %d deposit: %v", round, i, err)
				}
			}
			var n, distinct int
			if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*), COUNT(DISTINCT seq) FROM kme_keys WHERE kme_id = ?`), id).Scan(&n, &distinct); err != nil {
				t.Fatal(err)
			}
			if n != 400 || distinct != 400 {
				t.Fatalf("round %d: %d units, %d distinct sequence numbers; want 400", round, n, distinct)
			}
		}
	})
}

// TestTwoNodesDeliverAcrossNodes: two platform nodes, each with its own pair
// of KMEs under the same IDs on one PostgreSQL database. The second node
// starts after the first filled the pool, so its index holds every unit.
//   - A key obtained by the master SAE on node 1 is fetched by the slave SAE
//     on node 2 (a QMSP code paid on another node than the one whose CSS
//     made it: the slave's KME on node 2 had no such key in memory), once:
//     node 1 then answers "not found", not a store error.
//   - Node 2's index still offers the unit node 1 delivered; enc_keys on
//     node 2 used to fail with 503 for ever on it (the stale unit went back
//     to the front of the pool after every failure). Now the stale units
//     leave the index and every request is served, and no key bytes are
//     ever delivered twice.
func TestTwoNodesDeliverAcrossNodes(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backend{Name: "postgres", DSN: sqldbtest.PostgresDSN})
	e := startEnv(t, db, nil)
	e.fill(12)
	p2, err := StartPair(context.Background(), db, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	n1A, n1B, n2A, n2B := e.p.AURL, e.p.BURL, p2.AURL, p2.BURL
	seen := map[string]string{} // key bytes → key ID
	enc := func(base string) etsi014.Key {
		t.Helper()
		r := e.do("SAE_A1", "GET", base, "/api/v1/keys/SAE_B1/enc_keys?number=1&size=256", "")
		if r.status != 200 {
			t.Fatalf("enc_keys at %s: %d %s", base, r.status, r.body)
		}
		var c etsi014.KeyContainer
		if err := json.Unmarshal(r.body, &c); err != nil || len(c.Keys) != 1 {
			t.Fatalf("enc_keys answer %s", r.body)
		}
		k := c.Keys[0]
		if id, dup := seen[k.Key]; dup {
			t.Fatalf("key bytes of %s delivered again as %s", id, k.KeyID)
		}
		seen[k.Key] = k.KeyID
		return k
	}
	dec := func(base, id string) rawResp {
		t.Helper()
		return e.do("SAE_B1", "GET", base, "/api/v1/keys/SAE_A1/dec_keys?key_ID="+id, "")
	}

	k := enc(n1A)
	r := dec(n2B, k.KeyID)
	if r.status != 200 {
		t.Fatalf("dec_keys on the other node: %d %s", r.status, r.body)
	}
	var d etsi014.KeyContainer
	if err := json.Unmarshal(r.body, &d); err != nil || len(d.Keys) != 1 || d.Keys[0].Key != k.Key {
		t.Fatalf("the slave got another key on node 2: %s", r.body)
	}
	for _, base := range []string{n1B, n2B} {
		if r := dec(base, k.KeyID); r.status != 400 {
			t.Fatalf("dec_keys of a delivered key at %s: %d %s, want 400 not found", base, r.status, r.body)
		}
	}

	// Node 1 serves a few keys on its own; node 2's index still offers
	// their units (and the first one's, at its site A).
	for range 3 {
		k := enc(n1A)
		if r := dec(n1B, k.KeyID); r.status != 200 {
			t.Fatalf("dec_keys on node 1: %d %s", r.status, r.body)
		}
	}
	for i := range 6 {
		k := enc([]string{n2A, n1A}[i%2])
		base := []string{n1B, n2B}[i%2]
		if r := dec(base, k.KeyID); r.status != 200 {
			t.Fatalf("round %d: dec_keys at %s: %d %s", i, base, r.status, r.body)
		}
	}
	var left int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kme_keys WHERE state = 1`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d reserved units left behind", left)
	}
}

// TestOneLinkFeedsEveryNode: the QKD link runs on one node only (the
// singleton); another node's key managers, started before any deposit,
// serve keys from it: a pool that cannot serve a request reads the other
// process's deposits, the peer does the same before calling units missing,
// and a reconciliation between a key manager that read them and one that
// had not yet deletes nothing.
func TestOneLinkFeedsEveryNode(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backend{Name: "postgres", DSN: sqldbtest.PostgresDSN})
	e := startEnv(t, db, nil)
	p2, err := StartPair(context.Background(), db, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	ctx := context.Background()
	if err := e.p.Deposit(ctx, qkd.RandomKeys(6, 32)); err != nil { // node 1's link
		t.Fatal(err)
	}
	for i := range 3 {
		r := e.do("SAE_A1", "GET", p2.AURL, "/api/v1/keys/SAE_B1/enc_keys?number=1&size=256", "")
		if r.status != 200 {
			t.Fatalf("enc_keys %d on the node without a link: %d %s", i, r.status, r.body)
		}
		var c etsi014.KeyContainer
		if err := json.Unmarshal(r.body, &c); err != nil || len(c.Keys) != 1 {
			t.Fatalf("enc_keys answer %s", r.body)
		}
		base := []string{p2.BURL, e.p.BURL}[i%2]
		r = e.do("SAE_B1", "GET", base, "/api/v1/keys/SAE_A1/dec_keys?key_ID="+c.Keys[0].KeyID, "")
		var d etsi014.KeyContainer
		if r.status != 200 || json.Unmarshal(r.body, &d) != nil || d.Keys[0].Key != c.Keys[0].Key {
			t.Fatalf("dec_keys at %s: %d %s", base, r.status, r.body)
		}
	}
	// Node 2's site A reads newer deposits before its site B does.
	if err := e.p.Deposit(ctx, qkd.RandomKeys(6, 32)); err != nil {
		t.Fatal(err)
	}
	if n, err := p2.A.adoptDeposits(ctx); err != nil || n != 6 {
		t.Fatalf("adopted %d (%v), want 6", n, err)
	}
	if n, err := p2.A.Reconcile(ctx); err != nil || n != 0 {
		t.Fatalf("reconciliation removed %d units (%v) that the peer had not read yet", n, err)
	}
	var avail int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kme_keys WHERE state = 0`).Scan(&avail); err != nil || avail != 2*(12-3) {
		t.Fatalf("%d available units (%v), want %d", avail, err, 2*(12-3))
	}
}
