package httpx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Idempotency makes POST endpoints safe to retry, the way payment APIs do
// it: the first request carrying an Idempotency-Key claims the key, runs,
// and its response — success or refusal — is stored; a later request with
// the same key and the same method, path and body gets the stored response
// again (with Idempotent-Replayed: true) without running the handler.
//
// The rules (documented for clients in docs/API.md):
//   - A key is scoped to the caller (RequestInfo's principal) and lives for
//     TTL (24 h by default).
//   - The same key with a different method, path or body is 409
//     idempotency_conflict.
//   - While the first request runs, a second one with the key waits for its
//     outcome (up to Lease) and replays it; only if the first is still
//     running after that is it 409 idempotency_in_progress with Retry-After: 1.
//   - Stored: every 2xx and every refusal a retry would repeat (409, 422,
//     404 …). Not stored, so that a retry runs again: 400, 401, 403, 408,
//     413, 415, 429 (the request was not accepted for execution) and every
//     5xx (the server failed; a retry is the way out of doubt).
//   - A replayed 201 Created is answered 200 OK (with the same body and
//     Location), so a client can tell a replay from a first creation.
//   - A claim lasts Lease and is renewed every Lease/3 while the handler
//     runs. If the node dies, the claim lapses within Lease and a retry (on
//     any node) runs the handler again. Handlers therefore still make their
//     effect idempotent in their own transaction (the ledger keys transfers;
//     accounts get an ID derived from the key), so the re-run finds the
//     first run's effect.
type Idempotency struct {
	Store IdempotencyStore
	// Lease is how long a claim lasts without renewal (default 3 s); the
	// claim is renewed every Lease/3 while the handler runs.
	Lease time.Duration
	// MaxBody bounds the request body read for the fingerprint (default MaxBody).
	MaxBody int64
}

// IdempotencyStore keeps claims and stored responses. Implementations must
// make Begin atomic across processes sharing the store.
type IdempotencyStore interface {
	// Begin claims (scope, key) for a request with fingerprint hash. It
	// returns the stored response when there is one (claimed false), or a
	// claim token (claimed true), or ErrIdempotencyInProgress /
	// ErrIdempotencyConflict.
	Begin(ctx context.Context, scope, key string, hash []byte, lease time.Duration) (stored *StoredResponse, token []byte, err error)
	// Complete stores the response under a claim; it does nothing if the
	// claim was lost (expired and taken over).
	Complete(ctx context.Context, scope, key string, token []byte, resp StoredResponse) error
	// Release gives up a claim without storing anything.
	Release(ctx context.Context, scope, key string, token []byte) error
	// Extend renews a claim for lease from now (nothing if it was lost).
	Extend(ctx context.Context, scope, key string, token []byte, lease time.Duration) error
}

// StoredResponse is a response kept for replay.
type StoredResponse struct {
	Status      int
	ContentType string
	Location    string
	Body        []byte
}

// Errors of IdempotencyStore.Begin.
var (
	ErrIdempotencyInProgress = errors.New("httpx: a request with this Idempotency-Key is still running")
	ErrIdempotencyConflict   = errors.New("httpx: Idempotency-Key reused with a different request")
)

// ReplayedHeader marks a response served from the idempotency store.
const ReplayedHeader = "Idempotent-Replayed"

// storable reports whether a response with status is kept for replay.
func storable(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout,
		http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusTooManyRequests:
		return false
	}
	return status >= 200 && status < 500
}

// Fingerprint is the hash a key's request is identified by: method, path
// and body.
func Fingerprint(method, path string, body []byte) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", method, path, len(body))
	h.Write(body)
	return h.Sum(nil)
}

