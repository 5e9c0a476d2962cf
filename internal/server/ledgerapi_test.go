package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func newAPI(t testing.TB, db *sqldb.DB) (http.Handler, *ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	alog, err := audit.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, db, ledger.WithAudit(alog))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test did through the API, ledger and audit trail agree.
		rep, err := led.Reconcile(ctx, alog)
		if err != nil || !rep.OK {
			t.Errorf("reconcile after the test: %+v %v", rep, err)
		}
		led.Close()
	})
	s, err := server.New(server.Config{InsecureHTTP: true, MaxBody: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	store, err := httpx.OpenSQLStore(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	(&server.LedgerAPI{Ledger: led, Idempotency: &httpx.Idempotency{Store: store}}).Register(s)
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "EUR", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "EUR"},
		{ID: "shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "EUR"},
		{ID: "yuan", Owner: "y", Kind: ledger.KindUser, Currency: "CNY"},
	} {
		if _, err := led.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := led.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "fund", From: "bank", To: "alice", Amount: 1000, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	return s.Handler(), led
}

type snapshot map[string]int64

func snap(t testing.TB, db *sqldb.DB, led *ledger.Ledger) snapshot {
	t.Helper()
	s := snapshot{}
	for _, id := range []string{"bank", "alice", "shop", "yuan"} {
		a, err := led.Account(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		s[id] = a.Balance
		s[id+".pending"] = a.PendingDebit
	}
	var n int64
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM ledger_transfers`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	s["transfers"] = n
	return s
}

func do(h http.Handler, method, path, key, ctype, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	if key != "" {
		r.Header.Set(httpx.IdempotencyHeader, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// TestBadInputChangesNothing sends every kind of bad request and checks the
// 4xx problem response and that no balance or transfer changed.
func TestBadInputChangesNothing(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		h, led := newAPI(t, db)
		if rec := do(h, "POST", "/v1/transfers", "k1", "application/json", `{"from":"alice","to":"shop","amount":100,"currency":"EUR"}`); rec.Code != 201 {
			t.Fatalf("setup transfer: %d %s", rec.Code, rec.Body)
		}
		before := snap(t, db, led)
		tests := []struct {
			name, method, path, key, ctype, body string
			status                               int
			code                                 string
		}{
			{"malformed json", "POST", "/v1/transfers", "b1", "application/json", `{"from":"alice",`, 400, "malformed_json"},
			{"unknown field", "POST", "/v1/transfers", "b2", "application/json", `{"from":"alice","to":"shop","amount":1,"currency":"EUR","admin":1}`, 400, "malformed_json"},
			{"oversized body", "POST", "/v1/transfers", "b3", "application/json", `{"memo":"` + strings.Repeat("x", 20000) + `"}`, 413, "body_too_large"},
			{"wrong content type", "POST", "/v1/transfers", "b4", "text/plain", `{}`, 415, "unsupported_media_type"},
			{"no idempotency key", "POST", "/v1/transfers", "", "application/json", `{"from":"alice","to":"shop","amount":1,"currency":"EUR"}`, 400, "idempotency_key_required"},
			{"unknown from", "POST", "/v1/transfers", "b5", "application/json", `{"from":"mallory","to":"shop","amount":1,"currency":"EUR"}`, 404, "account_not_found"},
			{"unknown to", "POST", "/v1/transfers", "b6", "application/json", `{"from":"alice","to":"nobody","amount":1,"currency":"EUR"}`, 404, "account_not_found"},
			{"wrong currency", "POST", "/v1/transfers", "b7", "application/json", `{"from":"alice","to":"shop","amount":1,"currency":"CNY"}`, 422, "currency_mismatch"},
			{"cross-currency accounts", "POST", "/v1/transfers", "b8", "application/json", `{"from":"alice","to":"yuan","amount":1,"currency":"EUR"}`, 422, "currency_mismatch"},
			{"zero amount", "POST", "/v1/transfers", "b9", "application/json", `{"from":"alice","to":"shop","amount":0,"currency":"EUR"}`, 422, "invalid_amount"},
			{"negative amount", "POST", "/v1/transfers", "b10", "application/json", `{"from":"alice","to":"shop","amount":-1,"currency":"EUR"}`, 422, "invalid_amount"},
			{"overflowing amount", "POST", "/v1/transfers", "b11", "application/json", `{"from":"alice","to":"shop","amount":9223372036854775807,"currency":"EUR"}`, 422, "invalid_amount"},
			{"amount beyond int64", "POST", "/v1/transfers", "b12", "application/json", `{"from":"alice","to":"shop","amount":92233720368547758070,"currency":"EUR"}`, 400, "malformed_json"},
			{"fractional amount", "POST", "/v1/transfers", "b13", "application/json", `{"from":"alice","to":"shop","amount":1.5,"currency":"EUR"}`, 400, "malformed_json"},
			{"overdraft", "POST", "/v1/transfers", "b14", "application/json", `{"from":"alice","to":"shop","amount":100000,"currency":"EUR"}`, 422, "insufficient_funds"},
			{"same account", "POST", "/v1/transfers", "b15", "application/json", `{"from":"alice","to":"alice","amount":1,"currency":"EUR"}`, 422, "same_account"},
			{"conflicting idempotency key", "POST", "/v1/transfers", "k1", "application/json", `{"from":"alice","to":"shop","amount":101,"currency":"EUR"}`, 409, "idempotency_conflict"},
			{"bad idempotency key", "POST", "/v1/transfers", "has space", "application/json", `{}`, 400, "invalid_idempotency_key"},
			{"post unknown transfer", "POST", "/v1/transfers/nope/post", "b16", "", ``, 404, "transfer_not_found"},
			{"void posted transfer", "POST", "/v1/transfers/" + mustTransferID(t, led, "k1") + "/void", "b17", "", ``, 409, "not_pending"},
			{"bad history limit", "GET", "/v1/accounts/alice/transfers?limit=0", "", "", ``, 400, "invalid_limit"},
			{"unknown account", "GET", "/v1/accounts/mallory", "", "", ``, 404, "account_not_found"},
			{"bad account id", "POST", "/v1/accounts", "", "application/json", `{"id":"bad id!","owner":"x","kind":"user","currency":"EUR"}`, 400, "invalid_account"},
			{"bad kind", "POST", "/v1/accounts", "", "application/json", `{"owner":"x","kind":"god","currency":"EUR"}`, 400, "invalid_account"},
			{"duplicate account", "POST", "/v1/accounts", "", "application/json", `{"id":"alice","owner":"x","kind":"user","currency":"EUR"}`, 409, "account_exists"},
			{"unknown route", "GET", "/v1/nothing", "", "", ``, 404, "not_found"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rec := do(h, tt.method, tt.path, tt.key, tt.ctype, tt.body)
				if rec.Code != tt.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("content type %q", ct)
				}
				var p httpx.Problem
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code != tt.code {
					t.Fatalf("problem %s, want code %s (%v)", rec.Body, tt.code, err)
				}
				if after := snap(t, db, led); !equal(before, after) {
					t.Fatalf("state changed: %v → %v", before, after)
				}
			})
		}
		// The replay of k1 with identical parameters returns the same transfer.
		rec := do(h, "POST", "/v1/transfers", "k1", "application/json", `{"from":"alice","to":"shop","amount":100,"currency":"EUR"}`)
		if rec.Code != 200 || rec.Header().Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay: %d %s", rec.Code, rec.Body)
		}
		if after := snap(t, db, led); !equal(before, after) {
			t.Fatalf("replay changed state: %v → %v", before, after)
		}
	})
}

func mustTransferID(t testing.TB, led *ledger.Ledger, key string) string {
	tr, err := led.TransferByKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tr.ID
}

func equal(a, b snapshot) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// FuzzTransferRequest posts arbitrary bodies and keys: the server never
// answers 5xx, and a refused request changes nothing.
func FuzzTransferRequest(f *testing.F) {
	f.Add("k", `{"from":"alice","to":"shop","amount":1,"currency":"EUR"}`)
	f.Add("k", `{"from":"alice","to":"shop","amount":-1,"currency":"EUR"}`)
	f.Add("", `{`)
	f.Add("x", `{"from":"alice","to":"shop","amount":1,"currency":"EUR","pending":true,"expires_at":"2000-01-01T00:00:00Z"}`)
	db := sqldbtestOpen(f)
	h, led := newAPI(f, db)
	f.Fuzz(func(t *testing.T, key, body string) {
		before := snap(t, db, led)
		rec := do(h, "POST", "/v1/transfers", key, "application/json", body)
		if rec.Code >= 500 {
			t.Fatalf("status %d for key %q body %q: %s", rec.Code, key, body, rec.Body)
		}
		if rec.Code >= 400 {
			if after := snap(t, db, led); !equal(before, after) {
				t.Fatalf("refused request changed state: %v → %v", before, after)
			}
		}
	})
}

func sqldbtestOpen(f *testing.F) *sqldb.DB {
	return sqldbtest.Open(f, sqldbtest.Backends()[0])
}
