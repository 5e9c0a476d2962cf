// Package audit is qshield's audit trail: an append-only, hash-chained log of
// security events kept in the application database, with the fields PCI DSS
// v4 requirement 10.2.2 asks for — who (actor), what (event), when (time,
// UTC), whether it worked (outcome), where from (origin) and on what
// (resource) — plus free-form details.
//
// # Chain
//
// Records are numbered 1, 2, 3, … (seq) and each stores the SHA-256 hash of
// its predecessor (the first stores 32 zero bytes) and its own hash over an
// unambiguous encoding: a domain label, seq as 8 bytes, then the time (UTC,
// fixed microsecond precision text), actor, event, outcome, origin, resource,
// details (canonical JSON with sorted keys) and the previous hash, each
// prefixed by its 4-byte length. A head row (audit_head) holding the last seq
// and hash is updated in the same transaction as every append, so deleting
// records at the tail is detected as well as changes, insertions and
// deletions in the middle: Verify walks the chain and names each broken
// record or missing range.
//
// Storage. A record is a row of audit_log, or, when a batch of records is
// appended together (RecordAllTx on SQLite: a group commit of ledger
// transfers), one of the records of a pack, a single row of audit_packs for
// the whole batch (pack.go). The records, their hashes and the tree are the
// same either way; every reader sees both tables as one sequence. An append
// needs the stored hashes of the tree's frontier; a Log keeps those of its
// last append in memory, keyed by the head they belong to (frontier.go).
//
// Ordering. Append reads the head and writes the record and the new head in
// one transaction that holds the database's write lock: on SQLite writing
// transactions start with BEGIN IMMEDIATE (internal/sqldb), on PostgreSQL the
// head row is read with SELECT … FOR UPDATE. Appenders in many goroutines or
// processes therefore produce one strict chain. AppendTx does the same inside
// a caller's transaction, so a business change and its audit record commit or
// roll back together.
//
// # Weakness of a bare hash chain, and the fix
//
// SHA-256 is unkeyed: someone who can write the database can rewrite a
// suffix of the chain, recompute every hash and the head, and leave no trace.
// Two standard fixes are offered. First, Head returns the current (seq, hash)
// so it can be anchored outside the database (printed by `qshield audit
// verify`, shipped to a log collector); VerifyAnchor checks that an anchored
// head is still part of the chain. Second, when Options.Key is set every
// record and the head also carry an HMAC-SHA-256 under that key (the keyed
// chain of Schneier and Kelsey): without the key, forged, rewritten or
// truncated records are detected even if all hashes were recomputed.
//
// # Checkpoints and witnesses
//
// The records are also the leaves of an RFC 6962 Merkle tree; the platform
// signs checkpoints of it (C2SP tlog-checkpoint, checkpoint.go) and the
// Publisher pushes each one with its consistency proof to C2SP witnesses
// (WitnessSink, tlog-witness v1.0.0). A Witness — its own process, another
// machine — cosigns (tlog-cosignature v1.0.1, cosignature.go) only a
// checkpoint that extends the one it holds, and raises an alarm on a fork;
// the cosignatures are stored with the checkpoint, and VerifyCosigned
// accepts a checkpoint only with a quorum of trusted ones, so a rewritten
// or rolled-back database needs colluding witnesses to go unnoticed.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/qshield/qshield/sqldb"
)

// Outcome values (others are allowed).
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// TimeLayout is the fixed-precision UTC text form of record times; it sorts
// chronologically as text.
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// Field limits.
const (
	maxField       = 256
	maxDetails     = 64
	maxDetailValue = 4096
	maxProblems    = 1000
	hashLen        = sha256.Size
	hashDomain     = "qshield audit record v1"
	macDomain      = "qshield audit head v1"
)

var (
	// ErrInvalid is wrapped by errors for entries or queries that are rejected.
	ErrInvalid = errors.New("audit: invalid input")
	// ErrBroken is returned by VerifyAnchor when the anchor is not in the chain.
	ErrBroken = errors.New("audit: chain broken")
)

// Entry is one event to record.
type Entry struct {
	Actor    string            // who: user, device serial, SAE id, "system"…
	Event    string            // what: "ca.issue", "payment.authorise", "login"…
	Outcome  string            // "success", "failure", "denied"…
	Origin   string            // where from: IP address, host, component
	Resource string            // on what: device id, account, key id…
	Details  map[string]string // anything else (no secrets!)
}

