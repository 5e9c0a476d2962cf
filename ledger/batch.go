package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/sqldb"
)

// Set-based transfer batches. Concurrent Transfer calls are decided
// together, in the order they were taken, as if they ran one after the
// other, and written with a few statements per batch instead of several per
// transfer:
//
//  1. read every account the batch names, and every transfer already stored
//     under one of its idempotency keys, holding the write lock (SQLite's
//     BEGIN IMMEDIATE) or the account rows' locks (PostgreSQL: FOR UPDATE in
//     ID order, one statement);
//  2. decide each transfer in Go, in order, against the balances left by
//     the transfers before it (plan): a replay or a conflict of its key
//     (stored or earlier in the batch), a missing account, a refusal by the
//     same checks as a single transfer (checkTransfer), or acceptance, which
//     moves the money in memory;
//  3. insert every accepted transfer with one statement, write each touched
//     account's new balances with one statement, append the audit records,
//     and commit once.
//
// A refused or replayed transfer writes nothing, so no savepoint is needed;
// if a batch statement fails anyway (which the checks make impossible short
// of a bug or a concurrent writer outside the ledger), the whole batch is
// rolled back and its transfers are retried one by one on the single-transfer
// path, whose outcome is the reference. The CHECK constraints of the schema
// remain the second line of defence on the final balances.

// xfer is one transfer waiting in a batch.
type xfer struct {
	ctx       context.Context
	req       TransferRequest
	now, exp  time.Time
	mayExpire bool

	out Transfer
	err error
	ack chan struct{} // closed by a PostgreSQL batcher once out and err are set
}

// accountState is an account row being changed by a batch.
type accountState struct {
	Account
	dirty bool
}

// batchPlan is the outcome of plan: the accepted transfers in order and the
// accounts whose balances changed.
type batchPlan struct {
	accepted []*xfer
	dirty    []*accountState
}

// plan decides every job of a batch in order (see above). accts holds the
// account rows the batch names (missing ones do not exist); stored the
// transfers already recorded under the batch's keys.
func plan(jobs []*xfer, accts map[string]*accountState, stored map[string]record) batchPlan {
	var p batchPlan
	seen := make(map[string]record, len(jobs))
	for _, j := range jobs {
		req := j.req
		j.out, j.err = Transfer{}, nil
		r, ok := seen[req.IdempotencyKey]
		if !ok {
			r, ok = stored[req.IdempotencyKey]
		}
		if ok {
			t, _, err := replayOf(r, nil, req)
			j.out, j.err = t, err
			continue
		}
		from, to := accts[req.From], accts[req.To]
		switch {
		case from == nil:
			j.err = fmt.Errorf("%w: %s", ErrAccountNotFound, req.From)
			continue
		case to == nil:
			j.err = fmt.Errorf("%w: %s", ErrAccountNotFound, req.To)
			continue
		}
		if err := checkTransfer(req, from.Account, to.Account); err != nil {
			if errors.Is(err, ErrInsufficientFunds) && j.mayExpire && from.PendingDebit > 0 {
				err = errNeedExpiry
			}
			j.err = err
			continue
		}
		state := StatePosted
		if req.Pending {
			state = StatePending
			from.PendingDebit += req.Amount
			to.PendingCredit += req.Amount
		} else {
			from.Balance -= req.Amount
			to.Balance += req.Amount
		}
		for _, a := range []*accountState{from, to} {
			if !a.dirty {
				a.dirty = true
				p.dirty = append(p.dirty, a)
			}
		}
		j.out = Transfer{
			ID: newID("tr_"), IdempotencyKey: req.IdempotencyKey, From: req.From, To: req.To,
			Amount: req.Amount, Currency: req.Currency, Memo: req.Memo, State: state,
			CreatedAt: j.now, ExpiresAt: j.exp,
		}
		seen[req.IdempotencyKey] = record{Transfer: j.out, pending: req.Pending}
		p.accepted = append(p.accepted, j)
	}
	return p
}

// xferContext is the context of x's caller (for sqldb.BatchContext).
func xferContext(x *xfer) context.Context { return x.ctx }

