package httpx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var errBroke = errors.New("broke")

var testCodes = NewRegistry(
	Code{Code: "broke", Status: http.StatusConflict, Message: "It broke.", Err: errBroke},
)

func TestClientRoundTrip(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ok", func(w http.ResponseWriter, r *http.Request) {
		var in sample
		if !DecodeOrProblem(w, r, 0, &in) {
			return
		}
		if r.Header.Get(IdempotencyHeader) != "k1" {
			WriteProblem(w, r, 400, "idempotency_key_required", "no key")
			return
		}
		WriteJSON(w, http.StatusCreated, sample{From: in.From + "!", Amount: in.Amount * 2})
	})
	mux.HandleFunc("GET /empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /broke", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		testCodes.Write(w, r, fmt.Errorf("step 3: %w", errBroke))
	})
	mux.HandleFunc("GET /secret", func(w http.ResponseWriter, r *http.Request) {
		testCodes.Write(w, r, errors.New("db password is hunter2"))
	})
	mux.HandleFunc("GET /html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`"` + strings.Repeat("x", 200) + `"`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := NewClient(srv.URL+"/", srv.Client())
	c.Codes = testCodes
	ctx := context.Background()

	var out sample
	st, err := c.Do(ctx, http.MethodPost, "/ok", Idempotent("k1"), sample{From: "a", Amount: 21}, &out)
	if err != nil || st != http.StatusCreated || out != (sample{From: "a!", Amount: 42}) {
		t.Fatalf("ok: %d %+v %v", st, out, err)
	}
	if _, err := c.Do(ctx, http.MethodGet, "/empty", nil, nil, &out); err != nil {
		t.Fatalf("204: %v", err)
	}

	_, err = c.Do(ctx, http.MethodGet, "/broke", nil, nil, nil)
	var he *Error
	if !errors.Is(err, errBroke) || !errors.As(err, &he) {
		t.Fatalf("broke: %v does not map back to its sentinel", err)
	}
	if he.Code != "broke" || he.Status != http.StatusConflict || he.Detail != "step 3: broke" || he.Title != "It broke." || he.RetryAfter != 7*time.Second {
		t.Fatalf("broke: %+v", he)
	}
	if ProblemCode(err) != "broke" {
		t.Fatalf("ProblemCode = %q", ProblemCode(err))
	}

	_, err = c.Do(ctx, http.MethodGet, "/secret", nil, nil, nil)
	if !errors.As(err, &he) || he.Code != CodeInternal || he.Status != 500 || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("internal error leaked or mis-coded: %v", err)
	}

	_, err = c.Do(ctx, http.MethodGet, "/html", nil, nil, nil)
	if !errors.As(err, &he) || he.Code != "http_502" || he.Status != 502 || !strings.Contains(he.Detail, "bad gateway") || he.RetryAfter < 59*time.Minute {
		t.Fatalf("non-problem answer: %+v (%v)", he, err)
	}

	c.MaxResponse = 100
	var s string
	if _, err := c.Do(ctx, http.MethodGet, "/big", nil, nil, &s); err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Fatalf("oversized response: %v", err)
	}
	c.MaxResponse = 1000
	if _, err := c.Do(ctx, http.MethodGet, "/big", nil, nil, &s); err != nil || len(s) != 200 {
		t.Fatalf("response within the limit: %v", err)
	}

	c.DecodeError = func(status int, _ http.Header, body []byte) error { return fmt.Errorf("custom %d", status) }
	if _, err := c.Do(ctx, http.MethodGet, "/broke", nil, nil, nil); err == nil || err.Error() != "custom 409" {
		t.Fatalf("DecodeError hook: %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"120", 2 * time.Minute}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"99999999999999999999", 0},
	} {
		if got := ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRegistry(t *testing.T) {
	r := testCodes
	if c := r.CodeOf(fmt.Errorf("x: %w", errBroke)); c != "broke" {
		t.Errorf("CodeOf(broke) = %q", c)
	}
	if c := r.CodeOf(context.Canceled); c != CodeCancelled {
		t.Errorf("CodeOf(cancelled) = %q", c)
	}
	if c := r.CodeOf(errors.New("?")); c != CodeInternal {
		t.Errorf("CodeOf(unknown) = %q", c)
	}
	if r.Sentinel("broke") != errBroke || r.Sentinel("nope") != nil || (*Registry)(nil).Sentinel("broke") != nil {
		t.Error("Sentinel")
	}
	rec := httptest.NewRecorder()
	r.WriteCode(rec, httptest.NewRequest("GET", "/x", nil), "no_such_code", "secret detail")
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("WriteCode(unknown) = %d %s", rec.Code, rec.Body)
	}
	for _, bad := range [][]Code{
		{{Code: "broke", Status: 400, Message: "It broke."}, {Code: "broke", Status: 409, Message: "It broke."}},
		{{Code: "internal", Status: 500, Message: "other words"}},
		{{Code: "x", Status: 200, Message: "m"}},
		{{Code: "x", Status: 400}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewRegistry(%v) did not panic", bad)
				}
			}()
			NewRegistry(bad...)
		}()
	}
	// Several sentinels may share one code.
	e1, e2 := errors.New("1"), errors.New("2")
	r2 := NewRegistry(Code{Code: "same", Status: 409, Message: "m", Err: e1}, Code{Code: "same", Status: 409, Message: "m", Err: e2})
	if r2.CodeOf(e2) != "same" || r2.Sentinel("same") != e1 {
		t.Error("shared code")
	}
}
