package kme

import (
	"context"
	"sync"
	"testing"

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
