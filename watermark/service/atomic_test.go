package service

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// failingAudit appends outside transactions but fails inside one: the
// failure comes after the ledger transfer in the payment's transaction.
type failingAudit struct{ audit.Recorder }

var errAuditDown = errors.New("audit trail unavailable")

func (failingAudit) RecordTx(context.Context, *sql.Tx, audit.Entry) error {
	return errAuditDown
}

// TestPaymentIsAtomic: a payment whose audit append fails after the
// transfer changes nothing (no money, the code not burned); the code then
// pays once.
func TestPaymentIsAtomic(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, led, clk := setup(t, db)
		log, err := audit.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		code, rec, err := s.Issue(ctx, "payer", 250)
		if err != nil {
			t.Fatal(err)
		}
		s.audit = failingAudit{log}
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, code, rec, 250, clk.Now()), "CNY", "k1"); !errors.Is(err, errAuditDown) {
			t.Fatalf("payment with a failing audit trail: %v, want %v", err, errAuditDown)
		}
		if balance(t, led, "shop") != 0 || balance(t, led, "payer") != 1000 {
			t.Fatal("money moved without its audit record")
		}
		var used int64
		if err := db.QueryRowContext(ctx, db.Rebind(`SELECT used_at FROM wm_tokens WHERE handle = ?`), rec.Handle).Scan(&used); err != nil || used != 0 {
			t.Fatalf("code burned (used_at %d, %v)", used, err)
		}
		s.audit = log
		if _, err := s.Pay(ctx, "scanner", "shop", claim(s, code, rec, 250, clk.Now()), "CNY", "k1"); err != nil {
			t.Fatalf("retry with the trail back: %v", err)
		}
		if balance(t, led, "shop") != 250 || balance(t, led, "payer") != 750 {
			t.Fatal("wrong balances after the retry")
		}
		rs, err := log.Search(ctx, audit.Query{Event: "watermark.pay", Outcome: "success"})
		if err != nil || len(rs) != 1 {
			t.Fatalf("%d payment audit records (%v), want 1", len(rs), err)
		}
		if got := rs[0].Details["amount"]; got != "2.50 CNY" {
			t.Errorf("audited amount %q, want \"2.50 CNY\" (money.Format)", got)
		}
	})
}
