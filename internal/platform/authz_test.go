package platform

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/qshield/qshield/pki"
)

// expectedAccess is the authorization matrix, written out by hand: which
// kinds may call each route ("public": anyone, with or without a
// certificate). The test fails for a route missing here, so adding a route
// means deciding — and reviewing — who may call it.
var expectedAccess = map[string][]pki.PrincipalKind{
	// ledger API: money moves only through administrators or the schemes
	"GET /v1/accounts":                {pki.PrincipalAdmin, pki.PrincipalAuditor},
	"POST /v1/accounts":               {pki.PrincipalAdmin},
	"GET /v1/accounts/{id}":           {pki.PrincipalAdmin, pki.PrincipalAuditor},
	"GET /v1/accounts/{id}/transfers": {pki.PrincipalAdmin, pki.PrincipalAuditor},
	"POST /v1/transfers":              {pki.PrincipalAdmin},
	"GET /v1/transfers/{id}":          {pki.PrincipalAdmin, pki.PrincipalAuditor},
	"POST /v1/transfers/{id}/post":    {pki.PrincipalAdmin},
	"POST /v1/transfers/{id}/void":    {pki.PrincipalAdmin},
	// the principals register
	"GET /v1/admin/certs":                  {pki.PrincipalAdmin, pki.PrincipalAuditor},
	"GET /v1/admin/certs/{serial}":         {pki.PrincipalAdmin, pki.PrincipalAuditor},
	"POST /v1/admin/certs/{serial}/revoke": {pki.PrincipalAdmin},
	// an account holder's consent to binding a payer device (every scheme)
	"POST /v1/enrolment-codes": {pki.PrincipalAdmin, pki.PrincipalOperator},
	// the audit log's signed checkpoints and proofs, for witnesses
	"GET /v1/audit/checkpoint":  nil,
	"GET /v1/audit/consistency": nil,
	"GET /v1/audit/inclusion":   {pki.PrincipalAdmin, pki.PrincipalAuditor},
	// the operator console (authenticates its operators with passkeys)
	"/console/":                nil,
	"GET /console":             nil,
	"POST /v1/console/invites": {pki.PrincipalAdmin},
	// seed 000
	"POST /v1/qmsp/css/keys":            {pki.PrincipalGateway},
	"POST /v1/qmsp/css/ack":             {pki.PrincipalGateway},
	"POST /v1/qmsp/pay":                 {pki.PrincipalPhone},
	"GET /qmsp/gateways/{gi}/{file...}": nil,
	"POST /v1/qmsp/admin/gateways":      {pki.PrincipalAdmin},
	"POST /v1/qmsp/admin/phones":        {pki.PrincipalAdmin},
	"POST /v1/qmsp/gateways/{gi}/sale":  {pki.PrincipalAdmin, pki.PrincipalOperator},
	"GET /v1/qmsp/units/{key}/{unit}":   {pki.PrincipalGateway, pki.PrincipalAdmin},
	// the browser wallet (signed requests; enrolment by the holder's code)
	"GET /wallet":           nil,
	"GET /wallet/{file...}": nil,
	"GET /v1/wallet/me":     {pki.PrincipalPhone},
	"POST /v1/wallet/enrol": nil,
	// the wallet's bioqr enrolment (with the holder's code) and POS look-ups
	"GET /v1/wallet/bioqr/settlement":   {pki.PrincipalPhone},
	"POST /v1/wallet/bioqr/enrol":       {pki.PrincipalPhone},
	"GET /v1/wallet/bioqr/pos/{serial}": {pki.PrincipalPhone},
	"GET /scanner":                      nil,
	"GET /scanner/{file...}":            nil,
	// seed 004
	"GET /v1/bioqr/credential":           {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalAuditor, pki.PrincipalPOS, pki.PrincipalPhone},
	"GET /v1/bioqr/status/{serial}":      {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalAuditor, pki.PrincipalPOS, pki.PrincipalPhone},
	"GET /v1/bioqr/certificate/{serial}": {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalAuditor, pki.PrincipalPOS, pki.PrincipalPhone},
	"POST /v1/bioqr/enrolment-codes":     {pki.PrincipalAdmin, pki.PrincipalOperator},
	"POST /v1/bioqr/enrol":               {pki.PrincipalAdmin, pki.PrincipalOperator},
	"POST /v1/bioqr/pos":                 {pki.PrincipalAdmin, pki.PrincipalOperator},
	"POST /v1/bioqr/settle":              {pki.PrincipalPOS},
	"POST /v1/bioqr/display":             {pki.PrincipalPOS},
	"GET /bioqr/pos/{id}":                nil,
	"GET /bioqr/pos/{id}/qr.png":         nil,
	"GET /bioqr/pos/{id}/status":         nil,
	// seed 002: parties sign with ECQV keys, not X.509 certificates
	"GET /v1/selfverify/params":                        nil,
	"POST /v1/selfverify/register":                     nil,
	"GET /v1/selfverify/vendors/{id}":                  nil,
	"POST /v1/selfverify/withdraw":                     nil,
	"POST /v1/selfverify/reserve":                      nil,
	"POST /v1/selfverify/deposits":                     nil,
	"GET /v1/selfverify/deposits/{id}":                 signedByOwner,
	"GET /v1/selfverify/tokens/{serial}":               signedByOwner,
	"GET /v1/selfverify/tokens/{serial}/confirmations": signedByOwner,
	"POST /v1/selfverify/tokens/{serial}/close":        nil,
	"POST /v1/selfverify/confirmations/{id}":           nil,
	// seed 003
	"POST /v1/watermark/codes":              {pki.PrincipalPhone},
	"POST /v1/watermark/pay":                {pki.PrincipalScanner},
	"GET /v1/watermark/challenge-key":       {pki.PrincipalScanner},
	"GET /watermark/screen/{id}/{file...}":  nil,
	"POST /watermark/screen/{id}/challenge": nil,
	"POST /v1/watermark/admin/devices":      {pki.PrincipalAdmin},
	// seed 001
	"POST /v1/keycharge/devices":                       {pki.PrincipalAdmin, pki.PrincipalOperator},
	"GET /v1/keycharge/devices":                        {pki.PrincipalAdmin, pki.PrincipalOperator},
	"GET /v1/keycharge/devices/{serial}":               {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/devices/{serial}/transitions":  {pki.PrincipalAdmin, pki.PrincipalOperator},
	"GET /v1/keycharge/devices/{serial}/keys":          {pki.PrincipalAdmin, pki.PrincipalOperator},
	"POST /v1/keycharge/devices/{serial}/pin-failures": {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/charges":                       {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"GET /v1/keycharge/charges/{id}":                   {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/charges/{id}/authenticate":     {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/charges/{id}/commit":           {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/charges/{id}/abort":            {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/pool":                          {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"POST /v1/keycharge/pool/reset":                    {pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalCharger},
	"GET /v1/keycharge/audit/stats":                    {pki.PrincipalAdmin, pki.PrincipalOperator},
	"GET /v1/keycharge/audit/search":                   {pki.PrincipalAdmin, pki.PrincipalOperator},
	"POST /v1/keycharge/channel/open":                  nil,
	"POST /v1/keycharge/channel/message":               nil,
}

// signedByOwner marks a route that no certificate opens: the caller signs
// the request with the owner's key of its scheme (authz.Signed).
var signedByOwner = []pki.PrincipalKind{}

func isSigned(pattern string) bool {
	k, ok := expectedAccess[pattern]
	return ok && k != nil && len(k) == 0
}

// publicRoutes are the routes expected to need no principal.
func isPublic(pattern string) bool {
	k, ok := expectedAccess[pattern]
	return ok && k == nil
}

func openTestPlatform(t *testing.T, cfg Config) *Platform {
	t.Helper()
	dir := t.TempDir()
	if cfg.DB == "" {
		cfg.DB = filepath.Join(dir, "qshield.db")
	}
	cfg.StateDir = dir
	cfg.QKD.Off = true
	p, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// principalOfKind issues a client certificate of kind.
func principalOfKind(t *testing.T, p *Platform, kind pki.PrincipalKind) *x509.Certificate {
	t.Helper()
	role := pki.RoleClient
	if kind == pki.PrincipalSAE || kind == pki.PrincipalCharger {
		role = pki.RoleApplication
	}
	c, err := p.CA.IssueTLSFor(context.Background(), pki.IssueRequest{Role: role, CommonName: "test-" + string(kind), Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

var pathVar = regexp.MustCompile(`\{[a-z]+(\.\.\.)?\}`)

// requestFor builds a request matching pattern, presenting cert (nil: none).
func requestFor(pattern string, cert *x509.Certificate, root *x509.Certificate) *http.Request {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok { // a prefix pattern without a method
		method, path = "GET", pattern
	}
	path = pathVar.ReplaceAllString(path, "x")
	r := httptest.NewRequest(method, "https://localhost"+path, strings.NewReader("{}"))
	if cert != nil {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert, root}}}
	} else {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	}
	return r
}

// TestEveryRouteByEveryPrincipal walks every route the platform registers
// with a principal of every kind and with none, and checks the router's
// decision against expectedAccess. It fails for a route registered on the
// server without a policy, and for a route whose access is not written
// down in expectedAccess.
func TestEveryRouteByEveryPrincipal(t *testing.T) {
	p := openTestPlatform(t, Config{})
	routes := p.Router.Routes()
	withPolicy := map[string]bool{}
	for _, r := range routes {
		withPolicy[r.Pattern] = true
	}
	for _, pat := range p.Server.Patterns() {
		if !withPolicy[pat] {
			t.Errorf("route %q is registered without a policy", pat)
		}
	}
	for pat := range expectedAccess {
		if !withPolicy[pat] {
			t.Errorf("expected route %q is not registered", pat)
		}
	}
	certs := map[pki.PrincipalKind]*x509.Certificate{}
	for _, k := range pki.PrincipalKinds() {
		if k == pki.PrincipalServer {
			continue
		}
		certs[k] = principalOfKind(t, p, k)
	}
	root := p.CA.Certificate()
	for _, r := range routes {
		want, ok := expectedAccess[r.Pattern]
		if !ok {
			t.Errorf("route %q (%s) is not in expectedAccess", r.Pattern, r.Policy)
			continue
		}
		if r.Policy.IsPublic() != isPublic(r.Pattern) {
			t.Errorf("%s: public=%v, want %v", r.Pattern, r.Policy.IsPublic(), isPublic(r.Pattern))
		}
		if r.Policy.IsSigned() != isSigned(r.Pattern) {
			t.Errorf("%s: signed=%v, want %v", r.Pattern, r.Policy.IsSigned(), isSigned(r.Pattern))
		}
		if isSigned(r.Pattern) {
			// Unsigned: refused with or without a certificate of any kind.
			for k, cert := range map[pki.PrincipalKind]*x509.Certificate{"": nil, pki.PrincipalAdmin: certs[pki.PrincipalAdmin], pki.PrincipalPhone: certs[pki.PrincipalPhone]} {
				if d := p.Router.Authorize(requestFor(r.Pattern, cert, root), r.Policy); d.Status != http.StatusUnauthorized {
					t.Errorf("%s unsigned as %q: status %d (%s), want 401", r.Pattern, k, d.Status, d.Reason)
				}
			}
			continue
		}
		// No certificate at all.
		d := p.Router.Authorize(requestFor(r.Pattern, nil, root), r.Policy)
		if isPublic(r.Pattern) != (d.Status == 0) {
			t.Errorf("%s without a certificate: status %d (%s)", r.Pattern, d.Status, d.Reason)
		}
		if !isPublic(r.Pattern) && d.Status != http.StatusUnauthorized {
			t.Errorf("%s without a certificate: status %d, want 401", r.Pattern, d.Status)
		}
		for k, cert := range certs {
			d := p.Router.Authorize(requestFor(r.Pattern, cert, root), r.Policy)
			allowed := isPublic(r.Pattern) || slices.Contains(want, k)
			if allowed != (d.Status == 0) {
				t.Errorf("%s as a %s: status %d (%s), want allowed=%v", r.Pattern, k, d.Status, d.Reason, allowed)
			}
			if !allowed && d.Status != http.StatusForbidden {
				t.Errorf("%s as a %s: status %d, want 403", r.Pattern, k, d.Status)
			}
			if d.Status == 0 && (d.Principal == nil || d.Principal.Kind != k) {
				t.Errorf("%s as a %s: principal %+v", r.Pattern, k, d.Principal)
			}
		}
	}
}