// batchIDs returns the distinct account IDs and idempotency keys of jobs.
func batchIDs(jobs []*xfer) (ids, keys []string) {
	seenID := make(map[string]bool, 2*len(jobs))
	seenKey := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		for _, id := range []string{j.req.From, j.req.To} {
			if !seenID[id] {
				seenID[id] = true
				ids = append(ids, id)
			}
		}
		if !seenKey[j.req.IdempotencyKey] {
			seenKey[j.req.IdempotencyKey] = true
			keys = append(keys, j.req.IdempotencyKey)
		}
	}
	return ids, keys
}

// auditEntries returns the audit records of the accepted transfers.
func (p batchPlan) auditEntries() []audit.Entry {
	out := make([]audit.Entry, len(p.accepted))
	for i, j := range p.accepted {
		out[i] = moneyEntry(j.ctx, EventTransfer, j.out, j.out.Amount)
	}
	return out
}

// SQLite statements of a batch. The account IDs and keys travel as one
// JSON text each (json_each), so those statements are prepared once whatever
// the batch size; the rows to write are bound as parameters of multi-row
// VALUES statements prepared for a few chunk sizes (no JSON to parse per
// value).
const (
	sqliteBatchAccounts = `SELECT ` + accountCols + ` FROM ledger_accounts WHERE id IN (SELECT value FROM json_each(?))`
	sqliteBatchKeys     = `SELECT ` + transferCols + ` FROM ledger_transfers WHERE idempotency_key IN (SELECT value FROM json_each(?))`
)

// batchChunks are the row counts of the prepared multi-row statements,
// largest first; the last must be 1.
var batchChunks = []int{32, 8, 1}

// sqliteInsertSQL inserts n transfers (11 parameters each, in the order of
// insertTransfer); sqliteUpdateSQL sets the balances of n accounts (id,
// balance, pending_debit, pending_credit each).
func sqliteInsertSQL(n int) string {
	return `INSERT INTO ledger_transfers (id, idempotency_key, from_id, to_id, amount, currency, memo, pending, state, created_at, expires_at, resolved_at, posted_amount) VALUES ` +
		repeatRow(`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)`, n)
}

func sqliteUpdateSQL(n int) string {
	return `WITH v (id, b, pd, pc) AS (VALUES ` + repeatRow(`(?, ?, ?, ?)`, n) + `)
		UPDATE ledger_accounts SET balance = v.b, pending_debit = v.pd, pending_credit = v.pc
		FROM v WHERE ledger_accounts.id = v.id`
}

func repeatRow(row string, n int) string {
	b := make([]byte, 0, n*(len(row)+2))
	for i := range n {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, row...)
	}
	return string(b)
}

// batchSQL holds the chunked statements, built once.
type batchSQL struct {
	insert, update map[int]string
}

func newBatchSQL() batchSQL {
	b := batchSQL{insert: map[int]string{}, update: map[int]string{}}
	for _, n := range batchChunks {
		b.insert[n] = sqliteInsertSQL(n)
		b.update[n] = sqliteUpdateSQL(n)
	}
	return b
}

// execChunked runs the statement of stmts for rows, in chunks of the
// prepared sizes, and checks that every row changed exactly one row.
func (l *Ledger) execChunked(ctx context.Context, tx *sql.Tx, stmts map[int]string, rows [][]any) error {
	for len(rows) > 0 {
		n := 1
		for _, c := range batchChunks {
			if c <= len(rows) {
				n = c
				break
			}
		}
		args := make([]any, 0, n*len(rows[0]))
		for _, r := range rows[:n] {
			args = append(args, r...)
		}
		res, err := l.exec(ctx, tx, stmts[n], args...)
		if err = checkRows(res, err, n); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// runTransfersSQLite runs jobs as one set-based batch inside tx (which holds
// SQLite's write lock) and returns the audit entries to append before the
// commit. A non-nil error means tx must be rolled back: nothing of the batch
// may be kept, and the jobs' outcomes are not set.
func (l *Ledger) runTransfersSQLite(ctx context.Context, tx *sql.Tx, jobs []*xfer) ([]audit.Entry, error) {
	p, err := l.planBatchTx(ctx, tx, jobs)
	if err != nil || len(p.accepted) == 0 {
		return nil, err
	}
	ins := make([][]any, len(p.accepted))
	for i, j := range p.accepted {
		t := j.out
		ins[i] = []any{t.ID, t.IdempotencyKey, t.From, t.To, t.Amount, t.Currency, t.Memo,
			boolInt(j.req.Pending), string(t.State), nanos(t.CreatedAt), nanos(t.ExpiresAt)}
	}
	if err := l.execChunked(ctx, tx, l.bsql.insert, ins); err != nil {
		return nil, fmt.Errorf("ledger: batch: record transfers: %w", err)
	}
	upd := make([][]any, len(p.dirty))
	for i, a := range p.dirty {
		upd[i] = []any{a.ID, a.Balance, a.PendingDebit, a.PendingCredit}
	}
	if err := l.execChunked(ctx, tx, l.bsql.update, upd); err != nil {
		return nil, fmt.Errorf("ledger: batch: update balances: %w", err)
	}
	if l.opts.audit == nil {
		return nil, nil
	}
	return p.auditEntries(), nil
}

// batchRows is what the batch reads need of *sql.Rows and pgx.Rows.
type batchRows interface {
	Next() bool
	Scan(dest ...any) error
}

// readAccounts adds the account rows of rows to accts, readStored the
// transfer rows to stored (by idempotency key). The caller closes rows.
func readAccounts(rows batchRows, accts map[string]*accountState) error {
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return err
		}
		accts[a.ID] = &accountState{Account: a}
	}
	return nil
}

