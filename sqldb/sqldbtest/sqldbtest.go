// Package sqldbtest gives tests a fresh, isolated database on every backend:
// a new SQLite file in t.TempDir(), and, when QSHIELD_TEST_POSTGRES is set, a
// new PostgreSQL schema that is dropped when the test ends.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
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
