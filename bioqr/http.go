package bioqr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
)

// codes is the settlement API's error-code registry: every refusal the
// protocol can give, its HTTP status and a message safe to show the payer.
var codes = httpx.NewRegistry(
	httpx.Code{Code: "malformed", Status: http.StatusBadRequest, Message: "The request could not be read.", Err: ErrMalformed},
	httpx.Code{Code: "decrypt_failed", Status: http.StatusBadRequest, Message: "The payment data could not be opened.", Err: ErrDecrypt},
	httpx.Code{Code: "bad_signature", Status: http.StatusForbidden, Message: "The signature is not valid.", Err: ErrBadSignature},
	httpx.Code{Code: "illegal_pos", Status: http.StatusForbidden, Message: "This terminal is not certified for payments.", Err: ErrIllegalPOS},
	httpx.Code{Code: "illegal_phone", Status: http.StatusForbidden, Message: "This phone is not certified for payments.", Err: ErrIllegalPhone},
	httpx.Code{Code: "illegal_server", Status: http.StatusBadGateway, Message: "The settlement server could not be verified.", Err: ErrIllegalServer},
	httpx.Code{Code: "code_expired", Status: http.StatusGone, Message: "The payment code has expired; please scan a new one.", Err: ErrExpired},
	httpx.Code{Code: "rand_code_unknown", Status: http.StatusConflict, Message: "The payment code is not known; please scan a new one.", Err: ErrRandCodeUnknown},
	httpx.Code{Code: "rand_code_used", Status: http.StatusConflict, Message: "The payment code was already used.", Err: ErrRandCodeUsed},
	httpx.Code{Code: "wrong_pos", Status: http.StatusForbidden, Message: "The payment was made for another terminal.", Err: ErrWrongPOS},
	httpx.Code{Code: "mismatch", Status: http.StatusConflict, Message: "The payment does not match the terminal's request.", Err: ErrMismatch},
	httpx.Code{Code: "no_fingerprint", Status: http.StatusUnprocessableEntity, Message: "A fingerprint is needed to pay.", Err: ErrNoFingerprint},
	httpx.Code{Code: "fingerprint_mismatch", Status: http.StatusForbidden, Message: "The fingerprint did not match.", Err: ErrFingerprint},
	httpx.Code{Code: "phone_locked", Status: http.StatusTooManyRequests, Message: "Too many failed attempts; this phone is locked for a while.", Err: ErrLocked},
	httpx.Code{Code: "account_not_enrolled", Status: http.StatusForbidden, Message: "That account is not enrolled on this phone.", Err: ErrAccountNotEnrolled},
	httpx.Code{Code: "insufficient_funds", Status: http.StatusUnprocessableEntity, Message: "The account does not have enough money for this payment.", Err: ErrInsufficientFunds},
	httpx.Code{Code: "not_certified", Status: http.StatusConflict, Message: "The device has not been certified yet.", Err: ErrNotCertified},
	httpx.Code{Code: "wrong_key", Status: http.StatusForbidden, Message: "The device's key does not match its certificate.", Err: ErrWrongKey},
	httpx.Code{Code: "exists", Status: http.StatusConflict, Message: "That is already registered.", Err: ErrExists},
	httpx.Code{Code: "not_found", Status: http.StatusNotFound, Message: "That was not found.", Err: ErrNotFound},
	httpx.Code{Code: "consent_required", Status: http.StatusForbidden, Message: "The account holder's enrolment code is needed.", Err: ErrConsent},
	httpx.Code{Code: "account_not_eligible", Status: http.StatusForbidden, Message: "This account cannot be used from a payer's device.", Err: ErrAccountNotEligible},
)

// ErrorCodes returns the settlement API's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

// ErrorCode is the stable problem code for an error ("internal" when it is
// none of the sentinels, "cancelled" for a cancelled context).
func ErrorCode(err error) string { return codes.CodeOf(err) }

func writeErr(w http.ResponseWriter, r *http.Request, err error) { codes.Write(w, r, err) }

