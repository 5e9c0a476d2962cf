// Package sqldb opens qshield's database, SQLite (embedded, the default) or
// PostgreSQL, and applies each component's embedded migrations.
//
// Every component owns its tables and hands its migrations to [DB.Migrate] under
// its own name; the versions applied are kept in the table schema_migrations.
// Queries are written with '?' placeholders and passed through [DB.Rebind],
// which turns them into $1, $2, … on PostgreSQL.
//
// SQLite runs in WAL mode with synchronous=FULL, so a committed transaction is
// on disk before Commit returns, and with _txlock=immediate, so that a writing
// transaction takes the write lock at BEGIN and two writers never deadlock on
// a lock upgrade. Options.Pragmas adds pragmas to every SQLite connection (a
// memory map, a size cap). PostgreSQL is reached through pgx's database/sql
// driver.
package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers "pgx" for sql.Open
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL flavour of a database.
type Dialect int

const (
	SQLite Dialect = iota + 1
	Postgres
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return "unknown"
}

// DB is an open database.
type DB struct {
	*sql.DB
	Dialect Dialect
	// Path is the SQLite file (empty for PostgreSQL).
	Path string

	opts Options

	mu       sync.Mutex
	migrated map[string]int // component → versions this process knows
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// DefaultPath is the SQLite file used when no --db is given:
// $XDG_DATA_HOME/qshield/qshield.db or ~/.local/share/qshield/qshield.db.
func DefaultPath() (string, error) {
	dir := os.Getenv("XDG_DATA_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("sqldb: no home directory for the default database: %w", err)
		}
		dir = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(dir, "qshield", "qshield.db"), nil
}

// Options tune Open. The zero value gives the defaults documented on each
// field; [DefaultOptions] returns them filled in.
type Options struct {
	// MaxOpenConns caps the pool (default 32 on PostgreSQL, 16 on SQLite;
	// `qshield serve` uses 20).
	// Size it so that nodes × MaxOpenConns stays below the server's
	// max_connections (100 by default) with room for administration.
	MaxOpenConns int
	// MaxIdleConns is how many idle connections are kept (default MaxOpenConns).
	MaxIdleConns int
	// ConnMaxIdleTime closes connections idle this long (default 5 min).
	ConnMaxIdleTime time.Duration
	// ConnMaxLifetime recycles connections this old (default 30 min), so
	// that after a failover or a DNS change the pool moves to the new server.
	ConnMaxLifetime time.Duration
	// StatementTimeout is PostgreSQL's statement_timeout for every
	// connection (default 15 s; negative: none). A statement that runs
	// longer is cancelled by the server (SQLSTATE 57014).
	StatementTimeout time.Duration
	// IdleInTxTimeout is PostgreSQL's idle_in_transaction_session_timeout
	// (default 30 s; negative: none): a session that holds a transaction
	// open without sending anything (a frozen or partitioned client) is
	// terminated and its locks released.
	IdleInTxTimeout time.Duration
	// LockTimeout is PostgreSQL's lock_timeout (default 10 s; negative: none).
	LockTimeout time.Duration
	// ConnectTimeout bounds each connection attempt (default 5 s).
	ConnectTimeout time.Duration
	// BusyTimeout is how long SQLite waits for the write lock before
	// SQLITE_BUSY (default 10 s).
	BusyTimeout time.Duration
	// Pragmas are extra SQLite pragmas run on every connection, e.g.
	// "cache_size(-65536)", "max_page_count(100000)" (a size cap) or
	// "mmap_size(268435456)" (read the file through a memory map: an I/O
	// error on a mapped page is then a SIGBUS, not an error return; see
	// BENCHMARKS.md, issue 16 item 7, for what it did to history queries).
	Pragmas []string
}

// DefaultOptions returns the options Open uses for dialect d.
func DefaultOptions(d Dialect) Options { return Options{}.withDefaults(d) }

func (o Options) withDefaults(d Dialect) Options {
	if o.MaxOpenConns <= 0 {
		o.MaxOpenConns = 32
		if d == SQLite {
			o.MaxOpenConns = 16
		}
	}
	if o.MaxIdleConns <= 0 || o.MaxIdleConns > o.MaxOpenConns {
		o.MaxIdleConns = o.MaxOpenConns
	}
	if o.ConnMaxIdleTime == 0 {
		o.ConnMaxIdleTime = 5 * time.Minute
	}
	if o.ConnMaxLifetime == 0 {
		o.ConnMaxLifetime = 30 * time.Minute
	}
	if o.StatementTimeout == 0 {
		o.StatementTimeout = 15 * time.Second
	}
	if o.IdleInTxTimeout == 0 {
		o.IdleInTxTimeout = 30 * time.Second
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 10 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 10 * time.Second
	}
	return o
}

// ms renders a timeout as PostgreSQL milliseconds; negative means none (0).
func ms(d time.Duration) string {
	if d < 0 {
		return "0"
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// Open opens dsn with the default [Options]; see [OpenWith].
func Open(ctx context.Context, dsn string) (*DB, error) {
	return OpenWith(ctx, dsn, Options{})
}

// OpenWith opens dsn: a postgres:// URL, or a SQLite file path (optionally
// prefixed "sqlite:"); "" means [DefaultPath]. It pings the database before
// returning. Timeouts given in the PostgreSQL URL itself (e.g.
// ?statement_timeout=5000) win over opts.
func OpenWith(ctx context.Context, dsn string, opts Options) (*DB, error) {
	if IsPostgres(dsn) {
		o := opts.withDefaults(Postgres)
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("sqldb: parse postgres DSN: %w", err)
		}
		for k, v := range map[string]string{
			"statement_timeout":                   ms(o.StatementTimeout),
			"idle_in_transaction_session_timeout": ms(o.IdleInTxTimeout),
			"lock_timeout":                        ms(o.LockTimeout),
		} {
			if _, set := cfg.RuntimeParams[k]; !set {
				cfg.RuntimeParams[k] = v
			}
		}
		if !strings.Contains(dsn, "connect_timeout=") {
			cfg.ConnectTimeout = o.ConnectTimeout
		}
		sdb := stdlib.OpenDB(*cfg)
		sdb.SetMaxOpenConns(o.MaxOpenConns)
		sdb.SetMaxIdleConns(o.MaxIdleConns)
		sdb.SetConnMaxIdleTime(o.ConnMaxIdleTime)
		sdb.SetConnMaxLifetime(o.ConnMaxLifetime)
		if err := sdb.PingContext(ctx); err != nil {
			sdb.Close()
			return nil, fmt.Errorf("sqldb: connect to postgres: %w", err)
		}
		return &DB{DB: sdb, Dialect: Postgres, opts: o}, nil
	}
	o := opts.withDefaults(SQLite)
	path := strings.TrimPrefix(dsn, "sqlite:")
	if path == "" {
		p, err := DefaultPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqldb: create database directory: %w", err)
	}
	if err := privateFile(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(ON)")
	for _, p := range o.Pragmas {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	sdb, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	sdb.SetMaxOpenConns(o.MaxOpenConns)
	sdb.SetMaxIdleConns(o.MaxIdleConns)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	return &DB{DB: sdb, Dialect: SQLite, Path: path, opts: o}, nil
}

// Options returns the options the database was opened with (defaults filled in).
func (db *DB) Options() Options { return db.opts }

// IndexPlans is the PostgreSQL statement that keeps a transaction's lookups
// off sequential scans: run it first in every transaction that looks rows up
// by a list (id = ANY($1)) on a table that grows. pgx prepares a statement
// once per connection, and after five executions PostgreSQL may switch to a
// generic plan, which it keeps until the table is next analyzed; one made
// while the table was small is a sequential scan comparing every row with
// every listed key (the ledger's batches took 17–19 ms instead of an index
// lookup once its accounts had grown, BENCHMARKS.md "PostgreSQL plans").
// With sequential scans priced out the plan uses the index whatever the
// statistics say, and it stays generic (planning every execution afresh,
// plan_cache_mode = force_custom_plan, cost the ledger a third of its
// throughput). SET LOCAL ends with the transaction.
const IndexPlans = `SET LOCAL enable_seqscan = off`

// WithPgx runs fn on one pooled PostgreSQL connection as a *pgx.Conn, for
// what database/sql cannot express (pipelined batches, COPY). fn must leave
// the connection as it found it (no open transaction, settings reset); on
// SQLite it is an error.
func (db *DB) WithPgx(ctx context.Context, fn func(*pgx.Conn) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("sqldb: the connection is %T, not PostgreSQL through pgx", dc)
		}
		return fn(sc.Conn())
	})
}

// Rebind turns '?' placeholders into the dialect's form ($1, $2, … on PostgreSQL).
// Question marks inside single-quoted literals are left alone.
func (db *DB) Rebind(q string) string {
	if db.Dialect != Postgres {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	inStr := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			inStr = !inStr
			b.WriteByte(c)
		case c == '?' && !inStr:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Migration is one schema step of a component. SQL serves both dialects
// unless a dialect-specific field is set; it is written with PostgreSQL's
// types, and on SQLite the word BYTEA becomes BLOB (SQLite gives BIGINT,
// TEXT and the rest the right affinities as they are).
type Migration struct {
	Version  int
	SQL      string
	SQLite   string
	Postgres string
}

func (m Migration) text(d Dialect) string {
	if d == SQLite && m.SQLite != "" {
		return m.SQLite
	}
	if d == Postgres && m.Postgres != "" {
		return m.Postgres
	}
	if d == SQLite {
		return byteaRE.ReplaceAllString(m.SQL, "BLOB")
	}
	return m.SQL
}

var byteaRE = regexp.MustCompile(`\bBYTEA\b`)

// ErrSchemaNewer is returned by Migrate when the database's schema of a
// component is newer than the migrations the caller knows.
var ErrSchemaNewer = errors.New("sqldb: database schema newer than this binary")

// Migrate applies, in order and each in its own transaction, the migrations of
// component that are not applied yet. It is safe to call from several
// processes. A schema newer than ms (another node's newer binary migrated
// it) is ErrSchemaNewer, and nothing is changed.
func (db *DB) Migrate(ctx context.Context, component string, ms []Migration) error {
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL,
		PRIMARY KEY (component, version))`
	if _, err := db.ExecContext(ctx, create); err != nil && !isDuplicateObject(err) {
		return fmt.Errorf("sqldb: create schema_migrations: %w", err)
	}
	// A binary older than the schema would read and write it with the
	// old layout (for the audit queue, say, treat a batch row as one empty
	// record): refuse to start.
	var have int
	if err := db.QueryRowContext(ctx, db.Rebind(`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`), component).Scan(&have); err != nil {
		return fmt.Errorf("sqldb: read the schema version of %s: %w", component, err)
	}
	if have > len(ms) {
		return fmt.Errorf("%w: %s is at schema version %d, this binary knows %d: run the newer binary", ErrSchemaNewer, component, have, len(ms))
	}
	for i, m := range ms {
		if m.Version != i+1 {
			return fmt.Errorf("sqldb: %s migration %d has version %d, want %d", component, i, m.Version, i+1)
		}
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if db.Dialect == Postgres {
				// Serialise concurrent migrators on one advisory lock.
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7254031)`); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM schema_migrations WHERE component = ? AND version = ?`), component, m.Version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range splitStatements(m.text(db.Dialect)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%q: %w", firstLine(stmt), err)
				}
			}
			_, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`),
				component, m.Version, time.Now().UTC().Format(time.RFC3339Nano))
			return err
		})
		if err != nil {
			return fmt.Errorf("sqldb: migrate %s to version %d: %w", component, m.Version, err)
		}
	}
	db.mu.Lock()
	if db.migrated == nil {
		db.migrated = make(map[string]int)
	}
	db.migrated[component] = len(ms)
	db.mu.Unlock()
	return nil
}

