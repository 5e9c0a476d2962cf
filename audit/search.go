package audit

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qshield/qshield/sqldb"
)

// Query selects records. Zero fields do not filter. Event and Resource
// ending in '*' match by prefix ("pki.*" matches "pki.issue").
type Query struct {
	From     time.Time // inclusive
	To       time.Time // exclusive
	Actor    string
	Event    string
	Resource string
	Outcome  string
	// Account matches records about a ledger account: its resource, or a
	// "from" or "to" detail equal to it (money records name both accounts).
	Account  string
	Limit    int   // Search only: default 100, at most 10000
	AfterSeq int64 // Search only: records with seq > AfterSeq (paging)
}

// GroupBy names a Stats grouping key.
type GroupBy string

const (
	ByEvent    GroupBy = "event"
	ByDay      GroupBy = "day" // UTC date, YYYY-MM-DD
	ByResource GroupBy = "resource"
	ByActor    GroupBy = "actor"
	ByOutcome  GroupBy = "outcome"
	ByOrigin   GroupBy = "origin"
)

// ParseGroupBy parses a comma-separated list such as "event,day".
func ParseGroupBy(s string) ([]GroupBy, error) {
	var out []GroupBy
	for _, p := range strings.Split(s, ",") {
		g := GroupBy(strings.TrimSpace(p))
		if _, ok := groupExpr[g]; !ok {
			return nil, fmt.Errorf("%w: unknown grouping %q (event, day, resource, actor, outcome, origin)", ErrInvalid, g)
		}
		out = append(out, g)
	}
	return out, nil
}

var groupExpr = map[GroupBy]string{
	ByEvent: "event", ByDay: "substr(time, 1, 10)", ByResource: "resource",
	ByActor: "actor", ByOutcome: "outcome", ByOrigin: "origin",
}

// Count is one Stats group.
type Count struct {
	Keys []string `json:"keys"` // one value per GroupBy, in order
	N    int64    `json:"n"`
}

const (
	defaultLimit = 100
	maxLimit     = 10000
)