// Record is a stored entry with its place in the chain.
type Record struct {
	Seq      int64             `json:"seq"`
	Time     time.Time         `json:"time"`
	Actor    string            `json:"actor"`
	Event    string            `json:"event"`
	Outcome  string            `json:"outcome"`
	Origin   string            `json:"origin,omitempty"`
	Resource string            `json:"resource,omitempty"`
	Details  map[string]string `json:"details,omitempty"`
	PrevHash HexBytes          `json:"prev_hash"`
	Hash     HexBytes          `json:"hash"`
}

// HexBytes is a hash that marshals to JSON as lowercase hex.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("%w: bad hex hash: %v", ErrInvalid, err)
	}
	*h = v
	return nil
}

// Head is the last record's seq and hash (seq 0 and zero hash when empty).
type Head struct {
	Seq  int64    `json:"seq"`
	Hash HexBytes `json:"hash"`
}

// Options configure a Log.
type Options struct {
	// Key, when set, makes every record and the head carry an HMAC-SHA-256
	// under Key (at least 32 bytes), checked by Verify. All writers must use it.
	Key []byte
	// Now is the clock (default time.Now); for tests and imports.
	Now func() time.Time
}

// Log is the audit trail in one database. It is safe for concurrent use.
type Log struct {
	db  *sqldb.DB
	key []byte
	now func() time.Time
	// stmts caches prepared SQLite statements by query text (see execTx);
	// they are closed with the database.
	stmts sync.Map
	// frontier keeps the tree's frontier after the last append, so the
	// next one need not read it back from the database (see frontier.go).
	frontier frontier
}

