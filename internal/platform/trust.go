package platform

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/qshield/qshield/consent"
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
		Signed:       p.Wallet,
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
// admin-key.pem; see LoadKeyPair). A plain PKCS #8 admin-key.pem of an
// older layout is sealed in place (logged) once it has been read.
func LoadAdmin(dir string) (tls.Certificate, error) { return loadAdminFiles(dir) }

// AdminSealKeyFile is the key file, in the secret directory of the state
// directory (SecretDir), that seals admin-key.pem when
// QSHIELD_ADMIN_PASSPHRASE is unset: outside the data directory, so that a
// copy of the data directory does not carry a usable admin key.
const AdminSealKeyFile = "admin-seal.key"

// adminPassphrase returns the encryptor of QSHIELD_ADMIN_PASSPHRASE, nil
// when it is unset.
func adminPassphrase() (pki.KeyEncryptor, error) {
	v := os.Getenv(EnvAdminPassphrase)
	if v == "" {
		return nil, nil
	}
	if len(v) < pki.MinPassphraseLen {
		return nil, fmt.Errorf("platform: %s must be at least %d characters", EnvAdminPassphrase, pki.MinPassphraseLen)
	}
	return pki.PassphraseKey([]byte(v)), nil
}

// adminKeyEncryptor returns what seals a new admin key of the state
// directory dir: QSHIELD_ADMIN_PASSPHRASE when set, else the raw key in
// AdminSealKeyFile (created on first use, mode 0600).
func adminKeyEncryptor(dir string) (pki.KeyEncryptor, error) {
	enc, err := adminPassphrase()
	if enc != nil || err != nil {
		return enc, err
	}
	sd, err := secretDir(dir)
	if err != nil {
		return nil, err
	}
	k, err := fsutil.LoadOrCreateKey(filepath.Join(sd, AdminSealKeyFile))
	if err != nil {
		return nil, fmt.Errorf("platform: admin seal key: %w", err)
	}
	defer clear(k)
	return pki.RawKey(k)
}

// adminSealKeyPath is where the admin seal key of the key file keyPath is
// looked for: in the secret directory of keyPath's directory (never
// created by a reader).
func adminSealKeyPath(keyPath string) string {
	d := os.Getenv(EnvSecretDir)
	if d == "" {
		d = DefaultSecretDir(filepath.Dir(keyPath))
	}
	return filepath.Join(d, AdminSealKeyFile)
}

