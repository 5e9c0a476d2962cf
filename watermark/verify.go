package watermark

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Errors of the issuing/verifying service.
var (
	ErrUnknownToken = errors.New("watermark: unknown payment code")
	ErrExpired      = errors.New("watermark: payment code expired")
	ErrUsed         = errors.New("watermark: payment code already used")
	ErrWrongToken   = errors.New("watermark: token does not match the payment code")
	ErrDuplicate    = errors.New("watermark: payment code already issued")
)

// MaxTTL is the longest validity of a T0 (the issue's 60 seconds).
const MaxTTL = 60 * time.Second

// Record is the server's record of an issued token. It stores SHA-256(T0), not
// T0: a copy of the store does not let anyone pay.
type Record struct {
	Handle    string    // T1
	Digest    [32]byte  // SHA-256(T0)
	Account   string    // the payer's account
	IssuedAt  time.Time //
	ExpiresAt time.Time //
	UsedAt    time.Time // zero while unused
}

// TokenStore keeps issued tokens. Implementations must make MarkUsed atomic:
// of two concurrent calls for one handle, exactly one succeeds.
type TokenStore interface {
	// Insert adds a record; ErrDuplicate if the handle exists.
	Insert(ctx context.Context, r Record) error
	// Lookup returns the record for handle; ErrUnknownToken if none.
	Lookup(ctx context.Context, handle string) (Record, error)
	// MarkUsed sets UsedAt if it is zero; ErrUsed if it was already set,
	// ErrUnknownToken if there is no such handle.
	MarkUsed(ctx context.Context, handle string, at time.Time) error
}

// MemStore is an in-memory TokenStore for tests and single-process demos.
type MemStore struct {
	mu sync.Mutex
	m  map[string]Record
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{m: map[string]Record{}} }

// Insert implements TokenStore.
func (s *MemStore) Insert(_ context.Context, r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[r.Handle]; ok {
		return fmt.Errorf("%w: %s", ErrDuplicate, r.Handle)
	}
	s.m[r.Handle] = r
	return nil
}

// Lookup implements TokenStore.
func (s *MemStore) Lookup(_ context.Context, handle string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[handle]
	if !ok {
		return Record{}, ErrUnknownToken
	}
	return r, nil
}

// MarkUsed implements TokenStore.
func (s *MemStore) MarkUsed(_ context.Context, handle string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[handle]
	if !ok {
		return ErrUnknownToken
	}
	if !r.UsedAt.IsZero() {
		return ErrUsed
	}
	r.UsedAt = at
	s.m[handle] = r
	return nil
}

// Issuer creates tokens for payers.
type Issuer struct {
	Store    TokenStore
	TokenLen int              // 16..32; 0 means 16
	TTL      time.Duration    // 0 means MaxTTL; capped at MaxTTL
	Now      func() time.Time // nil means time.Now
	Rand     io.Reader        // nil means crypto/rand
}

// Issue creates, records and returns a fresh T0 for account, with its record.
func (is *Issuer) Issue(ctx context.Context, account string) ([]byte, Record, error) {
	if account == "" {
		return nil, Record{}, fmt.Errorf("%w: empty account", ErrToken)
	}
	n := is.TokenLen
	if n == 0 {
		n = 16
	}
	t0, err := NewToken(n, is.Rand)
	if err != nil {
		return nil, Record{}, err
	}
	h, err := Handle(t0)
	if err != nil {
		return nil, Record{}, err
	}
	ttl := is.TTL
	if ttl <= 0 || ttl > MaxTTL {
		ttl = MaxTTL
	}
	now := nowFn(is.Now)()
	r := Record{Handle: h, Digest: Digest(t0), Account: account, IssuedAt: now, ExpiresAt: now.Add(ttl)}
	if err := is.Store.Insert(ctx, r); err != nil {
		return nil, Record{}, fmt.Errorf("watermark: recording token: %w", err)
	}
	return t0, r, nil
}

// Verifier checks tokens that scanners reconstructed.
type Verifier struct {
	Store TokenStore
	Now   func() time.Time // nil means time.Now
}

// Verify accepts t0 for handle at most once, before expiry, and returns the
// record (whose Account the caller then charges through the ledger). A wrong
// t0 does not consume the code, so a thief who only read T1 cannot burn the
// payer's code. Errors: ErrUnknownToken, ErrExpired, ErrWrongToken, ErrUsed.
func (v *Verifier) Verify(ctx context.Context, handle string, t0 []byte) (Record, error) {
	if err := ParseHandle(handle); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrUnknownToken, err)
	}
	r, err := v.Store.Lookup(ctx, handle)
	if err != nil {
		return Record{}, fmt.Errorf("watermark: looking up %s: %w", handle, err)
	}
	now := nowFn(v.Now)()
	if !now.Before(r.ExpiresAt) {
		return Record{}, ErrExpired
	}
	d := Digest(t0)
	if subtle.ConstantTimeCompare(d[:], r.Digest[:]) != 1 {
		return Record{}, ErrWrongToken
	}
	if !r.UsedAt.IsZero() {
		return Record{}, ErrUsed
	}
	if err := v.Store.MarkUsed(ctx, handle, now); err != nil {
		return Record{}, fmt.Errorf("watermark: consuming %s: %w", handle, err)
	}
	r.UsedAt = now
	return r, nil
}

func nowFn(f func() time.Time) func() time.Time {
	if f == nil {
		return time.Now
	}
	return f
}