// Wrap returns next behind the idempotency rules. With required, a request
// without an Idempotency-Key is refused (400); otherwise it runs unprotected.
func (m *Idempotency) Wrap(required bool, next http.Handler) http.Handler {
	lease := m.Lease
	if lease <= 0 {
		lease = 3 * time.Second
	}
	maxBody := m.MaxBody
	if maxBody <= 0 {
		maxBody = MaxBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(IdempotencyHeader) == "" && !required {
			next.ServeHTTP(w, r)
			return
		}
		key, ok := IdempotencyKey(w, r)
		if !ok {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				WriteProblem(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body larger than %d bytes", maxBody))
				return
			}
			WriteProblem(w, r, http.StatusBadRequest, "malformed_body", "cannot read the request body")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		scope := ""
		if ri := RequestInfoFrom(r.Context()); ri != nil {
			scope = ri.Principal()
		}
		hash := Fingerprint(r.Method, r.URL.Path, body)
		stored, token, err := m.Store.Begin(r.Context(), scope, key, hash, lease)
		// Another request holds the key: wait for its outcome, or for its
		// claim to lapse (its node died), for up to a lease and a bit.
		wait, deadline := 20*time.Millisecond, time.Now().Add(lease+lease/4)
		for errors.Is(err, ErrIdempotencyInProgress) && time.Now().Before(deadline) {
			select {
			case <-r.Context().Done():
				WriteError(w, r, r.Context().Err())
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 250*time.Millisecond)
			stored, token, err = m.Store.Begin(r.Context(), scope, key, hash, lease)
		}
		switch {
		case errors.Is(err, ErrIdempotencyConflict):
			WriteProblem(w, r, http.StatusConflict, "idempotency_conflict", "this Idempotency-Key was used with a different request")
			return
		case errors.Is(err, ErrIdempotencyInProgress):
			w.Header().Set("Retry-After", "1")
			WriteProblem(w, r, http.StatusConflict, "idempotency_in_progress", "a request with this Idempotency-Key is still running; retry shortly")
			return
		case err != nil:
			WriteError(w, r, fmt.Errorf("httpx: idempotency claim: %w", err))
			return
		case stored != nil:
			replay(w, *stored)
			return
		}
		stopRenew := make(chan struct{})
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			t := time.NewTicker(lease / 3)
			defer t.Stop()
			for {
				select {
				case <-stopRenew:
					return
				case <-t.C:
					if err := m.Store.Extend(context.WithoutCancel(r.Context()), scope, key, token, lease); err != nil {
						Logger(r.Context()).Warn("idempotency: claim not renewed", "key", key, "err", err)
					}
				}
			}
		}()
		defer func() { close(stopRenew); <-renewed }()
		rec := &recorder{ResponseWriter: w}
		completed := false
		defer func() {
			if !completed {
				// The handler panicked: let a retry run it again.
				_ = m.Store.Release(context.WithoutCancel(r.Context()), scope, key, token)
			}
		}()
		next.ServeHTTP(rec, r)
		completed = true
		ctx := context.WithoutCancel(r.Context())
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if storable(rec.status) && !rec.overflow {
			resp := StoredResponse{Status: rec.status, ContentType: rec.Header().Get("Content-Type"), Location: rec.Header().Get("Location"), Body: rec.buf.Bytes()}
			if err := m.Store.Complete(ctx, scope, key, token, resp); err != nil {
				// The client has its answer; a retry after the lease runs
				// the handler again, which is idempotent on its own.
				Logger(ctx).Warn("idempotency: response not stored", "key", key, "err", err)
			}
			return
		}
		if err := m.Store.Release(ctx, scope, key, token); err != nil {
			Logger(ctx).Warn("idempotency: claim not released", "key", key, "err", err)
		}
	})
}

func replay(w http.ResponseWriter, s StoredResponse) {
	status := s.Status
	if status == http.StatusCreated {
		status = http.StatusOK
	}
	if s.ContentType != "" {
		w.Header().Set("Content-Type", s.ContentType)
	}
	if s.Location != "" {
		w.Header().Set("Location", s.Location)
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set(ReplayedHeader, "true")
	w.Header().Set("Content-Length", strconv.Itoa(len(s.Body)))
	w.WriteHeader(status)
	_, _ = w.Write(s.Body)
}

// maxStored bounds a stored response body; larger responses are not stored.
const maxStored = 1 << 20

type recorder struct {
	http.ResponseWriter
	status   int
	buf      bytes.Buffer
	overflow bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.buf.Len()+len(b) <= maxStored {
		r.buf.Write(b)
	} else {
		r.overflow = true
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush passes flushes through (streaming handlers type-assert http.Flusher).
func (r *recorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }

// equalHash compares fingerprints in constant time.
func equalHash(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
