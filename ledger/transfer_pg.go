package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qshield/qshield/sqldb"
)

// On PostgreSQL a transfer is one pipelined batch of two statements in one
// implicit transaction: one round trip, and the account row locks are held
// only while the server runs the batch and commits. The first statement locks
// both accounts in ID order (SELECT … ORDER BY id FOR UPDATE). The second,
// which READ COMMITTED runs on a fresh snapshot taken once the locks are held,
// re-reads the rows, inserts the transfer only when every check passes, and
// updates the balances only when the insert happened (ON CONFLICT on the
// idempotency key inserts nothing). It returns the rows it checked, so a
// refusal is explained in Go. (A single statement doing both was tried: under
// contention it passed its checks on stale rows and only the CHECK
// constraint stopped an overdraft, so the lock is taken by its own statement.)
func pgTransferSQL(pending bool) string {
	maxB := strconv.FormatInt(MaxBalance, 10)
	limits := `f.balance >= $5 - ` + maxB + ` AND t.balance <= ` + maxB + ` - $5`
	update := `balance = a.balance + CASE WHEN a.id = $2 THEN $5 ELSE -$5 END`
	if pending {
		limits = `f.pending_debit <= ` + maxB + ` - $5 AND t.pending_credit <= ` + maxB + ` - $5`
		update = `pending_debit = a.pending_debit + CASE WHEN a.id = $1 THEN $5 ELSE 0 END,
			pending_credit = a.pending_credit + CASE WHEN a.id = $2 THEN $5 ELSE 0 END`
	}
	return `WITH acc AS MATERIALIZED (
		SELECT ` + accountCols + ` FROM ledger_accounts WHERE id IN ($1::text, $2::text) ORDER BY id FOR UPDATE
	),
	f AS (SELECT * FROM acc WHERE id = $1),
	t AS (SELECT * FROM acc WHERE id = $2),
	ins AS (
		INSERT INTO ledger_transfers (id, idempotency_key, from_id, to_id, amount, currency, memo, pending, state, created_at, expires_at, resolved_at, posted_amount)
		SELECT $3::text, $4::text, $1, $2, $5::bigint, $6::text, $7::text, $8::integer, $9::text, $10::bigint, $11::bigint, 0, 0
		FROM f, t
		WHERE f.currency = $6 AND t.currency = $6
			AND (f.allow_negative = 1 OR f.balance - f.pending_debit >= $5)
			AND ` + limits + `
		ON CONFLICT (idempotency_key) DO NOTHING
		RETURNING seq
	),
	upd AS (
		UPDATE ledger_accounts a SET ` + update + `
		FROM ins WHERE a.id IN ($1, $2)
		RETURNING a.id
	)
	SELECT (SELECT seq FROM ins), (SELECT COUNT(*) FROM upd),
		f.id, f.owner, f.kind, f.currency, f.allow_negative, f.balance, f.pending_debit, f.pending_credit, f.created_at,
		t.id, t.owner, t.kind, t.currency, t.allow_negative, t.balance, t.pending_debit, t.pending_credit, t.created_at
	FROM (SELECT 1) one LEFT JOIN f ON true LEFT JOIN t ON true`
}

// pgBatch sends the queries queued by build as one pipeline (one round trip,
// one implicit transaction, each statement with its own READ COMMITTED
// snapshot), reads the results with the returned function, and returns only
// once the transaction has committed (or failed).
func (l *Ledger) pgBatch(ctx context.Context, build func(*pgx.Batch) func(pgx.BatchResults) error) error {
	return l.db.WithPgx(ctx, func(pc *pgx.Conn) error {
		b := &pgx.Batch{}
		read := build(b)
		br := pc.SendBatch(ctx, b)
		rerr := read(br)
		// Close reads up to ReadyForQuery, i.e. past the commit.
		if cerr := br.Close(); cerr != nil {
			return cerr
		}
		return rerr
	})
}

