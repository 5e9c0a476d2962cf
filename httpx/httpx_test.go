package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type sample struct {
	From   string `json:"from"`
	Amount int64  `json:"amount"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, body, ctype string
		status            int
	}{
		{"ok", `{"from":"a","amount":5}`, "application/json", 0},
		{"ok charset", `{"from":"a"}`, "application/json; charset=utf-8", 0},
		{"no content type", `{"from":"a"}`, "", 0},
		{"empty", ``, "application/json", 400},
		{"malformed", `{"from":`, "application/json", 400},
		{"unknown field", `{"from":"a","admin":true}`, "application/json", 400},
		{"wrong type", `{"amount":"5"}`, "application/json", 400},
		{"overflow", `{"amount":99999999999999999999}`, "application/json", 400},
		{"trailing data", `{"from":"a"} {"from":"b"}`, "application/json", 400},
		{"too large", `{"from":"` + strings.Repeat("x", 2000) + `"}`, "application/json", 413},
		{"form", `from=a`, "application/x-www-form-urlencoded", 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			var v sample
			err := Decode(r, 1024, &v)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Status != tt.status {
				t.Fatalf("want status %d, got %v", tt.status, err)
			}
		})
	}
}

func TestWriteProblem(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteProblem(rec, httptest.NewRequest("GET", "/v1/x", nil), 422, "insufficient_funds", "not enough")
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q", ct)
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Status != 422 || p.Code != "insufficient_funds" || p.Instance != "/v1/x" || p.Title == "" || p.Type == "" {
		t.Fatalf("bad problem %+v", p)
	}
}

func TestIdempotencyKey(t *testing.T) {
	for _, tt := range []struct {
		key string
		ok  bool
	}{{"abc-123", true}, {"", false}, {"has space", false}, {strings.Repeat("k", 129), false}, {"ünicode", false}} {
		r := httptest.NewRequest("POST", "/", nil)
		if tt.key != "" {
			r.Header.Set(IdempotencyHeader, tt.key)
		}
		rec := httptest.NewRecorder()
		_, ok := IdempotencyKey(rec, r)
		if ok != tt.ok {
			t.Fatalf("key %q: ok=%v want %v", tt.key, ok, tt.ok)
		}
		if !ok && rec.Code != 400 {
			t.Fatalf("key %q: status %d", tt.key, rec.Code)
		}
	}
}

// FuzzDecode checks that no body makes Decode panic and that success implies
// a body within the limit.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"from":"a","amount":1}`, `{`, `[]`, `null`, `{"amount":1e400}`, `{"from":"\u0000"}`, "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		var v sample
		err := Decode(r, 512, &v)
		if err == nil && len(body) > 512 {
			t.Fatalf("accepted a %d-byte body over the 512-byte limit", len(body))
		}
		var de *DecodeError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("error is not a DecodeError: %v", err)
		}
	})
}
