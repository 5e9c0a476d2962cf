package cli

import (
	"testing"

	"github.com/qshield/qshield/internal/config"
)

// TestPlatformConfigMmap: db_sqlite_mmap_mib reaches the database options
// in bytes; the default 0 is no memory map.
func TestPlatformConfigMmap(t *testing.T) {
	for _, tc := range []struct {
		mib  int
		want int64
	}{{2048, 2 << 30}, {1, 1 << 20}, {0, 0}} {
		c := config.Defaults()
		if c.DBSQLiteMmapMiB != 0 {
			t.Fatalf("default db_sqlite_mmap_mib %d, want 0 (off)", c.DBSQLiteMmapMiB)
		}
		c.DBSQLiteMmapMiB = tc.mib
		if got := platformConfig(&config.Resolved{Config: c}).DBOptions.MmapSize; got != tc.want {
			t.Errorf("db_sqlite_mmap_mib %d: MmapSize %d, want %d", tc.mib, got, tc.want)
		}
	}
}