// Routes returns the settlement API with its authorization policies (see
// package authz), to register on a server whose TLS layer verifies client
// certificates against the platform CA:
//
//	GET  /v1/bioqr/credential        the settlement server's credential (any bioqr principal)
//	GET  /v1/bioqr/status/{serial}   revocation status of a certificate (any bioqr principal)
//	POST /v1/bioqr/enrolment-codes   an account holder's consent (admin, or an operator whose scope has the account)
//	POST /v1/bioqr/enrol             enrol a phone, with one enrolment code per account (admin, operator)
//	POST /v1/bioqr/pos               certify a POS (admin, or an operator whose scope has its merchant account)
//	POST /v1/bioqr/settle            settle a sealed envelope (a POS)
//	POST /v1/bioqr/display           publish the POS's own consumption QR (a POS)
//	GET  /bioqr/pos/{id}             the display page (public: what the POS screen shows)
//	GET  /bioqr/pos/{id}/status      its live status (public, polled by the page)
//	GET  /bioqr/pos/{id}/qr.png
func (s *Settlement) Routes() []authz.Route {
	anyBioQR := authz.Allow(pki.PrincipalAdmin, pki.PrincipalOperator, pki.PrincipalAuditor, pki.PrincipalPOS, pki.PrincipalPhone)
	certifiers := authz.Allow(pki.PrincipalAdmin, pki.PrincipalOperator)
	pos := authz.Allow(pki.PrincipalPOS)
	page := authz.Public("a POS display page shows what the POS's own screen shows")
	hf := func(f http.HandlerFunc) http.Handler { return f }
	return []authz.Route{
		{Pattern: "GET /v1/bioqr/credential", Policy: anyBioQR, Handler: hf(func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteJSON(w, http.StatusOK, map[string][]byte{"credential": s.Credential(), "ca_root": s.Root().Raw})
		})},
		{Pattern: "GET /v1/bioqr/status/{serial}", Policy: anyBioQR, Handler: hf(s.serveStatus)},
		{Pattern: "POST /v1/bioqr/enrolment-codes", Policy: certifiers, Handler: s.cfg.Consent.Handler()},
		{Pattern: "POST /v1/bioqr/enrol", Policy: certifiers, Handler: hf(func(w http.ResponseWriter, r *http.Request) {
			var req EnrolRequest
			if !httpx.DecodeOrProblem(w, r, 64<<10, &req) {
				return
			}
			out, err := s.Enrol(r.Context(), actorOf(authz.PrincipalFrom(r.Context())), &req)
			if err != nil {
				writeErr(w, r, err)
				return
			}
			httpx.WriteJSON(w, http.StatusCreated, out)
		})},
		{Pattern: "POST /v1/bioqr/pos", Policy: certifiers, Handler: hf(func(w http.ResponseWriter, r *http.Request) {
			p := authz.PrincipalFrom(r.Context())
			var req CertRequest
			if !httpx.DecodeOrProblem(w, r, 16<<10, &req) {
				return
			}
			if acct := req.Attrs[AttrMerchantAccount]; acct != "" && !mayActFor(p, acct) {
				httpx.WriteProblem(w, r, http.StatusForbidden, "not_owner", "merchant account "+acct+" is outside this operator's scope")
				return
			}
			out, err := s.RegisterPOS(r.Context(), actorOf(p), &req)
			if err != nil {
				writeErr(w, r, err)
				return
			}
			httpx.WriteJSON(w, http.StatusCreated, out)
		})},
		{Pattern: "POST /v1/bioqr/settle", Policy: pos, Handler: hf(func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Envelope []byte `json:"envelope"`
			}
			if !httpx.DecodeOrProblem(w, r, 64<<10, &req) {
				return
			}
			res, err := s.Settle(r.Context(), authz.CertificateFrom(r.Context()), req.Envelope)
			if err != nil {
				writeErr(w, r, err)
				return
			}
			httpx.WriteJSON(w, http.StatusOK, res)
		})},
		{Pattern: "POST /v1/bioqr/display", Policy: pos, Handler: hf(func(w http.ResponseWriter, r *http.Request) {
			var req DisplayRequest
			if !httpx.DecodeOrProblem(w, r, 8<<10, &req) {
				return
			}
			if err := s.publish(r.Context(), authz.PrincipalFrom(r.Context()), authz.CertificateFrom(r.Context()), &req); err != nil {
				writeErr(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})},
		{Pattern: "GET /bioqr/pos/{id}", Policy: page, Handler: hf(s.servePage)},
		{Pattern: "GET /bioqr/pos/{id}/status", Policy: page, Handler: hf(s.servePageStatus)},
		{Pattern: "GET /bioqr/pos/{id}/qr.png", Policy: page, Handler: hf(s.servePNG)},
	}
}

