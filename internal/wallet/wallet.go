// Package wallet is the payer's wallet that runs in a phone's browser,
// served by `qshield serve` at /wallet/ (issue #19), and the server side it
// needs: enrolment of the browser's key as a phone principal, signed
// requests, balance and history.
//
// # Identity
//
// The browser generates an ECDSA P-256 key with WebCrypto, non-extractable,
// and keeps the CryptoKey in IndexedDB. Enrolment (POST /v1/wallet/enrol,
// public: it is authenticated by the account holder's single-use enrolment
// code, package consent, the codes every payer device needs) is the QMSP
// phone enrolment (platform QMSP.EnrolPhone): it uses the code, has the
// platform CA certify the public key as a principal of kind phone scoped to
// the account, and registers a payer number for it at the QMSP PPS; the
// same principal is registered as the account's watermark phone. The certificate never leaves the server: a browser
// cannot present it. Instead every API request is signed with HTTP Message
// Signatures (package httpsig) under key ID = the certificate's serial;
// Service.AuthenticateSigned looks the serial up in the CA's register and
// authenticates that certificate (revocation, status, kind) on every
// request, so revoking the wallet's serial stops it at once, as for mTLS.
// Routes accept a signed request only where their policy says OrSigned.
// Nonces are kept in the database (wallet_nonces), so a request replayed to
// another node is refused too.
//
// # Cryptography in the browser: WebCrypto and Go → WebAssembly
//
// The device key and the request signatures use WebCrypto: it is the only
// way to keep a private key non-extractable in a browser. The QMSP phone's
// own step (read the gateway's code; En_Info = pad ⊕ M; a one-time
// Poly1305 tag) needs Poly1305, which WebCrypto does not offer, so it runs
// as Go compiled to WebAssembly (package qmsp/paycode, built into
// assets/wallet.wasm with the QR decoder). The camera frames are decoded by
// the project's own decoder (qrimg, on gozxing) in the same module rather
// than a vendored JavaScript decoder: BarcodeDetector is missing from
// Chromium on Linux, and one decoder for the CLI, the tests and the browser
// means one behaviour to test; no JavaScript dependency is added. The
// module is about 6 MB, cached by the service worker after the first visit.
//
// assets/wallet.wasm and assets/wasm_exec.js are generated (`go generate
// ./internal/wallet`) and TestAssetsUpToDate rebuilds them and fails when
// the committed files differ (with the same Go release; built with
// -trimpath, the build is reproducible).
//
// # Schemes
//
// QMSP: the wallet scans the gateway's code with the camera and pays.
// Watermark (seed 003): the wallet asks for a code (signed POST
// /v1/watermark/codes) and renders its looping frames itself, in
// WebAssembly (watermark.Loop), full-screen, from T0, the slot key and the
// server's clock; once shown the loop needs no server. While the code is
// shown the front camera (wmchallenge.js) reads the scanner's challenge QR
// (issue 18) and the loop binds every frame's stamp to it
// (watermark.ChallengeTracker, Loop.ShowBoundAt), so the code pays only at
// the scanner the phone is held to. Bioqr (seed 004): see bioqr.go; the
// phone's steps run in WebAssembly (package bioqr/phonecode through
// wasm/bioqrphone).
//
// Self-verified shopping (seed 002, assets/shop.js, wasm/selfverify.go):
// the CLI phone's selfverify.User runs in the module unchanged (the
// package's user side builds for GOOS=js; its operator and vendor, which
// need a database, do not). The page registers an ECQV key with the
// operator's one-time code (d_U is made and kept in the page), withdraws
// prepaid tokens, pays a shop whose code (selfverify.VendorCode) the camera
// reads, at the shop's own origin (its API answers CORS; hence connect-src
// https: below), and answers deposit confirmations, agreeing only to
// payments this phone made. The wallet's secrets (d_U, token keys, K_UN,
// chain keys) are kept in IndexedDB, stored before each message leaves,
// AES-GCM-sealed under a non-extractable CryptoKey stored in the same
// IndexedDB: the protection is the browser's storage for this origin, not
// the seal (SECURITY.md says so). These requests carry no
// device signature: the protocol's own signatures authenticate them, and a
// shop must not learn who pays.
//
// The merchant scanner (/scanner/) shows its rotating challenge as a QR code
// beside its camera view (from its key, GET /v1/watermark/challenge-key,
// signed), films the payer's looping watermark code with the camera and
// reconstructs its token frame by frame
// (watermark/scan in WebAssembly), then submits POST /v1/watermark/pay
// signed with its own non-extractable key. Its key is registered by an
// administrator (POST /v1/watermark/admin/devices with the public key the
// page shows, role scanner); the page keeps the device number (the
// certificate serial) it is given.
package wallet

