package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestListAccountsPages(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		h, _ := newAPI(t, db)
		for _, limit := range []string{"1", "3", "500", ""} {
			var ids []string
			cursor, pages := "", 0
			for {
				path := "/v1/accounts?limit=" + limit
				if cursor != "" {
					path += "&cursor=" + url.QueryEscape(cursor)
				}
				rec := do(h, http.MethodGet, path, "", "", "")
				if rec.Code != http.StatusOK {
					t.Fatalf("limit %s: GET %s = %d %s", limit, path, rec.Code, rec.Body)
				}
				var p server.AccountPage
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
					t.Fatal(err)
				}
				for _, a := range p.Accounts {
					ids = append(ids, a.ID)
				}
				pages++
				if p.NextCursor == "" {
					break
				}
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
				cursor = p.NextCursor
			}
			want := []string{"alice", "bank", "shop", "yuan"}
			if len(ids) != len(want) {
				t.Fatalf("limit %s: listed %v, want %v", limit, ids, want)
			}
			for i := range want {
				if ids[i] != want[i] {
					t.Fatalf("limit %s: listed %v, want %v", limit, ids, want)
				}
			}
			if limit == "1" && pages != 4 {
				t.Errorf("limit 1: %d pages, want 4 (no empty last page)", pages)
			}
		}
	})
}

func TestListAccountsRejects(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	h, _ := newAPI(t, db)
	for _, tc := range []struct {
		query, code string
	}{
		{"limit=0", "invalid_limit"},
		{"limit=501", "invalid_limit"},
		{"limit=x", "invalid_limit"},
		{"cursor=%25%25", "invalid_cursor"},
		{"cursor=" + url.QueryEscape("a b"), "invalid_cursor"},
	} {
		rec := do(h, http.MethodGet, "/v1/accounts?"+tc.query, "", "", "")
		var p struct{ Code string }
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
		if rec.Code != http.StatusBadRequest || p.Code != tc.code {
			t.Errorf("?%s: %d %s, want 400 %s", tc.query, rec.Code, rec.Body, tc.code)
		}
	}
}

// TestListAccountsNeedsAdmin: the listing is behind the same check as every
// ledger route (a client certificate the platform's Authorize accepts).
func TestListAccountsNeedsAdmin(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	led, err := ledger.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	for _, tc := range []struct {
		api  *server.LedgerAPI
		want int
	}{
		{&server.LedgerAPI{Ledger: led, RequireClientCert: true}, http.StatusUnauthorized},
		{&server.LedgerAPI{Ledger: led, Authorize: func(*http.Request) bool { return false }}, http.StatusForbidden},
	} {
		s, err := server.New(server.Config{InsecureHTTP: true})
		if err != nil {
			t.Fatal(err)
		}
		tc.api.Register(s)
		if rec := do(s.Handler(), http.MethodGet, "/v1/accounts", "", "", ""); rec.Code != tc.want {
			t.Errorf("GET /v1/accounts = %d, want %d", rec.Code, tc.want)
		}
	}
}

// FuzzListAccountsQuery: any cursor and limit is either a page of accounts
// in ID order after the cursor, or a 400 problem; never a 500.
func FuzzListAccountsQuery(f *testing.F) {
	db := sqldbtest.Open(f, sqldbtest.Backends()[0])
	h, _ := newAPI(f, db)
	f.Add("", "2")
	f.Add("YWxpY2U", "1")
	f.Add("%%", "x")
	f.Add("AAAA", "500")
	f.Fuzz(func(t *testing.T, cursor, limit string) {
		rec := do(h, http.MethodGet, "/v1/accounts?cursor="+url.QueryEscape(cursor)+"&limit="+url.QueryEscape(limit), "", "", "")
		switch rec.Code {
		case http.StatusBadRequest:
			return
		case http.StatusOK:
		default:
			t.Fatalf("cursor %q limit %q: %d %s", cursor, limit, rec.Code, rec.Body)
		}
		var p server.AccountPage
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(p.Accounts); i++ {
			if p.Accounts[i-1].ID >= p.Accounts[i].ID {
				t.Fatalf("accounts out of order: %s, %s", p.Accounts[i-1].ID, p.Accounts[i].ID)
			}
		}
	})
}
