package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestBatchOutcomes sends many concurrent transfers at once so that the
// group committer (SQLite) and the batchers (PostgreSQL) decide them
// together: every outcome must be the one of some sequential order — an
// account funded for exactly k transfers pays exactly k and refuses the rest
// for funds, a key repeated with the same parameters is one transfer, a key
// repeated with other parameters is a conflict, a missing account is
// refused — and the balances and the audit trail must agree.
func TestBatchOutcomes(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		// A failing batch falls back to one transfer at a time, which would
		// hide a wrong decision behind the CHECK constraints: fail on it.
		var logged strings.Builder
		var mu sync.Mutex
		log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logged.Write(p)
		}), nil))
		l, alog := auditedLedger(t, db, ledger.WithPostgresBatchers(1), ledger.WithLogger(log))
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			if strings.Contains(logged.String(), "batch failed") {
				t.Errorf("a batch fell back: %s", logged.String())
			}
		}()
		const fund, amount, k = 1000, 100, 10
		fixture(t, l, 3, fund)
		const n = 64
		type result struct {
			tr  ledger.Transfer
			err error
		}
		for round := 0; round < 3; round++ {
			res := make([]result, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					req := ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("r%d-%d", round, i), From: "u00", To: "u01", Amount: amount, Currency: "CNY"}
					switch {
					case round > 0 && i%4 == 0: // the same key as i+1, same parameters
						req.IdempotencyKey = fmt.Sprintf("r%d-%d", round, i+1)
					case round > 0 && i%4 == 2: // the same key as i+1, another amount
						req.IdempotencyKey = fmt.Sprintf("r%d-%d", round, i+1)
						req.Amount = amount + 1
					case i%8 == 7:
						req.From = "nobody"
					}
					if round%2 == 1 && req.From == "u00" {
						// Back the other way, so that u00 has funds again.
						req.From, req.To = "u01", "u00"
					}
					tr, err := l.Transfer(ctx, req)
					res[i] = result{tr, err}
				}()
			}
			close(start)
			wg.Wait()
			ids := map[string]bool{}
			paid, refused := 0, 0
			for i, r := range res {
				switch {
				case r.err == nil:
					ids[r.tr.ID] = true
				case errors.Is(r.err, ledger.ErrInsufficientFunds):
					refused++
				case errors.Is(r.err, ledger.ErrIdempotencyConflict):
					if round == 0 || (i%4 != 2 && i%4 != 3) {
						t.Fatalf("round %d transfer %d: unexpected conflict: %v", round, i, r.err)
					}
				case errors.Is(r.err, ledger.ErrAccountNotFound):
					if i%8 != 7 {
						t.Fatalf("round %d transfer %d: %v", round, i, r.err)
					}
				default:
					t.Fatalf("round %d transfer %d: %v", round, i, r.err)
				}
			}
			for i := 0; round > 0 && i < n; i += 4 {
				if res[i].err == nil && res[i+1].err == nil && res[i].tr.ID != res[i+1].tr.ID {
					t.Fatalf("round %d: one key, same parameters, two transfers %s and %s", round, res[i].tr.ID, res[i+1].tr.ID)
				}
			}
			paid = len(ids)
			if round == 0 && (paid != k || refused != n-n/8-k) {
				t.Fatalf("round 0: %d paid, %d refused for funds; want %d and %d", paid, refused, k, n-n/8-k)
			}
			t.Logf("round %d: %d transfers, %d refused for funds", round, paid, refused)
		}
		accs := snapshot(t, l)
		var sum int64
		for _, a := range accs {
			sum += a.Balance
			if !a.AllowNegative && a.Available() < 0 {
				t.Fatalf("account %s overdrawn: %+v", a.ID, a)
			}
		}
		if sum != 0 {
			t.Fatalf("balances sum to %d", sum)
		}
		mustReconcile(t, l, alog)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestBatchWithCancelled mixes requests whose context is already cancelled
// into batches: each live transfer must be decided and stored, and a
// cancelled one either fails with its context's error or was stored.
func TestBatchWithCancelled(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLedger(t, db)
		fixture(t, l, 4, 1_000_000)
		dead, cancel := context.WithCancel(ctx)
		cancel()
		for round := 0; round < 20; round++ {
			const n = 32
			var wg sync.WaitGroup
			start := make(chan struct{})
			trs, errs := make([]ledger.Transfer, n), make([]error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := ctx
					if i%2 == 1 {
						c = dead
					}
					<-start
					trs[i], errs[i] = l.Transfer(c, ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("c%d-%d", round, i), From: fmt.Sprintf("u%02d", i%4), To: fmt.Sprintf("u%02d", (i+1)%4), Amount: 1, Currency: "CNY"})
				}()
			}
			close(start)
			wg.Wait()
			for i := 0; i < n; i++ {
				switch {
				case errs[i] != nil && i%2 == 1 && errors.Is(errs[i], context.Canceled):
				case errs[i] != nil:
					t.Fatalf("round %d transfer %d: %v", round, i, errs[i])
				default:
					got, err := l.TransferByKey(ctx, fmt.Sprintf("c%d-%d", round, i))
					if err != nil || trs[i].ID == "" || got.ID != trs[i].ID {
						t.Fatalf("round %d transfer %d acknowledged as %q but stored as %q (%v)", round, i, trs[i].ID, got.ID, err)
					}
				}
			}
		}
		var sum int64
		for _, a := range snapshot(t, l) {
			sum += a.Balance
		}
		if sum != 0 {
			t.Fatalf("balances sum to %d", sum)
		}
	})
}

// TestPGBatchIndexPlans: the PostgreSQL batcher's list lookups use their
// indexes whatever the tables' statistics say (sqldb.IndexPlans). A generic
// plan made while the ledger was small (here: four accounts) is a
// sequential scan, kept after the ledger grew; it showed as cells of the
// ledger experiment at a fifth of their throughput. The pool is one
// connection, so the batcher's prepared statements are the ones this
// connection shows.
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
		for _, tc := range []struct{ like, arg string }{
			{"%FROM ledger_accounts WHERE id = ANY%", "{u00,u01}"},
			{"%FROM ledger_transfers WHERE idempotency_key = ANY%", "{p0-0,p0-1}"},
		} {
			plan, runs := sqldbtest.CachedPlan(t, conn, tc.like, tc.arg)
			if runs < 12 {
				t.Fatalf("%q ran %d times, want at least 12 (did the transfers run in batches?)", tc.like, runs)
			}
			if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index") {
				t.Errorf("%q: cached generic plan\n%s\nwant an index scan", tc.like, plan)
			}
		}
	})
}