//go:generate sh -c "GOOS=js GOARCH=wasm go build -trimpath -buildvcs=false -ldflags='-s -w' -o assets/wallet.wasm ./wasm && cp \"$(go env GOROOT)/lib/wasm/wasm_exec.js\" assets/wasm_exec.js && go env GOVERSION > assets/go-version"

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/consent"
	"github.com/qshield/qshield/httpsig"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

//go:embed assets
var assets embed.FS

// Config wires the wallet to the platform.
type Config struct {
	DB     *sqldb.DB
	CA     *pki.CA
	Ledger *ledger.Ledger
	// Scheme of the signed "@target-uri" when the server sits behind a
	// TLS-terminating proxy ("" derives it from the connection).
	Scheme string
	Log    *slog.Logger
	Now    func() time.Time
}

// Enroller binds a browser key to an account (set once the schemes run).
type Enroller struct {
	// EnrolPhone certifies pub as phone principal name spending from
	// account with QMSP payer number payer, with the account holder's
	// enrolment code (package consent; platform QMSP.EnrolPhone): without a
	// valid code nothing is issued or bound, and the code is used once.
	EnrolPhone func(ctx context.Context, name string, payer uint64, account, code string, pub crypto.PublicKey) (*pki.Issued, error)
	// RegisterWatermark, when set, registers the same principal as the
	// account's watermark phone (seed 003 codes).
	RegisterWatermark func(ctx context.Context, name, account string) error
}

// Service is the wallet's server side.
type Service struct {
	cfg    Config
	verify httpsig.Verifier
}

// MaxSignatureAge is how long a signed request is valid and its nonce kept.
const MaxSignatureAge = 2 * time.Minute

// New migrates the wallet's table and returns the service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.DB.Migrate(ctx, "wallet", migrations); err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	s := &Service{cfg: cfg}
	s.verify = httpsig.Verifier{Nonces: &sqlNonces{db: cfg.DB, now: cfg.Now}, MaxAge: MaxSignatureAge, Scheme: cfg.Scheme, Now: cfg.Now, MaxBody: 64 << 10}
	return s, nil
}

// resolver authenticates the key ID's certificate and remembers its principal.
type resolver struct {
	s    *Service
	p    *pki.Principal
	cert *x509.Certificate
}

