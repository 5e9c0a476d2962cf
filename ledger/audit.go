package ledger

import (
	"context"
	"database/sql"
	"strconv"

	"github.com/qshield/qshield/audit"
)

// Auditing. With WithAudit every change of money or of an account is
// recorded in the audit trail inside the same database transaction as the
// change itself: account creation (ledger.account.create), a transfer
// (ledger.transfer, state posted or pending), and the resolution of a pending
// one (ledger.post, ledger.void, ledger.expire). The actor is the principal
// named by audit.WithActor on the request's context ("system" otherwise: the
// expiry sweeper, internal tools). Replays of an idempotency key and refused
// requests move nothing and record nothing here, so every transfer has
// exactly one ledger.transfer record (see Reconcile).

// Audit event names.
const (
	EventAccountCreate = "ledger.account.create"
	EventTransfer      = "ledger.transfer"
	EventPost          = "ledger.post"
	EventVoid          = "ledger.void"
	EventExpire        = "ledger.expire"
)

// WithAudit records every money movement and account creation with rec,
// inside the transaction that makes it.
func WithAudit(rec audit.Recorder) Option { return func(o *options) { o.audit = rec } }

// sqlAppender is implemented by recorders that can append as one statement
// of a PostgreSQL pipeline (*audit.Log).
type sqlAppender interface {
	AppendSQL(e audit.Entry, cond string, condArgs ...any) (string, []any, error)
}

const systemActor = "system"

func accountEntry(ctx context.Context, a Account) audit.Entry {
	return audit.Entry{Actor: audit.ActorFrom(ctx, systemActor), Event: EventAccountCreate, Outcome: audit.OutcomeSuccess,
		Origin: "ledger", Resource: a.ID, Details: map[string]string{
			"owner": a.Owner, "kind": string(a.Kind), "currency": a.Currency, "allow_negative": strconv.FormatBool(a.AllowNegative)}}
}

// moneyEntry describes event for transfer t moving amount.
func moneyEntry(ctx context.Context, event string, t Transfer, amount int64) audit.Entry {
	return audit.Entry{Actor: audit.ActorFrom(ctx, systemActor), Event: event, Outcome: audit.OutcomeSuccess,
		Origin: "ledger", Resource: t.ID, Details: map[string]string{
			"transfer_id": t.ID, "from": t.From, "to": t.To, "amount": strconv.FormatInt(amount, 10),
			"currency": t.Currency, "state": string(t.State)}}
}

// record appends e inside tx when auditing is on. Inside the SQLite group
// committer the entry is deferred to the end of the batch's transaction
// (still before its commit), so that a batch of transfers costs one bulk
// audit append instead of several statements per transfer; an op rolled
// back to its savepoint drops its entries with it.
func (l *Ledger) record(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	if l.opts.audit == nil {
		return nil
	}
	if oc, ok := ctx.(opContext); ok && oc.audit != nil {
		*oc.audit = append(*oc.audit, e)
		return nil
	}
	return l.opts.audit.RecordTx(ctx, tx, e)
}

// batchRecorder is implemented by recorders that append many entries in
// one write (*audit.Log).
type batchRecorder interface {
	RecordAllTx(ctx context.Context, tx *sql.Tx, entries []audit.Entry) error
}

// recordAll appends entries inside tx, in one write when the recorder can.
func (l *Ledger) recordAll(ctx context.Context, tx *sql.Tx, entries []audit.Entry) error {
	if br, ok := l.opts.audit.(batchRecorder); ok {
		return br.RecordAllTx(ctx, tx, entries)
	}
	for _, e := range entries {
		if err := l.opts.audit.RecordTx(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}
