package httpx_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestSQLStoreClaims: one claim per key; a different request under the key
// is a conflict; a live claim blocks; an expired claim is taken over and
// fences the old holder's Complete; a completed response is replayed.
func TestSQLStoreClaims(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		s, err := httpx.OpenSQLStore(ctx, db, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		h := httpx.Fingerprint("POST", "/v1/x", []byte(`{"a":1}`))
		stored, tok1, err := s.Begin(ctx, "alice", "k", h, time.Second)
		if err != nil || stored != nil || tok1 == nil {
			t.Fatalf("first claim: %v %v %v", stored, tok1, err)
		}
		if _, _, err := s.Begin(ctx, "alice", "k", h, time.Minute); !errors.Is(err, httpx.ErrIdempotencyInProgress) {
			t.Fatalf("live claim: %v", err)
		}
		if _, _, err := s.Begin(ctx, "alice", "k", httpx.Fingerprint("POST", "/v1/x", []byte(`{"a":2}`)), time.Minute); !errors.Is(err, httpx.ErrIdempotencyConflict) {
			t.Fatalf("other body: %v", err)
		}
		// Another caller's key space is separate.
		if _, tok, err := s.Begin(ctx, "bob", "k", h, time.Minute); err != nil || tok == nil {
			t.Fatalf("bob: %v", err)
		}
		time.Sleep(1100 * time.Millisecond) // the first holder's lease expires
		_, tok2, err := s.Begin(ctx, "alice", "k", h, time.Minute)
		if err != nil || tok2 == nil || bytes.Equal(tok1, tok2) {
			t.Fatalf("takeover: %v", err)
		}
		// The old holder wakes up: its response must not be stored.
		if err := s.Complete(ctx, "alice", "k", tok1, httpx.StoredResponse{Status: 500, Body: []byte("stale")}); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, "alice", "k", tok2, httpx.StoredResponse{Status: 422, ContentType: "application/problem+json", Body: []byte(`{"code":"insufficient_funds"}`)}); err != nil {
			t.Fatal(err)
		}
		stored, _, err = s.Begin(ctx, "alice", "k", h, time.Minute)
		if err != nil || stored == nil || stored.Status != 422 || string(stored.Body) != `{"code":"insufficient_funds"}` {
			t.Fatalf("replay: %+v %v", stored, err)
		}
		// A released claim frees the key at once.
		_, tok3, _ := s.Begin(ctx, "carol", "k", h, time.Minute)
		if err := s.Release(ctx, "carol", "k", tok3); err != nil {
			t.Fatal(err)
		}
		if _, tok, err := s.Begin(ctx, "carol", "k", h, time.Minute); err != nil || tok == nil {
			t.Fatalf("after release: %v", err)
		}
	})
}