func (rv *resolver) PublicKey(ctx context.Context, keyID string) (*ecdsa.PublicKey, error) {
	if len(keyID) > 40 || strings.Trim(strings.ToLower(keyID), "0123456789abcdef") != "" || keyID == "" {
		return nil, fmt.Errorf("%w: key ID %q is not a certificate serial", httpsig.ErrUnknownKey, keyID)
	}
	der, err := rv.s.cfg.CA.CertificateDER(ctx, strings.ToLower(keyID))
	if err != nil {
		if ctx.Err() != nil || sqldb.IsUnavailable(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", httpsig.ErrUnknownKey, keyID)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("wallet: stored certificate %s: %w", keyID, err)
	}
	p, err := rv.s.cfg.CA.Authenticate(ctx, cert)
	if err != nil {
		if errors.Is(err, pki.ErrRevoked) || errors.Is(err, pki.ErrExpired) || errors.Is(err, pki.ErrUntrusted) ||
			errors.Is(err, pki.ErrWrongRole) || errors.Is(err, pki.ErrKeyMismatch) {
			return nil, fmt.Errorf("%w: %v", httpsig.ErrUnknownKey, err)
		}
		return nil, err
	}
	if p.Kind != pki.PrincipalPhone && p.Kind != pki.PrincipalScanner {
		return nil, fmt.Errorf("%w: only a phone's or a scanner's key may sign requests (this is a %s)", httpsig.ErrUnknownKey, p.Kind)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: the key is not ECDSA P-256", httpsig.ErrUnknownKey)
	}
	rv.p, rv.cert = p, cert
	return pub, nil
}

// AuthenticateSigned implements authz.SignedAuthenticator.
func (s *Service) AuthenticateSigned(r *http.Request) (*pki.Principal, *x509.Certificate, error) {
	rv := &resolver{s: s}
	v := s.verify
	v.Keys = rv
	if _, err := v.Verify(r); err != nil {
		return nil, nil, err
	}
	return rv.p, rv.cert, nil
}

var codes = httpx.NewRegistry(
	httpx.Code{Code: "malformed", Status: http.StatusBadRequest, Message: "The request could not be read."},
	httpx.Code{Code: "enrolment_refused", Status: http.StatusForbidden, Message: "The enrolment code is not valid for this account. Ask for a new code."},
	httpx.Code{Code: "no_account", Status: http.StatusForbidden, Message: "This wallet is not bound to an account."},
)

// Routes returns the wallet's routes; en may be nil for a node that serves
// the pages and verifies signatures but does not enrol.
func (s *Service) Routes(en *Enroller) []authz.Route {
	static, _ := fs.Sub(assets, "assets")
	scannerFiles, _ := fs.Sub(assets, "assets/scanner")
	files := http.FileServerFS(static)
	rs := []authz.Route{
		{Pattern: "GET /wallet", Policy: authz.Public("redirects to the wallet's page"), Handler: http.RedirectHandler("/wallet/", http.StatusMovedPermanently)},
		{Pattern: "GET /wallet/{file...}", Policy: authz.Public("the wallet web app's static files; they hold no data, every API call is signed"), Handler: http.StripPrefix("/wallet", securityHeaders(files))},
		{Pattern: "GET /v1/wallet/me", Policy: authz.Allow(pki.PrincipalPhone).OrSigned(), Handler: http.HandlerFunc(s.me)},
		{Pattern: "GET /scanner", Policy: authz.Public("redirects to the merchant scanner's page"), Handler: http.RedirectHandler("/scanner/", http.StatusMovedPermanently)},
		{Pattern: "GET /scanner/{file...}", Policy: authz.Public("the merchant scanner web app's static files; they hold no data, every API call is signed"), Handler: http.StripPrefix("/scanner", securityHeaders(http.FileServerFS(scannerFiles)))},
	}
	if en != nil {
		rs = append(rs, authz.Route{Pattern: "POST /v1/wallet/enrol", Policy: authz.Public("authenticated by the account holder's single-use enrolment code; certifies the browser's own key as a phone"),
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.enrol(w, r, en) })})
	}
	return rs
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; style-src 'self'; connect-src 'self' https:; frame-ancestors 'none'")
		w.Header().Set("Permissions-Policy", "camera=(self)")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-cache")
		if strings.HasSuffix(r.URL.Path, ".webmanifest") {
			w.Header().Set("Content-Type", "application/manifest+json")
		}
		h.ServeHTTP(w, r)
	})
}

// EnrolRequest is the body of POST /v1/wallet/enrol.
type EnrolRequest struct {
	Account   string `json:"account"`
	Code      string `json:"code"`
	PublicKey []byte `json:"public_key"` // SPKI DER of the WebCrypto ECDSA P-256 key
}

// Enrolled is its answer.
type Enrolled struct {
	KeyID   string `json:"key_id"` // the certificate serial: httpsig keyid
	Name    string `json:"name"`
	Payer   string `json:"payer"` // QMSP payer number, decimal (JavaScript numbers lose digits)
	Account string `json:"account"`
}