// transferPG runs one transfer attempt on PostgreSQL.
func (l *Ledger) transferPG(ctx context.Context, req TransferRequest, now, exp time.Time, mayExpire bool) (Transfer, error) {
	state := StatePosted
	q := l.q.pgPosted
	if req.Pending {
		state, q = StatePending, l.q.pgPending
	}
	t := Transfer{
		ID: newID("tr_"), IdempotencyKey: req.IdempotencyKey, From: req.From, To: req.To,
		Amount: req.Amount, Currency: req.Currency, Memo: req.Memo, State: state,
		CreatedAt: now, ExpiresAt: exp,
	}
	var (
		seq                sql.NullInt64
		updated            int64
		fID, tID           sql.NullString
		fOwner, tOwner     sql.NullString
		fKind, tKind       sql.NullString
		fCur, tCur         sql.NullString
		fNeg, tNeg         sql.NullInt64
		fBal, tBal         sql.NullInt64
		fPD, tPD, fPC, tPC sql.NullInt64
		fCr, tCr           sql.NullInt64
	)
	// With auditing, a third statement of the same implicit transaction
	// queues the audit record if (and only if) the transfer row was inserted.
	var auditQ string
	var auditArgs []any
	if l.opts.audit != nil {
		sa, ok := l.opts.audit.(sqlAppender)
		if !ok {
			return l.transferPGTx(ctx, req, now, exp, mayExpire)
		}
		var err error
		auditQ, auditArgs, err = sa.AppendSQL(moneyEntry(ctx, EventTransfer, t, t.Amount),
			`EXISTS (SELECT 1 FROM ledger_transfers WHERE id = $8)`, t.ID)
		if err != nil {
			return Transfer{}, fmt.Errorf("ledger: audit transfer: %w", err)
		}
	}
	var err error
	for attempt := 0; ; attempt++ {
		err = l.pgBatch(ctx, func(b *pgx.Batch) func(pgx.BatchResults) error {
			b.Queue(l.q.lockAccounts, req.From, req.To)
			b.Queue(q, req.From, req.To, t.ID, t.IdempotencyKey, t.Amount, t.Currency, t.Memo,
				boolInt(req.Pending), string(state), nanos(now), nanos(exp))
			if auditQ != "" {
				b.Queue(auditQ, auditArgs...)
			}
			return func(br pgx.BatchResults) error {
				if _, err := br.Exec(); err != nil {
					return err
				}
				if err := br.QueryRow().Scan(&seq, &updated,
					&fID, &fOwner, &fKind, &fCur, &fNeg, &fBal, &fPD, &fPC, &fCr,
					&tID, &tOwner, &tKind, &tCur, &tNeg, &tBal, &tPD, &tPC, &tCr); err != nil {
					return err
				}
				if auditQ != "" {
					if _, err := br.Exec(); err != nil {
						return fmt.Errorf("audit: %w", err)
					}
				}
				return nil
			}
		})
		if err == nil || !sqldb.IsTransient(err) || attempt >= 9 {
			break
		}
		select {
		case <-ctx.Done():
			return Transfer{}, ctx.Err()
		case <-time.After(time.Duration(1<<attempt) * time.Millisecond):
		}
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: transfer: %w", err)
	}
	if seq.Valid {
		if updated != 2 {
			// Cannot happen: the statement is atomic and both rows were locked.
			return Transfer{}, fmt.Errorf("ledger: transfer %s updated %d account rows, want 2", t.ID, updated)
		}
		return t, nil
	}
	// Nothing inserted: a refusal, or the key is taken.
	first, ok, err := l.byKeyDB(ctx, req)
	if err != nil || ok {
		return first, err
	}
	from := Account{ID: fID.String, Currency: fCur.String, AllowNegative: fNeg.Int64 != 0, Balance: fBal.Int64, PendingDebit: fPD.Int64, PendingCredit: fPC.Int64}
	to := Account{ID: tID.String, Currency: tCur.String, AllowNegative: tNeg.Int64 != 0, Balance: tBal.Int64, PendingDebit: tPD.Int64, PendingCredit: tPC.Int64}
	switch {
	case !fID.Valid:
		return Transfer{}, fmt.Errorf("%w: %s", ErrAccountNotFound, req.From)
	case !tID.Valid:
		return Transfer{}, fmt.Errorf("%w: %s", ErrAccountNotFound, req.To)
	}
	if err := checkTransfer(req, from, to); err != nil {
		if errors.Is(err, ErrInsufficientFunds) && mayExpire && from.PendingDebit > 0 {
			return Transfer{}, errNeedExpiry
		}
		return Transfer{}, err
	}
	// The checks pass now although they failed under the lock (balances moved
	// in between): report the state seen under the lock as insufficient
	// funds would be wrong only if it was not; retrying is the caller's job.
	return Transfer{}, fmt.Errorf("ledger: transfer %s refused under lock, state changed; retry", req.IdempotencyKey)
}

// transferPGTx runs a transfer in an explicit transaction (for recorders
// that cannot join the pipeline).
func (l *Ledger) transferPGTx(ctx context.Context, req TransferRequest, now, exp time.Time, mayExpire bool) (Transfer, error) {
	var out Transfer
	err := l.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = l.transferTx(ctx, tx, req, now, exp, mayExpire)
		return err
	})
	return out, err
}

// checkTransfer applies the balance checks to the locked account rows.
func checkTransfer(req TransferRequest, from, to Account) error {
	amt := req.Amount
	if from.Currency != req.Currency || to.Currency != req.Currency {
		return fmt.Errorf("%w: transfer in %s between %s (%s) and %s (%s)",
			ErrCurrencyMismatch, req.Currency, from.ID, from.Currency, to.ID, to.Currency)
	}
	if !from.AllowNegative && from.Available() < amt {
		return fmt.Errorf("%w: %s has %d available, needs %d", ErrInsufficientFunds, from.ID, from.Available(), amt)
	}
	if req.Pending {
		if from.PendingDebit > MaxBalance-amt || to.PendingCredit > MaxBalance-amt {
			return fmt.Errorf("%w: pending total would exceed %d", ErrInvalidAmount, MaxBalance)
		}
	} else if from.Balance < amt-MaxBalance || to.Balance > MaxBalance-amt {
		return fmt.Errorf("%w: balance would leave ±%d", ErrInvalidAmount, MaxBalance)
	}
	return nil
}

// byKeyDB is byKey outside a transaction.
func (l *Ledger) byKeyDB(ctx context.Context, req TransferRequest) (Transfer, bool, error) {
	r, err := scanTransfer(l.db.QueryRowContext(ctx, l.q.transferByKey, req.IdempotencyKey))
	return replayOf(r, err, req)
}

func sameParams(r record, req TransferRequest) error {
	if r.From != req.From || r.To != req.To || r.Amount != req.Amount || r.Currency != req.Currency ||
		r.pending != req.Pending || r.Memo != req.Memo {
		return fmt.Errorf("%w: key %q belongs to transfer %s", ErrIdempotencyConflict, req.IdempotencyKey, r.ID)
	}
	return nil
}
