package selfverify

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// flakyLedger fails the first transfer whose idempotency key has a given
// prefix, as a crash or an unreachable ledger would, after (when after is
// set) the transfer was made in the operator's transaction.
type flakyLedger struct {
	Ledger
	mu     sync.Mutex
	prefix map[string]bool // prefix → still to fail
	after  bool
}

func (f *flakyLedger) TransferTx(ctx context.Context, tx *sql.Tx, req ledger.TransferRequest) (ledger.Transfer, error) {
	f.mu.Lock()
	fail := false
	for p, armed := range f.prefix {
		if armed && strings.HasPrefix(req.IdempotencyKey, p) {
			f.prefix[p], fail = false, true
		}
	}
	f.mu.Unlock()
	if fail && !f.after {
		return ledger.Transfer{}, errors.New("ledger unreachable")
	}
	tr, err := f.Ledger.TransferTx(ctx, tx, req)
	if fail {
		return ledger.Transfer{}, errors.New("connection lost after commit")
	}
	return tr, err
}

// TestRecovery: money-moving steps interrupted by ledger failures (before or
// after the ledger committed) are completed exactly once by a retry or by the
// sweeper.
func TestRecovery(t *testing.T) {
	for _, after := range []bool{false, true} {
		name := "before-commit"
		if after {
			name = "after-commit"
		}
		t.Run(name, func(t *testing.T) {
			sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
				e := newEnv(t, db, ecqv.P256())
				flaky := &flakyLedger{Ledger: e.led, after: after, prefix: map[string]bool{
					"selfverify:withdraw:": true, "selfverify:settle:": true, "selfverify:refund:": true}}
				op, err := NewOperator(e.ctx, db, OperatorConfig{Key: e.op.key, Ledger: flaky, Now: e.clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				defer op.Close()
				e.op = op
				u := e.user("alice")
				v := e.vendor("shop")

				// Withdraw: the phone retries the identical request.
				req, tk, _ := u.WithdrawRequest(1000, time.Hour)
				if _, err := u.CompleteWithdraw(e.ctx, req, tk); err == nil {
					t.Fatal("withdraw succeeded through a failing ledger")
				}
				st, err := u.CompleteWithdraw(e.ctx, req, tk)
				if err != nil {
					t.Fatalf("retry: %v", err)
				}
				if e.balance("acct.alice") != 9000 {
					t.Fatalf("balance %d after a retried withdrawal", e.balance("acct.alice"))
				}
				mustPay(t, u, v.Local(), "tea")
				if _, err := v.Deposit(e.ctx); err != nil {
					t.Fatal(err)
				}
				// Settlement fails; the sweeper finishes it.
				if _, err := u.Confirm(e.ctx, st.Token.Serial, nil); err == nil {
					t.Fatal("settlement succeeded through a failing ledger")
				}
				if err := op.Sweep(e.ctx); err != nil {
					t.Fatal(err)
				}
				if e.balance("acct.shop") != 120 {
					t.Fatalf("vendor balance %d", e.balance("acct.shop"))
				}
				// Refund fails at close; the sweeper finishes it.
				if _, err := u.Close(e.ctx, st.Token.Serial); err == nil {
					t.Fatal("refund succeeded through a failing ledger")
				}
				if err := op.Sweep(e.ctx); err != nil {
					t.Fatal(err)
				}
				ts, _ := op.TokenStatus(e.ctx, st.Token.Serial)
				if ts.State != "refunded" || e.balance("acct.alice") != 9880 || e.balance("selfverify.escrow.CNY") != 0 {
					t.Fatalf("after recovery: %+v alice %d escrow %d", ts, e.balance("acct.alice"), e.balance("selfverify.escrow.CNY"))
				}
			})
		})
	}
}