var migrations = []sqldb.Migration{{
	Version: 1,
	SQLite: `CREATE TABLE audit_log (
		seq INTEGER PRIMARY KEY,
		time TEXT NOT NULL,
		actor TEXT NOT NULL,
		event TEXT NOT NULL,
		outcome TEXT NOT NULL,
		origin TEXT NOT NULL,
		resource TEXT NOT NULL,
		details TEXT NOT NULL,
		prev_hash BLOB NOT NULL,
		hash BLOB NOT NULL,
		mac BLOB);
	CREATE INDEX audit_log_time ON audit_log (time);
	CREATE INDEX audit_log_actor ON audit_log (actor, time);
	CREATE INDEX audit_log_event ON audit_log (event, time);
	CREATE INDEX audit_log_resource ON audit_log (resource, time);
	CREATE TABLE audit_head (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		seq INTEGER NOT NULL,
		hash BLOB NOT NULL,
		mac BLOB);
	INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32))`,
	Postgres: `CREATE TABLE audit_log (
		seq BIGINT PRIMARY KEY,
		time TEXT NOT NULL,
		actor TEXT NOT NULL,
		event TEXT NOT NULL,
		outcome TEXT NOT NULL,
		origin TEXT NOT NULL,
		resource TEXT NOT NULL,
		details TEXT NOT NULL,
		prev_hash BYTEA NOT NULL,
		hash BYTEA NOT NULL,
		mac BYTEA);
	CREATE INDEX audit_log_time ON audit_log (time);
	CREATE INDEX audit_log_actor ON audit_log (actor, time);
	CREATE INDEX audit_log_event ON audit_log (event, time);
	CREATE INDEX audit_log_resource ON audit_log (resource, time);
	CREATE TABLE audit_head (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		seq BIGINT NOT NULL,
		hash BYTEA NOT NULL,
		mac BYTEA);
	INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))`,
}, {
	Version: 2,
	// The Merkle tree (see tree.go). audit_queue holds entries
	// appended by business transactions until Integrate gives them their
	// place; audit_tlog holds every stored tlog hash (leaf and complete
	// subtree hashes, indexed by tlog.StoredHashIndex); audit_checkpoints
	// the signed checkpoints (public data: the signing key is elsewhere).
	SQLite: `CREATE TABLE audit_queue (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		time TEXT NOT NULL,
		actor TEXT NOT NULL,
		event TEXT NOT NULL,
		outcome TEXT NOT NULL,
		origin TEXT NOT NULL,
		resource TEXT NOT NULL,
		details TEXT NOT NULL);
	CREATE TABLE audit_tlog (
		idx INTEGER PRIMARY KEY,
		hash BLOB NOT NULL) WITHOUT ROWID;
	CREATE TABLE audit_checkpoints (
		size INTEGER PRIMARY KEY,
		note TEXT NOT NULL)`,
	Postgres: `CREATE TABLE audit_queue (
		id BIGSERIAL PRIMARY KEY,
		time TEXT NOT NULL,
		actor TEXT NOT NULL,
		event TEXT NOT NULL,
		outcome TEXT NOT NULL,
		origin TEXT NOT NULL,
		resource TEXT NOT NULL,
		details TEXT NOT NULL);
	CREATE TABLE audit_tlog (
		idx BIGINT PRIMARY KEY,
		hash BYTEA NOT NULL);
	CREATE TABLE audit_checkpoints (
		size BIGINT PRIMARY KEY,
		note TEXT NOT NULL)`,
}, {
	Version: 3,
	// Ledger transfers are most of the records and are written by the
	// busiest writer; the event index leaves them out (each index costs
	// every append a B-tree insert). A search for another event uses the
	// index with the term bulkEventTerm (see where); one for ledger.transfer
	// finds its records by walking the log in seq order, where they are
	// dense.
	SQLite:   `DROP INDEX audit_log_event; CREATE INDEX audit_log_event ON audit_log (event, time) WHERE event <> 'ledger.transfer'`,
	Postgres: `DROP INDEX audit_log_event; CREATE INDEX audit_log_event ON audit_log (event, time) WHERE event <> 'ledger.transfer'`,
}, {
	Version: 4,
	// Stored tree hashes in runs (see tree.go): one row per run of
	// consecutive indexes instead of one per hash. Each old row becomes a
	// run of one hash.
	SQLite: `CREATE TABLE audit_tlog_runs (
		start INTEGER PRIMARY KEY,
		hashes BLOB NOT NULL);
	INSERT INTO audit_tlog_runs (start, hashes) SELECT idx, hash FROM audit_tlog;
	DROP TABLE audit_tlog`,
	Postgres: `CREATE TABLE audit_tlog_runs (
		start BIGINT PRIMARY KEY,
		hashes BYTEA NOT NULL);
	INSERT INTO audit_tlog_runs (start, hashes) SELECT idx, hash FROM audit_tlog;
	DROP TABLE audit_tlog`,
}, {
	Version: 5,
	// Records appended in batches, a row per batch (see pack.go).
	SQLite: `CREATE TABLE audit_packs (
		first_seq INTEGER PRIMARY KEY,
		last_seq INTEGER NOT NULL,
		time TEXT NOT NULL,
		body BLOB NOT NULL);
	CREATE INDEX audit_packs_time ON audit_packs (time);
	CREATE TABLE audit_pack_terms (
		term TEXT NOT NULL,
		first_seq INTEGER NOT NULL,
		PRIMARY KEY (term, first_seq)) WITHOUT ROWID`,
	Postgres: `CREATE TABLE audit_packs (
		first_seq BIGINT PRIMARY KEY,
		last_seq BIGINT NOT NULL,
		time TEXT NOT NULL,
		body BYTEA NOT NULL);
	CREATE INDEX audit_packs_time ON audit_packs (time);
	CREATE TABLE audit_pack_terms (
		term TEXT NOT NULL,
		first_seq BIGINT NOT NULL,
		PRIMARY KEY (term, first_seq))`,
}, {
	Version: 6,
	// A batch queued as one row (PostgreSQL, see pack.go).
	SQLite:   `ALTER TABLE audit_queue ADD COLUMN batch BLOB`,
	Postgres: `ALTER TABLE audit_queue ADD COLUMN batch BYTEA`,
}}

// bulkEvent is the event left out of the event index (migration 3), and
// bulkEventTerm the index's condition, which a query must contain verbatim
// for SQLite to use the partial index.
const (
	bulkEvent     = "ledger.transfer"
	bulkEventTerm = "event <> 'ledger.transfer'"
)

// Open migrates the audit tables (component "audit") and returns the Log.
func Open(ctx context.Context, db *sqldb.DB) (*Log, error) {
	return OpenWithOptions(ctx, db, Options{})
}

