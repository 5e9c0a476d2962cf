package console

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/pki"
)

func csrPEM(t testing.TB, key *ecdsa.PrivateKey, cn string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestIssueCertificate: an admin issues a principal's certificate for the
// key of a signing request; an operator is refused and nothing is issued;
// a request whose signature is not its key's is refused.
func TestIssueCertificate(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	form := func(name string) url.Values {
		return url.Values{"kind": {"gateway"}, "name": {name}, "scheme": {"qmsp"}, "scope": {"merchant:7, account:shop"}, "csr": {csrPEM(t, key, "ignored")}}
	}
	ock, os := signIn(t, c, "op", RoleOperator)
	if w := request(c, http.MethodPost, "/console/certs", ock, os.CSRF, form("gw-op")); w.Code != http.StatusForbidden {
		t.Fatalf("operator issuing: %d, want 403", w.Code)
	}
	if ps, _ := c.cfg.CA.Principals(ctx, pki.PrincipalFilter{Name: "gw-op"}); len(ps) != 0 {
		t.Fatal("a refused request issued a certificate")
	}
	ck, s := signIn(t, c, "ad", RoleAdmin)
	w := request(c, http.MethodPost, "/console/certs", ck, s.CSRF, form("gw-7"))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "Certificate issued") {
		t.Fatalf("issue: %d %s", w.Code, w.Body)
	}
	ps, err := c.cfg.CA.Principals(ctx, pki.PrincipalFilter{Name: "gw-7"})
	if err != nil || len(ps) != 1 {
		t.Fatalf("register: %v %v", ps, err)
	}
	p := ps[0]
	if p.Kind != pki.PrincipalGateway || p.Scheme != "qmsp" || !p.MayActFor("merchant:7") || !p.MayActFor("account:shop") {
		t.Fatalf("principal %+v", p)
	}
	der, _ := c.cfg.CA.CertificateDER(ctx, p.Serial)
	cert, _ := x509.ParseCertificate(der)
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("certificate is not for the request's key")
	}
	// The issuance is in the audit trail with the operator as actor.
	recs, _ := c.cfg.Audit.Search(ctx, audit.Query{Event: "pki.issue", Resource: p.Serial})
	if len(recs) != 1 || recs[0].Actor != "operator:"+s.Operator.ID {
		t.Fatalf("audit %+v", recs)
	}
	// The certificate downloads as PEM (for auditors too).
	ack, _ := signIn(t, c, "au", RoleAuditor)
	if w := request(c, http.MethodGet, "/console/certs/"+p.Serial+".pem", ack, "", nil); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "BEGIN CERTIFICATE") {
		t.Fatalf("download: %d", w.Code)
	}
	// A request signed by another key than its own is refused.
	bad := form("gw-8")
	good, _ := pem.Decode([]byte(bad.Get("csr")))
	forged := append([]byte(nil), good.Bytes...)
	forged[len(forged)-5] ^= 1 // break the signature
	bad.Set("csr", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: forged})))
	if w := request(c, http.MethodPost, "/console/certs", ck, s.CSRF, bad); w.Code != http.StatusBadRequest {
		t.Fatalf("forged request: %d", w.Code)
	}
	// A name already held by another kind is refused in words.
	taken := form("gw-7")
	taken.Set("kind", "phone")
	if w := request(c, http.MethodPost, "/console/certs", ck, s.CSRF, taken); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "another kind") {
		t.Fatalf("name of another kind: %d %s", w.Code, w.Body)
	}
	if recs, _ := c.cfg.Audit.Search(ctx, audit.Query{Event: "console.cert.issue", Outcome: audit.OutcomeFailure}); len(recs) != 2 {
		t.Fatalf("refusals audited: %d, want 2", len(recs))
	}
}

// FuzzParseCSR: any input gives a key or an error in words, never a panic;
// a key is returned only for a request whose signature checks.
func FuzzParseCSR(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(csrPEM(f, key, "x"))
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := parseCSR(s)
		if (pub == nil) == (err == nil) {
			t.Fatalf("key %v with error %v", pub, err)
		}
		if err == nil {
			b, _ := pem.Decode([]byte(strings.TrimSpace(s)))
			csr, perr := x509.ParseCertificateRequest(b.Bytes)
			if perr != nil || csr.CheckSignature() != nil {
				t.Fatal("accepted a request that does not check")
			}
		}
	})
}
