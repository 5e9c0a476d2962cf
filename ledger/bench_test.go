package ledger_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// BenchmarkTransfer measures durable posted transfers with 64 concurrent
// clients over 10 accounts (b.SetParallelism scales GOMAXPROCS).
func BenchmarkTransfer(b *testing.B) {
	for _, be := range sqldbtest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			db := sqldbtest.Open(b, be)
			ctx := context.Background()
			l, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if _, err := l.CreateAccount(ctx, ledger.NewAccount{ID: "sys", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true}); err != nil {
				b.Fatal(err)
			}
			const n = 10
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("a%d", i)
				if _, err := l.CreateAccount(ctx, ledger.NewAccount{ID: id, Kind: ledger.KindUser, Currency: "CNY"}); err != nil {
					b.Fatal(err)
				}
				if _, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "f" + id, From: "sys", To: id, Amount: 1e12, Currency: "CNY"}); err != nil {
					b.Fatal(err)
				}
			}
			var seq atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := seq.Add(1)
					req := ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("k%d", k), From: fmt.Sprintf("a%d", k%n), To: fmt.Sprintf("a%d", (k+1+k/n)%n), Amount: 1, Currency: "CNY"}
					if req.From == req.To {
						req.To = fmt.Sprintf("a%d", (k+1)%n)
					}
					if _, err := l.Transfer(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "transfers/s")
		})
	}
}
