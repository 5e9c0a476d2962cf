package platform

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

// Regression tests for the red-team findings of issue #12, each run from
// outside: over HTTPS against a serving platform.

// serve runs p on a loopback listener and returns its base URL.
func serve(t *testing.T, p *Platform) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return p.URL(ln.Addr())
}

// httpsClient presents cert (none when its Certificate is empty).
func httpsClient(p *Platform, cert tls.Certificate) *http.Client {
	tc := p.CA.ClientTLS(context.Background(), cert, "localhost")
	if len(cert.Certificate) == 0 {
		tc.Certificates = nil
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
}

type answer struct {
	status int
	code   string
	body   string
	reused bool
	header http.Header
}

func call(t *testing.T, hc *http.Client, method, u string, body any) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	var reused bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Idempotency-Key", fmt.Sprintf("k-%d", time.Now().UnixNano()))
	resp, err := hc.Do(req)
	if err != nil {
		return answer{status: -1, body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var prob struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &prob)
	return answer{status: resp.StatusCode, code: prob.Code, body: string(b), reused: reused, header: resp.Header}
}

func userAccount(t *testing.T, p *Platform, id string, kind ledger.Kind, negative bool) {
	t.Helper()
	if _, err := p.Ledger.CreateAccount(context.Background(), ledger.NewAccount{ID: id, Owner: id, Kind: kind, Currency: "CNY", AllowNegative: negative}); err != nil {
		t.Fatal(err)
	}
}

// Finding (critical): a QMSP phone's certificate acted as the bioqr
// operator, certified a POS and enrolled a phone against a victim's account.
func TestRedTeamPhoneActsAsOperator(t *testing.T) {
	p := openTestPlatform(t, Config{})
	url := serve(t, p)
	userAccount(t, p, "victim", ledger.KindUser, false)
	userAccount(t, p, "mallory", ledger.KindUser, false)
	userAccount(t, p, "mallory-shop", ledger.KindMerchant, false)
	code, err := p.IssueEnrolmentCode(context.Background(), "test", "mallory")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := p.QMSP.EnrolPhone(context.Background(), "PHONE-M", 77, "mallory", code, nil)
	if err != nil {
		t.Fatal(err)
	}
	phone, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(p, phone)
	for _, path := range []string{"/v1/bioqr/pos", "/v1/bioqr/enrol", "/v1/bioqr/enrolment-codes", "/v1/accounts", "/v1/transfers", "/v1/qmsp/admin/phones"} {
		a := call(t, hc, "POST", url+path, map[string]any{})
		if a.status != http.StatusForbidden || a.code != "forbidden" {
			t.Errorf("phone POST %s: %d %s", path, a.status, a.body)
		}
	}
	// The phone still pays through its own scheme's route (its kind is allowed there).
	if a := call(t, hc, "POST", url+"/v1/qmsp/pay", map[string]any{}); a.status == http.StatusForbidden || a.status == http.StatusUnauthorized {
		t.Errorf("phone at its own route: %d %s", a.status, a.body)
	}
}

// Finding: enrolment checked only that the accounts exist; binding to the
// system account that may go negative paid out 5,000,000.00 CNY.
func TestRedTeamPayerDeviceNeverOnSystemAccount(t *testing.T) {
	p := openTestPlatform(t, Config{})
	userAccount(t, p, "bank", ledger.KindSystem, true)
	userAccount(t, p, "escrow", ledger.KindEscrow, false)
	userAccount(t, p, "overdraft", ledger.KindUser, true)
	userAccount(t, p, "shop", ledger.KindMerchant, false)
	for _, acct := range []string{"bank", "escrow", "overdraft", "shop"} {
		if _, err := p.QMSP.EnrolPhone(context.Background(), "PHONE-"+acct, 1, acct, "AAAAAAAAAAAAAAAA", nil); !errors.Is(err, ErrNotPayerAccount) {
			t.Errorf("QMSP phone on %s: %v", acct, err)
		}
		if _, err := p.EnrolWatermarkDevice(context.Background(), "WM-"+acct, "phone", acct, "AAAAAAAAAAAAAAAA", nil); !errors.Is(err, ErrNotPayerAccount) {
			t.Errorf("watermark phone on %s: %v", acct, err)
		}
		if _, err := p.BioQR.IssueEnrolmentCode(context.Background(), "test", acct); err == nil {
			t.Errorf("bioqr enrolment code for %s issued", acct)
		}
	}
}

// Finding (medium): identity was the certificate's common name. A phone
// named like a charger locked devices; names of other kinds are refused.
func TestRedTeamCommonNameIsNotIdentity(t *testing.T) {
	p := openTestPlatform(t, Config{})
	url := serve(t, p)
	ctx := context.Background()
	for _, name := range []string{AdminName, KMESupermarket, KMEPlatform, SAECSS} {
		if _, err := p.CA.Issue(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: name, Kind: pki.PrincipalPhone}); !errors.Is(err, pki.ErrNameTaken) {
			t.Errorf("phone named %q issued: %v", name, err)
		}
	}
	phone, err := p.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "charger-x", Kind: pki.PrincipalPhone})
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(p, phone)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/keycharge/devices/QK-1/pin-failures"},
		{"GET", "/v1/keycharge/charges/x"},
		{"POST", "/v1/keycharge/charges/x/abort"},
	} {
		if a := call(t, hc, c.method, url+c.path, map[string]any{}); a.status != http.StatusForbidden {
			t.Errorf("phone named charger-x: %s %s: %d %s", c.method, c.path, a.status, a.body)
		}
	}
}