func readStored(rows batchRows, stored map[string]record) error {
	for rows.Next() {
		r, err := scanTransfer(rows)
		if err != nil {
			return err
		}
		stored[r.IdempotencyKey] = r
	}
	return nil
}

// planBatchTx reads what a batch of transfers needs inside tx (through
// database/sql) — the accounts the jobs name, locked in ID order on
// PostgreSQL (on SQLite the transaction holds the write lock), and the
// transfers already stored under their keys — and decides the jobs (plan).
func (l *Ledger) planBatchTx(ctx context.Context, tx *sql.Tx, jobs []*xfer) (batchPlan, error) {
	ids, keys := batchIDs(jobs)
	var accountsQ, keysQ, what string
	var idsArg, keysArg any
	if l.db.Dialect == sqldb.SQLite {
		// The lists travel as JSON text (json_each).
		accountsQ, keysQ, what = sqliteBatchAccounts, sqliteBatchKeys, "read accounts"
		idsJSON, err := json.Marshal(ids)
		if err != nil {
			return batchPlan{}, err
		}
		keysJSON, err := json.Marshal(keys)
		if err != nil {
			return batchPlan{}, err
		}
		idsArg, keysArg = string(idsJSON), string(keysJSON)
	} else {
		accountsQ, keysQ, what = pgBatchAccounts, pgBatchKeys, "lock accounts"
		idsArg, keysArg = ids, keys
	}
	accts := make(map[string]*accountState, len(ids))
	rows, err := l.query(ctx, tx, accountsQ, idsArg)
	if err == nil {
		err = readAccounts(rows, accts)
		if cerr := closeRows(rows); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return batchPlan{}, fmt.Errorf("ledger: batch: %s: %w", what, err)
	}
	stored := make(map[string]record)
	rows, err = l.query(ctx, tx, keysQ, keysArg)
	if err == nil {
		err = readStored(rows, stored)
		if cerr := closeRows(rows); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return batchPlan{}, fmt.Errorf("ledger: batch: look up idempotency keys: %w", err)
	}
	return plan(jobs, accts, stored), nil
}

func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkRows checks that a statement changed exactly want rows.
func checkRows(res sql.Result, err error, want int) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != int64(want) {
		return fmt.Errorf("changed %d rows, want %d", n, want)
	}
	return nil
}

// PostgreSQL statements of a batch: lists travel as arrays.
const (
	pgBatchAccounts = `SELECT ` + accountCols + ` FROM ledger_accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`
	pgBatchKeys     = `SELECT ` + transferCols + ` FROM ledger_transfers WHERE idempotency_key = ANY($1::text[])`
	pgBatchInsert   = `INSERT INTO ledger_transfers (id, idempotency_key, from_id, to_id, amount, currency, memo, pending, state, created_at, expires_at, resolved_at, posted_amount)
		SELECT id, k, f, t, a, c, m, p::integer, s, cr, ex, 0, 0
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[])
			WITH ORDINALITY AS u (id, k, f, t, a, c, m, p, s, cr, ex, n)
		ORDER BY n`
	pgBatchUpdate = `UPDATE ledger_accounts a SET balance = u.b, pending_debit = u.pd, pending_credit = u.pc
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u (id, b, pd, pc)
		WHERE a.id = u.id`
)

