package pki

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestWithAudit(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		log, err := audit.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		ca := mustCA(t, db, "audited", ECDSAP256).WithAudit(log, "operator")
		iss := issue(t, ca, IssueRequest{Role: RoleDevice, CommonName: "phone-1", Device: &DeviceInfo{Serial: "IMEI-1", Kind: KindPhone}})
		if err := ca.Revoke(ctx, iss.Cert.SerialNumber, "lost"); err != nil {
			t.Fatal(err)
		}
		if err := ca.Revoke(ctx, iss.Cert.SerialNumber, "again"); err != nil { // no-op: not audited twice
			t.Fatal(err)
		}
		if _, err := ca.Verify(ctx, iss.Cert, RoleDevice, time.Time{}); !errors.Is(err, ErrRevoked) {
			t.Fatalf("verify revoked: %v", err)
		}
		if _, err := ca.Issue(ctx, IssueRequest{Role: "bogus", CommonName: "x"}); err == nil {
			t.Fatal("bad request issued")
		}
		recs, err := log.Search(ctx, audit.Query{Event: "pki.*"})
		if err != nil {
			t.Fatal(err)
		}
		serial := serialText(iss.Cert.SerialNumber)
		want := []struct{ event, outcome string }{{"pki.issue", "success"}, {"pki.revoke", "success"}, {"pki.verify", "denied"}}
		if len(recs) != len(want) {
			t.Fatalf("audit records: %+v", recs)
		}
		for i, w := range want {
			r := recs[i]
			if r.Event != w.event || r.Outcome != w.outcome || r.Resource != serial || r.Actor != "operator" || r.Origin != "pki/audited" {
				t.Fatalf("record %d = %+v, want %v", i, r, w)
			}
		}
		if recs[0].Details["device_serial"] != "IMEI-1" || recs[1].Details["reason"] != "lost" {
			t.Fatalf("details: %+v %+v", recs[0].Details, recs[1].Details)
		}
		if rep, err := log.Verify(ctx); err != nil || !rep.OK {
			t.Fatalf("chain: %+v %v", rep, err)
		}
		// The un-audited CA value is unaffected.
		plain := mustCA(t, db, "plain", ECDSAP256)
		issue(t, plain, reqFor(RoleClient, "c"))
		if n, _ := log.Search(ctx, audit.Query{}); len(n) != 3 {
			t.Fatalf("plain CA wrote audit records: %d", len(n))
		}
	})
}
