package sqldb_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qshield/qshield/sqldb"
)

// Red-team finding (low): the database and its WAL were mode 0644.
func TestDatabaseFilesPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	db, err := sqldb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE t (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", filepath.Base(f), st.Mode().Perm())
		}
	}
	db.Close()
	// An existing world-readable database is tightened on open.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = sqldb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("reopened database has mode %v", st.Mode().Perm())
	}
}

// TestSQLiteConnectionSettings checks what every pooled SQLite connection
// runs with: WAL, synchronous=FULL, no memory map unless Options.Pragmas
// asks for one (the operator's db_sqlite_mmap_mib), and then on each.
func TestSQLiteConnectionSettings(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		pragmas []string
		want    int64
	}{
		{"default: none", nil, 0},
		{"1MiB", []string{"mmap_size(1048576)"}, 1 << 20},
		{"2GiB", []string{"mmap_size(2147483648)"}, 0x7fff0000}, // capped by SQLite
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := sqldb.OpenWith(ctx, filepath.Join(t.TempDir(), "q.db"), sqldb.Options{Pragmas: tc.pragmas, MaxOpenConns: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// Hold several connections at once so more than one is checked.
			var conns []*sql.Conn
			for range 4 {
				c, err := db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			for i, c := range conns {
				var mode string
				var sync, mmap int64
				if err := c.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
					t.Fatal(err)
				}
				if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
					t.Fatal(err)
				}
				if err := c.QueryRowContext(ctx, "PRAGMA mmap_size").Scan(&mmap); err != nil {
					t.Fatal(err)
				}
				if mode != "wal" || sync != 2 || mmap != tc.want {
					t.Errorf("connection %d: journal_mode %s, synchronous %d, mmap_size %d; want wal, 2 (FULL), %d", i, mode, sync, mmap, tc.want)
				}
				c.Close()
			}
		})
	}
}