// CheckMigrations reports whether every component this process migrated is
// still at the schema version it knows: an error names a component whose
// schema another (newer) node has moved on, or that was reset. It is a
// readiness check.
func (db *DB) CheckMigrations(ctx context.Context) error {
	db.mu.Lock()
	want := make(map[string]int, len(db.migrated))
	for c, v := range db.migrated {
		want[c] = v
	}
	db.mu.Unlock()
	rows, err := db.QueryContext(ctx, `SELECT component, MAX(version) FROM schema_migrations GROUP BY component`)
	if err != nil {
		return fmt.Errorf("sqldb: read schema versions: %w", err)
	}
	defer rows.Close()
	have := make(map[string]int)
	for rows.Next() {
		var c string
		var v int
		if err := rows.Scan(&c, &v); err != nil {
			return fmt.Errorf("sqldb: read schema versions: %w", err)
		}
		have[c] = v
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqldb: read schema versions: %w", err)
	}
	var errs []error
	for c, v := range want {
		if have[c] != v {
			errs = append(errs, fmt.Errorf("schema of %s is at version %d, this node knows %d", c, have[c], v))
		}
	}
	return errors.Join(errs...)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// splitStatements splits a migration on ';' at line ends (migrations keep one
// statement per ';' and no ';' inside literals).
func splitStatements(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ";") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// InTx runs fn in a transaction and commits it. It retries the whole
// transaction (up to 10 times, with backoff) when a retry is safe:
//
//   - the database reported a transient conflict (SQLITE_BUSY, a PostgreSQL
//     serialization failure or deadlock), or
//   - the connection was lost (terminated backend, network error, server
//     restarting) before COMMIT was sent, so the server rolled the
//     transaction back.
//
// A connection lost while COMMIT was in flight leaves the outcome unknown:
// InTx does not retry and returns an error matching [ErrInDoubt]. fn must
// have no effects outside the transaction.
func (db *DB) InTx(ctx context.Context, fn func(*sql.Tx) error) error {
	backoff := time.Millisecond
	for attempt := 0; ; attempt++ {
		err := db.tryTx(ctx, fn)
		if err == nil || errors.Is(err, ErrInDoubt) || !(IsTransient(err) || IsConnError(err)) || attempt >= 9 || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

// Retry runs fn, an idempotent operation outside a transaction (a single
// statement whose repetition is harmless), again when it fails on a lost
// connection, up to 5 times with backoff; a fresh pooled connection is used
// each time.
func (db *DB) Retry(ctx context.Context, fn func() error) error {
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !IsConnError(err) || attempt >= 4 || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff *= 4
	}
}

// ErrInDoubt means the connection failed while COMMIT was in flight: the
// transaction may or may not have committed. Callers find out by reading
// back something the transaction wrote (an idempotency key).
var ErrInDoubt = errors.New("sqldb: commit outcome unknown (connection lost during COMMIT)")

func (db *DB) tryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		if db.Dialect == Postgres && IsConnError(err) {
			return fmt.Errorf("%w: %w", ErrInDoubt, err)
		}
		return err
	}
	return nil
}

