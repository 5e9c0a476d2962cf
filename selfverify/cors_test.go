package selfverify

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestVendorCORS: a browser wallet at another origin may call the vendor's
// API (the preflight for a JSON POST with an Idempotency-Key passes, and
// answers carry Access-Control-Allow-Origin), never with credentials.
func TestVendorCORS(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	e := newEnv(t, db, ecqv.P256())
	e.account("acct.cors-shop", ledger.KindMerchant, 0)
	code, err := e.op.Enroll(e.ctx, "cors-shop", RoleVendor, "acct.cors-shop")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := Register(e.ctx, e.op.Local(), nil, "cors-shop", RoleVendor, code)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVendor(e.ctx, db, cred, VendorConfig{Operator: e.op.Local(), Catalog: catalog, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	h := v.Handler()

	pre := httptest.NewRequest(http.MethodOptions, VendorPrefix+"pay", nil)
	pre.Header.Set("Origin", "https://wallet.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "content-type,idempotency-key")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, pre)
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "*" ||
		rec.Header().Get("Access-Control-Allow-Headers") != "Content-Type, Idempotency-Key" ||
		rec.Header().Get("Access-Control-Allow-Methods") != "GET, POST" {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	get := httptest.NewRequest(http.MethodGet, VendorPrefix+"info", nil)
	get.Header.Set("Origin", "https://wallet.example")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, get)
	if rec.Code != http.StatusOK || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("info: %d %v", rec.Code, rec.Header())
	}
	if rec.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Fatal("the vendor allows credentials cross-origin")
	}
	// A bad request still gets its problem, readable by the wallet.
	bad := httptest.NewRequest(http.MethodPost, VendorPrefix+"pay", nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, bad)
	if rec.Code < 400 || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("refusal: %d %v", rec.Code, rec.Header())
	}
}
