package ledger

import (
	"errors"
	"time"
)

// Kind is what an account is for.
type Kind string

const (
	KindUser     Kind = "user"
	KindMerchant Kind = "merchant"
	KindEscrow   Kind = "escrow"
	KindSystem   Kind = "system"
)

// NewAccount describes an account to open.
type NewAccount struct {
	// ID is optional: when empty the ledger generates one. IDs are 1–64 bytes
	// of [A-Za-z0-9._:-].
	ID       string
	Owner    string
	Kind     Kind
	Currency string // ISO 4217 alphabetic code, e.g. "CNY", "EUR"
	// AllowNegative lets the balance go below zero (system and issuing
	// accounts). By default an account is protected: its available balance
	// (posted balance minus pending debits) never goes below zero.
	AllowNegative bool
}

// Account is an account with its balances in integer minor units.
type Account struct {
	ID            string    `json:"id"`
	Owner         string    `json:"owner"`
	Kind          Kind      `json:"kind"`
	Currency      string    `json:"currency"`
	AllowNegative bool      `json:"allow_negative"`
	Balance       int64     `json:"balance"`        // posted
	PendingDebit  int64     `json:"pending_debit"`  // reserved by pending outgoing transfers
	PendingCredit int64     `json:"pending_credit"` // announced by pending incoming transfers
	CreatedAt     time.Time `json:"created_at"`
}

// Available is the balance that can still be spent.
func (a Account) Available() int64 { return a.Balance - a.PendingDebit }

// State is where a transfer is in its life.
type State string

const (
	StatePosted  State = "posted"
	StatePending State = "pending"
	StateVoided  State = "voided"
	StateExpired State = "expired"
)

// TransferRequest asks for money to move From → To.
type TransferRequest struct {
	// IdempotencyKey is required: the same key with the same parameters returns
	// the first result; with different parameters it is ErrIdempotencyConflict.
	IdempotencyKey string
	From, To       string
	Amount         int64  // minor units, > 0
	Currency       string // must equal both accounts' currency
	Memo           string
	// Pending makes a two-phase transfer: the amount is reserved on From until
	// Post or Void, or until it expires at ExpiresAt (zero: a default of 24 h).
	Pending   bool
	ExpiresAt time.Time
}

// Transfer is a recorded transfer.
type Transfer struct {
	ID             string    `json:"id"`
	IdempotencyKey string    `json:"idempotency_key"`
	From           string    `json:"from"`
	To             string    `json:"to"`
	Amount         int64     `json:"amount"`
	Currency       string    `json:"currency"`
	Memo           string    `json:"memo,omitempty"`
	State          State     `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
	ResolvedAt     time.Time `json:"resolved_at,omitzero"`
	// PostedAmount is what a pending transfer posted (≤ Amount).
	PostedAmount int64 `json:"posted_amount,omitempty"`
	// Replayed reports that the request repeated an earlier one with the
	// same idempotency key, whose transfer this is (set by Transfer and
	// TransferTx; not stored).
	Replayed bool `json:"-"`
}

// Errors returned by the ledger; test with errors.Is.
var (
	ErrInvalidAccount      = errors.New("ledger: invalid account")
	ErrAccountExists       = errors.New("ledger: account already exists")
	ErrAccountNotFound     = errors.New("ledger: account not found")
	ErrInvalidAmount       = errors.New("ledger: invalid amount")
	ErrCurrencyMismatch    = errors.New("ledger: currency mismatch")
	ErrSameAccount         = errors.New("ledger: from and to are the same account")
	ErrInsufficientFunds   = errors.New("ledger: insufficient funds")
	ErrIdempotencyConflict = errors.New("ledger: idempotency key reused with different parameters")
	ErrMissingIdempotency  = errors.New("ledger: idempotency key required")
	ErrTransferNotFound    = errors.New("ledger: transfer not found")
	ErrNotPending          = errors.New("ledger: transfer is not pending")
	ErrExpired             = errors.New("ledger: pending transfer expired")
)
