package selfverify

import (
	"context"
	"testing"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestEndToEnd runs all four phases on both curves and both databases and
// checks every balance: registration, withdrawal of W into escrow, three
// payments (one first, two chained), a signed deposit, the user's
// confirmation under K_UN, the move of the spent sum to V, and the return of
// the rest of W to U when the token is closed.
func TestEndToEnd(t *testing.T) {
	for _, curve := range []*ecqv.Curve{ecqv.P256(), ecqv.SM2()} {
		t.Run(curve.Name(), func(t *testing.T) {
			sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
				e := newEnv(t, db, curve)
				ctx := context.Background()
				u := e.user("alice")
				v := e.vendor("tea-shop")
				st := mustWithdraw(t, u, 1000)
				if got := e.balance("acct.alice"); got != 9000 {
					t.Fatalf("alice after withdraw: %d", got)
				}
				if got := e.balance("selfverify.escrow.CNY"); got != 1000 {
					t.Fatalf("escrow after withdraw: %d", got)
				}
				r1 := mustPay(t, u, v.Local(), "tea")
				r2 := mustPay(t, u, v.Local(), "cake")
				r3 := mustPay(t, u, v.Local(), "tea")
				if r1.Seq != 1 || r2.Seq != 2 || r3.Seq != 3 || r3.SpentAtVendor != 490 {
					t.Fatalf("receipts: %+v %+v %+v", r1, r2, r3)
				}
				ts, _ := e.op.TokenStatus(ctx, st.Token.Serial)
				if ts.Reserved != 490 || ts.Settled != 0 {
					t.Fatalf("token status %+v", ts)
				}
				dep, err := v.Deposit(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(dep.Confirmations) != 1 || dep.Confirmations[0].Amount != 490 {
					t.Fatalf("deposit %+v", dep)
				}
				if got := e.balance("acct.tea-shop"); got != 0 {
					t.Fatalf("vendor paid before confirmation: %d", got)
				}
				res, err := u.Confirm(ctx, st.Token.Serial, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(res) != 1 || res[0].State != StateSettled {
					t.Fatalf("confirm %+v", res)
				}
				if got := e.balance("acct.tea-shop"); got != 490 {
					t.Fatalf("vendor after confirmation: %d", got)
				}
				if _, err := v.RefreshDeposit(ctx, dep.ID); err != nil {
					t.Fatal(err)
				}
				ps, _ := v.Payments(ctx, 10)
				for _, p := range ps {
					if p.DepositState != StateSettled {
						t.Fatalf("vendor payment %+v", p)
					}
				}
				cs, err := u.Close(ctx, st.Token.Serial)
				if err != nil {
					t.Fatal(err)
				}
				if cs.State != "refunded" || cs.Refunded != 510 {
					t.Fatalf("close %+v", cs)
				}
				if a, v2, esc := e.balance("acct.alice"), e.balance("acct.tea-shop"), e.balance("selfverify.escrow.CNY"); a != 9510 || v2 != 490 || esc != 0 {
					t.Fatalf("final balances alice %d vendor %d escrow %d", a, v2, esc)
				}
				total, err := e.led.TotalBalance(ctx, "CNY")
				if err != nil || total != 0 {
					t.Fatalf("ledger total %d %v", total, err)
				}
				if !e.audit.has("selfverify.settle", "success") || !e.audit.has("selfverify.refund", "success") {
					t.Fatal("settlement not audited")
				}
			})
		})
	}
}

// TestExpiryRefund: an unused token's W returns to the user after expiry.
func TestExpiryRefund(t *testing.T) {
	e := newEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), ecqv.P256())
	u := e.user("bob")
	v := e.vendor("shop")
	st := mustWithdraw(t, u, 500)
	mustPay(t, u, v.Local(), "tea")
	e.clock.Add(90 * time.Minute) // past expiry, within grace: reservation outstanding
	if err := e.op.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.op.TokenStatus(e.ctx, st.Token.Serial); s.State != "active" {
		t.Fatalf("refunded while a payment may still be deposited: %+v", s)
	}
	// Expired token: no more payments.
	if _, err := u.Pay(e.ctx, v.Local(), "tea"); err == nil {
		t.Fatal("payment with an expired token accepted")
	}
	e.clock.Add(2 * time.Hour) // grace over: the undeposited payment lapses
	if err := e.op.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := e.op.TokenStatus(e.ctx, st.Token.Serial)
	if s.State != "refunded" || s.Refunded != 500 || e.balance("acct.bob") != 10_000 {
		t.Fatalf("after grace %+v balance %d", s, e.balance("acct.bob"))
	}
	if _, err := v.Deposit(e.ctx); err == nil {
		t.Fatal("deposit of a lapsed payment accepted")
	}
}

// TestResync: the phone loses its last saved state (restored from an older
// backup); U and V resynchronise without any key being used twice.
func TestResync(t *testing.T) {
	e := newEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), ecqv.P256())
	u := e.user("carol")
	v := e.vendor("shop")
	mustWithdraw(t, u, 5000)
	mustPay(t, u, v.Local(), "tea")
	mustPay(t, u, v.Local(), "pen")
	backup := u.Wallet()
	mustPay(t, u, v.Local(), "pen") // seq 3
	mustPay(t, u, v.Local(), "pen") // seq 4
	u2, err := OpenUser(backup, e.op.Local(), WithClock(e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := u2.Pay(e.ctx, v.Local(), "tea")
	if err != nil {
		t.Fatalf("resync failed: %v", err)
	}
	if rc.Seq != 5 {
		t.Fatalf("resynchronised payment used seq %d, want 5 (keys 3 and 4 are spent)", rc.Seq)
	}
	rc, err = u2.Pay(e.ctx, v.Local(), "pen")
	if err != nil || rc.Seq != 6 {
		t.Fatalf("after resync: %v %+v", err, rc)
	}
}
