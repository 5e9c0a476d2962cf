package ledger

import "github.com/qshield/qshield/sqldb"

const (
	accountCols  = `id, owner, kind, currency, allow_negative, balance, pending_debit, pending_credit, created_at`
	transferCols = `seq, id, idempotency_key, from_id, to_id, amount, currency, memo, pending, state, created_at, expires_at, resolved_at, posted_amount`
)

// queries holds every statement, rebound for the dialect once at Open.
type queries struct {
	insertAccount, account, accounts, lockAccounts string

	insertTransfer, transferByID, transferByIDLock, transferByKey string
	applyPosted, applyPending, applyResolve, setState             string
	expiredPending, expiredForAccount, history, total             string
	pgPosted, pgPending                                           string
	feedAfter, feedLatest                                         string
}

func newQueries(db *sqldb.DB) queries {
	forUpdate := ""
	if db.Dialect == sqldb.Postgres {
		forUpdate = " FOR UPDATE"
	}
	r := db.Rebind
	return queries{
		insertAccount: r(`INSERT INTO ledger_accounts (` + accountCols + `) VALUES (?, ?, ?, ?, ?, 0, 0, 0, ?) ON CONFLICT (id) DO NOTHING`),
		account:       r(`SELECT ` + accountCols + ` FROM ledger_accounts WHERE id = ?`),
		accounts:      r(`SELECT ` + accountCols + ` FROM ledger_accounts WHERE id > ? ORDER BY id LIMIT ?`),
		// ORDER BY id before FOR UPDATE: PostgreSQL locks rows in the order the
		// sort returns them, so every transaction locks accounts in ID order.
		lockAccounts: r(`SELECT ` + accountCols + ` FROM ledger_accounts WHERE id IN (?, ?) ORDER BY id` + forUpdate),

		insertTransfer: r(`INSERT INTO ledger_transfers (id, idempotency_key, from_id, to_id, amount, currency, memo, pending, state, created_at, expires_at, resolved_at, posted_amount)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0) ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq`),
		transferByID:     r(`SELECT ` + transferCols + ` FROM ledger_transfers WHERE id = ?`),
		transferByIDLock: r(`SELECT ` + transferCols + ` FROM ledger_transfers WHERE id = ?` + forUpdate),
		transferByKey:    r(`SELECT ` + transferCols + ` FROM ledger_transfers WHERE idempotency_key = ?`),
		// args: to, amount, -amount, from, to
		applyPosted: r(`UPDATE ledger_accounts SET balance = balance + CASE WHEN id = ? THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END WHERE id IN (?, ?)`),
		// args: from, amount, to, amount, from, to
		applyPending: r(`UPDATE ledger_accounts SET
			pending_debit = pending_debit + CASE WHEN id = ? THEN CAST(? AS BIGINT) ELSE 0 END,
			pending_credit = pending_credit + CASE WHEN id = ? THEN CAST(? AS BIGINT) ELSE 0 END
			WHERE id IN (?, ?)`),
		// args: to, posted, -posted, from, amount, to, amount, from, to
		applyResolve: r(`UPDATE ledger_accounts SET
			balance = balance + CASE WHEN id = ? THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END,
			pending_debit = pending_debit - CASE WHEN id = ? THEN CAST(? AS BIGINT) ELSE 0 END,
			pending_credit = pending_credit - CASE WHEN id = ? THEN CAST(? AS BIGINT) ELSE 0 END
			WHERE id IN (?, ?)`),
		setState: r(`UPDATE ledger_transfers SET state = ?, resolved_at = ?, posted_amount = ? WHERE id = ? AND state = 'pending'`),

		expiredPending:    r(`SELECT id FROM ledger_transfers WHERE state = 'pending' AND expires_at <= ? ORDER BY expires_at LIMIT ?`),
		expiredForAccount: r(`SELECT id FROM ledger_transfers WHERE state = 'pending' AND expires_at <= ? AND (from_id = ? OR to_id = ?) LIMIT 1000`),
		history: r(`SELECT ` + transferCols + ` FROM ledger_transfers WHERE seq IN (
			SELECT seq FROM (SELECT seq FROM ledger_transfers WHERE from_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?) f
			UNION ALL
			SELECT seq FROM (SELECT seq FROM ledger_transfers WHERE to_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?) t
		) ORDER BY seq DESC LIMIT ?`),
		feedAfter:  r(`SELECT ` + transferCols + ` FROM ledger_transfers WHERE seq > ? ORDER BY seq LIMIT ?`),
		feedLatest: r(`SELECT ` + transferCols + ` FROM ledger_transfers ORDER BY seq DESC LIMIT ?`),
		pgPosted:   pgTransferSQL(false),
		pgPending:  pgTransferSQL(true),
		total:      r(`SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT), COUNT(*) FROM ledger_accounts WHERE currency = ?`),
	}
}

type scanner interface{ Scan(dest ...any) error }

func scanAccount(s scanner) (Account, error) {
	var a Account
	var kind string
	var neg int64
	var created int64
	if err := s.Scan(&a.ID, &a.Owner, &kind, &a.Currency, &neg, &a.Balance, &a.PendingDebit, &a.PendingCredit, &created); err != nil {
		return Account{}, err
	}
	a.Kind = Kind(kind)
	a.AllowNegative = neg != 0
	a.CreatedAt = fromNanos(created)
	return a, nil
}

// record is a stored transfer plus the columns Transfer does not expose.
type record struct {
	Transfer
	seq     int64
	pending bool
}

func scanTransfer(s scanner) (record, error) {
	var r record
	var pending int64
	var state string
	var created, expires, resolved int64
	if err := s.Scan(&r.seq, &r.ID, &r.IdempotencyKey, &r.From, &r.To, &r.Amount, &r.Currency, &r.Memo,
		&pending, &state, &created, &expires, &resolved, &r.PostedAmount); err != nil {
		return record{}, err
	}
	r.pending = pending != 0
	r.State = State(state)
	r.CreatedAt = fromNanos(created)
	r.ExpiresAt = fromNanos(expires)
	r.ResolvedAt = fromNanos(resolved)
	return r, nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
