package cli

import (
	"testing"

	"github.com/qshield/qshield/internal/config"
)

// TestPlatformConfigMmap: db_sqlite_mmap_mib reaches the database options
// in bytes, and 0 turns the memory map off (sqldb's 0 would mean its
// default).
func TestPlatformConfigMmap(t *testing.T) {
	for _, tc := range []struct {
		mib  int
		want int64
	}{{2048, 2 << 30}, {1, 1 << 20}, {0, -1}} {
		c := config.Defaults()
		c.DBSQLiteMmapMiB = tc.mib
		if got := platformConfig(&config.Resolved{Config: c}).DBOptions.MmapSize; got != tc.want {
			t.Errorf("db_sqlite_mmap_mib %d: MmapSize %d, want %d", tc.mib, got, tc.want)
		}
	}
}
