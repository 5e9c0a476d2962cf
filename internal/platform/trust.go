package platform

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/qshield/qshield/consent"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/fsutil"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/lease"
	"github.com/qshield/qshield/pki"
)

// Trust wiring. Every route of the platform is registered on one
// authorization router (package authz) with its policy; the router
// authenticates every request's client certificate to a principal of the
// CA register (per request, so revocation also ends kept-alive
// connections), refuses the wrong kinds, rate-limits, and reports refusals
// to the audit trail.

// TrustConfig is the trust part of Config.
type TrustConfig struct {
	// TrustedProxies (addresses or CIDR prefixes) may pass a verified client
	// certificate in ClientCertHeader; needed to serve authenticated routes
	// with InsecureHTTP behind a TLS-terminating proxy. Without them a
	// plain-HTTP platform serves only its public routes.
	TrustedProxies   []string
	ClientCertHeader string
	// RatePerPrincipal and RatePerSource are requests per second (0:
	// DefaultRatePerPrincipal, DefaultRatePerSource; negative: unlimited).
	// The per-source limit applies to requests without a principal.
	RatePerPrincipal, RatePerSource float64
	// RequirePQ refuses TLS handshakes to the platform listener that did not
	// negotiate X25519MLKEM768 (they are always counted).
	RequirePQ bool
}

// Default rate limits.
const (
	DefaultRatePerPrincipal = 200
	DefaultRatePerSource    = 20
)

// EnvAdminPassphrase names the variable whose value, when set, seals the
// admin credential's private key (admin-key.pem) under argon2id.
const EnvAdminPassphrase = "QSHIELD_ADMIN_PASSPHRASE"

func (p *Platform) newRouter(ctx context.Context) error {
	tc := p.Config.Trust
	var proxies []netip.Prefix
	for _, s := range tc.TrustedProxies {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("platform: trusted proxy %q is neither an address nor a prefix", s)
			}
			pr = netip.PrefixFrom(a, a.BitLen())
		}
		proxies = append(proxies, pr)
	}
	if len(proxies) > 0 && tc.ClientCertHeader == "" {
		return errors.New("platform: trusted proxies need a client certificate header")
	}
	limit := func(v, def float64) rate.Limit {
		switch {
		case v == 0:
			return rate.Limit(def)
		case v < 0:
			return 0
		}
		return rate.Limit(v)
	}
	p.Router = authz.New(authz.Options{
		Auth: p.CA, Mux: p.Server,
		TrustedProxies: proxies, ClientCertHeader: tc.ClientCertHeader,
		PerPrincipal: limit(tc.RatePerPrincipal, DefaultRatePerPrincipal),
		PerSource:    limit(tc.RatePerSource, DefaultRatePerSource),
		Denied:       p.auditDenial,
	})
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); p.Router.Run(rctx) }()
	p.closers = append(p.closers, func() error { cancel(); <-done; return nil })
	return nil
}

// auditDenial writes a refused request to the audit trail: the actor is
// the principal (kind:name#serial) or "anonymous", never a name the caller
// chose; text from the request is escaped, so no byte can make the append
// fail.
func (p *Platform) auditDenial(ctx context.Context, d authz.Denial) {
	actor := "anonymous"
	if d.Principal != nil {
		actor = principalActor(d.Principal)
	}
	details := map[string]string{"source": escape(d.Source), "status": strconv.Itoa(d.Status), "code": d.Code,
		"reason": escape(d.Reason), "count": strconv.Itoa(d.Count)}
	if !d.Minute.IsZero() {
		details["minute"] = d.Minute.Format("2006-01-02T15:04Z")
	}
	if _, err := p.Audit.Append(ctx, audit.Entry{Actor: actor, Event: "authz.denied", Outcome: audit.OutcomeDenied,
		Origin: "authz", Resource: escape(d.Pattern), Details: details}); err != nil {
		p.Config.Log.Error("audit of a refused request failed", "err", err, "actor", actor, "pattern", d.Pattern)
	}
}

func principalActor(pr *pki.Principal) string {
	return string(pr.Kind) + ":" + pr.Name + "#" + pr.Serial
}

