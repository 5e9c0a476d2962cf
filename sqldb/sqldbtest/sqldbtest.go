// Package sqldbtest gives tests a fresh, isolated database on every backend:
// a new SQLite file in t.TempDir(), and, when QSHIELD_TEST_POSTGRES is set, a
// new PostgreSQL schema that is dropped when the test ends.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qshield/qshield/sqldb"
)

// EnvPostgres names the environment variable holding the test PostgreSQL DSN.
const EnvPostgres = "QSHIELD_TEST_POSTGRES"

// Backend is one database backend a test can run on.
type Backend struct {
	Name string
	// DSN opens a fresh empty database of this backend (schema-isolated on PostgreSQL).
	DSN func(t testing.TB) string
}

// Backends returns SQLite, and PostgreSQL when QSHIELD_TEST_POSTGRES is set.
func Backends() []Backend {
	return []Backend{
		{Name: "sqlite", DSN: SQLiteDSN},
		{Name: "postgres", DSN: PostgresDSN},
	}
}

// SQLiteDSN returns the path of a new SQLite file under t.TempDir().
func SQLiteDSN(t testing.TB) string {
	return filepath.Join(t.TempDir(), "qshield.db")
}

// PostgresDSN creates a fresh schema in the test PostgreSQL database and returns
// a DSN whose search_path points at it. The test is skipped, with a message,
// when QSHIELD_TEST_POSTGRES is not set.
func PostgresDSN(t testing.TB) string {
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("%s not set: skipping the PostgreSQL run", EnvPostgres)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "qt_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open %s: %v", EnvPostgres, err)
	}
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create test schema (is PostgreSQL up at %s?): %v", EnvPostgres, err)
	}
	t.Cleanup(func() {
		_, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Open opens a fresh database of backend b and closes it when the test ends.
func Open(t testing.TB, b Backend) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), b.DSN(t))
	if err != nil {
		t.Fatalf("open %s: %v", b.Name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Each runs fn as a subtest on every backend, each with a fresh database.
func Each(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	for _, b := range Backends() {
		t.Run(b.Name, func(t *testing.T) {
			fn(t, Open(t, b))
		})
	}
}

// CachedPlan returns the plan PostgreSQL caches as generic for the statement
// prepared on conn whose text matches the LIKE pattern like (the plan a
// pooled connection reuses once the statement ran five times), explained
// with arg as its one parameter, and how many times the statement ran on
// that connection (0, and no plan, if it was not prepared there).
func CachedPlan(t testing.TB, conn *sql.Conn, like, arg string) (plan string, runs int64) {
	t.Helper()
	ctx := context.Background()
	// Planner settings do not invalidate a cached plan; this one makes
	// EXPLAIN EXECUTE show the generic plan instead of planning afresh.
	if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	var name string
	var generic, custom int64
	err := conn.QueryRowContext(ctx, `SELECT name, generic_plans, custom_plans FROM pg_prepared_statements
		WHERE statement LIKE $1 AND statement NOT LIKE '%pg_prepared_statements%'`, like).Scan(&name, &generic, &custom)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0
	}
	if err != nil {
		t.Fatalf("statement %q prepared on this connection: %v", like, err)
	}
	// EXPLAIN takes no parameters: the argument is a quoted literal here,
	// the statement's name an identifier.
	rows, err := conn.QueryContext(ctx, `EXPLAIN EXECUTE "`+strings.ReplaceAll(name, `"`, `""`)+`"('`+strings.ReplaceAll(arg, "'", "''")+`')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `RESET plan_cache_mode`); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n"), generic + custom
}