// Handler serves Routes on its own mux, authenticating callers against the
// settlement's CA (for a stand-alone settlement server; the platform
// registers Routes on its own router).
func (s *Settlement) Handler() http.Handler {
	rt := authz.New(authz.Options{Auth: s.cfg.CA})
	rt.Register(s.Routes()...)
	return rt
}

// mayActFor reports whether p may act for a ledger account: an
// administrator always, an operator when its scope names the account.
func mayActFor(p *pki.Principal, account string) bool {
	if p == nil || account == "" {
		return false
	}
	return p.Kind == pki.PrincipalAdmin || p.MayActFor("account:"+account)
}

// actorOf names a principal in audit records: kind, name and serial.
func actorOf(p *pki.Principal) string {
	if p == nil {
		return "anonymous"
	}
	return string(p.Kind) + ":" + p.Name + "#" + p.Serial
}

func (s *Settlement) serveStatus(w http.ResponseWriter, r *http.Request) {
	serial, ok := new(big.Int).SetString(r.PathValue("serial"), 16)
	if !ok || serial.Sign() <= 0 || serial.BitLen() > 160 {
		httpx.WriteProblem(w, r, http.StatusBadRequest, "malformed", "serial must be hexadecimal")
		return
	}
	revoked, err := s.cfg.CA.IsRevoked(r.Context(), serial)
	if errors.Is(err, pki.ErrUnknownCert) {
		httpx.WriteJSON(w, http.StatusOK, StatusResponse{Serial: serial.Text(16), Known: false, Revoked: true})
		return
	}
	if err != nil {
		writeErr(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, StatusResponse{Serial: serial.Text(16), Known: true, Revoked: revoked})
}

// StatusResponse is the body of GET /v1/bioqr/status/{serial}.
type StatusResponse struct {
	Serial  string `json:"serial"`
	Known   bool   `json:"known"`
	Revoked bool   `json:"revoked"`
}

// DisplayRequest is the body of POST /v1/bioqr/display.
type DisplayRequest struct {
	Payload string `json:"payload"`           // the consumption QR, or "" to clear
	Message string `json:"message,omitempty"` // e.g. the last payment's outcome
}

// Client is the HTTP client of the settlement API, used by `qshield pos`
// and `qshield phone bioqr`. It is a Settler and a RevocationChecker.
type Client struct {
	c *httpx.Client
}

// NewClient returns a client for base (e.g. "https://localhost:8443") over
// tlsConfig (the device's certificate for mutual TLS).
func NewClient(base string, tlsConfig *tls.Config) *Client {
	tr := &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	c := httpx.NewClient(base, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	c.Codes, c.Name, c.MaxResponse = codes, "bioqr", 1<<20
	return &Client{c: c}
}

// Close releases idle connections.
func (c *Client) Close() { c.c.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.c.Do(ctx, method, path, nil, in, out)
	return err
}

// SettlementCredential fetches the settlement server's credential.
func (c *Client) SettlementCredential(ctx context.Context) ([]byte, error) {
	var out struct {
		Credential []byte `json:"credential"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/bioqr/credential", nil, &out)
	return out.Credential, err
}

// CheckRevoked asks the server for a certificate's status.
func (c *Client) CheckRevoked(ctx context.Context, serial *big.Int) error {
	var st StatusResponse
	if err := c.do(ctx, http.MethodGet, "/v1/bioqr/status/"+serial.Text(16), nil, &st); err != nil {
		return err
	}
	if !st.Known {
		return fmt.Errorf("%w: serial %s", pki.ErrUnknownCert, serial.Text(16))
	}
	if st.Revoked {
		return fmt.Errorf("%w: serial %s", pki.ErrRevoked, serial.Text(16))
	}
	return nil
}

// Enrol sends a phone enrolment (operator certificate required).
func (c *Client) Enrol(ctx context.Context, req *EnrolRequest) (*Certified, error) {
	var out Certified
	return &out, c.do(ctx, http.MethodPost, "/v1/bioqr/enrol", req, &out)
}

// RegisterPOS sends a POS certification request (operator certificate required).
func (c *Client) RegisterPOS(ctx context.Context, req *CertRequest) (*Certified, error) {
	var out Certified
	return &out, c.do(ctx, http.MethodPost, "/v1/bioqr/pos", req, &out)
}

// Settle sends a sealed envelope (POS certificate required).
func (c *Client) Settle(ctx context.Context, sealed []byte) (*SettleResult, error) {
	var out SettleResult
	if err := c.do(ctx, http.MethodPost, "/v1/bioqr/settle", map[string][]byte{"envelope": sealed}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Display publishes the POS's current consumption QR to its page.
func (c *Client) Display(ctx context.Context, req DisplayRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/bioqr/display", req, nil)
}

// displayStore keeps, per POS, the consumption QR its page shows.
type displayStore struct {
	mu sync.Mutex
	m  map[string]displayed
}

type displayed struct {
	payload, message string
	merchant         string // the merchant's name from the last consumption QR
	publisher        string // certificate serial of the POS that published it
	expires, updated time.Time
	png              []byte
}

func newDisplayStore() *displayStore { return &displayStore{m: map[string]displayed{}} }

const maxDisplays = 10000

// publish shows req on the display of the POS p. Displays are keyed by the
// POS principal's device serial, which the CA keeps unique among active POS
// certificates, and remember the certificate that published them: a page
// whose publisher is no longer the active certificate shows nothing.
func (s *Settlement) publish(_ context.Context, p *pki.Principal, posCert *x509.Certificate, req *DisplayRequest) error {
	if p == nil || p.Kind != pki.PrincipalPOS || p.DeviceSerial == "" || posCert == nil {
		return fmt.Errorf("%w: only a certified POS publishes a display", ErrIllegalPOS)
	}
	d := displayed{message: req.Message, updated: s.cfg.Now(), publisher: p.Serial}
	if len(req.Message) > 200 {
		return fmt.Errorf("%w: message longer than 200 bytes", ErrMalformed)
	}
	if req.Payload != "" {
		c, err := ParseConsumption(req.Payload)
		if err != nil {
			return err
		}
		if c.Credential.Serial.Cmp(posCert.SerialNumber) != 0 {
			return fmt.Errorf("%w: the QR names another POS", ErrWrongPOS)
		}
		png, _, err := qrimg.EncodePNG(req.Payload, qrimg.M, posQRScale)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		d.payload, d.expires, d.png, d.merchant = req.Payload, c.Expires, png, c.Name
	}
	s.display.mu.Lock()
	defer s.display.mu.Unlock()
	if d.merchant == "" {
		d.merchant = s.display.m[p.DeviceSerial].merchant
	}
	if _, ok := s.display.m[p.DeviceSerial]; !ok && len(s.display.m) >= maxDisplays {
		return fmt.Errorf("%w: too many POS displays", ErrMalformed)
	}
	s.display.m[p.DeviceSerial] = d
	return nil
}

func (s *Settlement) current(id string) (displayed, bool) {
	s.display.mu.Lock()
	defer s.display.mu.Unlock()
	d, ok := s.display.m[id]
	if ok && d.payload != "" && !s.cfg.Now().Before(d.expires) {
		d.payload, d.png = "", nil
		d.message = msgExpired
	}
	return d, ok
}

// msgExpired is the display message of a QR that expired.
const msgExpired = "QR expired"

// PageHandler serves the POS display pages (Routes' public routes) on their
// own mux, to mount at /bioqr/ on a stand-alone server.
func (s *Settlement) PageHandler() http.Handler {
	rt := authz.New(authz.Options{})
	for _, r := range s.Routes() {
		if r.Policy.IsPublic() {
			rt.Register(r)
		}
	}
	return rt
}

// currentFor is current(id), empty unless the publishing certificate is
// still active (a revoked or superseded POS's display disappears).
func (s *Settlement) currentFor(ctx context.Context, id string) (displayed, bool) {
	d, ok := s.current(id)
	if !ok {
		return d, false
	}
	if p, err := s.cfg.CA.PrincipalBySerial(ctx, d.publisher); err != nil || p.Status != pki.StatusActive {
		return displayed{}, false
	}
	return d, true
}

// GET /bioqr/pos/{id}         the page (see posPage)
func (s *Settlement) servePage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, ok := s.currentFor(r.Context(), id)
	s.posPage(w, r, id, d, ok)
}

// GET /bioqr/pos/{id}/status  the page's status, polled every second
func (s *Settlement) servePageStatus(w http.ResponseWriter, r *http.Request) {
	d, ok := s.currentFor(r.Context(), r.PathValue("id"))
	s.posStatus(w, r, d, ok)
}

// GET /bioqr/pos/{id}/qr.png  the current consumption QR
func (s *Settlement) servePNG(w http.ResponseWriter, r *http.Request) {
	d, ok := s.currentFor(r.Context(), r.PathValue("id"))
	if !ok || d.png == nil {
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no current consumption QR")
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(d.png)
}