func writeAdminFiles(dir string, cert tls.Certificate) error {
	enc, err := adminKeyEncryptor(dir)
	if err != nil {
		return err
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("platform: admin key cannot sign")
	}
	keyPEM, err := pki.SealPrivateKeyPEM(signer, enc)
	if err != nil {
		return fmt.Errorf("platform: encode admin key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "admin-key.pem"), keyPEM, 0o600, true); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	return fsutil.WriteFileAtomic(filepath.Join(dir, "admin.pem"), certPEM, 0o600, true)
}

// loadAdminFiles reads admin.pem and admin-key.pem of the state directory
// dir, and seals a plain admin-key.pem of an older layout in place.
func loadAdminFiles(dir string) (tls.Certificate, error) {
	keyPath := filepath.Join(dir, "admin-key.pem")
	cert, plain, err := loadKeyPair(filepath.Join(dir, "admin.pem"), keyPath)
	if err != nil || !plain {
		return cert, err
	}
	if err := resealAdminKey(dir, keyPath, cert); err != nil {
		// The credential works; only its protection at rest is missing.
		slog.Default().Warn("the admin key is stored in clear and could not be sealed", "file", keyPath, "err", err)
	}
	return cert, nil
}

// resealAdminKey replaces the plain admin-key.pem of an older layout with
// the key sealed as writeAdminFiles seals it (atomic write).
func resealAdminKey(dir, keyPath string, cert tls.Certificate) error {
	enc, err := adminKeyEncryptor(dir)
	if err != nil {
		return err
	}
	keyPEM, err := pki.SealPrivateKeyPEM(cert.PrivateKey.(crypto.Signer), enc)
	if err != nil {
		return fmt.Errorf("platform: seal admin key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(keyPath, keyPEM, 0o600, true); err != nil {
		return err
	}
	how := EnvAdminPassphrase
	if os.Getenv(EnvAdminPassphrase) == "" {
		how = adminSealKeyPath(keyPath)
	}
	slog.Default().Warn("sealed the admin key, which an older version stored in clear", "file", keyPath, "sealed_under", how)
	return nil
}

// LoadKeyPair reads a client certificate and its private key the way the
// admin credential is kept (what tls.LoadX509KeyPair cannot read): the key
// sealed under QSHIELD_ADMIN_PASSPHRASE, sealed under the key file
// admin-seal.key of the secret directory of the key's directory
// (QSHIELD_SECRET_DIR, else DefaultSecretDir(filepath.Dir(keyPath))), or
// plain PKCS #8. Every command that takes the admin's key (--admin DIR, or
// --cert/--key) loads it with this. Only LoadAdmin seals a plain key in
// place; a file named by --key is left as it is.
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	cert, _, err := loadKeyPair(certPath, keyPath)
	return cert, err
}

// loadKeyPair is LoadKeyPair; plain reports a key stored in clear.
func loadKeyPair(certPath, keyPath string) (_ tls.Certificate, plain bool, _ error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("platform: %s: %w", certPath, err)
	}
	key, plain, err := openAdminKey(keyPath, keyPEM)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return tls.Certificate{}, false, fmt.Errorf("platform: %s is not the key of %s (serial %s): the pair comes from two issuances; run `qshield admin rotate`",
			keyPath, certPath, cert.SerialNumber.Text(16))
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, plain, nil
}

// openAdminKey parses the admin key file keyPath (contents keyPEM): plain,
// or sealed under the passphrase or the admin seal key file.
func openAdminKey(keyPath string, keyPEM []byte) (crypto.Signer, bool, error) {
	if key, err := pki.ParsePrivateKeyPEM(keyPEM, nil); err == nil {
		return key, true, nil
	} else if !errors.Is(err, pki.ErrNoKey) {
		return nil, false, fmt.Errorf("platform: %s: %w", keyPath, err)
	}
	// Sealed: under the passphrase, or under the seal key file.
	pass, err := adminPassphrase()
	if err != nil {
		return nil, false, err
	}
	var passErr error
	if pass != nil {
		key, err := pki.ParsePrivateKeyPEM(keyPEM, pass)
		if err == nil {
			return key, false, nil
		}
		if !errors.Is(err, pki.ErrWrongKey) {
			return nil, false, fmt.Errorf("platform: %s: %w", keyPath, err)
		}
		passErr = err
	}
	sealKeyPath := adminSealKeyPath(keyPath)
	b, err := os.ReadFile(sealKeyPath)
	if errors.Is(err, os.ErrNotExist) {
		if passErr != nil {
			return nil, false, fmt.Errorf("platform: %s: %s does not open it (%w) and its seal key file %s does not exist", keyPath, EnvAdminPassphrase, passErr, sealKeyPath)
		}
		return nil, false, fmt.Errorf("platform: %s is sealed, and neither is %s set nor does its seal key file %s exist: copy %s from the secret directory of the state directory that created the key (or set %s to that directory); "+
			"to carry the admin credential to another machine, create it with %s set (`qshield admin rotate`)",
			keyPath, EnvAdminPassphrase, sealKeyPath, AdminSealKeyFile, EnvSecretDir, EnvAdminPassphrase)
	}
	if err != nil {
		return nil, false, fmt.Errorf("platform: read %s: %w", sealKeyPath, err)
	}
	k, err := fsutil.DecodeKey32(string(b))
	if err != nil {
		return nil, false, fmt.Errorf("platform: %s: %w", sealKeyPath, err)
	}
	raw, err := pki.RawKey(k)
	clear(k)
	if err != nil {
		return nil, false, err
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM, raw)
	if err != nil {
		if passErr != nil {
			return nil, false, fmt.Errorf("platform: %s: neither %s (%v) nor %s opens it: %w", keyPath, EnvAdminPassphrase, passErr, sealKeyPath, err)
		}
		return nil, false, fmt.Errorf("platform: %s: %s does not open it (if it was sealed under a passphrase, set %s): %w", keyPath, sealKeyPath, EnvAdminPassphrase, err)
	}
	return key, false, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
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
// that open it. Unset, it is DefaultSecretDir(state directory).
const EnvSecretDir = "QSHIELD_SECRET_DIR"

// sealingKeyFiles are the key files kept out of the data directory: those
// that open what the database seals, and the audit log's checkpoint signing
// key (beside the log, whoever can rewrite the log could re-sign it).
var sealingKeyFiles = []string{"platform.key", "ca-seal.key", "kme-master.key", auditKeyName}

const auditKeyName = "audit-checkpoint.key"

// AuditKeyFile is the default checkpoint signing key of the state directory
// stateDir: audit-checkpoint.key in its secret directory (see SecretDir),
// moved there from stateDir by an older layout. Its public half stays
// beside the database (AuditVerifierKeyFile).
func AuditKeyFile(stateDir string) (string, error) {
	d, err := secretDir(stateDir)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, auditKeyName), nil
}

// DefaultSecretDir is where the sealing keys of the state directory
// stateDir live when QSHIELD_SECRET_DIR is unset: a sibling directory,
// stateDir + "-secrets" (mode 0700), so that the keys are never inside the
// directory that holds the database and its backups.
func DefaultSecretDir(stateDir string) string {
	return filepath.Clean(stateDir) + "-secrets"
}

// ErrSecretsDiffer is a sealing key file found both in the state directory
// (an installation from before the keys moved out) and in the secret
// directory, with different contents: which one opens the database is the
// operator's decision, never a silent guess.
var ErrSecretsDiffer = errors.New("platform: two different copies of a sealing key")

// SecretDir returns the directory of the sealing key files of the state
// directory stateDir (see secretDir), for commands that keep a key file of
// their own there.
func SecretDir(stateDir string) (string, error) { return secretDir(stateDir) }

// secretDir is where key files live: QSHIELD_SECRET_DIR, else
// DefaultSecretDir(stateDir). Key files of an older layout, in stateDir
// itself, are moved there (and the move logged); a file present in both
// places with different contents is an error naming both.
func secretDir(stateDir string) (string, error) {
	d := os.Getenv(EnvSecretDir)
	what := EnvSecretDir
	if d == "" {
		d, what = DefaultSecretDir(stateDir), "secret directory"
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("platform: %s %s: %w (set %s to a writable directory outside the data directory)", what, d, err, EnvSecretDir)
	}
	if same, _ := sameDir(d, stateDir); same {
		return d, nil // QSHIELD_SECRET_DIR names the state directory itself: Open warns
	}
	for _, name := range sealingKeyFiles {
		if err := moveKeyFile(filepath.Join(stateDir, name), filepath.Join(d, name)); err != nil {
			return "", err
		}
	}
	return d, nil
}

func sameDir(a, b string) (bool, error) {
	x, err := filepath.Abs(a)
	if err != nil {
		return false, err
	}
	y, err := filepath.Abs(b)
	return x == y, err
}

// moveKeyFile moves a key file of the old layout (from) into the secret
// directory (to): created there exclusively, then removed from the old
// place. If to exists already with the same contents the old copy is
// removed; with other contents it is ErrSecretsDiffer.
func moveKeyFile(from, to string) error {
	old, err := os.ReadFile(from)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("platform: read %s: %w", from, err)
	}
	switch err := fsutil.CreateExclusive(to, old, 0o600); {
	case err == nil:
		slog.Default().Warn("moved a sealing key out of the data directory", "from", from, "to", to)
	case errors.Is(err, os.ErrExist):
		cur, rerr := os.ReadFile(to)
		if rerr != nil {
			return fmt.Errorf("platform: read %s: %w", to, rerr)
		}
		if !bytes.Equal(bytes.TrimSpace(cur), bytes.TrimSpace(old)) {
			return fmt.Errorf("%w: %s and %s differ; keep the one that opens this database (the other one seals nothing here) and remove the other", ErrSecretsDiffer, from, to)
		}
	default:
		return fmt.Errorf("platform: move %s to %s: %w", from, to, err)
	}
	if err := os.Remove(from); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("platform: remove %s after moving it to %s: %w", from, to, err)
	}
	return nil
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
