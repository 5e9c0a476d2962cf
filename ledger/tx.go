package ledger

import (
	"context"
	"database/sql"
)

// TransferTx records a posted or pending transfer inside the caller's
// transaction tx, so that a scheme can record its own state (a spent key, a
// claimed token) and move the money atomically: both commit, or neither.
//
// tx must be a write transaction on the ledger's own database: on SQLite one
// begun IMMEDIATE (as every sqldb transaction is), so that it holds the write
// lock; on PostgreSQL the account rows are locked FOR UPDATE in ID order, as
// in Transfer. The caller commits, and must treat the transfer as done only
// after the commit. Validation, idempotency and the overdraft rules are those
// of Transfer; a refused transfer writes nothing, so the caller may still
// commit its other changes.
func (l *Ledger) TransferTx(ctx context.Context, tx *sql.Tx, req TransferRequest) (Transfer, error) {
	now := l.now()
	exp, err := validateRequest(req, now, l.opts.defaultExpiry)
	if err != nil {
		return Transfer{}, err
	}
	return l.transferTx(ctx, tx, req, now, exp, false)
}