// Finding (high): a revoked phone's kept-alive connection still got 200;
// there was no revocation API; every restart issued a new admin certificate.
func TestRedTeamRevokedOnKeptAliveConnection(t *testing.T) {
	p := openTestPlatform(t, Config{})
	url := serve(t, p)
	ctx := context.Background()
	aud, err := p.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "auditor-1", Kind: pki.PrincipalAuditor})
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(p, aud)
	if a := call(t, hc, "GET", url+"/v1/admin/certs?kind=auditor", nil); a.status != 200 {
		t.Fatalf("auditor lists: %d %s", a.status, a.body)
	}
	// Revoked through the API by the admin, on another connection.
	admin := httpsClient(p, p.AdminCert)
	serial := aud.Leaf.SerialNumber.Text(16)
	if a := call(t, admin, "POST", url+"/v1/admin/certs/"+serial+"/revoke", map[string]string{"reason": "lost"}); a.status != 200 || !strings.Contains(a.body, `"revoked"`) {
		t.Fatalf("revoke: %d %s", a.status, a.body)
	}
	a := call(t, hc, "GET", url+"/v1/admin/certs?kind=auditor", nil)
	if !a.reused {
		t.Fatal("the client opened a new connection; the test needs the kept-alive one")
	}
	if a.status != http.StatusUnauthorized {
		t.Fatalf("revoked auditor on its kept-alive connection: %d %s", a.status, a.body)
	}
	// Nobody else may revoke.
	if a := call(t, hc, "POST", url+"/v1/admin/certs/"+p.AdminCert.Leaf.SerialNumber.Text(16)+"/revoke", map[string]string{"reason": "x"}); a.status != http.StatusUnauthorized {
		t.Fatalf("revoked auditor revokes the admin: %d", a.status)
	}
}

