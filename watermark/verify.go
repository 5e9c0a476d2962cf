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
// T0: a copy of the store alone does not let anyone pay. It does hold the slot
// key K (the server must check stamps with it), so a copy of the store plus a
// recording of the code would defeat the time binding; protect it as a secret.
type Record struct {
	Handle    string    // T1
	Digest    [32]byte  // SHA-256(T0)
	SlotKey   []byte    // K, SlotKeyLen bytes
	Account   string    // the payer's account
	Limit     int64     // the most the payer agreed to pay with this code (minor units)
	IssuedAt  time.Time //
	ExpiresAt time.Time //
	UsedAt    time.Time // zero while unused
}

// Code is what the phone receives at issue: T0 and the slot key K.
type Code struct {
	Token   []byte
	SlotKey []byte
}

// Claim is what a scanner submits: the code's T1, the reconstructed T0, the
// stamps of the shares it read, and the amount to charge.
type Claim struct {
	Handle string
	Token  []byte
	Stamps []Stamp
	Amount int64
	// Scanner is the submitting scanner's authenticated name (its
	// certificate's common name, never a field of the request): the
	// stamps must be bound to its challenges when the verifier requires it.
	Scanner string
}

// Check decides claim c against the record at time now, without consuming
// anything: ErrWrongToken (T0 does not match), ErrExpired, ErrBadStamp or
// ErrStale (fewer than threshold fresh, authentic stamps: a replayed
// recording), ErrOverLimit (more than the payer agreed to). Whether the code
// was already used is the store's decision.
func (r Record) Check(c Claim, threshold int, now time.Time, w Window, b Binding) error {
	d := Digest(c.Token)
	if subtle.ConstantTimeCompare(d[:], r.Digest[:]) != 1 {
		return ErrWrongToken
	}
	if !now.Before(r.ExpiresAt) {
		return ErrExpired
	}
	if err := CheckStamps(r.SlotKey, r.Handle, threshold, c.Stamps, now, w, b); err != nil {
		return err
	}
	if c.Amount > r.Limit {
		return fmt.Errorf("%w: %d > %d", ErrOverLimit, c.Amount, r.Limit)
	}
	return nil
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
	// Check, when set, vets every drawn code before it is recorded: a code
	// it rejects is drawn afresh, at most maxDraws times in all
	// (ReadabilityCheck is the one the platform uses).
	Check func(c Code) error
}

// maxDraws bounds the codes Issue draws when Check rejects them: about one
// code in 250 fails ReadabilityCheck, so eight failures in a row mean the
// check itself is broken.
const maxDraws = 8

// Issue creates, records and returns a fresh code (T0 and its slot key) for
// account, limited to limit minor units (> 0), with its record.
func (is *Issuer) Issue(ctx context.Context, account string, limit int64) (Code, Record, error) {
	if account == "" {
		return Code{}, Record{}, fmt.Errorf("%w: empty account", ErrToken)
	}
	if limit <= 0 {
		return Code{}, Record{}, fmt.Errorf("%w: limit %d (must be positive)", ErrToken, limit)
	}
	n := is.TokenLen
	if n == 0 {
		n = 16
	}
	var t0, key []byte
	for draw := 1; ; draw++ {
		var err error
		if t0, err = NewToken(n, is.Rand); err != nil {
			return Code{}, Record{}, err
		}
		if key, err = NewSlotKey(is.Rand); err != nil {
			return Code{}, Record{}, err
		}
		if is.Check == nil {
			break
		}
		err = is.Check(Code{Token: t0, SlotKey: key})
		if err == nil {
			break
		}
		if draw == maxDraws {
			return Code{}, Record{}, fmt.Errorf("watermark: %d codes drawn, none passed the issuer's check: %w", draw, err)
		}
	}
	h, err := Handle(t0)
	if err != nil {
		return Code{}, Record{}, err
	}
	ttl := is.TTL
	if ttl <= 0 || ttl > MaxTTL {
		ttl = MaxTTL
	}
	now := nowFn(is.Now)()
	r := Record{Handle: h, Digest: Digest(t0), SlotKey: key, Account: account, Limit: limit, IssuedAt: now, ExpiresAt: now.Add(ttl)}
	if err := is.Store.Insert(ctx, r); err != nil {
		return Code{}, Record{}, fmt.Errorf("watermark: recording token: %w", err)
	}
	return Code{Token: t0, SlotKey: key}, r, nil
}

// Verifier checks tokens that scanners reconstructed.
type Verifier struct {
	Store     TokenStore
	Threshold int              // t; 0 means DefaultParams().Threshold
	Window    Window           // zero means DefaultWindow()
	Now       func() time.Time // nil means time.Now
	// ChallengeMaster, when set, is the platform's master challenge key:
	// every claim's stamps must then be bound to the challenge of the
	// scanner that submitted it (Claim.Scanner; see challenge.go).
	ChallengeMaster []byte
}

// Binding returns how stamps of a claim from scanner are checked.
func (v *Verifier) Binding(scanner string) (Binding, error) {
	return BindingFor(v.ChallengeMaster, scanner)
}

// BindingFor returns the Binding for claims from scanner under the
// platform's master challenge key (nil master: challenges not required).
func BindingFor(master []byte, scanner string) (Binding, error) {
	if master == nil {
		return Binding{}, nil
	}
	k, err := ScannerChallengeKey(master, scanner)
	if err != nil {
		return Binding{}, fmt.Errorf("%w: %v", ErrUnbound, err)
	}
	return Binding{ScannerKey: k, Require: true}, nil
}

// Verify accepts claim c at most once (see Record.Check) and returns the
// record (whose Account the caller then charges through the ledger). A
// refused claim does not consume the code, so a thief who only read T1, or
// who replays a recording too late, cannot burn the payer's code. Errors:
// ErrUnknownToken, those of Record.Check, ErrUsed.
func (v *Verifier) Verify(ctx context.Context, c Claim) (Record, error) {
	if err := ParseHandle(c.Handle); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrUnknownToken, err)
	}
	r, err := v.Store.Lookup(ctx, c.Handle)
	if err != nil {
		return Record{}, fmt.Errorf("watermark: looking up %s: %w", c.Handle, err)
	}
	now := nowFn(v.Now)()
	t := v.Threshold
	if t == 0 {
		t = DefaultParams().Threshold
	}
	w := v.Window
	if w == (Window{}) {
		w = DefaultWindow()
	}
	b, err := v.Binding(c.Scanner)
	if err != nil {
		return Record{}, err
	}
	if err := r.Check(c, t, now, w, b); err != nil {
		return Record{}, err
	}
	if !r.UsedAt.IsZero() {
		return Record{}, ErrUsed
	}
	if err := v.Store.MarkUsed(ctx, c.Handle, now); err != nil {
		return Record{}, fmt.Errorf("watermark: consuming %s: %w", c.Handle, err)
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
