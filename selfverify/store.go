//go:build !wasm

package selfverify

import (
	"context"
	"database/sql"

	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/sqldb"
)

// Ledger is the part of the money ledger the operator uses (*ledger.Ledger).
type Ledger interface {
	EnsureAccount(ctx context.Context, na ledger.NewAccount) (ledger.Account, error)
	Account(ctx context.Context, id string) (ledger.Account, error)
	// TransferTx moves money inside the operator's transaction, so the
	// token's state change, the transfer and the audit record commit together.
	TransferTx(ctx context.Context, tx *sql.Tx, req ledger.TransferRequest) (ledger.Transfer, error)
}

// AuditEvent is one security-relevant event.
type AuditEvent struct {
	Actor    string
	Event    string
	Outcome  string // "success", "denied", "failure"
	Resource string
	Details  map[string]any
}

// operatorMigrations are the operator's tables (component "selfverify").
// Binary values are stored as hex text and times as Unix milliseconds so that
// one schema serves SQLite and PostgreSQL.
var operatorMigrations = []sqldb.Migration{{
	Version: 1,
	SQL: `
CREATE TABLE sv_operator_key (
	id INTEGER PRIMARY KEY,
	curve TEXT NOT NULL,
	d TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE sv_enrollments (
	id TEXT PRIMARY KEY,
	role TEXT NOT NULL,
	account TEXT NOT NULL,
	code_hash TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	used_at BIGINT
);
CREATE TABLE sv_identities (
	id TEXT PRIMARY KEY,
	role TEXT NOT NULL,
	account TEXT NOT NULL,
	currency TEXT NOT NULL,
	p TEXT NOT NULL,
	registered_at BIGINT NOT NULL
);
CREATE TABLE sv_withdrawals (
	nonce TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	digest TEXT NOT NULL,
	serial TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE sv_tokens (
	serial TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	account TEXT NOT NULL,
	currency TEXT NOT NULL,
	w BIGINT NOT NULL,
	reserved BIGINT NOT NULL DEFAULT 0,
	settled BIGINT NOT NULL DEFAULT 0,
	refunded BIGINT NOT NULL DEFAULT 0,
	token_key TEXT NOT NULL,
	token_json TEXT NOT NULL,
	issued_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	closed_at BIGINT,
	state TEXT NOT NULL,
	escrow_transfer TEXT,
	refund_transfer TEXT,
	CHECK (reserved >= 0 AND reserved <= w),
	CHECK (settled >= 0 AND settled <= reserved)
);
CREATE INDEX sv_tokens_state ON sv_tokens (state, expires_at);
CREATE TABLE sv_reservations (
	ref TEXT PRIMARY KEY,
	serial TEXT NOT NULL,
	vendor TEXT NOT NULL,
	amount BIGINT NOT NULL,
	state TEXT NOT NULL,
	deposit_id TEXT,
	confirmation_id TEXT,
	created_at BIGINT NOT NULL
);
CREATE INDEX sv_reservations_serial ON sv_reservations (serial, state);
CREATE TABLE sv_deposits (
	id TEXT PRIMARY KEY,
	vendor TEXT NOT NULL,
	nonce TEXT NOT NULL UNIQUE,
	digest TEXT NOT NULL,
	rejected TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE sv_confirmations (
	id TEXT PRIMARY KEY,
	deposit_id TEXT NOT NULL,
	serial TEXT NOT NULL,
	vendor TEXT NOT NULL,
	amount BIGINT NOT NULL,
	ciphertext TEXT NOT NULL,
	deadline BIGINT NOT NULL,
	state TEXT NOT NULL,
	transfer_id TEXT,
	decided_at BIGINT
);
CREATE INDEX sv_confirmations_serial ON sv_confirmations (serial, state);
CREATE INDEX sv_confirmations_state ON sv_confirmations (state, deadline)`,
}}

// vendorMigrations are a vendor's own tables (component "selfverify-vendor").
// They hold no identifier of any user: only token serials, token keys and the
// current chain key of each session.
var vendorMigrations = []sqldb.Migration{{
	Version: 1,
	SQL: `
CREATE TABLE sv_vendor_identity (
	id TEXT PRIMARY KEY,
	curve TEXT NOT NULL,
	d TEXT NOT NULL,
	p TEXT NOT NULL,
	q_n TEXT NOT NULL,
	currency TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE sv_vendor_sessions (
	session TEXT PRIMARY KEY,
	vendor TEXT NOT NULL,
	serial TEXT NOT NULL,
	token_json TEXT NOT NULL,
	w BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	spent BIGINT NOT NULL,
	seq BIGINT NOT NULL,
	chain_key TEXT NOT NULL,
	last_digest TEXT NOT NULL,
	last_response TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE INDEX sv_vendor_sessions_serial ON sv_vendor_sessions (serial);
CREATE TABLE sv_vendor_payments (
	ref TEXT PRIMARY KEY,
	vendor TEXT NOT NULL,
	session TEXT NOT NULL,
	serial TEXT NOT NULL,
	seq BIGINT NOT NULL,
	item TEXT NOT NULL,
	price BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	deposit_id TEXT,
	deposit_state TEXT
);
CREATE INDEX sv_vendor_payments_deposit ON sv_vendor_payments (vendor, deposit_id)`,
}}
