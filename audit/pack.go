package audit

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/qshield/qshield/sqldb"
)

// Packs.
//
// A batch of records appended together by RecordAllTx on SQLite (a group
// commit of ledger transfers, a batch of payments) is stored as one row of
// audit_packs instead of one row of audit_log per record. They are the same
// records: seq, time, chain hash, MAC and Merkle leaf are computed exactly as
// for rows of audit_log, and every reader (Verify, VerifyCheckpoint, Search,
// Stats, ScanEvents, the proofs, the tree repair) sees the two tables as one
// sequence. Only the storage differs: the probes of issue 13 showed that the
// cost of auditing every transfer inside its transaction was the second row
// per transfer (and its index entries), not the bytes written, so a batch
// writes one row (plus a term row per distinct actor and event).
//
// A pack row holds first_seq and last_seq (its records' places, contiguous),
// the batch's time (RecordAllTx stamps a batch with one time) and a body:
//
//	version byte (1)
//	uvarint n                            the number of records
//	prev hash (32 bytes)                 the first record's prev_hash
//	n times: actor, event, outcome, origin, resource, details
//	         (each a uvarint length and the bytes),
//	         hash (32 bytes), uvarint MAC length and the MAC
//
// Record i's prev_hash is record i-1's hash, as in the chain. A body that does
// not decode, or holds a different number of records than its places, is
// reported by Verify as changed records (first_seq..last_seq).
//
// Search. audit_pack_terms indexes each pack by its distinct actors ("a:"
// terms), events ("e:") and resources ("r:"; a ledger transfer's is its ID,
// time-ordered, so these are appended at the end of the index); a search by
// account, outcome or a prefix selects candidate packs with a substring test
// on the body in SQL, and every search matches the decoded records exactly
// in Go. An account's records are thus found by reading the bodies of the
// packs in range (BENCHMARKS.md); the ledger's own history index answers
// "what moved on this account" directly.

const (
	packVersion = 1
	// packMin is the smallest batch RecordAllTx stores as a pack; a single
	// record is a row of audit_log.
	packMin = 2
)

var errBadPack = errors.New("audit: malformed pack")

