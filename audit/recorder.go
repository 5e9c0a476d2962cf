package audit

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/qshield/qshield/sqldb"
)

// Recorder is what a component needs from the audit trail. *Log implements
// it; every scheme package takes a Recorder, never a *Log.
//
// RecordTx is for every event that changes money or state: the record is
// written inside the caller's transaction and exists if and only if that
// transaction commits. Record writes in its own transaction and is only for
// events that change nothing (a denied request, a failed check), where there
// is no business transaction to join.
type Recorder interface {
	RecordTx(ctx context.Context, tx *sql.Tx, e Entry) error
	Record(ctx context.Context, e Entry) error
}

// RecordTx implements Recorder (AppendTx without the returned record).
func (l *Log) RecordTx(ctx context.Context, tx *sql.Tx, e Entry) error {
	_, err := l.AppendTx(ctx, tx, e)
	return err
}

// RecordAllTx appends entries, in order, inside tx: on SQLite in one bulk
// write (the leaf and tree hashes computed in memory, the records stored as
// one pack, see pack.go), on PostgreSQL into the queue (as one row, see
// AppendAllSQL). All or none are valid. The
// entries of one call are stamped with one time, the transaction's (as
// AppendAllSQL does).
func (l *Log) RecordAllTx(ctx context.Context, tx *sql.Tx, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if l.db.Dialect != sqldb.SQLite {
		q, args, err := l.AppendAllSQL(entries)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("audit: append %d entries: %w", len(entries), err)
		}
		return nil
	}
	return l.appendBatchTx(ctx, tx, entries, len(entries) >= packMin)
}

// appendBatchTx gives entries, stamped with one time, their places after
// the head inside tx (which it locks): as one pack when pack is set, else
// as rows of audit_log.
func (l *Log) appendBatchTx(ctx context.Context, tx *sql.Tx, entries []Entry, pack bool) error {
	t := l.now().UTC().Truncate(time.Microsecond).Format(TimeLayout)
	rs := make([]row, len(entries))
	for i, e := range entries {
		r, err := rowAt(e, t)
		if err != nil {
			return err
		}
		rs[i] = r
	}
	head, err := l.lockHead(ctx, tx)
	if err != nil {
		return err
	}
	var packs []span
	if pack {
		packs = []span{{0, len(rs)}}
	}
	_, err = l.appendRowsTx(ctx, tx, head, rs, nil, packs)
	return err
}

// Record implements Recorder (Append without the returned record).
func (l *Log) Record(ctx context.Context, e Entry) error {
	_, err := l.Append(ctx, e)
	return err
}

// Discard is a Recorder that records nothing (for tools and tests that do
// not keep an audit trail).
var Discard Recorder = discard{}

type discard struct{}

func (discard) RecordTx(context.Context, *sql.Tx, Entry) error { return nil }
func (discard) Record(context.Context, Entry) error            { return nil }

type actorKey struct{}

// WithActor returns a context naming the principal on whose behalf the
// work it carries is done (a certificate serial, "system"…). Components
// that record events deep in a call chain (the ledger) take the actor from
// the context, so the boundary that authenticated the caller decides it.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor set by WithActor, or def.
func ActorFrom(ctx context.Context, def string) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return def
}

// AppendSQL returns one PostgreSQL statement (with its arguments) that
// appends e to the queue when cond holds, for writers that pipeline their
// statements in one implicit transaction instead of using a *sql.Tx (the
// ledger's transfers). cond is an SQL boolean expression whose placeholders
// start at $8, with condArgs as their values. SQLite callers use RecordTx.
func (l *Log) AppendSQL(e Entry, cond string, condArgs ...any) (string, []any, error) {
	if err := e.validate(); err != nil {
		return "", nil, err
	}
	details, err := canonicalDetails(e.Details)
	if err != nil {
		return "", nil, err
	}
	if cond == "" {
		cond = "true"
	}
	t := l.now().UTC().Truncate(1000).Format(TimeLayout)
	q := fmt.Sprintf(`INSERT INTO audit_queue (time, actor, event, outcome, origin, resource, details)
		SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text WHERE %s`, cond)
	return q, append([]any{t, e.Actor, e.Event, e.Outcome, e.Origin, e.Resource, details}, condArgs...), nil
}

// AppendAllSQL is AppendSQL for many entries: one PostgreSQL statement
// (with its arguments) that appends entries, in order, to the queue, for
// writers that pipeline a batch of business changes (the ledger's transfer
// batches). Two or more entries are queued as one row (a batch, see
// pack.go), which Integrate stores as one pack. An invalid entry is an
// error and nothing is returned.
func (l *Log) AppendAllSQL(entries []Entry) (string, []any, error) {
	if len(entries) == 0 {
		return "", nil, fmt.Errorf("%w: no entries", ErrInvalid)
	}
	t := l.now().UTC().Truncate(1000).Format(TimeLayout)
	rs := make([]row, len(entries))
	for i, e := range entries {
		r, err := rowAt(e, t)
		if err != nil {
			return "", nil, err
		}
		rs[i] = r
	}
	if len(rs) == 1 {
		r := rs[0]
		return `INSERT INTO audit_queue (time, actor, event, outcome, origin, resource, details)
			VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text)`,
			[]any{r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details}, nil
	}
	return `INSERT INTO audit_queue (time, actor, event, outcome, origin, resource, details, batch)
		VALUES ($1::text, '', '', '', '', '', '', $2::bytea)`, []any{t, encodeEntries(rs)}, nil
}

// Reader is the read side of the trail, for components that show their own
// records to their administrators. *Log implements it.
type Reader interface {
	Search(ctx context.Context, q Query) ([]Record, error)
	Stats(ctx context.Context, q Query, by ...GroupBy) ([]Count, error)
}

// Trail is a Recorder that can also be read back: what a component that
// both records and serves an audit view takes. *Log implements it.
type Trail interface {
	Recorder
	Reader
}

var _ Trail = (*Log)(nil)
