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
// a lock upgrade. PostgreSQL is reached through pgx's database/sql driver.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
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

// Open opens dsn: a postgres:// URL, or a SQLite file path (optionally prefixed
// "sqlite:"); "" means [DefaultPath]. It pings the database before returning.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if IsPostgres(dsn) {
		sdb, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("sqldb: open postgres: %w", err)
		}
		// PostgreSQL allows 100 connections by default and several test
		// binaries share it; callers that need more (load experiments)
		// raise this with SetMaxOpenConns.
		sdb.SetMaxOpenConns(32)
		sdb.SetMaxIdleConns(32)
		sdb.SetConnMaxIdleTime(5 * time.Minute)
		if err := sdb.PingContext(ctx); err != nil {
			sdb.Close()
			return nil, fmt.Errorf("sqldb: connect to postgres: %w", err)
		}
		return &DB{DB: sdb, Dialect: Postgres}, nil
	}
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
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	sdb, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	sdb.SetMaxOpenConns(16)
	sdb.SetMaxIdleConns(16)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("sqldb: open sqlite %s: %w", path, err)
	}
	return &DB{DB: sdb, Dialect: SQLite, Path: path}, nil
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

// Migrate applies, in order and each in its own transaction, the migrations of
// component that are not applied yet. It is safe to call from several processes.
func (db *DB) Migrate(ctx context.Context, component string, ms []Migration) error {
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL,
		PRIMARY KEY (component, version))`
	if _, err := db.ExecContext(ctx, create); err != nil && !isDuplicateObject(err) {
		return fmt.Errorf("sqldb: create schema_migrations: %w", err)
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
	return nil
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

// InTx runs fn in a transaction and commits it; it retries the whole
// transaction (up to 10 times, with backoff) when the database reports a
// transient conflict: SQLITE_BUSY, or a PostgreSQL serialization failure or
// deadlock. fn must therefore have no effects outside the transaction.
func (db *DB) InTx(ctx context.Context, fn func(*sql.Tx) error) error {
	backoff := time.Millisecond
	for attempt := 0; ; attempt++ {
		err := db.tryTx(ctx, fn)
		if err == nil || !IsTransient(err) || attempt >= 9 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

func (db *DB) tryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// IsTransient reports whether err is a conflict that a retry may resolve.
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
	return errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "42P07")
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
