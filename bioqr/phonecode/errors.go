package phonecode

import "errors"

// Sentinel errors. Every refusal wraps exactly one of them, so callers (the
// HTTP layer, the CLI, the demo) can tell the attacks apart.
var (
	ErrMalformed          = errors.New("bioqr: malformed input")
	ErrDecrypt            = errors.New("bioqr: decryption failed")
	ErrBadSignature       = errors.New("bioqr: signature does not verify")
	ErrIllegalPOS         = errors.New("bioqr: illegal POS (certificate not from the CA, expired or revoked)")
	ErrIllegalPhone       = errors.New("bioqr: illegal phone (certificate not from the CA, expired, revoked or not enrolled)")
	ErrIllegalServer      = errors.New("bioqr: illegal settlement server credential")
	ErrExpired            = errors.New("bioqr: consumption QR expired")
	ErrRandCodeUnknown    = errors.New("bioqr: RandCode was not issued by this POS")
	ErrRandCodeUsed       = errors.New("bioqr: RandCode already used")
	ErrWrongPOS           = errors.New("bioqr: payment QR made for a different POS")
	ErrMismatch           = errors.New("bioqr: payment does not match the consumption QR")
	ErrNoFingerprint      = errors.New("bioqr: no fingerprint probe")
	ErrFingerprint        = errors.New("bioqr: fingerprint does not match the owner's")
	ErrLocked             = errors.New("bioqr: too many failed fingerprint attempts; phone locked for a while")
	ErrAccountNotEnrolled = errors.New("bioqr: paying account not enrolled for this phone")
	ErrInsufficientFunds  = errors.New("bioqr: insufficient funds")
	ErrWrongKey           = errors.New("bioqr: wrong PIN or key for the secure unit")
	ErrNotCertified       = errors.New("bioqr: secure unit holds no certificate yet")
	ErrExists             = errors.New("bioqr: already exists")
	ErrNotFound           = errors.New("bioqr: not found")
)
