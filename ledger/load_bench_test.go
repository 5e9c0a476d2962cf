package ledger_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSQLiteLoad measures durable posted transfers between random pairs
// of 10,000 accounts by 64 concurrent clients on a SQLite file, without and
// with auditing (issues 16 item 6 and 13). Besides transfers/s it reports the
// process's CPU time per transfer (SQLite runs in-process, so it includes the
// database's work), the better guide on a shared machine. Use -benchtime
// with a count, e.g. 40000x.
func BenchmarkSQLiteLoad(b *testing.B) {
	for _, audited := range []bool{false, true} {
		name := "unaudited"
		if audited {
			name = "audited"
		}
		b.Run(name, func(b *testing.B) { benchLoad(b, audited) })
	}
}

func benchLoad(b *testing.B, audited bool) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(b.TempDir(), "l.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	opts := []ledger.Option{ledger.WithSweepInterval(0)}
	if audited {
		alog, err := audit.Open(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		opts = append(opts, ledger.WithAudit(alog))
	}
	l, err := ledger.Open(ctx, db, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const n, clients = 10000, 64
	if _, err := l.CreateAccount(ctx, ledger.NewAccount{ID: "sys", Kind: ledger.KindSystem, Currency: "XTS", AllowNegative: true}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				id := fmt.Sprintf("load-%06d", i)
				if _, err := l.CreateAccount(ctx, ledger.NewAccount{ID: id, Kind: ledger.KindUser, Currency: "XTS"}); err != nil {
					b.Error(err)
					return
				}
				if _, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "f" + id, From: "sys", To: id, Amount: 1e12, Currency: "XTS"}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.ResetTimer()
	c0, t0 := cpuTime(), time.Now()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := seq.Add(1)
				if k > int64(b.N) {
					return
				}
				a, c := rand.IntN(n), rand.IntN(n-1)
				if c >= a {
					c++
				}
				req := ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("k-%d-%d", k, rand.Int64()),
					From: fmt.Sprintf("load-%06d", a), To: fmt.Sprintf("load-%06d", c), Amount: 1, Currency: "XTS"}
				if _, err := l.Transfer(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	b.ReportMetric(float64(b.N)/el.Seconds(), "transfers/s")
	b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-µs/transfer")
}
