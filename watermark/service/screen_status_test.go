package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestScreenStatus: the payer's screen says "paid" once its code was
// redeemed, "expired" after its expiry, and waits (with the limit) before.
func TestScreenStatus(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, _, clk := setup(t, db)
		_, rec, err := s.Issue(ctx, "payer", 5_00)
		if err != nil {
			t.Fatal(err)
		}
		sc := &screen{handle: rec.Handle, expires: rec.ExpiresAt, limit: "5.00 CNY"}
		if st := s.screenStatus(ctx, sc); st.State != paypage.Waiting || st.Message != "Show this screen to the merchant's scanner, close up. It pays at most 5.00 CNY." {
			t.Fatalf("before payment: %+v", st)
		}
		if err := s.store.MarkUsed(ctx, rec.Handle, clk.Now()); err != nil {
			t.Fatal(err)
		}
		if st := s.screenStatus(ctx, sc); st.State != paypage.Paid {
			t.Fatalf("after payment: %+v", st)
		}
		_, rec2, err := s.Issue(ctx, "payer", 5_00)
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(rec2.ExpiresAt.Sub(clk.Now()) + time.Second)
		if st := s.screenStatus(ctx, &screen{handle: rec2.Handle, expires: rec2.ExpiresAt}); st.State != paypage.Expired {
			t.Fatalf("after expiry: %+v", st)
		}
		if st := s.screenStatus(ctx, &screen{handle: "no-such-handle"}); st.State != paypage.Expired {
			t.Fatalf("unknown handle: %+v", st)
		}
		// With scanner challenges on, the page reads the scanner's
		// challenge with the front camera: it asks the payer to hold the
		// screen to the scanner, limit included.
		on, err := New(ctx, Config{DB: db, Ledger: s.led, Now: clk.Now, ChallengeMaster: make([]byte, 32)})
		if err != nil {
			t.Fatal(err)
		}
		defer on.Close()
		_, rec3, err := on.Issue(ctx, "payer", 5_00)
		if err != nil {
			t.Fatal(err)
		}
		if st := on.screenStatus(ctx, &screen{handle: rec3.Handle, expires: rec3.ExpiresAt, limit: "5.00 CNY"}); st.State != paypage.Waiting ||
			!strings.Contains(st.Message, "front camera reads the scanner's own code") || !strings.HasSuffix(st.Message, "It pays at most 5.00 CNY.") {
			t.Fatalf("with challenges on: %+v", st)
		}
	})
}
