package ledger

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
)

// TxTransfer is one transfer of a TransfersTx batch: the request, the
// context its audit record takes its actor from (audit.WithActor; nil: the
// batch's), and, once TransfersTx returns nil, its outcome.
type TxTransfer struct {
	Ctx     context.Context
	Request TransferRequest

	Transfer Transfer
	Err      error
}

// TransfersTx is TransferTx for many transfers at once: a scheme that
// group-commits its own payments (a claim per payment, then the money)
// records all their transfers inside its transaction tx with a few
// statements instead of several per transfer. The transfers are decided in
// order, as if TransferTx had run for each one after the other, by the same
// set-based batch as concurrent Transfer calls (batch.go): each gets the
// Transfer or the error TransferTx would have returned (a replay of its
// idempotency key returns the first transfer; a refused or invalid transfer
// writes nothing). The audit records of the accepted transfers are appended
// in one write.
//
// tx must be a write transaction on the ledger's database, as for
// TransferTx (on PostgreSQL the accounts are locked FOR UPDATE in ID order).
// A non-nil error means tx must be rolled back: the outcomes are then not
// set.
func (l *Ledger) TransfersTx(ctx context.Context, tx *sql.Tx, ts []TxTransfer) error {
	now := l.now()
	jobs := make([]*xfer, 0, len(ts))
	idx := make([]int, 0, len(ts))
	errs := make([]error, len(ts))
	for i := range ts {
		c := ts[i].Ctx
		if c == nil {
			c = ctx
		}
		exp, err := validateRequest(ts[i].Request, now, l.opts.defaultExpiry)
		if err != nil {
			errs[i] = err
			continue
		}
		jobs = append(jobs, &xfer{ctx: c, req: ts[i].Request, now: now, exp: exp})
		idx = append(idx, i)
	}
	if len(jobs) > 0 {
		var entries []audit.Entry
		var err error
		if l.db.Dialect == sqldb.SQLite {
			entries, err = l.runTransfersSQLite(ctx, tx, jobs)
		} else {
			entries, err = l.runTransfersPGTx(ctx, tx, jobs)
		}
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			if ba, ok := l.opts.audit.(bulkSQLAppender); ok && l.db.Dialect == sqldb.Postgres {
				q, args, err := ba.AppendAllSQL(entries)
				if err == nil {
					_, err = tx.ExecContext(ctx, q, args...)
				}
				if err != nil {
					return fmt.Errorf("ledger: batch: audit: %w", err)
				}
			} else if err := l.recordAll(ctx, tx, entries); err != nil {
				return fmt.Errorf("ledger: batch: audit: %w", err)
			}
		}
	}
	for i := range ts {
		ts[i].Transfer, ts[i].Err = Transfer{}, errs[i]
	}
	for k, j := range jobs {
		ts[idx[k]].Transfer, ts[idx[k]].Err = j.out, j.err
	}
	return nil
}

// runTransfersPGTx is runTransfersSQLite on PostgreSQL through database/sql:
// lock the accounts in ID order and read the stored keys, decide in Go,
// insert and update with one statement each. It returns the audit entries
// to append.
func (l *Ledger) runTransfersPGTx(ctx context.Context, tx *sql.Tx, jobs []*xfer) ([]audit.Entry, error) {
	p, err := l.planBatchTx(ctx, tx, jobs)
	if err != nil || len(p.accepted) == 0 {
		return nil, err
	}
	ins, upd := p.pgArgs()
	res, err := tx.ExecContext(ctx, pgBatchInsert, ins...)
	if err = checkRows(res, err, len(p.accepted)); err != nil {
		return nil, fmt.Errorf("ledger: batch: record transfers: %w", err)
	}
	res, err = tx.ExecContext(ctx, pgBatchUpdate, upd...)
	if err = checkRows(res, err, len(p.dirty)); err != nil {
		return nil, fmt.Errorf("ledger: batch: update balances: %w", err)
	}
	if l.opts.audit == nil {
		return nil, nil
	}
	return p.auditEntries(), nil
}
