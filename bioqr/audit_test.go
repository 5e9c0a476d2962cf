package bioqr_test

import (
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestAuditTrail(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(t, db)
		log, err := audit.Open(f.ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		f.rig.Settlement.SetAudit(log)
		qr, _ := f.pay(t, 1_00, f.rig.Templates.Genuine)
		if _, err := f.rig.POS.Accept(f.ctx, qr); err != nil {
			t.Fatal(err)
		}
		qr2, _ := f.pay(t, 1_00, f.rig.Templates.Impostor)
		if _, err := f.rig.POS.Accept(f.ctx, qr2); err == nil {
			t.Fatal("impostor paid")
		}
		ok, err := log.Search(f.ctx, audit.Query{Event: "bioqr.settle", Outcome: "success"})
		if err != nil || len(ok) != 1 {
			t.Fatalf("success entries: %d, %v", len(ok), err)
		}
		if got := ok[0].Details["amount"]; got != "1.00 CNY" {
			t.Errorf("audited amount %q, want \"1.00 CNY\" (money.Format, not bare minor units)", got)
		}
		bad, err := log.Search(f.ctx, audit.Query{Event: "bioqr.settle", Outcome: "failure"})
		if err != nil || len(bad) != 1 || bad[0].Details["code"] != "fingerprint_mismatch" {
			t.Fatalf("failure entries: %+v, %v", bad, err)
		}
		for _, r := range append(ok, bad...) {
			for k, v := range r.Details {
				if len(v) > 200 && k != "error" {
					t.Errorf("suspiciously long audit detail %s", k)
				}
			}
		}
		if rep, err := log.Verify(f.ctx); err != nil {
			t.Fatalf("audit chain: %+v %v", rep, err)
		}
	})
}
