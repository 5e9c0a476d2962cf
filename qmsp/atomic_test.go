package qmsp

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// failingAudit appends outside transactions (refusals) but fails inside
// one: the failure comes after the ledger transfer in the payment's
// transaction.
type failingAudit struct{ audit.Recorder }

var errAuditDown = errors.New("audit trail unavailable")

func (failingAudit) RecordTx(context.Context, *sql.Tx, audit.Entry) error {
	return errAuditDown
}

// TestPaymentIsAtomic: a payment whose audit append fails after the
// transfer changes nothing (no money, the key unit not burned); the same
// code then pays once.
func TestPaymentIsAtomic(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, 100)
		g := e.gateway("GW-1")
		ctx := context.Background()
		ph := e.phone()
		alice, market := e.balance("alice"), e.balance("market")
		working := e.pps.cfg.Audit
		e.pps.cfg.Audit = failingAudit{working}
		c := code(t, g)
		if _, err := ph.Pay(ctx, c, 5_00, 156); !errors.Is(err, errAuditDown) {
			t.Fatalf("payment with a failing audit trail: %v, want %v", err, errAuditDown)
		}
		if a, m := e.balance("alice"), e.balance("market"); a != alice || m != market {
			t.Fatalf("balances %d/%d, want %d/%d: money moved without its audit record", a, m, alice, market)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM qmsp_payments`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d key units claimed (%v), want 0", n, err)
		}
		e.pps.cfg.Audit = working
		r, err := ph.Pay(ctx, c, 5_00, 156)
		if err != nil {
			t.Fatalf("retry with the trail back: %v", err)
		}
		if a := e.balance("alice"); a != alice-5_00 {
			t.Fatalf("alice %d, want %d", a, alice-5_00)
		}
		if _, err := ph.Pay(ctx, c, 5_00, 156); !errors.Is(err, ErrKeyUsed) {
			t.Fatalf("second use of the code: %v, want %v", err, ErrKeyUsed)
		}
		if r.TransferID == "" {
			t.Fatal("no transfer in the receipt")
		}
	})
}