// escape makes s printable UTF-8 of at most 512 bytes: control characters
// and invalid bytes become \xNN.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 512; {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || r < 0x20 || r == 0x7f {
			fmt.Fprintf(&b, "\\x%02x", s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// countHandshakes wraps the platform listener's TLS configuration: it
// prefers X25519MLKEM768, counts the clients that do not offer it (their
// handshake would negotiate a classical key exchange) and, with RequirePQ,
// refuses them.
func (p *Platform) countHandshakes(c *tls.Config) *tls.Config {
	c = pki.PreferPostQuantum(c)
	if p.Config.Trust.RequirePQ {
		c = pki.PostQuantumOnly(c)
	}
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(hello.SupportedCurves, tls.X25519MLKEM768) {
			p.classical.Add(1)
			if p.Config.Trust.RequirePQ {
				return nil, fmt.Errorf("platform: client offers no post-quantum key exchange (%v)", hello.SupportedCurves)
			}
		}
		return nil, nil
	}
	return c
}

// ClassicalHandshakes is how many TLS handshakes to the platform listener
// negotiated a classical (not post-quantum) key exchange.
func (p *Platform) ClassicalHandshakes() int64 { return p.classical.Load() }

// ---- the admin credential ----

// adminCredential loads the admin credential from the state directory when
// it is an active admin principal of this CA, and otherwise creates one —
// only when no active admin exists (a lost credential is replaced with
// `qshield admin rotate`, never silently on start). A further node of a
// platform whose admin credential lives elsewhere starts without it
// (AdminCert stays empty).
//
// Nodes starting together each found no admin and issued one, and two
// writers' admin-key.pem and admin.pem interleaved in a shared directory
// (issue #14: a node loaded one's certificate with the other's key and every
// handshake with it failed with "tls: error decrypting message"). The whole
// check-then-issue runs under one lock across the nodes of the database, and
// the loader refuses a pair whose key is not the certificate's.
func (p *Platform) adminCredential(ctx context.Context) error {
	unlock, err := lease.Lock(ctx, p.DB, "platform admin credential")
	if err != nil {
		return fmt.Errorf("platform: admin credential: %w", err)
	}
	defer unlock()
	cert, err := loadAdminFiles(p.StateDir)
	if err == nil {
		pr, aerr := p.CA.Authenticate(ctx, cert.Leaf)
		if aerr == nil && pr.Kind == pki.PrincipalAdmin {
			p.AdminCert = cert
			return nil
		}
		if aerr == nil {
			return fmt.Errorf("platform: %s/admin.pem is a %s, not the admin credential", p.StateDir, pr.Kind)
		}
		if !errors.Is(aerr, pki.ErrUntrusted) {
			return fmt.Errorf("platform: admin credential in %s refused: %w (run `qshield admin rotate`)", p.StateDir, aerr)
		}
		// Issued by another CA (a new database): make a new one.
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	active, err := p.CA.Principals(ctx, pki.PrincipalFilter{Kind: pki.PrincipalAdmin, ActiveOnly: true, Limit: 1})
	if err != nil {
		return err
	}
	if len(active) > 0 {
		// Another node (or an earlier start with another directory) holds
		// the one admin credential. A node does not need it to serve: the
		// operator keeps it. Never issue a second one silently.
		p.Config.Log.InfoContext(ctx, "the admin credential is not in this node's directory; operators use the copy they hold (qshield admin rotate replaces a lost one)",
			"serial", active[0].Serial, "dir", p.StateDir)
		return nil
	}
	return p.issueAdmin(ctx)
}

func (p *Platform) issueAdmin(ctx context.Context) error {
	cert, err := issueAdmin(ctx, p.CA, p.StateDir)
	if err == nil {
		p.AdminCert = cert
	}
	return err
}

func issueAdmin(ctx context.Context, ca *pki.CA, dir string) (tls.Certificate, error) {
	cert, err := ca.IssueTLSFor(ctx, pki.IssueRequest{Role: pki.RoleClient, CommonName: AdminName, Kind: pki.PrincipalAdmin, Scope: []string{"*"}})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("platform: admin certificate: %w", err)
	}
	return cert, writeAdminFiles(dir, cert)
}

// RotateAdmin revokes every active admin credential of ca and issues a new
// one into the state directory dir (`qshield admin rotate`). A running
// platform refuses the old credential within pki.PrincipalCacheTTL.
func RotateAdmin(ctx context.Context, ca *pki.CA, dir string) (tls.Certificate, error) {
	active, err := ca.Principals(ctx, pki.PrincipalFilter{Kind: pki.PrincipalAdmin, ActiveOnly: true, Limit: 1000})
	if err != nil {
		return tls.Certificate{}, err
	}
	for _, a := range active {
		n, _ := new(big.Int).SetString(a.Serial, 16)
		if err := ca.Revoke(ctx, n, "rotated"); err != nil {
			return tls.Certificate{}, err
		}
	}
	return issueAdmin(ctx, ca, dir)
}

