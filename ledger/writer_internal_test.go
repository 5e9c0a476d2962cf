package ledger

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/qshield/qshield/sqldb"
)

// TestWriterConnectionSettings: the SQLite group committer's connection
// gets its page cache and in-memory statement journals, and a pooled
// connection keeps SQLite's default cache.
func TestWriterConnectionSettings(t *testing.T) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := Open(ctx, db, WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var cache int64
	if err := conn.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil {
		t.Fatal(err)
	}
	if cache != -2000 {
		t.Errorf("pooled connection: cache_size %d, want SQLite's default -2000", cache)
	}
	if err := l.configureWriter(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var temp int64
	if err := conn.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&temp); err != nil {
		t.Fatal(err)
	}
	if cache != -writerCacheKiB || temp != 2 {
		t.Errorf("writer connection: cache_size %d, temp_store %d; want %d, 2 (memory)", cache, temp, -writerCacheKiB)
	}
}
