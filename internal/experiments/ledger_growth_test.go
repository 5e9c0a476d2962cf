package experiments

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/qshield/qshield/experiment"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestLedgerGrowthRuns runs the growth experiment at toy sizes on every
// backend: every cell makes transfers and history queries without errors.
func TestLedgerGrowthRuns(t *testing.T) {
	spec := LedgerGrowthExperiment()
	targets := "sqlite"
	if os.Getenv(sqldbtest.EnvPostgres) != "" {
		targets = "sqlite,postgres"
	}
	params, err := experiment.ResolveParams(spec, map[string]string{
		"accounts": "20,60", "transfers-per-account": "3", "duration": "200ms", "clients": "4", "queries": "40", "targets": targets,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &experiment.Env{Params: params, Postgres: os.Getenv(sqldbtest.EnvPostgres), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res, err := spec.Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	rows := res.Data.([]growthRow)
	if want := 2 * len(splitTargets(targets)); len(rows) != want {
		t.Fatalf("%d cells, want %d", len(rows), want)
	}
	for _, r := range rows {
		if r.Load.Transfers == 0 || r.Load.Errors != 0 || r.HistP50 <= 0 || r.Stored != int64(r.Accounts)*4 {
			t.Fatalf("cell %+v", r)
		}
	}
}

// TestBulkLoadConsistent: the bulk-loaded balances are those the stored
// history gives, so the ledger's invariants hold from the start.
func TestBulkLoadConsistent(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		const n = 30
		if err := bulkLoadLedger(ctx, db, n, 5); err != nil {
			t.Fatal(err)
		}
		if tot, err := l.TotalBalance(ctx, LoadCurrency); err != nil || tot != 0 {
			t.Fatalf("total balance %d (%v)", tot, err)
		}
		for i := 0; i < n; i++ {
			id := LoadAccountID(i)
			a, err := l.Account(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			var sum int64
			cursor := ""
			for {
				page, next, err := l.History(ctx, id, cursor, 1000)
				if err != nil {
					t.Fatal(err)
				}
				for _, tr := range page {
					if tr.To == id {
						sum += tr.Amount
					} else {
						sum -= tr.Amount
					}
				}
				if next == "" {
					break
				}
				cursor = next
			}
			if sum != a.Balance {
				t.Fatalf("%s: balance %d, history sums to %d", id, a.Balance, sum)
			}
		}
	})
}

func splitTargets(s string) []string {
	if s == "sqlite" {
		return []string{"sqlite"}
	}
	return []string{"sqlite", "postgres"}
}
