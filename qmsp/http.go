package qmsp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/qshield/qshield/pki"
	"html/template"
	"io"
	"net/http"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/qrimg"
)

// peerName returns the common name of the verified client certificate, or ""
// when the connection carries none.
func peerName(r *http.Request) string {
	cn, _, err := pki.PeerIdentity(r.TLS)
	if err != nil {
		return ""
	}
	return cn
}

// errorStatus maps the package's errors to HTTP status and problem code.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrFormat):
		return http.StatusBadRequest, "malformed"
	case errors.Is(err, ErrUnknownGateway):
		return http.StatusForbidden, "unknown_gateway"
	case errors.Is(err, ErrUnknownPayer):
		return http.StatusForbidden, "unknown_payer"
	case errors.Is(err, ErrBadSignature):
		return http.StatusForbidden, "bad_gateway_signature"
	case errors.Is(err, ErrAuth):
		return http.StatusForbidden, "authentication_failed"
	case errors.Is(err, ErrOutOfStep):
		return http.StatusConflict, "preset_key_out_of_step"
	case errors.Is(err, ErrStale):
		return http.StatusBadRequest, "stale_request"
	case errors.Is(err, ErrExpired):
		return http.StatusGone, "code_expired"
	case errors.Is(err, ErrKeyUsed):
		return http.StatusConflict, "key_already_used"
	case errors.Is(err, ErrUnknownKey):
		return http.StatusNotFound, "unknown_key"
	case errors.Is(err, ErrMerchant):
		return http.StatusUnprocessableEntity, "wrong_merchant"
	case errors.Is(err, ErrCurrency):
		return http.StatusUnprocessableEntity, "unsupported_currency"
	case errors.Is(err, ErrRefused):
		return http.StatusUnprocessableEntity, "payment_refused"
	case errors.Is(err, ErrNoQuantumKey):
		return http.StatusServiceUnavailable, "no_quantum_key"
	case errors.Is(err, ErrGatewayExists):
		return http.StatusConflict, "gateway_exists"
	}
	return http.StatusInternalServerError, "internal"
}

func writeErr(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorStatus(err)
	detail := err.Error()
	if status == http.StatusInternalServerError {
		detail = "internal error"
	}
	httpx.WriteProblem(w, r, status, code, detail)
}

// Handler serves the CSS's gateway API:
//
//	POST /v1/qmsp/css/keys  key acquisition (gateway client certificate)
//	POST /v1/qmsp/css/ack   epoch acknowledgement
func (c *CSS) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/qmsp/css/keys", func(w http.ResponseWriter, r *http.Request) {
		peer := peerName(r)
		if peer == "" {
			httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_required", "a gateway certificate from the platform CA is required")
			return
		}
		var req KeyRequest
		if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
			return
		}
		d, err := c.AcquireKey(r.Context(), peer, req)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("POST /v1/qmsp/css/ack", func(w http.ResponseWriter, r *http.Request) {
		peer := peerName(r)
		if peer == "" {
			httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_required", "a gateway certificate from the platform CA is required")
			return
		}
		var ack Ack
		if !httpx.DecodeOrProblem(w, r, 4<<10, &ack) {
			return
		}
		if err := c.Acknowledge(r.Context(), peer, ack); err != nil {
			writeErr(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// Handler serves the payment platform's phone API:
//
//	POST /v1/qmsp/pay  a payment (phone client certificate, Idempotency-Key)
func (p *PPS) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/qmsp/pay", func(w http.ResponseWriter, r *http.Request) {
		peer := peerName(r)
		if peer == "" {
			httpx.WriteProblem(w, r, http.StatusUnauthorized, "client_certificate_required", "a phone certificate from the platform CA is required")
			return
		}
		key, ok := httpx.IdempotencyKey(w, r)
		if !ok {
			return
		}
		var req PaymentRequest
		if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
			return
		}
		rc, err := p.Pay(r.Context(), peer, key, req)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, rc)
	})
	return mux
}

// Client calls the CSS and PPS APIs over HTTPS (it implements CSSClient for a
// gateway and Payer for a phone; the TLS configuration carries the device's
// client certificate).
type Client struct {
	Base string
	HTTP *http.Client
}

// NewClient returns a client for base ("https://host:port").
func NewClient(base string, tc *tls.Config) *Client {
	return &Client{Base: base, HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true}}}
}

