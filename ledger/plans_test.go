package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestPGBatchIndexPlans: the PostgreSQL batcher's statements use their
// indexes whatever the tables' statistics say. A generic plan made while
// the ledger was small (here: four accounts) is a sequential scan, kept
// after the ledger grew; it showed as cells of the ledger experiment at a
// fifth of their throughput. The pool is one connection, so the batcher's
// prepared statements are those pg_prepared_statements shows here, and
// EXPLAIN EXECUTE under force_generic_plan shows the generic plan they
// cached (planner settings do not invalidate a cached plan).
func TestPGBatchIndexPlans(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		if db.Dialect != sqldb.Postgres {
			t.Skip("PostgreSQL's plan cache")
		}
		ctx := context.Background()
		db.SetMaxOpenConns(1)
		l := openLedger(t, db, ledger.WithPostgresBatchers(1))
		ids := fixture(t, l, 3, 1_000_000)
		for round := 0; round < 12; round++ {
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					req := ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("p%d-%d", round, i), From: ids[i%3], To: ids[(i+1)%3], Amount: 1, Currency: "CNY"}
					if _, err := l.Transfer(ctx, req); err != nil {
						t.Error(err)
					}
				}()
			}
			close(start)
			wg.Wait()
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, tc := range []struct{ like, arg string }{
			{"%FROM ledger_accounts WHERE id = ANY%", "{u00,u01}"},
			{"%FROM ledger_transfers WHERE idempotency_key = ANY%", "{p0-0,p0-1}"},
		} {
			var name string
			var generic, custom int64
			err := conn.QueryRowContext(ctx, `SELECT name, generic_plans, custom_plans FROM pg_prepared_statements
				WHERE statement LIKE $1 AND statement NOT LIKE '%pg_prepared_statements%'`, tc.like).Scan(&name, &generic, &custom)
			if err != nil {
				t.Fatalf("the batcher's statement %q on this connection: %v", tc.like, err)
			}
			if generic+custom < 12 {
				t.Fatalf("%s ran %d times, want at least 12 (did the transfers run in batches?)", name, generic+custom)
			}
			// EXPLAIN takes no parameters: the argument is a constant here.
			rows, err := conn.QueryContext(ctx, `EXPLAIN EXECUTE `+name+`('`+tc.arg+`')`)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			if p := fmt.Sprint(plan); strings.Contains(p, "Seq Scan") || !strings.Contains(p, "Index") {
				t.Errorf("%q: cached generic plan %v, want an index scan", tc.like, plan)
			}
			found++
		}
		if found != 2 {
			t.Fatalf("checked %d statements, want 2", found)
		}
	})
}
