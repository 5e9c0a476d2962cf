package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func TestMigrateIdempotentAndInTx(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ms := []sqldb.Migration{
			{Version: 1, SQL: `CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)`},
			{Version: 2, SQL: `ALTER TABLE widgets ADD COLUMN size INTEGER NOT NULL DEFAULT 0`},
		}
		for i := 0; i < 2; i++ {
			if err := db.Migrate(ctx, "widgets", ms); err != nil {
				t.Fatalf("migrate run %d: %v", i, err)
			}
		}
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO widgets (id, name, size) VALUES (?, ?, ?)`), 1, "a?b", 3)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO widgets (id, name) VALUES (?, ?)`), 2, "b"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("want boom, got %v", err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM widgets`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("rolled-back insert is visible: %d rows", n)
		}
		_, err = db.ExecContext(ctx, db.Rebind(`INSERT INTO widgets (id, name) VALUES (?, ?)`), 3, "a?b")
		if !sqldb.IsUniqueViolation(err) {
			t.Fatalf("duplicate name: want unique violation, got %v", err)
		}
	})
}

func TestRebind(t *testing.T) {
	db := &sqldb.DB{Dialect: sqldb.Postgres}
	got := db.Rebind(`SELECT '?' , a FROM t WHERE b = ? AND c = ?`)
	want := `SELECT '?' , a FROM t WHERE b = $1 AND c = $2`
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestBatcher(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		if err := db.Migrate(ctx, "batch", []sqldb.Migration{{Version: 1, SQL: `CREATE TABLE b (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)`}}); err != nil {
			t.Fatal(err)
		}
		b := db.NewBatcher(16)
		defer b.Close()
		const n = 200
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func(i int) {
				errs <- b.Do(ctx, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO b (k, v) VALUES (?, ?)`), i%150, i); err != nil {
						return err // the 50 duplicates fail alone
					}
					return nil
				})
			}(i)
		}
		failed := 0
		for i := 0; i < n; i++ {
			if err := <-errs; err != nil {
				if !sqldb.IsUniqueViolation(err) {
					t.Fatalf("unexpected error %v", err)
				}
				failed++
			}
		}
		var rows int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM b`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != 150 || failed != 50 {
			t.Fatalf("rows=%d failed=%d, want 150 and 50", rows, failed)
		}
	})
}

// TestMigrationTypes: one text with PostgreSQL types serves both dialects.
func TestMigrationTypes(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		if err := db.Migrate(ctx, "types", []sqldb.Migration{{Version: 1, SQL: `CREATE TABLE typed (id BIGINT PRIMARY KEY, blob_col BYTEA NOT NULL, note TEXT NOT NULL)`}}); err != nil {
			t.Fatal(err)
		}
		in := []byte{0, 1, 2, 0xff}
		if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO typed (id, blob_col, note) VALUES (?, ?, ?)`), int64(1)<<40, in, "BYTEAX stays"); err != nil {
			t.Fatal(err)
		}
		var out []byte
		var note string
		if err := db.QueryRowContext(ctx, `SELECT blob_col, note FROM typed`).Scan(&out, &note); err != nil {
			t.Fatal(err)
		}
		if string(out) != string(in) || note != "BYTEAX stays" {
			t.Fatalf("got % x %q", out, note)
		}
	})
}

// TestMigrateRefusesNewerSchema: a binary that knows fewer migrations than
// the database has applied refuses to start, and changes nothing.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		ms := []sqldb.Migration{
			{Version: 1, SQL: `CREATE TABLE gadgets (id INTEGER PRIMARY KEY)`},
			{Version: 2, SQL: `ALTER TABLE gadgets ADD COLUMN size INTEGER NOT NULL DEFAULT 0`},
		}
		if err := db.Migrate(ctx, "gadgets", ms); err != nil {
			t.Fatal(err)
		}
		err := db.Migrate(ctx, "gadgets", ms[:1])
		if !errors.Is(err, sqldb.ErrSchemaNewer) || !strings.Contains(err.Error(), "version 2") {
			t.Fatalf("an older binary's Migrate: %v", err)
		}
		if err := db.Migrate(ctx, "gadgets", ms); err != nil {
			t.Fatalf("the current binary after the refusal: %v", err)
		}
	})
}