// ProblemError is an error answer from the server.
type ProblemError struct {
	httpx.Problem
	// Err is the package sentinel the code maps back to (nil if unknown).
	Err error
}

func (e *ProblemError) Error() string { return e.Problem.Error() }
func (e *ProblemError) Unwrap() error { return e.Err }

var codeErrors = map[string]error{
	"malformed": ErrFormat, "unknown_gateway": ErrUnknownGateway, "unknown_payer": ErrUnknownPayer,
	"bad_gateway_signature": ErrBadSignature, "authentication_failed": ErrAuth, "preset_key_out_of_step": ErrOutOfStep,
	"stale_request": ErrStale, "code_expired": ErrExpired, "key_already_used": ErrKeyUsed, "unknown_key": ErrUnknownKey,
	"wrong_merchant": ErrMerchant, "unsupported_currency": ErrCurrency, "payment_refused": ErrRefused,
	"no_quantum_key": ErrNoQuantumKey, "gateway_exists": ErrGatewayExists,
}

func (c *Client) post(ctx context.Context, path, idem string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set(httpx.IdempotencyHeader, idem)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("qmsp: %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		pe := &ProblemError{}
		if json.Unmarshal(data, &pe.Problem) != nil || pe.Code == "" {
			pe.Status, pe.Code, pe.Detail = resp.StatusCode, "http_error", string(data)
		}
		pe.Err = codeErrors[pe.Code]
		return pe
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.Unmarshal(data, out)
}

// AcquireKey implements CSSClient.
func (c *Client) AcquireKey(ctx context.Context, req KeyRequest) (*KeyDelivery, error) {
	var d KeyDelivery
	if err := c.post(ctx, "/v1/qmsp/css/keys", "", req, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Acknowledge implements CSSClient.
func (c *Client) Acknowledge(ctx context.Context, ack Ack) error {
	return c.post(ctx, "/v1/qmsp/css/ack", "", ack, nil)
}

// Pay implements Payer.
func (c *Client) Pay(ctx context.Context, idemKey string, req PaymentRequest) (*Receipt, error) {
	var rc Receipt
	if err := c.post(ctx, "/v1/qmsp/pay", idemKey, req, &rc); err != nil {
		return nil, err
	}
	return &rc, nil
}

// GatewayPage shows a gateway's current code to people: an HTML page that
// refreshes its QR image, which moves to the next key once the platform has
// seen a payment with the displayed one.
type GatewayPage struct {
	Gateway *Gateway
	// Used reports whether the platform has seen a payment with a unit
	// (in-process: PPS.UnitUsed; a standalone gateway asks the server).
	Used func(ctx context.Context, ref KeyRef) (bool, error)
}

var pageTmpl = template.Must(template.New("gw").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Quantum key gateway {{.}}</title>
<style>body{font-family:sans-serif;text-align:center;margin-top:2em}img{image-rendering:pixelated;width:360px}</style></head>
<body><h1>Gateway {{.}}</h1><p>Scan to pay with a one-time quantum key.</p>
<img id="qr" src="qr.png" alt="payment code"><p id="t"></p>
<script>setInterval(function(){document.getElementById('qr').src='qr.png?'+Date.now()},1000)</script>
</body></html>`))

// ServeHTTP serves "" (the page), "qr.png" and "code" (the QR text).
func (gp *GatewayPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d, err := gp.current(r.Context())
	if err != nil {
		writeErr(w, r, err)
		return
	}
	text, err := d.MarshalText()
	if err != nil {
		writeErr(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch path := r.PathValue("file"); path {
	case "", "index.html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = pageTmpl.Execute(w, gp.Gateway.ID())
	case "qr.png":
		png, _, err := qrimg.EncodePNG(string(text), qrimg.M, 6)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(png)
	case "code":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(text)
	default:
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such file")
	}
}

func (gp *GatewayPage) current(ctx context.Context) (*Display, error) {
	d, err := gp.Gateway.Current(ctx)
	if err != nil {
		return nil, err
	}
	if gp.Used != nil {
		used, err := gp.Used(ctx, d.Ref)
		if err != nil {
			return nil, err
		}
		if used {
			if err := gp.Gateway.Advance(); err != nil {
				return nil, err
			}
			return gp.Gateway.Current(ctx)
		}
	}
	return d, nil
}
