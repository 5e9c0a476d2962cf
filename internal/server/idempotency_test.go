package server_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func countAccounts(t testing.TB, db *sqldb.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM ledger_accounts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func accountID(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var a ledger.Account
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || a.ID == "" {
		t.Fatalf("account body %s (%v)", rec.Body, err)
	}
	return a.ID
}

// TestAccountIdempotencyKey: POST /v1/accounts with one Idempotency-Key
// makes one account (it made two), replays the first answer, refuses the
// key with another body, and still makes no second account when the stored
// answer was lost (crash between commit and store).
func TestAccountIdempotencyKey(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		env := newOpsAPI(t, db, server.Config{})
		before := countAccounts(t, db)
		body := `{"owner":"carol","kind":"user","currency":"EUR"}`
		first := do(env.h, "POST", "/v1/accounts", "acct-1", "application/json", body)
		if first.Code != 201 {
			t.Fatalf("first: %d %s", first.Code, first.Body)
		}
		again := do(env.h, "POST", "/v1/accounts", "acct-1", "application/json", body)
		if again.Code != 200 || again.Header().Get(httpx.ReplayedHeader) != "true" || accountID(t, again) != accountID(t, first) {
			t.Fatalf("replay: %d %v %s", again.Code, again.Header(), again.Body)
		}
		if other := do(env.h, "POST", "/v1/accounts", "acct-1", "application/json", `{"owner":"dave","kind":"user","currency":"EUR"}`); other.Code != 409 || !strings.Contains(other.Body.String(), "idempotency_conflict") {
			t.Fatalf("other body: %d %s", other.Code, other.Body)
		}
		if _, err := db.ExecContext(context.Background(), `DELETE FROM httpx_idempotency`); err != nil {
			t.Fatal(err)
		}
		lost := do(env.h, "POST", "/v1/accounts", "acct-1", "application/json", body)
		if lost.Code != 201 || accountID(t, lost) != accountID(t, first) {
			t.Fatalf("after the stored answer was lost: %d %s", lost.Code, lost.Body)
		}
		if n := countAccounts(t, db); n != before+1 {
			t.Fatalf("%d accounts made with one key", n-before)
		}
	})
}

// TestConcurrentSameKey: requests racing with one key make one account.
func TestConcurrentSameKey(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		env := newOpsAPI(t, db, server.Config{})
		before := countAccounts(t, db)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec := do(env.h, "POST", "/v1/accounts", "race", "application/json", `{"owner":"erin","kind":"user","currency":"EUR"}`)
				switch {
				case rec.Code == 201, rec.Code == 200:
				case rec.Code == 409 && strings.Contains(rec.Body.String(), "idempotency_in_progress") && rec.Header().Get("Retry-After") != "":
				default:
					t.Errorf("%d %s", rec.Code, rec.Body)
				}
			}()
		}
		wg.Wait()
		if n := countAccounts(t, db); n != before+1 {
			t.Fatalf("%d accounts made with one key", n-before)
		}
	})
}

// TestRefusalReplays: a 422 is stored with the key, so a stale redelivery
// after funds arrived is refused again instead of moving money (it succeeded).
func TestRefusalReplays(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		env := newOpsAPI(t, db, server.Config{})
		first := transfer(env.h, "big", 5000)
		if first.Code != 422 {
			t.Fatalf("first: %d %s", first.Code, first.Body)
		}
		if _, err := env.led.Transfer(context.Background(), ledger.TransferRequest{IdempotencyKey: "topup", From: "bank", To: "alice", Amount: 10000, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		again := transfer(env.h, "big", 5000)
		if again.Code != 422 || again.Header().Get(httpx.ReplayedHeader) != "true" || again.Body.String() != first.Body.String() {
			t.Fatalf("redelivery: %d %s", again.Code, again.Body)
		}
		if a, _ := env.led.Account(context.Background(), "alice"); a.Balance != 11000 {
			t.Fatalf("alice has %d, want 11000", a.Balance)
		}
	})
}

// TestPostVoidKeysUsed: /post and /void use their required key: a retry
// replays the first answer, and the key reused for another operation is a
// conflict (the key was read and thrown away).
func TestPostVoidKeysUsed(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		env := newOpsAPI(t, db, server.Config{})
		pending := func(key string) string {
			rec := do(env.h, "POST", "/v1/transfers", key, "application/json", `{"from":"alice","to":"shop","amount":10,"currency":"EUR","pending":true}`)
			if rec.Code != 201 {
				t.Fatalf("pending: %d %s", rec.Code, rec.Body)
			}
			return accountID(t, rec) // the transfer's ID
		}
		for _, op := range []string{"post", "void"} {
			id := pending("p-" + op)
			first := do(env.h, "POST", "/v1/transfers/"+id+"/"+op, op+"-key", "", "")
			if first.Code != 200 {
				t.Fatalf("%s: %d %s", op, first.Code, first.Body)
			}
			again := do(env.h, "POST", "/v1/transfers/"+id+"/"+op, op+"-key", "", "")
			if again.Code != 200 || again.Header().Get(httpx.ReplayedHeader) != "true" || again.Body.String() != first.Body.String() {
				t.Fatalf("%s retry: %d %s", op, again.Code, again.Body)
			}
			// The key names this operation: reusing it on another transfer is a conflict.
			other := pending("q-" + op)
			if rec := do(env.h, "POST", "/v1/transfers/"+other+"/"+op, op+"-key", "", ""); rec.Code != 409 || !strings.Contains(rec.Body.String(), "idempotency_conflict") {
				t.Fatalf("%s key reused on another transfer: %d %s", op, rec.Code, rec.Body)
			}
		}
	})
}

// TestCrashedClaimTakenOver: a key claimed by a request whose node died
// (claim never completed nor renewed) is taken over by the retry once the
// claim lapses, instead of answering 409 until a long lease ran out (the
// SIGKILL test in cmd/qshield caught that).
func TestCrashedClaimTakenOver(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		env := newOpsAPI(t, db, server.Config{})
		ctx := context.Background()
		other, err := httpx.OpenSQLStore(ctx, db, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		body := `{"from":"alice","to":"shop","amount":3,"currency":"EUR"}`
		if _, tok, err := other.Begin(ctx, "", "crashed", httpx.Fingerprint("POST", "/v1/transfers", []byte(body)), 300*time.Millisecond); err != nil || tok == nil {
			t.Fatalf("claim: %v", err)
		}
		start := time.Now()
		rec := transfer(env.h, "crashed", 3)
		if rec.Code != 201 {
			t.Fatalf("retry after the holder died: %d %s", rec.Code, rec.Body)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("took over a live claim after %v", d)
		}
	})
}
