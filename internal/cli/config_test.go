package cli

import (
	"slices"
	"testing"

	"github.com/qshield/qshield/internal/config"
)

// TestPlatformConfigMmap: db_sqlite_mmap_mib reaches the database options
// as SQLite's mmap_size pragma in bytes; the default 0 adds no pragma.
func TestPlatformConfigMmap(t *testing.T) {
	if d := config.Defaults().DBSQLiteMmapMiB; d != 0 {
		t.Fatalf("default db_sqlite_mmap_mib %d, want 0 (off)", d)
	}
	for _, tc := range []struct {
		mib  int
		want []string
	}{{2048, []string{"mmap_size(2147483648)"}}, {1, []string{"mmap_size(1048576)"}}, {0, nil}} {
		c := config.Defaults()
		c.DBSQLiteMmapMiB = tc.mib
		if got := platformConfig(&config.Resolved{Config: c}).DBOptions.Pragmas; !slices.Equal(got, tc.want) {
			t.Errorf("db_sqlite_mmap_mib %d: pragmas %q, want %q", tc.mib, got, tc.want)
		}
	}
}