func (l *Log) where(q Query) (string, []any, error) {
	var conds []string
	var args []any
	if !q.From.IsZero() {
		conds = append(conds, "time >= ?")
		args = append(args, q.From.UTC().Format(TimeLayout))
	}
	if !q.To.IsZero() {
		conds = append(conds, "time < ?")
		args = append(args, q.To.UTC().Format(TimeLayout))
	}
	for _, f := range []struct{ col, v string }{{"actor", q.Actor}, {"event", q.Event}, {"resource", q.Resource}, {"outcome", q.Outcome}} {
		if f.v == "" {
			continue
		}
		if err := checkText(f.col, f.v, false, maxField); err != nil {
			return "", nil, err
		}
		if p, ok := strings.CutSuffix(f.v, "*"); ok && (f.col == "event" || f.col == "resource") {
			if p == "" {
				continue
			}
			conds = append(conds, fmt.Sprintf("substr(%s, 1, %d) = ?", f.col, utf8.RuneCountInString(p)))
			args = append(args, p)
			continue
		}
		conds = append(conds, f.col+" = ?")
		args = append(args, f.v)
		if f.col == "event" && f.v != bulkEvent {
			// Implied by the term above; lets the partial event index serve it.
			conds = append(conds, bulkEventTerm)
		}
	}
	if q.Account != "" {
		if err := checkText("account", q.Account, false, maxField); err != nil {
			return "", nil, err
		}
		v, _ := json.Marshal(q.Account)
		pos := "instr(details, ?)"
		if l.db.Dialect == sqldb.Postgres {
			pos = "strpos(details, ?)"
		}
		conds = append(conds, "(resource = ? OR "+pos+" > 0 OR "+pos+" > 0)")
		args = append(args, q.Account, `"from":`+string(v), `"to":`+string(v))
	}
	if q.AfterSeq > 0 {
		conds = append(conds, "seq > ?")
		args = append(args, q.AfterSeq)
	}
	if len(conds) == 0 {
		return "", nil, nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args, nil
}

// Search returns the records matching q in chain order (after integrating
// queued entries, so a committed record is always found).
func (l *Log) Search(ctx context.Context, q Query) ([]Record, error) {
	if q.Limit < 0 || q.Limit > maxLimit {
		return nil, fmt.Errorf("%w: limit must be 0..%d", ErrInvalid, maxLimit)
	}
	if q.Limit == 0 {
		q.Limit = defaultLimit
	}
	query, args, err := l.searchSQL(q)
	if err != nil {
		return nil, err
	}
	if _, err := l.Integrate(ctx); err != nil {
		return nil, err
	}
	rows, err := l.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: search: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var ts, details string
		if err := rows.Scan(&r.Seq, &ts, &r.Actor, &r.Event, &r.Outcome, &r.Origin, &r.Resource, &details, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("audit: search: %w", err)
		}
		if r.Time, err = time.Parse(TimeLayout, ts); err != nil {
			return nil, fmt.Errorf("audit: record %d has a malformed time %q (run verify)", r.Seq, ts)
		}
		if details != "{}" {
			if err := json.Unmarshal([]byte(details), &r.Details); err != nil {
				return nil, fmt.Errorf("audit: record %d has malformed details (run verify): %w", r.Seq, err)
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: search: %w", err)
	}
	rows.Close()
	// The records of packs, merged in seq order.
	var fromPacks []Record
	ps, err := l.packScan(q)
	if err != nil {
		return nil, err
	}
	err = ps.run(ctx, l.db, l.db, func(r *row) error {
		rec, err := r.record()
		if err != nil {
			return err
		}
		fromPacks = append(fromPacks, rec)
		if len(fromPacks) == q.Limit {
			return errStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: search: %w", err)
	}
	if len(fromPacks) > 0 {
		out = append(out, fromPacks...)
		slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
		out = out[:min(len(out), q.Limit)]
	}
	return out, nil
}

// record is r as returned by Search (details decoded).
func (r *row) record() (Record, error) {
	rec := Record{Seq: r.seq, Actor: r.actor, Event: r.event, Outcome: r.outcome, Origin: r.origin, Resource: r.resource,
		PrevHash: r.prev, Hash: r.hash}
	var err error
	if rec.Time, err = time.Parse(TimeLayout, r.time); err != nil {
		return Record{}, fmt.Errorf("audit: record %d has a malformed time %q (run verify)", r.seq, r.time)
	}
	if r.details != "{}" {
		if err := json.Unmarshal([]byte(r.details), &rec.Details); err != nil {
			return Record{}, fmt.Errorf("audit: record %d has malformed details (run verify): %w", r.seq, err)
		}
	}
	return rec, nil
}

// packScan selects the records of packs that match q (see pack.go): pack
// conditions in SQL narrow the packs read, and match decides each record.
func (l *Log) packScan(q Query) (*scan, error) {
	if _, _, err := l.where(q); err != nil { // validates q
		return nil, err
	}
	s := &scan{skipLog: true, keep: func(r *row) bool { return q.match(r) }}
	cond := func(c string, arg any) {
		if s.packWhere != "" {
			s.packWhere += " AND "
		}
		s.packWhere += c
		s.packArgs = append(s.packArgs, arg)
	}
	if !q.From.IsZero() {
		cond("time >= ?", q.From.UTC().Format(TimeLayout))
	}
	if !q.To.IsZero() {
		cond("time < ?", q.To.UTC().Format(TimeLayout))
	}
	contains := bodyContains(l.db.Dialect)
	if q.Actor != "" {
		cond(hasTerm, "a:"+q.Actor)
	}
	if p, ok := strings.CutSuffix(q.Event, "*"); ok {
		if p != "" {
			cond(contains, []byte(p))
		}
	} else if q.Event != "" {
		cond(hasTerm, "e:"+q.Event)
	}
	if p, ok := strings.CutSuffix(q.Resource, "*"); ok {
		if p != "" {
			cond(contains, []byte(p))
		}
	} else if q.Resource != "" {
		cond(hasTerm, "r:"+q.Resource)
	}
	if q.Outcome != "" {
		cond(contains, []byte(q.Outcome))
	}
	if v, _ := json.Marshal(q.Account); q.Account != "" && string(v) == `"`+q.Account+`"` {
		// (An account that JSON escapes appears escaped in details, so
		// the raw bytes are no prefilter for it.)
		cond(contains, []byte(q.Account))
	}
	if q.AfterSeq > 0 {
		// The pack holding AfterSeq+1 and every later one (by the key).
		cond("first_seq >= (SELECT COALESCE(MAX(first_seq), 0) FROM audit_packs WHERE first_seq <= ?)", q.AfterSeq+1)
	}
	return s, nil
}

// match reports whether r is selected by q, as where's SQL conditions
// decide for a row of audit_log.
func (q *Query) match(r *row) bool {
	if !q.From.IsZero() && r.time < q.From.UTC().Format(TimeLayout) {
		return false
	}
	if !q.To.IsZero() && r.time >= q.To.UTC().Format(TimeLayout) {
		return false
	}
	for _, f := range []struct {
		v, q   string
		prefix bool
	}{{r.actor, q.Actor, false}, {r.event, q.Event, true}, {r.resource, q.Resource, true}, {r.outcome, q.Outcome, false}} {
		if f.q == "" {
			continue
		}
		if p, ok := strings.CutSuffix(f.q, "*"); ok && f.prefix {
			if !strings.HasPrefix(f.v, p) {
				return false
			}
			continue
		}
		if f.v != f.q {
			return false
		}
	}
	if q.Account != "" {
		v, _ := json.Marshal(q.Account)
		if r.resource != q.Account && !strings.Contains(r.details, `"from":`+string(v)) && !strings.Contains(r.details, `"to":`+string(v)) {
			return false
		}
	}
	return q.AfterSeq <= 0 || r.seq > q.AfterSeq
}

// searchSQL is Search's statement for q (Limit set) and its arguments.
func (l *Log) searchSQL(q Query) (string, []any, error) {
	w, args, err := l.where(q)
	if err != nil {
		return "", nil, err
	}
	return l.db.Rebind(`SELECT seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash
		FROM audit_log` + w + ` ORDER BY seq LIMIT ?`), append(args, q.Limit), nil
}

// Stats counts the records matching q (Limit and AfterSeq ignored) grouped
// by the given keys (at least one), ordered by key.
func (l *Log) Stats(ctx context.Context, q Query, by ...GroupBy) ([]Count, error) {
	if len(by) == 0 {
		return nil, fmt.Errorf("%w: Stats needs a grouping", ErrInvalid)
	}
	var exprs []string
	for _, g := range by {
		e, ok := groupExpr[g]
		if !ok {
			return nil, fmt.Errorf("%w: unknown grouping %q", ErrInvalid, g)
		}
		exprs = append(exprs, e)
	}
	q.AfterSeq = 0
	w, args, err := l.where(q)
	if err != nil {
		return nil, err
	}
	if _, err := l.Integrate(ctx); err != nil {
		return nil, err
	}
	cols := strings.Join(exprs, ", ")
	rows, err := l.db.QueryContext(ctx, l.db.Rebind(`SELECT `+cols+`, COUNT(*) FROM audit_log`+w+` GROUP BY `+cols+` ORDER BY `+cols), args...)
	if err != nil {
		return nil, fmt.Errorf("audit: stats: %w", err)
	}
	defer rows.Close()
	groups := map[string]*Count{}
	var out []Count
	for rows.Next() {
		keys := make([]string, len(by))
		dest := make([]any, 0, len(by)+1)
		for i := range keys {
			dest = append(dest, &keys[i])
		}
		var c Count
		dest = append(dest, &c.N)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("audit: stats: %w", err)
		}
		c.Keys = keys
		groups[strings.Join(keys, "\x00")] = &c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: stats: %w", err)
	}
	rows.Close()
	ps, err := l.packScan(q)
	if err != nil {
		return nil, err
	}
	err = ps.run(ctx, l.db, l.db, func(r *row) error {
		keys := make([]string, len(by))
		for i, g := range by {
			keys[i] = r.group(g)
		}
		k := strings.Join(keys, "\x00")
		if c := groups[k]; c != nil {
			c.N++
		} else {
			groups[k] = &Count{Keys: keys, N: 1}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: stats: %w", err)
	}
	for _, c := range groups {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Count) int { return slices.Compare(a.Keys, b.Keys) })
	return out, nil
}

// group is r's value of the grouping key g (groupExpr in Go).
func (r *row) group(g GroupBy) string {
	switch g {
	case ByEvent:
		return r.event
	case ByDay:
		if len(r.time) < 10 {
			return r.time
		}
		return r.time[:10]
	case ByResource:
		return r.resource
	case ByActor:
		return r.actor
	case ByOutcome:
		return r.outcome
	default:
		return r.origin
	}
}

// ParseTime parses a search bound: RFC 3339 ("2026-11-21T08:00:00Z"), a UTC
// date ("2026-11-21", midnight), or a duration before now ("24h", "90m").
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%w: time %q is not RFC 3339, YYYY-MM-DD or a duration such as 24h", ErrInvalid, s)
}

// ScanEvents calls fn for every record whose event starts with prefix,
// inside the caller's (snapshot) transaction: first the rows of the log in
// seq order, then the records of packs in seq order, then the entries still
// queued for integration (Seq 0), so a
// caller reading its own tables in the same snapshot sees exactly the
// records committed with them. Hashes are not returned.
func (l *Log) ScanEvents(ctx context.Context, tx *sql.Tx, prefix string, fn func(Record) error) error {
	if err := l.scanEvents(ctx, tx, `SELECT seq, time, actor, event, outcome, origin, resource, details FROM audit_log WHERE substr(event, 1, ?) = ? ORDER BY seq`, prefix, fn); err != nil {
		return err
	}
	ps, err := l.packScan(Query{Event: prefix + "*"})
	if err != nil {
		return err
	}
	err = ps.run(ctx, l.db, tx, func(r *row) error {
		rec, err := r.record()
		if err != nil {
			return err
		}
		rec.PrevHash, rec.Hash = nil, nil
		return fn(rec)
	})
	if err != nil {
		return fmt.Errorf("audit: scan events: %w", err)
	}
	return l.scanQueue(ctx, tx, prefix, fn)
}

// scanQueue calls fn for the queued entries whose event starts with prefix,
// in queue order (the entries of a queued batch in their order).
func (l *Log) scanQueue(ctx context.Context, tx *sql.Tx, prefix string, fn func(Record) error) error {
	rows, err := tx.QueryContext(ctx, l.db.Rebind(`SELECT id, time, actor, event, outcome, origin, resource, details, batch
		FROM audit_queue WHERE batch IS NOT NULL OR substr(event, 1, ?) = ? ORDER BY id`), utf8.RuneCountInString(prefix), prefix)
	if err != nil {
		return fmt.Errorf("audit: scan queued events: %w", err)
	}
	var rs []row
	for rows.Next() {
		var id int64
		var r row
		var batch []byte
		if err := rows.Scan(&id, &r.time, &r.actor, &r.event, &r.outcome, &r.origin, &r.resource, &r.details, &batch); err != nil {
			rows.Close()
			return fmt.Errorf("audit: scan queued events: %w", err)
		}
		if batch == nil {
			rs = append(rs, r)
			continue
		}
		entries, err := decodeEntries(id, r.time, batch)
		if err != nil {
			rows.Close()
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.event, prefix) {
				rs = append(rs, e)
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: scan queued events: %w", err)
	}
	for i := range rs {
		rec, err := rs[i].record()
		if err != nil {
			return err
		}
		rec.PrevHash, rec.Hash = nil, nil
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) scanEvents(ctx context.Context, tx *sql.Tx, q, prefix string, fn func(Record) error) error {
	rows, err := tx.QueryContext(ctx, l.db.Rebind(q), utf8.RuneCountInString(prefix), prefix)
	if err != nil {
		return fmt.Errorf("audit: scan events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Record
		var ts, details string
		if err := rows.Scan(&r.Seq, &ts, &r.Actor, &r.Event, &r.Outcome, &r.Origin, &r.Resource, &details); err != nil {
			return fmt.Errorf("audit: scan events: %w", err)
		}
		r.Time, _ = time.Parse(TimeLayout, ts)
		if details != "{}" {
			if err := json.Unmarshal([]byte(details), &r.Details); err != nil {
				return fmt.Errorf("audit: record %d has malformed details: %w", r.Seq, err)
			}
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: scan events: %w", err)
	}
	return nil
}

// Snapshot runs fn in a read-only transaction that sees one consistent
// snapshot of the database (repeatable read on PostgreSQL).
func (l *Log) Snapshot(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return l.snapshot(ctx, fn)
}