func (s *Service) enrol(w http.ResponseWriter, r *http.Request, en *Enroller) {
	var req EnrolRequest
	if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
		return
	}
	pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
	ek, ok := pub.(*ecdsa.PublicKey)
	if err != nil || !ok || ek.Curve != elliptic.P256() {
		codes.WriteCode(w, r, "malformed", "public_key must be an ECDSA P-256 SubjectPublicKeyInfo")
		return
	}
	if req.Account == "" || req.Code == "" {
		codes.WriteCode(w, r, "malformed", "account and code are required")
		return
	}
	var rb [12]byte
	if _, err := rand.Read(rb[:]); err != nil {
		codes.WriteCode(w, r, httpx.CodeUnavailable, "randomness")
		return
	}
	name := "wallet-" + hex.EncodeToString(rb[:6])
	payer := binary.BigEndian.Uint64(rb[4:]) & (1<<53 - 1) // exact in JavaScript
	iss, err := en.EnrolPhone(r.Context(), name, payer, req.Account, req.Code, ek)
	if err != nil {
		if errors.Is(err, consent.ErrConsent) || errors.Is(err, consent.ErrAccountNotEligible) {
			s.cfg.Log.Info("wallet enrolment refused", "account", req.Account, "err", err)
			codes.WriteCode(w, r, "enrolment_refused", "")
			return
		}
		s.cfg.Log.Error("wallet enrolment", "account", req.Account, "err", err)
		codes.WriteCode(w, r, httpx.CodeUnavailable, "")
		return
	}
	if en.RegisterWatermark != nil {
		if err := en.RegisterWatermark(r.Context(), name, req.Account); err != nil {
			s.cfg.Log.Error("wallet: watermark registration", "name", name, "err", err)
			codes.WriteCode(w, r, httpx.CodeUnavailable, "")
			return
		}
	}
	httpx.WriteJSON(w, http.StatusCreated, Enrolled{KeyID: iss.Cert.SerialNumber.Text(16), Name: name, Payer: strconv.FormatUint(payer, 10), Account: req.Account})
}

// Me is the answer of GET /v1/wallet/me: what the wallet's home shows,
// already in words and formatted amounts.
type Me struct {
	Account   string  `json:"account"`
	Balance   string  `json:"balance"`
	Available string  `json:"available"`
	History   []Entry `json:"history"`
}

// Entry is one line of the history.
type Entry struct {
	When    time.Time `json:"when"`
	Text    string    `json:"text"`   // "Paid" / "Received"
	Amount  string    `json:"amount"` // signed, formatted: "-12.34 CNY"
	Pending bool      `json:"pending,omitempty"`
}

func (s *Service) me(w http.ResponseWriter, r *http.Request) {
	p := authz.PrincipalFrom(r.Context())
	accts := p.ScopeValues("account:")
	if len(accts) != 1 {
		codes.WriteCode(w, r, "no_account", "")
		return
	}
	a, err := s.cfg.Ledger.Account(r.Context(), accts[0])
	if err != nil {
		codes.WriteCode(w, r, httpx.CodeUnavailable, "")
		return
	}
	hist, _, err := s.cfg.Ledger.History(r.Context(), a.ID, "", 20)
	if err != nil {
		codes.WriteCode(w, r, httpx.CodeUnavailable, "")
		return
	}
	out := Me{Account: a.ID, Balance: money.Format(a.Balance, a.Currency), Available: money.Format(a.Available(), a.Currency), History: []Entry{}}
	for _, t := range hist {
		e := Entry{When: t.CreatedAt, Pending: t.State == ledger.StatePending}
		if t.From == a.ID {
			e.Text, e.Amount = "Paid", "−"+money.Format(t.Amount, t.Currency)
		} else {
			e.Text, e.Amount = "Received", "+"+money.Format(t.Amount, t.Currency)
		}
		out.History = append(out.History, e)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}
