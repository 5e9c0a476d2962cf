package selfverify

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// switchableAudit is the platform's audit log with a switch that makes
// every transactional record fail: the failure comes after the ledger
// transfer inside the operator's transaction.
type switchableAudit struct {
	audit.Recorder
	down atomic.Bool
}

var errAuditDown = errors.New("audit trail unavailable")

func (a *switchableAudit) RecordTx(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	if a.down.Load() {
		return errAuditDown
	}
	return a.Recorder.RecordTx(ctx, tx, e)
}

// TestMoneyMovesAtomically injects a failure after each transfer (withdraw
// to escrow, settlement to the vendor, refund to the user) and checks that
// nothing changed — balances, token and confirmation states, the audit
// trail — and that the retry then moves the money exactly once, audited.
func TestMoneyMovesAtomically(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, ecqv.P256())
		log, err := audit.Open(e.ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		au := &switchableAudit{Recorder: log}
		op, err := NewOperator(e.ctx, db, OperatorConfig{Key: e.op.key, Ledger: e.led, Audit: au, Now: e.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		e.op = op
		u := e.user("alice")
		v := e.vendor("shop")
		entries := func(event string) int {
			t.Helper()
			rs, err := log.Search(e.ctx, audit.Query{Event: event, Outcome: "success"})
			if err != nil {
				t.Fatal(err)
			}
			return len(rs)
		}
		state := func(q, id string) string {
			t.Helper()
			var s string
			if err := db.QueryRowContext(e.ctx, db.Rebind(q), id).Scan(&s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		unchanged := func(step string, alice, shop, escrow int64) {
			t.Helper()
			if a, s, w := e.balance("acct.alice"), e.balance("acct.shop"), e.balance("selfverify.escrow.CNY"); a != alice || s != shop || w != escrow {
				t.Fatalf("%s with a failing audit trail moved money: alice %d shop %d escrow %d, want %d %d %d", step, a, s, w, alice, shop, escrow)
			}
		}

		// Withdraw.
		au.down.Store(true)
		req, tk, _ := u.WithdrawRequest(1000, time.Hour)
		if _, err := u.CompleteWithdraw(e.ctx, req, tk); !errors.Is(err, errAuditDown) {
			t.Fatalf("withdraw with a failing audit trail: %v", err)
		}
		unchanged("withdraw", 10000, 0, 0)
		if n := entries("selfverify.withdraw"); n != 0 {
			t.Fatalf("%d withdraw audit records", n)
		}
		au.down.Store(false)
		st, err := u.CompleteWithdraw(e.ctx, req, tk)
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		serial := st.Token.Serial
		unchanged("retried withdraw", 9000, 0, 1000)
		if n := entries("selfverify.withdraw"); n != 1 {
			t.Fatalf("%d withdraw audit records, want 1", n)
		}

		// Settle.
		mustPay(t, u, v.Local(), "tea")
		if _, err := v.Deposit(e.ctx); err != nil {
			t.Fatal(err)
		}
		au.down.Store(true)
		if _, err := u.Confirm(e.ctx, serial, nil); !errors.Is(err, errAuditDown) {
			t.Fatalf("settlement with a failing audit trail: %v", err)
		}
		unchanged("settlement", 9000, 0, 1000)
		if s := state(`SELECT state FROM sv_confirmations WHERE serial = ?`, serial); s != StateAgreed {
			t.Fatalf("confirmation state %q after a failed settlement, want %q", s, StateAgreed)
		}
		au.down.Store(false)
		if err := op.Sweep(e.ctx); err != nil {
			t.Fatal(err)
		}
		unchanged("swept settlement", 9000, 120, 880)
		if n := entries("selfverify.settle"); n != 1 {
			t.Fatalf("%d settle audit records, want 1", n)
		}

		// Refund.
		au.down.Store(true)
		if _, err := u.Close(e.ctx, serial); !errors.Is(err, errAuditDown) {
			t.Fatalf("refund with a failing audit trail: %v", err)
		}
		unchanged("refund", 9000, 120, 880)
		if s := state(`SELECT state FROM sv_tokens WHERE serial = ?`, serial); s != "refunding" {
			t.Fatalf("token state %q after a failed refund, want refunding", s)
		}
		au.down.Store(false)
		if err := op.Sweep(e.ctx); err != nil {
			t.Fatal(err)
		}
		unchanged("swept refund", 9880, 120, 0)
		if n := entries("selfverify.refund"); n != 1 {
			t.Fatalf("%d refund audit records, want 1", n)
		}
		if rep, err := log.Verify(e.ctx); err != nil {
			t.Fatalf("audit chain: %+v %v", rep, err)
		}
	})
}
