package ledger

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"
)

const (
	maxIDLen    = 64
	maxKeyLen   = 128
	maxMemoLen  = 1024
	maxOwnerLen = 256
	maxExpiry   = 10 * 365 * 24 * time.Hour
)

// ValidAccountID reports whether id is a well-formed account ID: 1–64 bytes of
// [A-Za-z0-9._:-].
func ValidAccountID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidCurrency reports whether c looks like an ISO 4217 alphabetic code.
func ValidCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}

func validKey(k string) bool {
	if len(k) == 0 || len(k) > maxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func validText(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == 0 {
			return false
		}
	}
	return true
}

func validKind(k Kind) bool {
	switch k {
	case KindUser, KindMerchant, KindEscrow, KindSystem:
		return true
	}
	return false
}

func validateNewAccount(a NewAccount, idRequired bool) error {
	if a.ID == "" && idRequired {
		return fmt.Errorf("%w: ID required", ErrInvalidAccount)
	}
	if a.ID != "" && !ValidAccountID(a.ID) {
		return fmt.Errorf("%w: ID %q must be 1–64 bytes of [A-Za-z0-9._:-]", ErrInvalidAccount, a.ID)
	}
	if !validText(a.Owner, maxOwnerLen) {
		return fmt.Errorf("%w: owner must be valid UTF-8 of at most %d bytes without NUL", ErrInvalidAccount, maxOwnerLen)
	}
	if !validKind(a.Kind) {
		return fmt.Errorf("%w: kind %q (want user, merchant, escrow or system)", ErrInvalidAccount, a.Kind)
	}
	if !ValidCurrency(a.Currency) {
		return fmt.Errorf("%w: currency %q is not 3 uppercase letters", ErrInvalidAccount, a.Currency)
	}
	return nil
}

func validAmount(a int64) error {
	if a <= 0 {
		return fmt.Errorf("%w: %d is not positive", ErrInvalidAmount, a)
	}
	if a > MaxAmount {
		return fmt.Errorf("%w: %d exceeds the maximum %d", ErrInvalidAmount, a, MaxAmount)
	}
	return nil
}

// validateRequest checks req without touching the database and returns the
// expiry to store (zero for a posted transfer).
func validateRequest(req TransferRequest, now time.Time, defaultExpiry time.Duration) (time.Time, error) {
	if req.IdempotencyKey == "" {
		return time.Time{}, ErrMissingIdempotency
	}
	if !validKey(req.IdempotencyKey) {
		return time.Time{}, fmt.Errorf("%w: must be 1–%d printable ASCII bytes", ErrInvalidKey, maxKeyLen)
	}
	if !ValidAccountID(req.From) {
		return time.Time{}, fmt.Errorf("%w: from %q", ErrInvalidAccount, req.From)
	}
	if !ValidAccountID(req.To) {
		return time.Time{}, fmt.Errorf("%w: to %q", ErrInvalidAccount, req.To)
	}
	if req.From == req.To {
		return time.Time{}, ErrSameAccount
	}
	if err := validAmount(req.Amount); err != nil {
		return time.Time{}, err
	}
	if !ValidCurrency(req.Currency) {
		return time.Time{}, fmt.Errorf("%w: currency %q is not 3 uppercase letters", ErrCurrencyMismatch, req.Currency)
	}
	if !validText(req.Memo, maxMemoLen) {
		return time.Time{}, fmt.Errorf("%w: must be valid UTF-8 of at most %d bytes without NUL", ErrInvalidMemo, maxMemoLen)
	}
	if !req.Pending {
		if !req.ExpiresAt.IsZero() {
			return time.Time{}, fmt.Errorf("%w: only pending transfers expire", ErrInvalidExpiry)
		}
		return time.Time{}, nil
	}
	exp := req.ExpiresAt
	if exp.IsZero() {
		exp = now.Add(defaultExpiry)
	}
	if !exp.After(now) {
		return time.Time{}, fmt.Errorf("%w: %s is not in the future", ErrInvalidExpiry, exp.Format(time.RFC3339))
	}
	if exp.Sub(now) > maxExpiry {
		return time.Time{}, fmt.Errorf("%w: more than %s ahead", ErrInvalidExpiry, maxExpiry)
	}
	return exp.UTC(), nil
}

// newID returns prefix and 32 hex digits: a 48-bit millisecond timestamp
// then 80 random bits. The time prefix keeps new IDs at the end of the ID
// index (few pages dirtied per commit); the random part makes them
// unguessable.
func newID(prefix string) string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return prefix + hex.EncodeToString(b[:])
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
