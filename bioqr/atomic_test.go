package bioqr_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// failingAuditor fails every transactional record: the failure comes after
// the ledger transfer inside the settlement's transaction.
type failingAuditor struct{ bioqr.MemoryAuditor }

var errAuditDown = errors.New("audit trail unavailable")

func (a *failingAuditor) RecordTx(context.Context, *sql.Tx, audit.Entry) error { return errAuditDown }

// TestSettleIsAtomic injects a failure after the transfer (the audit append
// fails) and checks that nothing changed: no money moved, the RandCode was
// not claimed, no fingerprint failure was counted. The same envelope then
// settles exactly once when the trail is back.
func TestSettleIsAtomic(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		st := f.rig.Settlement
		posCert := f.rig.POS.Unit.Certificate()
		var sealed [][]byte
		orig := f.rig.POS.Settler
		f.rig.POS.Settler = settlerFunc(func(ctx context.Context, b []byte) (*bioqr.SettleResult, error) {
			sealed = append(sealed, b)
			return orig.Settle(ctx, b)
		})
		count := func(q string) int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(f.ctx, q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		payer, merchant := f.balance(t, f.rig.Payer), f.balance(t, f.rig.Merchant)
		transfers := count(`SELECT COUNT(*) FROM ledger_transfers`)

		st.SetAudit(&failingAuditor{})
		qr, _ := f.pay(t, 12_34, f.rig.Templates.Genuine)
		if _, err := f.rig.POS.Accept(f.ctx, qr); !errors.Is(err, errAuditDown) {
			t.Fatalf("payment with a failing audit trail: %v, want %v", err, errAuditDown)
		}
		qr2, _ := f.pay(t, 1_00, f.rig.Templates.Impostor)
		if _, err := f.rig.POS.Accept(f.ctx, qr2); !errors.Is(err, errAuditDown) {
			t.Fatalf("refusal with a failing audit trail: %v, want %v", err, errAuditDown)
		}
		if got := f.balance(t, f.rig.Payer); got != payer {
			t.Errorf("payer balance %d, want %d: money moved without its audit record", got, payer)
		}
		if got := f.balance(t, f.rig.Merchant); got != merchant {
			t.Errorf("merchant balance %d, want %d", got, merchant)
		}
		if got := count(`SELECT COUNT(*) FROM ledger_transfers`); got != transfers {
			t.Errorf("%d ledger transfers, want %d", got, transfers)
		}
		if got := count(`SELECT COUNT(*) FROM bioqr_settlements`); got != 0 {
			t.Errorf("%d RandCodes claimed, want 0", got)
		}
		if got := count(`SELECT COUNT(*) FROM bioqr_failures`); got != 0 {
			t.Errorf("%d fingerprint failures counted, want 0", got)
		}

		// The trail is back: the same envelopes settle, once.
		st.SetAudit(f.audit)
		res, err := st.Settle(f.ctx, posCert, sealed[0])
		if err != nil || res.Status != "paid" || res.Replayed {
			t.Fatalf("retry: %+v, %v", res, err)
		}
		if _, err := st.Settle(f.ctx, posCert, sealed[1]); !errors.Is(err, bioqr.ErrFingerprint) {
			t.Fatalf("retry of the impostor: %v", err)
		}
		again, err := st.Settle(f.ctx, posCert, sealed[0])
		if err != nil || !again.Replayed || again.TransferID != res.TransferID {
			t.Fatalf("second retry: %+v, %v", again, err)
		}
		if got := f.balance(t, f.rig.Payer); got != payer-12_34 {
			t.Errorf("payer balance %d, want %d", got, payer-12_34)
		}
		if got := count(`SELECT COUNT(*) FROM bioqr_failures`); got != 1 {
			t.Errorf("%d fingerprint failures counted, want 1", got)
		}
		var audited int
		for _, e := range f.audit.Snapshot() {
			if e.Event == "bioqr.settle" && e.Resource == res.RandCode && e.Outcome == audit.OutcomeSuccess {
				audited++
			}
		}
		if audited != 2 { // the payment, and its replay
			t.Errorf("%d audit records of the payment, want 2", audited)
		}
	})
}

// settlerFunc is a bioqr.Settler made of a function.
type settlerFunc func(context.Context, []byte) (*bioqr.SettleResult, error)

func (f settlerFunc) Settle(ctx context.Context, b []byte) (*bioqr.SettleResult, error) {
	return f(ctx, b)
}