// OpenWithOptions is Open with options.
func OpenWithOptions(ctx context.Context, db *sqldb.DB, opts Options) (*Log, error) {
	if opts.Key != nil && len(opts.Key) < 32 {
		return nil, fmt.Errorf("%w: audit MAC key shorter than 32 bytes", ErrInvalid)
	}
	if err := db.Migrate(ctx, "audit", migrations); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{db: db, now: opts.Now}
	if opts.Key != nil {
		l.key = append([]byte(nil), opts.Key...)
	}
	if l.now == nil {
		l.now = time.Now
	}
	if db.Dialect == sqldb.SQLite {
		if err := l.prepareSQLite(ctx); err != nil {
			return nil, err
		}
	}
	if err := l.repairTree(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// textOK reports whether s is valid text for a field: UTF-8 without NUL,
// at most max bytes, not empty when required. It builds no error (the
// append path checks every field and detail of every record).
func textOK(s string, required bool, max int) bool {
	if (required && s == "") || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c >= utf8.RuneSelf {
			return c != 0 && utf8.ValidString(s[i:]) && strings.IndexByte(s[i:], 0) < 0
		}
	}
	return true
}

// checkText is textOK with the error that says why.
func checkText(what string, s string, required bool, max int) error {
	switch {
	case textOK(s, required, max):
		return nil
	case required && s == "":
		return fmt.Errorf("%w: %s is required", ErrInvalid, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, max)
	default:
		return fmt.Errorf("%w: %s is not valid UTF-8 text", ErrInvalid, what)
	}
}

func (e *Entry) validate() error {
	for _, f := range [...]struct {
		name string
		v    string
		req  bool
	}{{"actor", e.Actor, true}, {"event", e.Event, true}, {"outcome", e.Outcome, true}, {"origin", e.Origin, false}, {"resource", e.Resource, false}} {
		if err := checkText(f.name, f.v, f.req, maxField); err != nil {
			return err
		}
	}
	if len(e.Details) > maxDetails {
		return fmt.Errorf("%w: more than %d details", ErrInvalid, maxDetails)
	}
	for k, v := range e.Details {
		if err := checkText("detail key", k, true, maxField); err != nil {
			return err
		}
		if !textOK(v, false, maxDetailValue) { // the name only on failure
			return checkText("detail "+k, v, false, maxDetailValue)
		}
	}
	return nil
}

// canonicalDetails is JSON with sorted keys, exactly as encoding/json
// writes a map[string]string. Keys and values of plain printable ASCII (the
// ledger's details) are written directly; anything else goes through
// encoding/json.
func canonicalDetails(d map[string]string) (string, error) {
	if len(d) == 0 {
		return "{}", nil
	}
	if s, ok := plainDetails(d); ok {
		return s, nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("audit: encode details: %w", err)
	}
	return string(b), nil
}

// plainDetails writes d as encoding/json would when every key and value is
// printable ASCII that encoding/json does not escape; ok is false otherwise.
func plainDetails(d map[string]string) (string, bool) {
	plain := func(s string) bool {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
		}
		return true
	}
	type kv struct{ k, v string }
	var buf [16]kv
	pairs := buf[:0]
	n := 2
	for k, v := range d {
		if !plain(k) || !plain(v) {
			return "", false
		}
		pairs = append(pairs, kv{k, v})
		n += len(k) + len(v) + 6
	}
	slices.SortFunc(pairs, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, p := range pairs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, p.k...)
		b = append(b, '"', ':', '"')
		b = append(b, p.v...)
		b = append(b, '"')
	}
	b = append(b, '}')
	return string(b), true
}

// row is a record as stored (text fields exactly as in the database).
type row struct {
	seq                                                    int64
	time, actor, event, outcome, origin, resource, details string
	prev, hash, mac                                        []byte
}

