package bioqr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"html/template"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/money"
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
)

// ErrorCodes returns the settlement API's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

// ErrorCode is the stable problem code for an error ("internal" when it is
// none of the sentinels, "cancelled" for a cancelled context).
func ErrorCode(err error) string { return codes.CodeOf(err) }

func writeErr(w http.ResponseWriter, r *http.Request, err error) { codes.Write(w, r, err) }

// Handler returns the settlement API, to mount at /v1/bioqr/ on a server
// whose TLS layer verifies client certificates against the platform CA:
//
//	GET  /v1/bioqr/credential       the settlement server's credential (any certified client)
//	GET  /v1/bioqr/status/{serial}  revocation status of a certificate (any certified client)
//	POST /v1/bioqr/enrol            enrol a phone (operator: role client)
//	POST /v1/bioqr/pos              certify a POS (operator: role client)
//	POST /v1/bioqr/settle           settle a sealed envelope (a certified POS)
//	POST /v1/bioqr/display          publish the POS's current consumption QR (a certified POS)
func (s *Settlement) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bioqr/credential", s.auth(anyRole, func(w http.ResponseWriter, r *http.Request, _ *x509.Certificate) {
		httpx.WriteJSON(w, http.StatusOK, map[string][]byte{"credential": s.Credential(), "ca_root": s.Root().Raw})
	}))
	mux.HandleFunc("GET /v1/bioqr/status/{serial}", s.auth(anyRole, func(w http.ResponseWriter, r *http.Request, _ *x509.Certificate) {
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
	}))
	mux.HandleFunc("POST /v1/bioqr/enrol", s.auth(operator, func(w http.ResponseWriter, r *http.Request, c *x509.Certificate) {
		var req EnrolRequest
		if !httpx.DecodeOrProblem(w, r, 64<<10, &req) {
			return
		}
		out, err := s.Enrol(r.Context(), c.Subject.CommonName, &req)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusCreated, out)
	}))
	mux.HandleFunc("POST /v1/bioqr/pos", s.auth(operator, func(w http.ResponseWriter, r *http.Request, c *x509.Certificate) {
		var req CertRequest
		if !httpx.DecodeOrProblem(w, r, 16<<10, &req) {
			return
		}
		out, err := s.RegisterPOS(r.Context(), c.Subject.CommonName, &req)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusCreated, out)
	}))
	mux.HandleFunc("POST /v1/bioqr/settle", s.auth(posOnly, func(w http.ResponseWriter, r *http.Request, c *x509.Certificate) {
		var req struct {
			Envelope []byte `json:"envelope"`
		}
		if !httpx.DecodeOrProblem(w, r, 64<<10, &req) {
			return
		}
		res, err := s.Settle(r.Context(), c, req.Envelope)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, res)
	}))
	mux.HandleFunc("POST /v1/bioqr/display", s.auth(posOnly, func(w http.ResponseWriter, r *http.Request, c *x509.Certificate) {
		var req DisplayRequest
		if !httpx.DecodeOrProblem(w, r, 8<<10, &req) {
			return
		}
		if err := s.publish(r.Context(), c, &req); err != nil {
			writeErr(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	return mux
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

type roleCheck int

const (
	anyRole roleCheck = iota
	operator
	posOnly
)

func (s *Settlement) auth(rc roleCheck, h func(http.ResponseWriter, *http.Request, *x509.Certificate)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
			httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_required", "this endpoint needs a client certificate issued by the platform CA")
			return
		}
		c := r.TLS.PeerCertificates[0]
		dev, err := s.cfg.CA.Verify(r.Context(), c, "", s.cfg.Now())
		if err != nil {
			httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_rejected", err.Error())
			return
		}
		role, _ := pki.RoleOf(c)
		switch {
		case rc == operator && role != pki.RoleClient:
			httpx.WriteProblem(w, r, http.StatusForbidden, "forbidden", "only an operator certificate (role client) may certify devices")
			return
		case rc == posOnly && (role != pki.RoleDevice || dev == nil || dev.Kind != pki.KindPOS):
			httpx.WriteProblem(w, r, http.StatusForbidden, "forbidden", "only a certified POS may do this")
			return
		}
		h(w, r, c)
	}
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
	expires, updated time.Time
	png              []byte
}

func newDisplayStore() *displayStore { return &displayStore{m: map[string]displayed{}} }

const maxDisplays = 10000

func (s *Settlement) publish(_ context.Context, posCert *x509.Certificate, req *DisplayRequest) error {
	dev, _ := pki.DeviceInfoOf(posCert)
	if dev == nil {
		return fmt.Errorf("%w: POS certificate without device information", ErrIllegalPOS)
	}
	d := displayed{message: req.Message, updated: s.cfg.Now()}
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
		png, _, err := qrimg.EncodePNG(req.Payload, qrimg.M, 6)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		d.payload, d.expires, d.png = req.Payload, c.Expires, png
	}
	s.display.mu.Lock()
	defer s.display.mu.Unlock()
	if _, ok := s.display.m[dev.Serial]; !ok && len(s.display.m) >= maxDisplays {
		return fmt.Errorf("%w: too many POS displays", ErrMalformed)
	}
	s.display.m[dev.Serial] = d
	return nil
}

func (s *Settlement) current(id string) (displayed, bool) {
	s.display.mu.Lock()
	defer s.display.mu.Unlock()
	d, ok := s.display.m[id]
	if ok && d.payload != "" && !s.cfg.Now().Before(d.expires) {
		d.payload, d.png = "", nil
		d.message = "QR expired"
	}
	return d, ok
}

var pageTmpl = template.Must(template.New("pos").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>qshield POS {{.ID}}</title>
<style>body{font-family:sans-serif;text-align:center;margin-top:2em}img{image-rendering:pixelated;width:min(80vw,480px)}</style>
</head><body><h1>POS {{.ID}}</h1>
{{if .HasQR}}<p>Scan to pay {{.Amount}}</p><img alt="consumption QR" src="{{.PNG}}"><p>valid until {{.Expires}}</p>{{else}}<p>No payment pending.</p>{{end}}
{{if .Message}}<p><strong>{{.Message}}</strong></p>{{end}}
</body></html>`))

// PageHandler serves the POS display pages, to mount at /bioqr/ (no client
// certificate needed: it shows what the POS would show on its own screen):
//
//	GET /bioqr/pos/{id}         HTML page refreshing every 2 s
//	GET /bioqr/pos/{id}/qr.png  the current consumption QR
func (s *Settlement) PageHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bioqr/pos/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		d, ok := s.current(id)
		if !ok {
			httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no POS "+id+" has published a display")
			return
		}
		data := struct {
			ID, Amount, PNG, Expires, Message string
			HasQR                             bool
		}{ID: id, Message: d.message, HasQR: d.payload != ""}
		if d.payload != "" {
			if c, err := ParseConsumption(d.payload); err == nil {
				data.Amount = money.Format(c.Amount, c.Currency)
			}
			data.PNG = "/bioqr/pos/" + id + "/qr.png?t=" + fmt.Sprint(d.updated.UnixNano())
			data.Expires = d.expires.Format(time.RFC3339)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'")
		_ = pageTmpl.Execute(w, data)
	})
	mux.HandleFunc("GET /bioqr/pos/{id}/qr.png", func(w http.ResponseWriter, r *http.Request) {
		d, ok := s.current(r.PathValue("id"))
		if !ok || d.png == nil {
			httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no current consumption QR")
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(d.png)
	})
	return mux
}
