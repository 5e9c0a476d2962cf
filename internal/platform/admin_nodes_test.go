package platform

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// The soak's `remote error: tls: error decrypting message` (issue #14):
// nodes starting together on one database and one state directory each
// found no admin credential, two of them issued one, and their writes of
// admin-key.pem and admin.pem interleaved; a third node loaded one
// issuance's certificate with the other's key. Its every request then failed
// at the server's check of the client's CertificateVerify signature, which
// TLS 1.3 reports as the decrypt_error alert.

// TestAdminPairMismatchRefused: a certificate and a key from two issuances
// fail the TLS handshake with exactly that alert, and the loader refuses
// such a pair with an error naming the files instead of handing it out.
// Fails without the key check in loadAdminFiles.
func TestAdminPairMismatchRefused(t *testing.T) {
	p := openTestPlatform(t, Config{})
	base := serve(t, p)
	other, err := p.CA.IssueTLSFor(context.Background(), pki.IssueRequest{Role: pki.RoleClient, CommonName: AdminName, Kind: pki.PrincipalAdmin, Scope: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	mixed := p.AdminCert
	mixed.PrivateKey = other.PrivateKey
	if a := call(t, httpsClient(p, p.AdminCert), "GET", base+"/v1/accounts", nil); a.status != 200 {
		t.Fatalf("matching pair: %d %s", a.status, a.body)
	}
	if a := call(t, httpsClient(p, mixed), "GET", base+"/v1/accounts", nil); a.status != -1 || !strings.Contains(a.body, "tls: error decrypting message") {
		t.Fatalf("mismatched pair: %d %s, want the TLS decrypt_error alert", a.status, a.body)
	}
	if err := writeAdminFiles(p.StateDir, mixed); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadAdmin(p.StateDir); err == nil {
		t.Fatalf("loaded a certificate with another issuance's key (serial %s)", c.Leaf.SerialNumber.Text(16))
	} else if !strings.Contains(err.Error(), "admin-key.pem") || !strings.Contains(err.Error(), "admin.pem") {
		t.Fatalf("error does not name the files: %v", err)
	}
}

// TestAdminCredentialOnceAcrossNodes starts four nodes at once on one
// PostgreSQL database and one state directory (the soak's layout): exactly
// one admin credential is issued, every node holds it, and it works on
// every node over HTTPS. Without the lock around the check-then-issue,
// several nodes issued one (and a node could load a mixed pair).
func TestAdminCredentialOnceAcrossNodes(t *testing.T) {
	dsn := sqldbtest.PostgresDSN(t)
	t.Setenv("QSHIELD_PLATFORM_KEY", strings.Repeat("5a", 32))
	t.Setenv(EnvAuditKey, strings.Repeat("a5", 32))
	dir := t.TempDir()
	const n = 4
	nodes := make([]*Platform, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = Open(context.Background(), Config{DB: dsn, StateDir: dir, QKD: QKDConfig{Off: true}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { nodes[i].Close() })
	}
	admins, err := nodes[0].CA.Principals(context.Background(), pki.PrincipalFilter{Kind: pki.PrincipalAdmin, ActiveOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(admins) != 1 {
		t.Fatalf("%d admin credentials issued by %d nodes starting together, want 1", len(admins), n)
	}
	urls := make([]string, n)
	for i, p := range nodes {
		urls[i] = serve(t, p)
	}
	for i, p := range nodes {
		if p.AdminCert.Leaf == nil {
			t.Fatalf("node %d has no admin credential though it shares the directory", i)
		}
		if got := p.AdminCert.Leaf.SerialNumber.Text(16); got != admins[0].Serial {
			t.Fatalf("node %d holds admin %s, the register has %s", i, got, admins[0].Serial)
		}
		for j := range nodes {
			if a := call(t, httpsClient(nodes[j], p.AdminCert), "GET", urls[j]+"/v1/accounts", nil); a.status != 200 {
				t.Fatalf("node %d's admin credential on node %d: %d %s", i, j, a.status, a.body)
			}
		}
	}
}
