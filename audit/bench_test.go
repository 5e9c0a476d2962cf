package audit

import (
	"context"
	"testing"

	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func BenchmarkAppend(b *testing.B) {
	db := sqldbtest.Open(b, sqldbtest.Backends()[0])
	l, err := Open(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	e := Entry{Actor: "pos-1", Event: "payment.authorise", Outcome: OutcomeSuccess, Origin: "10.0.0.1", Resource: "device-1", Details: map[string]string{"amount": "12.50"}}
	for b.Loop() {
		if _, err := l.Append(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify10k reports the time to verify a 10,000-record chain.
func BenchmarkVerify10k(b *testing.B) {
	db := sqldbtest.Open(b, sqldbtest.Backends()[0])
	ctx := context.Background()
	l, err := Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		if _, err := l.AppendTx(ctx, tx, Entry{Actor: "a", Event: "e", Outcome: OutcomeSuccess}); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		rep, err := l.Verify(ctx)
		if err != nil || !rep.OK {
			b.Fatal(err, rep.Problems)
		}
	}
}