// pgArgs returns the arguments of pgBatchInsert (the accepted transfers, a
// column each) and of pgBatchUpdate (the changed accounts' balances).
func (p batchPlan) pgArgs() (ins, upd []any) {
	n := len(p.accepted)
	tid, tkey, tfrom, tto := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	tcur, tmemo, tstate := make([]string, n), make([]string, n), make([]string, n)
	tamt, tpend, tcr, tex := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, j := range p.accepted {
		t := j.out
		tid[i], tkey[i], tfrom[i], tto[i] = t.ID, t.IdempotencyKey, t.From, t.To
		tcur[i], tmemo[i], tstate[i] = t.Currency, t.Memo, string(t.State)
		tamt[i], tpend[i], tcr[i], tex[i] = t.Amount, boolInt(j.req.Pending), nanos(t.CreatedAt), nanos(t.ExpiresAt)
	}
	m := len(p.dirty)
	aid, abal, apd, apc := make([]string, m), make([]int64, m), make([]int64, m), make([]int64, m)
	for i, a := range p.dirty {
		aid[i], abal[i], apd[i], apc[i] = a.ID, a.Balance, a.PendingDebit, a.PendingCredit
	}
	return []any{tid, tkey, tfrom, tto, tamt, tcur, tmemo, tpend, tstate, tcr, tex}, []any{aid, abal, apd, apc}
}

// bulkSQLAppender is implemented by recorders that append many entries as
// one statement of a PostgreSQL pipeline (*audit.Log).
type bulkSQLAppender interface {
	AppendAllSQL(entries []audit.Entry) (string, []any, error)
}

// pgWorker is one of the PostgreSQL batchers: it takes every transfer
// waiting (up to maxBatch), runs them as one batch and answers each.
func (l *Ledger) pgWorker() {
	defer l.wg.Done()
	batch := make([]*xfer, 0, l.opts.maxBatch)
	for {
		batch = batch[:0]
		select {
		case x := <-l.pgReqs:
			batch = append(batch, x)
		case <-l.done:
			return
		}
	fill:
		for len(batch) < l.opts.maxBatch {
			select {
			case x := <-l.pgReqs:
				batch = append(batch, x)
			default:
				break fill
			}
		}
		l.runPGBatch(batch)
		for _, x := range batch {
			close(x.ack)
		}
	}
}

// transferPGBatched hands one transfer attempt to the PostgreSQL batchers.
func (l *Ledger) transferPGBatched(ctx context.Context, req TransferRequest, now, exp time.Time, mayExpire bool) (Transfer, error) {
	// Alone, a transfer goes straight to the server: handing it to a
	// batcher would only add two goroutine switches to its latency.
	if l.pgInflight.Add(1) == 1 {
		defer l.pgInflight.Add(-1)
		return l.transferPG(ctx, req, now, exp, mayExpire)
	}
	defer l.pgInflight.Add(-1)
	x := &xfer{ctx: ctx, req: req, now: now, exp: exp, mayExpire: mayExpire, ack: make(chan struct{})}
	select {
	case l.pgReqs <- x:
	case <-l.done:
		return Transfer{}, ErrClosed
	case <-ctx.Done():
		return Transfer{}, ctx.Err()
	}
	// Once a batcher took the transfer it always answers; waiting even when
	// ctx ends keeps "acknowledged" meaning "committed".
	<-x.ack
	return x.out, x.err
}

// runPGBatch decides and writes batch, setting every job's outcome. A batch
// of one takes the single-transfer path (one round trip); a larger one is
// written set-based in one transaction of two round trips. If that fails for
// a reason other than a transient one, each transfer runs alone.
func (l *Ledger) runPGBatch(batch []*xfer) {
	live := batch[:0:0]
	for _, x := range batch {
		if err := x.ctx.Err(); err != nil {
			x.err = err
			continue
		}
		live = append(live, x)
	}
	if len(live) > 1 {
		var err error
		for attempt := 0; ; attempt++ {
			if err = l.pgSetBatch(live); err == nil {
				return
			}
			if !sqldb.IsTransient(err) || attempt >= 9 {
				break
			}
			time.Sleep(time.Duration(1<<attempt) * time.Millisecond)
		}
		l.opts.log.Warn("ledger: set-based batch failed; running its transfers one by one", "transfers", len(live), "err", err)
	}
	for _, x := range live {
		x.out, x.err = l.transferPG(x.ctx, x.req, x.now, x.exp, x.mayExpire)
	}
}