// RotateAdmin is RotateAdmin on the platform's CA and state directory.
func (p *Platform) RotateAdmin(ctx context.Context) error {
	cert, err := RotateAdmin(ctx, p.CA, p.StateDir)
	if err == nil {
		p.AdminCert = cert
	}
	return err
}

// LoadAdmin reads the admin credential of a state directory (admin.pem and
// admin-key.pem, the key sealed under QSHIELD_ADMIN_PASSPHRASE when set).
func LoadAdmin(dir string) (tls.Certificate, error) { return loadAdminFiles(dir) }

func adminKeyEncryptor() (pki.KeyEncryptor, error) {
	v := os.Getenv(EnvAdminPassphrase)
	if v == "" {
		return nil, nil
	}
	if len(v) < pki.MinPassphraseLen {
		return nil, fmt.Errorf("platform: %s must be at least %d characters", EnvAdminPassphrase, pki.MinPassphraseLen)
	}
	return pki.PassphraseKey([]byte(v)), nil
}

func writeAdminFiles(dir string, cert tls.Certificate) error {
	enc, err := adminKeyEncryptor()
	if err != nil {
		return err
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("platform: admin key cannot sign")
	}
	var keyPEM []byte
	if enc != nil {
		keyPEM, err = pki.SealPrivateKeyPEM(signer, enc)
	} else {
		keyDER, merr := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		err = merr
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	if err != nil {
		return fmt.Errorf("platform: encode admin key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "admin-key.pem"), keyPEM, 0o600, true); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	return fsutil.WriteFileAtomic(filepath.Join(dir, "admin.pem"), certPEM, 0o600, true)
}

// loadAdminFiles reads admin.pem and admin-key.pem (sealed under
// QSHIELD_ADMIN_PASSPHRASE, or plain PKCS #8).
func loadAdminFiles(dir string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "admin.pem"))
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "admin-key.pem"))
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("platform: admin.pem: %w", err)
	}
	enc, err := adminKeyEncryptor()
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM, enc)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("platform: admin-key.pem: %w", err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return tls.Certificate{}, fmt.Errorf("platform: %s is not the key of %s (serial %s): the pair comes from two issuances; run `qshield admin rotate`",
			filepath.Join(dir, "admin-key.pem"), filepath.Join(dir, "admin.pem"), cert.SerialNumber.Text(16))
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// ---- the certificate register API ----

// certRoutes registers the register's API:
//
//	GET  /v1/admin/certs?kind=&name=&active=1   list principals (admin, auditor)
//	GET  /v1/admin/certs/{serial}               one principal (admin, auditor)
//	POST /v1/admin/certs/{serial}/revoke        revoke: {"reason": "..."} (admin)
func (p *Platform) certRoutes() {
	read := authz.Allow(pki.PrincipalAdmin, pki.PrincipalAuditor)
	p.Router.HandleFunc("GET /v1/admin/certs", read, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		f := pki.PrincipalFilter{Kind: pki.PrincipalKind(q.Get("kind")), Name: q.Get("name"), ActiveOnly: q.Get("active") == "1", Limit: limit}
		if f.Kind != "" && !f.Kind.Valid() {
			httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid", "unknown kind "+string(f.Kind))
			return
		}
		out, err := p.CA.Principals(r.Context(), f)
		if err != nil {
			p.Config.Log.Error("list principals", "err", err)
			httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
			return
		}
		if out == nil {
			out = []*pki.Principal{}
		}
		httpx.WriteJSON(w, http.StatusOK, out)
	})
	p.Router.HandleFunc("GET /v1/admin/certs/{serial}", read, func(w http.ResponseWriter, r *http.Request) {
		pr, err := p.CA.PrincipalBySerial(r.Context(), r.PathValue("serial"))
		if !p.certErr(w, r, err) {
			return
		}
		httpx.WriteJSON(w, http.StatusOK, pr)
	})
	p.Router.HandleFunc("POST /v1/admin/certs/{serial}/revoke", authz.Allow(pki.PrincipalAdmin), func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
			return
		}
		pr, err := p.CA.PrincipalBySerial(r.Context(), r.PathValue("serial"))
		if !p.certErr(w, r, err) {
			return
		}
		n, _ := new(big.Int).SetString(pr.Serial, 16)
		if !p.certErr(w, r, p.CA.Revoke(r.Context(), n, req.Reason)) {
			return
		}
		pr, err = p.CA.PrincipalBySerial(r.Context(), pr.Serial)
		if !p.certErr(w, r, err) {
			return
		}
		httpx.WriteJSON(w, http.StatusOK, pr)
	})
}

