package kme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// kindOf is a Principals that gives every certificate the kind chosen by
// the test, whatever its name: it isolates the KME's kind check from the
// CA's rule that a name belongs to one kind.
type kindOf pki.PrincipalKind

func (k kindOf) Authenticate(_ context.Context, c *x509.Certificate) (*pki.Principal, error) {
	return &pki.Principal{Name: c.Subject.CommonName, Kind: pki.PrincipalKind(k), Status: pki.StatusActive}, nil
}

// TestKindNotName is the regression test of red-team finding "a phone named
// KME_SUPERMARKET can call the key managers' sync endpoints": with
// Principals set, the KME decides by the caller's kind in the register; a
// phone or an SAE whose certificate carries the peer KME's name (and even
// the right role) is refused, and a phone cannot fetch keys as an SAE.
func TestKindNotName(t *testing.T) {
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	ca := newCAtb(t, db)
	ctx := context.Background()
	peerCert, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "KME_Q", Kind: pki.PrincipalKMEPeer})
	if err != nil {
		t.Fatal(err)
	}
	saeCert, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleApplication, CommonName: "SAE_P", Kind: pki.PrincipalSAE})
	if err != nil {
		t.Fatal(err)
	}
	state := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c, ca.Certificate()}}}
	}
	for _, tc := range []struct {
		kind         pki.PrincipalKind
		cert         *x509.Certificate
		path, body   string
		method       string
		wantRefusal  bool
		wantContains string
	}{
		{pki.PrincipalPhone, peerCert.Leaf, "/api/v1/kme-sync/reconcile", `{"unit_IDs":[]}`, "POST", true, "only the peer KME"},
		{pki.PrincipalSAE, peerCert.Leaf, "/api/v1/kme-sync/reconcile", `{"unit_IDs":[]}`, "POST", true, "only the peer KME"},
		{pki.PrincipalKMEPeer, peerCert.Leaf, "/api/v1/kme-sync/reconcile", `{"unit_IDs":[]}`, "POST", false, ""},
		{pki.PrincipalPhone, saeCert.Leaf, "/api/v1/keys/SAE_P/status", "", "GET", true, "only an SAE"},
		{pki.PrincipalSAE, saeCert.Leaf, "/api/v1/keys/SAE_P/status", "", "GET", false, ""},
	} {
		k, err := New(ctx, db, Config{KMEID: "KME_P", PeerKMEID: "KME_Q", SAEs: []string{"SAE_P"}, PeerSAEs: []string{"SAE_Q"}, MasterKey: testMaster,
			PeerURL: "https://127.0.0.1:1", PeerTLS: &tls.Config{}, Principals: kindOf(tc.kind), ReconcileEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(tc.method, "https://kme"+tc.path, strings.NewReader(tc.body))
		req.TLS = state(tc.cert)
		rec := httptest.NewRecorder()
		k.Handler().ServeHTTP(rec, req)
		k.Close()
		refused := rec.Code == http.StatusUnauthorized
		if refused != tc.wantRefusal || (refused && !strings.Contains(rec.Body.String(), tc.wantContains)) {
			t.Errorf("%s %s %s as a %s: %d %s", tc.method, tc.path, tc.cert.Subject.CommonName, tc.kind, rec.Code, rec.Body)
		}
	}
}
