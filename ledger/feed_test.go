package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestSince(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		l := openLedger(t, db)
		fixture(t, l, 2, 0) // no funding transfers: the feed starts empty
		if got, err := l.Since(ctx, 0, 10); err != nil || len(got) != 0 {
			t.Fatalf("empty feed: %v, %v", got, err)
		}
		var ids []string
		for i := range 7 {
			tr, err := l.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: fmt.Sprintf("f%d", i), From: "sys", To: "u00", Amount: int64(i + 1), Currency: "CNY"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, tr.ID)
		}
		latest, err := l.Since(ctx, 0, 3)
		if err != nil || len(latest) != 3 {
			t.Fatalf("latest: %v, %v", latest, err)
		}
		for i, e := range latest { // the newest three, oldest first
			if e.ID != ids[4+i] {
				t.Fatalf("latest[%d] = %s, want %s", i, e.ID, ids[4+i])
			}
		}
		after, err := l.Since(ctx, latest[0].Seq, 100)
		if err != nil || len(after) != 2 || after[0].ID != ids[5] || after[1].ID != ids[6] {
			t.Fatalf("after %d: %v, %v", latest[0].Seq, after, err)
		}
		if tail, err := l.Since(ctx, latest[2].Seq, 100); err != nil || len(tail) != 0 {
			t.Fatalf("after the newest: %v, %v", tail, err)
		}
		if _, err := l.Since(ctx, -1, 1); !errors.Is(err, ledger.ErrInvalidCursor) {
			t.Fatalf("negative position: %v", err)
		}
	})
}