func (p *Platform) certErr(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, pki.ErrUnknownCert):
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, pki.ErrBadRequest):
		httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid", err.Error())
	default:
		p.Config.Log.Error("certificate register", "err", err)
		httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
	}
	return false
}

// ---- payer accounts ----

// ErrNotPayerAccount: the account cannot be bound to a payer device.
var ErrNotPayerAccount = consent.ErrAccountNotEligible

// startConsent opens the enrolment-code store every payer-device enrolment
// (bioqr, QMSP and watermark phones) requires, and its route.
func (p *Platform) startConsent(ctx context.Context) error {
	c, err := consent.New(ctx, consent.Config{DB: p.DB, Accounts: p.Ledger, Audit: p.Audit, Log: p.Config.Log})
	if err != nil {
		return fmt.Errorf("platform: %w", err)
	}
	p.Consent = c
	p.Router.Handle("POST /v1/enrolment-codes", authz.Allow(pki.PrincipalAdmin, pki.PrincipalOperator), c.Handler())
	return nil
}

// IssueEnrolmentCode issues an account holder's enrolment code for account
// in-process (the demo and tests; clients use POST /v1/enrolment-codes).
func (p *Platform) IssueEnrolmentCode(ctx context.Context, issuer, account string) (string, error) {
	c, err := p.Consent.Issue(ctx, issuer, account)
	if err != nil {
		return "", err
	}
	return c.Code, nil
}

// bindPayerDevice uses the holder's code for account on behalf of device
// (a payer device of scheme), then runs bind; if bind fails the code is
// given back, and a certificate bind issued is revoked by bind itself.
func (p *Platform) bindPayerDevice(ctx context.Context, scheme, device, account, code string, bind func() error) error {
	name := scheme + ":" + device
	if err := p.Consent.Use(ctx, []string{account}, []string{code}, name); err != nil {
		return err
	}
	if err := bind(); err != nil {
		if rerr := p.Consent.Release(context.WithoutCancel(ctx), []string{code}, name); rerr != nil {
			p.Config.Log.Error("platform: release enrolment code", "device", name, "err", rerr)
		}
		return err
	}
	return nil
}

// revokeUnbound revokes a certificate issued for a device whose binding
// then failed, so that no unbound principal stays active.
func (p *Platform) revokeUnbound(ctx context.Context, iss *pki.Issued) {
	if err := p.CA.Revoke(context.WithoutCancel(ctx), iss.Cert.SerialNumber, "enrolment not completed"); err != nil {
		p.Config.Log.Error("platform: revoke unbound device certificate", "serial", iss.Cert.SerialNumber.Text(16), "err", err)
	}
}

// ---- secrets at rest ----

// EnvSecretDir names the directory holding platform.key and ca-seal.key
// when QSHIELD_PLATFORM_KEY and QSHIELD_CA_KEY are not set. It should be
// outside the data directory (another disk, a tmpfs filled from a secret
// store), so that a copy of the data directory does not carry the keys
// that open it.
const EnvSecretDir = "QSHIELD_SECRET_DIR"

// secretDir is where key files live: QSHIELD_SECRET_DIR, else stateDir.
func secretDir(stateDir string) (string, error) {
	d := os.Getenv(EnvSecretDir)
	if d == "" {
		return stateDir, nil
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("platform: %s: %w", EnvSecretDir, err)
	}
	return d, nil
}

// warnSecretsBesideData logs when the sealing keys are files in the
// directory of the SQLite database they seal.
func (p *Platform) warnSecretsBesideData() {
	if p.DB.Path == "" || (os.Getenv("QSHIELD_PLATFORM_KEY") != "" && os.Getenv("QSHIELD_CA_KEY") != "") {
		return
	}
	dir, err := secretDir(p.StateDir)
	if err != nil {
		return
	}
	a, _ := filepath.Abs(dir)
	b, _ := filepath.Abs(filepath.Dir(p.DB.Path))
	if a == b {
		p.Config.Log.Warn("the platform's sealing keys (platform.key, ca-seal.key) are beside the database they seal; set QSHIELD_PLATFORM_KEY and QSHIELD_CA_KEY, or "+EnvSecretDir+" to a directory outside the data directory",
			"dir", dir)
	}
}

// requestPrincipal names a request's caller for the server's logs and
// idempotency scopes: the client certificate's serial (unique, issued by
// the CA), never its common name; "" without one. The authorization router
// authenticates the certificate itself.
func requestPrincipal(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.VerifiedChains) > 0 {
		return "cert:" + r.TLS.PeerCertificates[0].SerialNumber.Text(16)
	}
	return ""
}
