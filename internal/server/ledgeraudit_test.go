package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net/http/httptest"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestLedgerAPIAudited: every write through the API — an account allowed to
// go negative, minting from it, a transfer, a pending transfer posted and
// one voided, and a replay — leaves exactly one audit record per money
// movement, reconcile passes, and deleting one record makes it fail.
// (Regression: API writes were not audited at all.)
func TestLedgerAPIAudited(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		alog, err := audit.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		led, err := ledger.Open(ctx, db, ledger.WithAudit(alog), ledger.WithSweepInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		s, err := server.New(server.Config{InsecureHTTP: true})
		if err != nil {
			t.Fatal(err)
		}
		(&server.LedgerAPI{Ledger: led}).Register(s)
		h := s.Handler()
		must := func(code int, method, path, key, body string) map[string]any {
			t.Helper()
			ctype := ""
			if body != "" {
				ctype = "application/json"
			}
			rec := do(h, method, path, key, ctype, body)
			if rec.Code != code {
				t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
			}
			var m map[string]any
			json.Unmarshal(rec.Body.Bytes(), &m)
			return m
		}
		must(201, "POST", "/v1/accounts", "", `{"id":"mint","owner":"x","kind":"system","currency":"EUR","allow_negative":true}`)
		must(201, "POST", "/v1/accounts", "", `{"id":"a","owner":"a","kind":"user","currency":"EUR"}`)
		must(201, "POST", "/v1/transfers", "t1", `{"from":"mint","to":"a","amount":500,"currency":"EUR"}`)
		must(200, "POST", "/v1/transfers", "t1", `{"from":"mint","to":"a","amount":500,"currency":"EUR"}`)
		p1 := must(201, "POST", "/v1/transfers", "t2", `{"from":"a","to":"mint","amount":50,"currency":"EUR","pending":true}`)
		p2 := must(201, "POST", "/v1/transfers", "t3", `{"from":"a","to":"mint","amount":70,"currency":"EUR","pending":true}`)
		must(200, "POST", "/v1/transfers/"+p1["id"].(string)+"/post", "t4", `{"amount":20}`)
		must(200, "POST", "/v1/transfers/"+p2["id"].(string)+"/void", "t5", ``)
		must(422, "POST", "/v1/transfers", "t6", `{"from":"a","to":"mint","amount":100000,"currency":"EUR"}`)

		rep, err := led.Reconcile(ctx, alog)
		if err != nil || !rep.OK {
			t.Fatalf("reconcile: %+v %v", rep, err)
		}
		if rep.Accounts != 2 || rep.Transfers != 3 || rep.MoneyRecords != 2+3+2 {
			t.Fatalf("reconciled %+v", rep)
		}
		recs, err := alog.Search(ctx, audit.Query{Event: "ledger.*"})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 7 {
			t.Fatalf("%d ledger records", len(recs))
		}
		for _, r := range recs {
			if r.Actor != "unauthenticated" {
				t.Fatalf("record %d actor %q", r.Seq, r.Actor)
			}
		}
		// Account search finds the transfers touching "a" only.
		byAcct, err := alog.Search(ctx, audit.Query{Account: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if len(byAcct) != 6 {
			t.Fatalf("search by account a: %d records", len(byAcct))
		}
		// Tampering with the trail (or the ledger) breaks reconciliation.
		if _, err := db.ExecContext(ctx, db.Rebind(`DELETE FROM audit_log WHERE event = 'ledger.void'`)); err != nil {
			t.Fatal(err)
		}
		if rep, err := led.Reconcile(ctx, alog); err != nil || rep.OK {
			t.Fatalf("reconcile after deleting a record: %+v %v", rep, err)
		}
	})
}

// TestPrincipal: the actor is the verified client certificate's serial.
func TestPrincipal(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	if got := server.Principal(r); got != "unauthenticated" {
		t.Fatalf("no TLS: %q", got)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0xbeef)}
	r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf}}
	if got := server.Principal(r); got != "unauthenticated" {
		t.Fatalf("unverified chain accepted: %q", got)
	}
	r.TLS.VerifiedChains = [][]*x509.Certificate{{leaf}}
	if got := server.Principal(r); got != "beef" {
		t.Fatalf("verified: %q", got)
	}
}