// IsTransient reports whether err is a conflict that a retry of the whole
// transaction may resolve (a lost connection is [IsConnError]).
func IsTransient(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}

// IsConnError reports whether err is a lost or refused database connection:
// a network error, a connection closed under the client, or a PostgreSQL
// server going away (SQLSTATE class 08, 57P01 admin_shutdown, 57P02
// crash_shutdown, 57P03 cannot_connect_now, 25006 read-only transaction on
// a demoted primary).
func IsConnError(err error) bool {
	// A cancelled or expired context is the caller's, not the connection's
	// (context.DeadlineExceeded even satisfies net.Error).
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", pe.Code == "25006":
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// pgx reports a connection it already closed with an unexported error.
	return strings.Contains(err.Error(), "conn closed")
}

// errClosedText is database/sql's unexported "database is closed" error.
const errClosedText = "sql: database is closed"

// IsUnavailable reports whether err means the database cannot serve
// requests right now, so that an API should answer 503 with Retry-After
// rather than 500: a lost connection ([IsConnError]), a commit in doubt, a
// closed pool, a statement or lock timeout, too many connections, a full
// disk or an I/O error, or a write lock not obtained within the busy timeout.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if IsConnError(err) || errors.Is(err, ErrInDoubt) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "53"), // insufficient resources: disk full, out of memory, too many connections
			strings.HasPrefix(pe.Code, "58"), // system error (I/O)
			pe.Code == "57014",               // query_canceled (statement_timeout)
			pe.Code == "55P03",               // lock_not_available (lock_timeout)
			pe.Code == "40001", pe.Code == "40P01":
			return true
		}
		return false
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL:
			return true
		}
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EIO) {
		return true
	}
	return strings.Contains(err.Error(), errClosedText)
}

// IsUniqueViolation reports whether err is a unique-constraint violation.
func IsUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
}

func isDuplicateObject(err error) bool {
	var pe *pgconn.PgError
	// Two processes racing on CREATE TABLE IF NOT EXISTS can hit 23505 on pg_type.
	// (or 42710, the table's row type already exists).
	return errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "42P07" || pe.Code == "42710")
}

// privateFile creates the database file with mode 0600 (SQLite gives its
// -wal and -shm files the database file's mode) or takes group and other
// access away from an existing one: the database holds sealed keys, the
// ledger and the audit trail.
func privateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqldb: create database file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("sqldb: database file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(st.Mode().Perm() &^ 0o077); err != nil {
			return fmt.Errorf("sqldb: restrict database file mode: %w", err)
		}
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if fi, err := os.Stat(path + suffix); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path+suffix, fi.Mode().Perm()&^0o077); err != nil {
				return fmt.Errorf("sqldb: restrict %s mode: %w", suffix, err)
			}
		}
	}
	return nil
}