// A revocation written by another node (another CA handle on the same
// database) is seen within pki.PrincipalCacheTTL.
func TestRevocationAcrossNodes(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx := context.Background()
	c, err := p.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "op-1", Kind: pki.PrincipalOperator})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.CA.Authenticate(ctx, c.Leaf); err != nil {
		t.Fatal(err)
	}
	other, err := OpenCA(ctx, p.DB, p.StateDir) // another node's handle: its own cache
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Revoke(ctx, c.Leaf.SerialNumber, "stolen"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		_, err := p.CA.Authenticate(ctx, c.Leaf)
		if errors.Is(err, pki.ErrRevoked) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("revocation on another node not seen within 1 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdminCredentialCreatedOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DB: dir + "/q.db", StateDir: dir, QKD: QKDConfig{Off: true}}
	open := func() *Platform {
		p, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := open()
	first := p.AdminCert.Leaf.SerialNumber.Text(16)
	p.Close()
	p = open()
	if got := p.AdminCert.Leaf.SerialNumber.Text(16); got != first {
		t.Fatalf("restart issued a new admin certificate: %s, was %s", got, first)
	}
	if err := p.RotateAdmin(context.Background()); err != nil {
		t.Fatal(err)
	}
	rotated := p.AdminCert.Leaf.SerialNumber.Text(16)
	old, err := p.CA.PrincipalBySerial(context.Background(), first)
	if err != nil || old.Status != pki.StatusRevoked || rotated == first {
		t.Fatalf("rotate: old %+v (%v), new %s", old, err, rotated)
	}
	p.Close()
	p = open()
	defer p.Close()
	if got := p.AdminCert.Leaf.SerialNumber.Text(16); got != rotated {
		t.Fatalf("after rotate and restart: %s, want %s", got, rotated)
	}
	admins, _ := p.CA.Principals(context.Background(), pki.PrincipalFilter{Kind: pki.PrincipalAdmin, ActiveOnly: true})
	if len(admins) != 1 {
		t.Fatalf("%d active admin credentials", len(admins))
	}
}

func TestAdminKeySealedUnderPassphrase(t *testing.T) {
	t.Setenv(EnvAdminPassphrase, "correct horse battery staple")
	p := openTestPlatform(t, Config{})
	keyPEM, err := readFile(p.StateDir + "/admin-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(keyPEM, []byte("BEGIN PRIVATE KEY")) {
		t.Fatal("admin key stored in clear")
	}
	if _, err := LoadAdmin(p.StateDir); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvAdminPassphrase, "wrong passphrase!")
	if _, err := LoadAdmin(p.StateDir); err == nil {
		t.Fatal("admin key opened with the wrong passphrase")
	}
}

// Finding (medium): --insecure-http removed authorization: an
// unauthenticated request created an account allowed to go negative.
func TestRedTeamInsecureHTTP(t *testing.T) {
	body := map[string]any{"id": "evil", "owner": "x", "kind": "system", "currency": "CNY", "allow_negative": true}
	p := openTestPlatform(t, Config{InsecureHTTP: true})
	url := serve(t, p)
	hc := &http.Client{Timeout: 10 * time.Second}
	if a := call(t, hc, "POST", url+"/v1/accounts", body); a.status != http.StatusUnauthorized {
		t.Fatalf("plain HTTP without a proxy: %d %s", a.status, a.body)
	}
	if a := call(t, hc, "GET", url+"/v1/selfverify/params", nil); a.status != 200 {
		t.Fatalf("public route over plain HTTP: %d", a.status)
	}
	// A forged proxy header from an address that is not a trusted proxy.
	p2 := openTestPlatform(t, Config{InsecureHTTP: true, Trust: TrustConfig{TrustedProxies: []string{"10.9.9.9"}, ClientCertHeader: "X-Client-Cert"}})
	url2 := serve(t, p2)
	forged := withHeader("X-Client-Cert", pemEscape(p2.AdminCert.Leaf))
	if a := call(t, &http.Client{Transport: forged}, "POST", url2+"/v1/accounts", body); a.status != http.StatusUnauthorized {
		t.Fatalf("proxy header from an untrusted address: %d %s", a.status, a.body)
	}
	// The same header from a trusted proxy is believed (and verified).
	p3 := openTestPlatform(t, Config{InsecureHTTP: true, Trust: TrustConfig{TrustedProxies: []string{"127.0.0.1"}, ClientCertHeader: "X-Client-Cert"}})
	url3 := serve(t, p3)
	if a := call(t, &http.Client{Transport: withHeader("X-Client-Cert", pemEscape(p3.AdminCert.Leaf))}, "POST", url3+"/v1/accounts", body); a.status != http.StatusCreated {
		t.Fatalf("admin through the trusted proxy: %d %s", a.status, a.body)
	}
	// A certificate of another CA in the header is not.
	if a := call(t, &http.Client{Transport: withHeader("X-Client-Cert", pemEscape(p2.AdminCert.Leaf))}, "POST", url3+"/v1/accounts", body); a.status != http.StatusUnauthorized {
		t.Fatalf("foreign certificate through the trusted proxy: %d %s", a.status, a.body)
	}
}

type headerRT struct {
	k, v string
}

func (h headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

func withHeader(k, v string) http.RoundTripper { return headerRT{k, v} }

func pemEscape(c *x509.Certificate) string {
	return url.PathEscape(string(pki.EncodeCertPEM(c)))
}

// Finding (medium): no rate limiting; 300 requests without a certificate
// wrote 300 audit records under names the caller chose; a NUL byte made the
// audit append fail.
func TestRedTeamAnonymousFlood(t *testing.T) {
	p := openTestPlatform(t, Config{Trust: TrustConfig{RatePerSource: 20}})
	url := serve(t, p)
	hc := httpsClient(p, tls.Certificate{})
	var limited, refused int
	for i := 0; i < 300; i++ {
		a := call(t, hc, "POST", url+"/v1/transfers", map[string]any{})
		switch a.status {
		case http.StatusTooManyRequests:
			limited++
			if a.header.Get("Retry-After") == "" || a.code != "rate_limited" {
				t.Fatalf("429 without Retry-After or problem code: %v %s", a.header, a.body)
			}
		case http.StatusUnauthorized:
			refused++
		default:
			t.Fatalf("anonymous transfer: %d %s", a.status, a.body)
		}
	}
	if limited == 0 {
		t.Fatalf("300 anonymous requests, none rate-limited (%d refused)", refused)
	}
	p.Router.Flush(context.Background(), true)
	recs, err := p.Audit.Search(context.Background(), audit.Query{Event: "authz.denied", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, r := range recs {
		if r.Actor != "anonymous" {
			t.Errorf("refusal audited under %q", r.Actor)
		}
		var n int
		fmt.Sscan(r.Details["count"], &n)
		total += n
	}
	if len(recs) > 4 || total != refused {
		t.Fatalf("%d audit records counting %d refusals, want a few records counting %d", len(recs), total, refused)
	}
	// Bad bytes in a refusal are escaped, and the record is written.
	p.auditDenial(context.Background(), authz.Denial{Pattern: "GET /x\x00", Source: "1.2.3.4", Reason: "bad \x00 byte \xff", Count: 1, Status: 401})
	recs, err = p.Audit.Search(context.Background(), audit.Query{Event: "authz.denied", Resource: `GET /x\x00`, Limit: 10})
	if err != nil || len(recs) != 1 || recs[0].Details["reason"] != `bad \x00 byte \xff` {
		t.Fatalf("escaped record: %v %+v", err, recs)
	}
}

// Finding (medium): classical key exchange was accepted where quantum keys
// travel (OpenSSL 3.0 and curl got plain X25519).
func TestRedTeamClassicalKeyExchange(t *testing.T) {
	p := openTestPlatform(t, Config{})
	ctx := context.Background()
	sae, err := p.KME.ClientTLS(ctx, "test-sae-pq")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(p.KME.AURL, "https://")
	classical := sae.Clone()
	classical.CurvePreferences = []tls.CurveID{tls.X25519}
	if c, err := tls.Dial("tcp", host, classical); err == nil {
		c.Close()
		t.Fatal("a classical-only client completed a handshake with the key manager")
	}
	c, err := tls.Dial("tcp", host, sae)
	if err != nil {
		t.Fatalf("post-quantum client: %v", err)
	}
	if c.ConnectionState().CurveID != tls.X25519MLKEM768 {
		t.Fatalf("key exchange %v", c.ConnectionState().CurveID)
	}
	c.Close()

	// The platform listener counts classical handshakes, and refuses them with RequirePQ.
	for _, require := range []bool{false, true} {
		p := openTestPlatform(t, Config{Trust: TrustConfig{RequirePQ: require}})
		u := serve(t, p)
		tc := p.ClientTLS(ctx, p.AdminCert)
		tc.CurvePreferences = []tls.CurveID{tls.X25519}
		conn, err := tls.Dial("tcp", strings.TrimPrefix(u, "https://"), tc)
		if err == nil {
			err = conn.Handshake()
			// TLS 1.3: the server's refusal arrives with the first read.
			if err == nil {
				conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
				if err == nil {
					_, err = conn.Read(make([]byte, 1))
				}
			}
			conn.Close()
		}
		if require && err == nil {
			t.Fatal("RequirePQ: classical handshake accepted")
		}
		if !require && err != nil {
			t.Fatalf("classical handshake refused without RequirePQ: %v", err)
		}
		if p.ClassicalHandshakes() != 1 {
			t.Fatalf("RequirePQ=%v: %d classical handshakes counted, want 1", require, p.ClassicalHandshakes())
		}
	}
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

// Red-team finding (low): ca-seal.key and platform.key sat next to the
// database by default. With QSHIELD_SECRET_DIR they live elsewhere.
func TestSecretDirOutsideData(t *testing.T) {
	secrets := t.TempDir()
	t.Setenv(EnvSecretDir, secrets)
	p := openTestPlatform(t, Config{})
	if _, err := os.Stat(secrets + "/platform.key"); err != nil {
		t.Errorf("platform.key not in the secret directory: %v", err)
	}
	for _, f := range []string{"platform.key", "ca-seal.key"} {
		if _, err := os.Stat(p.StateDir + "/" + f); err == nil {
			t.Errorf("%s beside the database", f)
		}
	}
}

// Finding (low, #12): by default the sealing keys sat beside the database
// they seal, so a copy of the data directory carried the keys that open
// it. Without QSHIELD_SECRET_DIR they now live in a sibling directory; an
// older layout is moved there, and two different copies are an error.
// Without the fix platform.key is created in the state directory and the
// conflict goes unnoticed.
func TestSecretsNotBesideDataByDefault(t *testing.T) {
	t.Setenv(EnvSecretDir, "")
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	open := func() (*Platform, error) {
		p, err := Open(context.Background(), Config{DB: filepath.Join(dir, "qshield.db"), StateDir: dir, QKD: QKDConfig{Off: true}})
		if err == nil {
			p.Close()
		}
		return p, err
	}
	if _, err := open(); err != nil {
		t.Fatal(err)
	}
	sd := DefaultSecretDir(dir)
	key, err := os.ReadFile(filepath.Join(sd, "platform.key"))
	if err != nil {
		t.Fatalf("platform.key not in %s: %v", sd, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "platform.key")); err == nil {
		t.Fatal("platform.key beside the database")
	}
	if fi, err := os.Stat(sd); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("secret directory mode: %v %v", fi.Mode(), err)
	}
	// The audit log's checkpoint signing key is not beside the log it
	// signs (it is derived from the platform key); its public half is.
	if _, err := os.Stat(filepath.Join(dir, "audit-checkpoint.key")); err == nil {
		t.Fatal("audit-checkpoint.key beside the database")
	}
	if _, err := os.Stat(AuditVerifierKeyFile(dir)); err != nil {
		t.Fatalf("audit-checkpoint.vkey not beside the database: %v", err)
	}
	// An older layout (the key in the state directory) is moved out, and
	// the platform still opens its database with it.
	if err := os.Rename(filepath.Join(sd, "platform.key"), filepath.Join(dir, "platform.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := open(); err != nil {
		t.Fatalf("open after moving the key back into the data directory: %v", err)
	}
	if moved, err := os.ReadFile(filepath.Join(sd, "platform.key")); err != nil || !bytes.Equal(moved, key) {
		t.Fatalf("key not moved to the secret directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "platform.key")); err == nil {
		t.Fatal("old copy left beside the database")
	}
	// Two different copies: an error naming both, and nothing moved.
	other := []byte("00000000000000000000000000000000000000000000000000000000000000aa\n")
	if err := os.WriteFile(filepath.Join(dir, "platform.key"), other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := open(); !errors.Is(err, ErrSecretsDiffer) {
		t.Fatalf("two different platform.key files: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(sd, "platform.key")); !bytes.Equal(b, key) {
		t.Fatal("the secret directory's key was replaced")
	}
}

// A flood with a revoked certificate is aggregated like an anonymous one:
// the trail does not grow with every refused request.
func TestRevokedFloodAuditBounded(t *testing.T) {
	p := openTestPlatform(t, Config{Trust: TrustConfig{RatePerSource: -1}})
	url := serve(t, p)
	ctx := context.Background()
	c, err := p.CA.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: "aud-r", Kind: pki.PrincipalAuditor})
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(p, c)
	if a := call(t, hc, "GET", url+"/v1/admin/certs", nil); a.status != 200 {
		t.Fatalf("before revocation: %d", a.status)
	}
	if err := p.CA.Revoke(ctx, c.Leaf.SerialNumber, "stolen"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if a := call(t, hc, "GET", url+"/v1/admin/certs", nil); a.status != http.StatusUnauthorized {
			t.Fatalf("revoked: %d", a.status)
		}
	}
	p.Router.Flush(ctx, true)
	var n int
	for _, ev := range []string{"authz.denied", "pki.verify"} {
		recs, err := p.Audit.Search(ctx, audit.Query{Event: ev, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	if n > 3 {
		t.Fatalf("100 refused requests wrote %d audit records", n)
	}
}