// pgSetBatch runs jobs as one set-based transaction: BEGIN, lock the
// accounts and read the keys (one round trip); decide in Go; insert, update,
// append the audit records and COMMIT (a second round trip). On error the
// transaction is rolled back and the jobs' outcomes are not to be used.
func (l *Ledger) pgSetBatch(jobs []*xfer) error {
	ctx, cancel := sqldb.BatchContext(jobs, xferContext)
	defer cancel()
	ids, keys := batchIDs(jobs)
	return l.db.WithPgx(ctx, func(pc *pgx.Conn) error {
		rollback := func(cause error) error {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := pc.Exec(rctx, "ROLLBACK"); err != nil {
				// The connection is in an unknown state: drop it.
				_ = pc.Close(rctx)
			}
			return cause
		}
		accts := make(map[string]*accountState, len(ids))
		stored := make(map[string]record)
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(sqldb.IndexPlans) // the lookups below are by lists
		b.Queue(pgBatchAccounts, ids)
		b.Queue(pgBatchKeys, keys)
		br := pc.SendBatch(ctx, b)
		err := func() error {
			for range 2 {
				if _, err := br.Exec(); err != nil {
					return err
				}
			}
			rows, err := br.Query()
			if err != nil {
				return err
			}
			err = readAccounts(rows, accts)
			if rows.Close(); err == nil {
				err = rows.Err()
			}
			if err != nil {
				return err
			}
			if rows, err = br.Query(); err != nil {
				return err
			}
			err = readStored(rows, stored)
			if rows.Close(); err == nil {
				err = rows.Err()
			}
			return err
		}()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return rollback(fmt.Errorf("ledger: batch: lock accounts: %w", err))
		}

		p := plan(jobs, accts, stored)
		if len(p.accepted) == 0 {
			if _, err := pc.Exec(ctx, "COMMIT"); err != nil {
				return rollback(fmt.Errorf("ledger: batch: end: %w", err))
			}
			return nil
		}
		ins, upd := p.pgArgs()
		n, m := len(p.accepted), len(p.dirty)
		var auditQ string
		var auditArgs []any
		if l.opts.audit != nil {
			ba, ok := l.opts.audit.(bulkSQLAppender)
			if !ok {
				return rollback(errors.New("ledger: batch: recorder cannot append in a pipeline"))
			}
			if auditQ, auditArgs, err = ba.AppendAllSQL(p.auditEntries()); err != nil {
				return rollback(fmt.Errorf("ledger: batch: audit: %w", err))
			}
		}
		b = &pgx.Batch{}
		b.Queue(pgBatchInsert, ins...)
		b.Queue(pgBatchUpdate, upd...)
		if auditQ != "" {
			b.Queue(auditQ, auditArgs...)
		}
		b.Queue("COMMIT")
		br = pc.SendBatch(ctx, b)
		err = func() error {
			// A failed statement aborts the transaction: the statements after
			// it, COMMIT included, are skipped and reported as errors.
			ct, err := br.Exec()
			if err != nil {
				return fmt.Errorf("record transfers: %w", err)
			}
			if ct.RowsAffected() != int64(n) {
				return fmt.Errorf("record transfers: inserted %d rows, want %d", ct.RowsAffected(), n)
			}
			if ct, err = br.Exec(); err != nil {
				return fmt.Errorf("update balances: %w", err)
			}
			if ct.RowsAffected() != int64(m) {
				return fmt.Errorf("update balances: updated %d rows, want %d", ct.RowsAffected(), m)
			}
			if auditQ != "" {
				if _, err := br.Exec(); err != nil {
					return fmt.Errorf("audit: %w", err)
				}
			}
			if ct, err = br.Exec(); err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			if ct.String() != "COMMIT" {
				return fmt.Errorf("commit: server answered %s", ct.String())
			}
			return nil
		}()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			// A row-count mismatch found before COMMIT ran cannot be undone
			// here (COMMIT was sent in the same pipeline); it cannot happen
			// with every account locked, and is reported loudly.
			return rollback(fmt.Errorf("ledger: batch: %w", err))
		}
		return nil
	})
}