// encodePack is the body of a pack of rs (consecutive records, first
// rs[0].seq, prev hashes chained).
func encodePack(rs []row) []byte {
	n := 1 + binary.MaxVarintLen64 + hashLen
	for i := range rs {
		r := &rs[i]
		n += fieldsLen(r) + len(r.hash) + len(r.mac) + binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = append(b, packVersion)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	b = append(b, rs[0].prev...)
	for i := range rs {
		r := &rs[i]
		b = appendFields(b, r)
		b = append(b, r.hash...)
		b = binary.AppendUvarint(b, uint64(len(r.mac)))
		b = append(b, r.mac...)
	}
	return b
}

// appendFields appends r's contents (actor, event, outcome, origin,
// resource, details), each as a uvarint length and its bytes.
func appendFields(b []byte, r *row) []byte {
	for _, f := range []string{r.actor, r.event, r.outcome, r.origin, r.resource, r.details} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// fieldsLen bounds the length appendFields adds for r.
func fieldsLen(r *row) int {
	return len(r.actor) + len(r.event) + len(r.outcome) + len(r.origin) + len(r.resource) + len(r.details) + 6*binary.MaxVarintLen64
}

// readField reads one length-prefixed field from *b, advancing it; ok is
// false when *b is too short.
func readField(b *[]byte) (string, bool) {
	l, k := binary.Uvarint(*b)
	if k <= 0 || l > uint64(len(*b)-k) {
		return "", false
	}
	s := string((*b)[k : k+int(l)])
	*b = (*b)[k+int(l):]
	return s, true
}

// readFields reads r's contents as appendFields wrote them.
func readFields(b *[]byte, r *row) bool {
	for _, f := range []*string{&r.actor, &r.event, &r.outcome, &r.origin, &r.resource, &r.details} {
		var ok bool
		if *f, ok = readField(b); !ok {
			return false
		}
	}
	return true
}

// decodePack returns the records of the pack stored at first with time t
// and body b. It never panics; a malformed body is an error wrapping
// errBadPack.
func decodePack(first int64, t string, b []byte) ([]row, error) {
	bad := func(what string) error { return fmt.Errorf("%w at seq %d: %s", errBadPack, first, what) }
	if len(b) < 1 || b[0] != packVersion {
		return nil, bad("unknown version")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 {
		return nil, bad("bad record count")
	}
	b = b[k:]
	// Each record takes at least 6 length bytes, a hash and a MAC length.
	if n > uint64(len(b))/(7+hashLen) {
		return nil, bad("record count larger than the body")
	}
	if len(b) < hashLen {
		return nil, bad("short previous hash")
	}
	prev := b[:hashLen:hashLen]
	b = b[hashLen:]
	rs := make([]row, n)
	for i := range rs {
		r := &rs[i]
		r.seq, r.time, r.prev = first+int64(i), t, prev
		if !readFields(&b, r) {
			return nil, bad(fmt.Sprintf("record %d: truncated field", r.seq))
		}
		if len(b) < hashLen {
			return nil, bad(fmt.Sprintf("record %d: short hash", r.seq))
		}
		r.hash = b[:hashLen:hashLen]
		b = b[hashLen:]
		mac, ok := readField(&b)
		if !ok {
			return nil, bad(fmt.Sprintf("record %d: truncated MAC", r.seq))
		}
		if mac != "" {
			r.mac = []byte(mac)
		}
		prev = r.hash
	}
	if len(b) != 0 {
		return nil, bad("trailing bytes")
	}
	return rs, nil
}

// A queued batch (PostgreSQL): AppendAllSQL queues the entries of a batch
// as one row of audit_queue whose batch column holds them (version byte,
// uvarint count, then each entry's actor, event, outcome, origin, resource
// and details as uvarint lengths and bytes); Integrate stores them as one
// pack.

// encodeEntries is the batch column of a queued batch of rs (contents set).
func encodeEntries(rs []row) []byte {
	n := 1 + binary.MaxVarintLen64
	for i := range rs {
		r := &rs[i]
		n += fieldsLen(r)
	}
	b := make([]byte, 0, n)
	b = append(b, packVersion)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for i := range rs {
		r := &rs[i]
		b = appendFields(b, r)
	}
	return b
}

// decodeEntries returns the entries of a queued batch stamped with time t.
func decodeEntries(id int64, t string, b []byte) ([]row, error) {
	bad := func(what string) error { return fmt.Errorf("%w: queued batch %d: %s", errBadPack, id, what) }
	if len(b) < 1 || b[0] != packVersion {
		return nil, bad("unknown version")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n > uint64(len(b)-k)/6 {
		return nil, bad("bad entry count")
	}
	b = b[k:]
	rs := make([]row, n)
	for i := range rs {
		r := &rs[i]
		r.time = t
		if !readFields(&b, r) {
			return nil, bad(fmt.Sprintf("entry %d: truncated field", i))
		}
	}
	if len(b) != 0 {
		return nil, bad("trailing bytes")
	}
	return rs, nil
}

// packTerms are the index terms of a pack: its distinct actors, events and
// resources.
func packTerms(rs []row) []string {
	seen := map[string]bool{}
	var out []string
	for i := range rs {
		for _, t := range []string{"a:" + rs[i].actor, "e:" + rs[i].event, "r:" + rs[i].resource} {
			if t == "r:" {
				continue
			}
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}

const insertPackSQL = `INSERT INTO audit_packs (first_seq, last_seq, time, body) VALUES (?, ?, ?, ?)`

func insertTermsSQL(n int) string {
	return `INSERT INTO audit_pack_terms (term, first_seq) VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", n), ", ")
}

// insertPacks stores the packs (spans of rs, places and hashes set) inside
// tx: on PostgreSQL (the publisher integrating queued batches, often dozens
// at a time) with one statement for all bodies and one for all terms, the
// rows sent as arrays; on SQLite (one pack per business transaction) one
// by one.
func (l *Log) insertPacks(ctx context.Context, tx *sql.Tx, rs []row, packs []span) error {
	if len(packs) == 0 {
		return nil
	}
	if l.db.Dialect != sqldb.Postgres {
		for _, p := range packs {
			if err := l.insertPack(ctx, tx, rs[p.start:p.start+p.n]); err != nil {
				return err
			}
		}
		return nil
	}
	firsts, lasts := make([]int64, len(packs)), make([]int64, len(packs))
	times, bodies := make([]string, len(packs)), make([][]byte, len(packs))
	var terms []string
	var termFirsts []int64
	for i, p := range packs {
		prs := rs[p.start : p.start+p.n]
		firsts[i], lasts[i], times[i], bodies[i] = prs[0].seq, prs[len(prs)-1].seq, prs[0].time, encodePack(prs)
		for _, t := range packTerms(prs) {
			terms, termFirsts = append(terms, t), append(termFirsts, prs[0].seq)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_packs (first_seq, last_seq, time, body)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[])`, firsts, lasts, times, bodies); err != nil {
		return fmt.Errorf("audit: append %d packs: %w", len(packs), err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_pack_terms (term, first_seq)
		SELECT * FROM unnest($1::text[], $2::bigint[])`, terms, termFirsts); err != nil {
		return fmt.Errorf("audit: index %d packs: %w", len(packs), err)
	}
	return nil
}

// insertPack stores rs (places and hashes set) as one pack inside tx.
func (l *Log) insertPack(ctx context.Context, tx *sql.Tx, rs []row) error {
	first := rs[0].seq
	if err := l.execTx(ctx, tx, insertPackSQL, first, rs[len(rs)-1].seq, rs[0].time, encodePack(rs)); err != nil {
		return fmt.Errorf("audit: append pack: %w", err)
	}
	terms := packTerms(rs)
	args := make([]any, 0, 2*len(terms))
	for _, t := range terms {
		args = append(args, t, first)
	}
	if err := l.execChunked(ctx, tx, insertTermsSQL, 2, args); err != nil {
		return fmt.Errorf("audit: index pack: %w", err)
	}
	return nil
}

// A scan reads the records of both tables in seq order, a page at a time
// (each page read completely before the next query, as a PostgreSQL
// connection runs one query at a time).
type scan struct {
	// logWhere and packWhere are extra conditions (joined with AND, with
	// ? placeholders) on audit_log and audit_packs; skipLog or skipPacks
	// leaves a table out.
	logWhere, packWhere string
	logArgs, packArgs   []any
	skipLog, skipPacks  bool
	// keep, when set, selects the records of packs (after decoding).
	keep func(r *row) bool
	// onBad is called for a pack that does not decode; nil makes it an
	// error.
	onBad func(first, last int64, err error) error
}

const (
	scanLogPage  = 4096
	scanPackPage = 128
)

// errStop ends a scan early without error.
var errStop = errors.New("audit: stop scan")

var errEndOfPage = errors.New("audit: end of page")

// run calls fn for every record selected, in seq order, until fn returns
// an error (errStop ends the scan with nil).
func (s *scan) run(ctx context.Context, db *sqldb.DB, q querier, fn func(r *row) error) error {
	err := s.pages(ctx, db, q, fn)
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

func (s *scan) pages(ctx context.Context, db *sqldb.DB, q querier, fn func(r *row) error) error {
	const maxSeq = int64(1<<63 - 1)
	logQ := `SELECT seq, time, actor, event, outcome, origin, resource, details, prev_hash, hash, mac
		FROM audit_log WHERE seq >= ?` + and(s.logWhere) + ` ORDER BY seq LIMIT ?`
	packQ := s.packSQL()
	next := int64(-1 << 63)
	for {
		var logRows []row
		if !s.skipLog {
			rows, err := q.QueryContext(ctx, db.Rebind(logQ), append(append([]any{next}, s.logArgs...), scanLogPage)...)
			if err != nil {
				return fmt.Errorf("audit: read records: %w", err)
			}
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.seq, &r.time, &r.actor, &r.event, &r.outcome, &r.origin, &r.resource, &r.details, &r.prev, &r.hash, &r.mac); err != nil {
					rows.Close()
					return fmt.Errorf("audit: read record: %w", err)
				}
				logRows = append(logRows, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("audit: read records: %w", err)
			}
		}
		type pack struct {
			first, last int64
			time        string
			body        []byte
		}
		var packs []pack
		if !s.skipPacks {
			rows, err := q.QueryContext(ctx, db.Rebind(packQ), append(append([]any{next}, s.packArgs...), scanPackPage)...)
			if err != nil {
				return fmt.Errorf("audit: read record packs: %w", err)
			}
			for rows.Next() {
				var p pack
				if err := rows.Scan(&p.first, &p.last, &p.time, &p.body); err != nil {
					rows.Close()
					return fmt.Errorf("audit: read record pack: %w", err)
				}
				packs = append(packs, p)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("audit: read record packs: %w", err)
			}
		}
		// Everything up to limit is known: a full page may continue past
		// its last row.
		limit := maxSeq
		if len(logRows) == scanLogPage {
			limit = logRows[len(logRows)-1].seq
		}
		if len(packs) == scanPackPage {
			limit = min(limit, packs[len(packs)-1].first)
		}
		// The records of the packs (or, for a pack that does not decode,
		// its error at its first place), in seq order.
		type item struct {
			r         *row
			bad       error // a pack that does not decode: places seq..last
			seq, last int64
		}
		var fromPacks []item
		for _, p := range packs {
			if p.first > limit {
				break
			}
			rs, err := decodePack(p.first, p.time, p.body)
			if err == nil && int64(len(rs)) != p.last-p.first+1 {
				err = fmt.Errorf("%w at seq %d: %d records stored for places %d-%d", errBadPack, p.first, len(rs), p.first, p.last)
			}
			if err != nil {
				if s.onBad == nil {
					return fmt.Errorf("%w (run `qshield audit verify`)", err)
				}
				fromPacks = append(fromPacks, item{bad: err, seq: p.first, last: p.last})
				continue
			}
			// A pack starting at or before limit is read whole (its
			// records after limit are contiguous: no row of audit_log
			// lies between them).
			for i := range rs {
				if s.keep == nil || s.keep(&rs[i]) {
					fromPacks = append(fromPacks, item{r: &rs[i], seq: rs[i].seq})
				}
			}
		}
		i, j := 0, 0
		for {
			var err error
			switch {
			case i < len(logRows) && logRows[i].seq <= limit && (j >= len(fromPacks) || logRows[i].seq <= fromPacks[j].seq):
				err = fn(&logRows[i])
				i++
			case j < len(fromPacks):
				if it := fromPacks[j]; it.bad != nil {
					err = s.onBad(it.seq, it.last, it.bad)
				} else {
					err = fn(it.r)
				}
				j++
			default:
				err = errEndOfPage
			}
			if errors.Is(err, errEndOfPage) {
				break
			}
			if err != nil {
				return err
			}
		}
		if limit == maxSeq {
			return nil
		}
		next = limit + 1
	}
}

// packSQL is the query of a page of packs: the first key, the pack
// conditions' arguments and the page size are its arguments.
func (s *scan) packSQL() string {
	return `SELECT first_seq, last_seq, time, body FROM audit_packs WHERE first_seq >= ?` + and(s.packWhere) + ` ORDER BY first_seq LIMIT ?`
}

func and(cond string) string {
	if cond == "" {
		return ""
	}
	return " AND " + cond
}

// readRow reads record seq (from audit_log or its pack) inside q.
func (l *Log) readRow(ctx context.Context, q querier, seq int64) (row, bool, error) {
	var found *row
	s := scan{logWhere: "seq = ?", logArgs: []any{seq}, skipPacks: true}
	err := s.run(ctx, l.db, q, func(r *row) error { found = r; return errStop })
	if err != nil || found != nil {
		return derefRow(found), found != nil, err
	}
	rows, err := q.QueryContext(ctx, l.db.Rebind(`SELECT first_seq, last_seq, time, body FROM audit_packs
		WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1`), seq)
	if err != nil {
		return row{}, false, fmt.Errorf("audit: read record %d: %w", seq, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return row{}, false, rows.Err()
	}
	var first, last int64
	var t string
	var body []byte
	if err := rows.Scan(&first, &last, &t, &body); err != nil {
		return row{}, false, fmt.Errorf("audit: read record %d: %w", seq, err)
	}
	if seq > last {
		return row{}, false, nil
	}
	rs, err := decodePack(first, t, body)
	if err != nil {
		return row{}, false, fmt.Errorf("%w (run `qshield audit verify`)", err)
	}
	if seq-first >= int64(len(rs)) {
		return row{}, false, nil
	}
	return rs[seq-first], true, nil
}

func derefRow(r *row) row {
	if r == nil {
		return row{}
	}
	return *r
}

// bodyContains is the SQL condition that the pack body contains the bytes
// of the next argument (a prefilter: matches are checked in Go).
func bodyContains(d sqldb.Dialect) string {
	if d == sqldb.Postgres {
		return "position(?::bytea in body) > 0"
	}
	return "instr(body, ?) > 0"
}

// hasTerm is the SQL condition that the pack is indexed by the term in the
// next argument.
const hasTerm = "first_seq IN (SELECT first_seq FROM audit_pack_terms WHERE term = ?)"