func lp(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// encode is the length-prefixed encoding of the record: the input of its
// chain hash and, as the Merkle tree leaf, of its RFC 6962 leaf hash.
func encode(r *row) []byte {
	b := make([]byte, 0, 256)
	b = lp(b, hashDomain)
	b = binary.BigEndian.AppendUint64(b, uint64(r.seq))
	for _, f := range []string{r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details, string(r.prev)} {
		b = lp(b, f)
	}
	return b
}

// computeHash is SHA-256 over the length-prefixed encoding of the record.
func computeHash(r *row) []byte {
	h := sha256.Sum256(encode(r))
	return h[:]
}

func (l *Log) mac(label string, seq int64, hash []byte) []byte {
	if l.key == nil {
		return nil
	}
	m := hmac.New(sha256.New, l.key)
	b := lp(nil, macDomain+" "+label)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = lp(b, string(hash))
	m.Write(b)
	return m.Sum(nil)
}

// Append records e in its own transaction and gives it its place in the
// log before returning (it waits for the log's write lock).
func (l *Log) Append(ctx context.Context, e Entry) (Record, error) {
	var rec Record
	err := l.db.InTx(ctx, func(tx *sql.Tx) error {
		if l.db.Dialect == sqldb.SQLite {
			var err error
			rec, err = l.AppendTx(ctx, tx, e)
			return err
		}
		id, _, err := l.enqueue(ctx, tx, e)
		if err != nil {
			return err
		}
		recs, err := l.integrateTx(ctx, tx, 0)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.queueID == id {
				rec = r.Record
				rec.Details = cloneMap(e.Details)
				return nil
			}
		}
		return fmt.Errorf("audit: appended entry %d not integrated", id)
	})
	return rec, err
}

// AppendTx records e inside tx; the record exists only if tx commits.
//
// On SQLite, whose transactions already hold the database's only write lock
// (BEGIN IMMEDIATE), the record gets its place in the log at once: seq,
// chain hash and Merkle tree leaf. On PostgreSQL that would make every
// business transaction wait for the log's head row, so AppendTx only
// inserts a row into the queue of entries waiting for their place, taking no
// log-wide lock; Integrate (run by the Publisher, Append, Verify, Search and
// the proofs) gives queued entries their place in queue order. The returned
// Record then has Seq 0.
func (l *Log) AppendTx(ctx context.Context, tx *sql.Tx, e Entry) (Record, error) {
	if l.db.Dialect == sqldb.SQLite {
		r, err := l.rowOf(e)
		if err != nil {
			return Record{}, err
		}
		head, err := l.lockHead(ctx, tx)
		if err != nil {
			return Record{}, err
		}
		recs, err := l.appendRowsTx(ctx, tx, head, []row{r}, nil, nil)
		if err != nil {
			return Record{}, err
		}
		recs[0].Details = cloneMap(e.Details)
		return recs[0], nil
	}
	_, t, err := l.enqueue(ctx, tx, e)
	if err != nil {
		return Record{}, err
	}
	return Record{Time: t, Actor: e.Actor, Event: e.Event, Outcome: e.Outcome, Origin: e.Origin,
		Resource: e.Resource, Details: cloneMap(e.Details)}, nil
}

// rowOf validates e and returns it as a row stamped with the current time.
func (l *Log) rowOf(e Entry) (row, error) {
	return rowAt(e, l.now().UTC().Truncate(time.Microsecond).Format(TimeLayout))
}

// rowAt validates e and returns it as a row stamped with t (TimeLayout).
func rowAt(e Entry, t string) (row, error) {
	if err := e.validate(); err != nil {
		return row{}, err
	}
	details, err := canonicalDetails(e.Details)
	if err != nil {
		return row{}, err
	}
	return row{time: t, actor: e.Actor, event: e.Event, outcome: e.Outcome, origin: e.Origin,
		resource: e.Resource, details: details}, nil
}

// enqueue validates e and inserts it into audit_queue inside tx.
func (l *Log) enqueue(ctx context.Context, tx *sql.Tx, e Entry) (int64, time.Time, error) {
	return l.enqueueAt(ctx, tx, e, l.now().UTC().Truncate(time.Microsecond).Format(TimeLayout))
}

// enqueueAt is enqueue with the time t (TimeLayout).
func (l *Log) enqueueAt(ctx context.Context, tx *sql.Tx, e Entry, t string) (int64, time.Time, error) {
	r, err := rowAt(e, t)
	if err != nil {
		return 0, time.Time{}, err
	}
	var id int64
	err = tx.QueryRowContext(ctx, l.db.Rebind(`INSERT INTO audit_queue (time, actor, event, outcome, origin, resource, details)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), r.time, r.actor, r.event, r.outcome, r.origin, r.resource, r.details).Scan(&id)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("audit: append %s: %w", e.Event, err)
	}
	at, _ := time.Parse(TimeLayout, r.time)
	return id, at, nil
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Head returns the current head, for anchoring outside the database.
func (l *Log) Head(ctx context.Context) (Head, error) {
	var h Head
	if err := l.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&h.Seq, &h.Hash); err != nil {
		return Head{}, fmt.Errorf("audit: read head: %w", err)
	}
	return h, nil
}
