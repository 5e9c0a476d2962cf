package ledger

import "github.com/qshield/qshield/sqldb"

// Times are stored as Unix nanoseconds (0 = none) and booleans as 0/1 so that
// both dialects share one schema and one set of queries. The CHECK constraints
// repeat the invariants the Go code enforces, as a second line of defence.
const accountsTable = `CREATE TABLE ledger_accounts (
	id TEXT PRIMARY KEY,
	owner TEXT NOT NULL,
	kind TEXT NOT NULL CHECK (kind IN ('user', 'merchant', 'escrow', 'system')),
	currency TEXT NOT NULL,
	allow_negative INTEGER NOT NULL CHECK (allow_negative IN (0, 1)),
	balance BIGINT NOT NULL DEFAULT 0,
	pending_debit BIGINT NOT NULL DEFAULT 0 CHECK (pending_debit >= 0),
	pending_credit BIGINT NOT NULL DEFAULT 0 CHECK (pending_credit >= 0),
	created_at BIGINT NOT NULL,
	CHECK (allow_negative = 1 OR balance - pending_debit >= 0)
)`

const transfersColumns = `
	id TEXT NOT NULL UNIQUE,
	idempotency_key TEXT NOT NULL UNIQUE,
	from_id TEXT NOT NULL REFERENCES ledger_accounts (id),
	to_id TEXT NOT NULL REFERENCES ledger_accounts (id),
	amount BIGINT NOT NULL CHECK (amount > 0),
	currency TEXT NOT NULL,
	memo TEXT NOT NULL,
	pending INTEGER NOT NULL CHECK (pending IN (0, 1)),
	state TEXT NOT NULL CHECK (state IN ('posted', 'pending', 'voided', 'expired')),
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	resolved_at BIGINT NOT NULL,
	posted_amount BIGINT NOT NULL,
	CHECK (from_id <> to_id),
	CHECK (posted_amount >= 0 AND posted_amount <= amount)
)`

const transfersIndexes = `;
CREATE INDEX ledger_transfers_from ON ledger_transfers (from_id, seq);
CREATE INDEX ledger_transfers_to ON ledger_transfers (to_id, seq);
CREATE INDEX ledger_transfers_pending ON ledger_transfers (expires_at) WHERE state = 'pending'`

var migrations = []sqldb.Migration{
	{
		Version: 1,
		// WITHOUT ROWID clusters accounts by ID: a transfer touches one
		// B-tree page per account instead of an index page and a table page.
		SQLite: accountsTable + ` WITHOUT ROWID;
CREATE TABLE ledger_transfers (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,` + transfersColumns + transfersIndexes,
		Postgres: accountsTable + `;
CREATE TABLE ledger_transfers (
	seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,` + transfersColumns + transfersIndexes,
	},
}
