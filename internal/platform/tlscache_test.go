package platform

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// Finding (#14: "every start ... issues nine new certificates"): each start
// issued a new set of certificates to the platform's own services (HTTPS
// server, key managers, their SAE clients, QKD link ends, QSSC), so the
// certificate register grew by a dozen valid certificates per restart and
// per node. They are now kept sealed in the database (pki.CA.ServiceTLS)
// and reused: a restart issues none. With the cache removed (IssueTLSFor at
// every start) the second start adds certificates and the test fails.
func TestRestartIssuesNoServiceCertificates(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("3e", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("e3", 32))
	dir := filepath.Join(t.TempDir(), "state")
	db := filepath.Join(dir, "qshield.db")
	count := func() int {
		p, err := openAt(t, db, dir, AuditConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		var n int
		if err := p.DB.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM pki_certs`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := count()
	second := count()
	third := count()
	if second != first || third != first {
		t.Fatalf("certificates after each start: %d, %d, %d; a restart should issue none", first, second, third)
	}
	if first == 0 {
		t.Fatal("no certificates at all")
	}
}
