package qmsp

import (
	"context"
	"crypto/tls"
	"github.com/qshield/qshield/pki"
	"net/http"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
)

// peerName returns the name of the calling principal: the one the
// platform's authorization router authenticated (authz.PrincipalFrom; its
// kind was checked there and a name belongs to one kind), or, on a
// stand-alone server without the router, the common name of the TLS-verified
// client certificate. "" when there is none.
func peerName(r *http.Request) string {
	if p := authz.PrincipalFrom(r.Context()); p != nil {
		return p.Name
	}
	cn, _, err := pki.PeerIdentity(r.TLS)
	if err != nil {
		return ""
	}
	return cn
}

// codes is the CSS's and PPS's error-code registry; Client maps the codes
// back, so errors.Is works across HTTP.
var codes = httpx.NewRegistry(
	httpx.Code{Code: "malformed", Status: http.StatusBadRequest, Message: "The request could not be read.", Err: ErrFormat},
	httpx.Code{Code: "unknown_gateway", Status: http.StatusForbidden, Message: "This payment code comes from an unknown terminal.", Err: ErrUnknownGateway},
	httpx.Code{Code: "unknown_payer", Status: http.StatusForbidden, Message: "This phone is not registered for payments.", Err: ErrUnknownPayer},
	httpx.Code{Code: "bad_gateway_signature", Status: http.StatusForbidden, Message: "The payment code's signature is not valid.", Err: ErrBadSignature},
	httpx.Code{Code: "authentication_failed", Status: http.StatusForbidden, Message: "The payment could not be authenticated.", Err: ErrAuth},
	httpx.Code{Code: "preset_key_out_of_step", Status: http.StatusConflict, Message: "The phone's keys are out of step; please re-synchronise.", Err: ErrOutOfStep},
	httpx.Code{Code: "stale_request", Status: http.StatusBadRequest, Message: "The request is too old; please try again.", Err: ErrStale},
	httpx.Code{Code: "code_expired", Status: http.StatusGone, Message: "The payment code has expired; please scan a new one.", Err: ErrExpired},
	httpx.Code{Code: "key_already_used", Status: http.StatusConflict, Message: "The payment code was already used.", Err: ErrKeyUsed},
	httpx.Code{Code: "unknown_key", Status: http.StatusNotFound, Message: "The payment code is not known.", Err: ErrUnknownKey},
	httpx.Code{Code: "wrong_merchant", Status: http.StatusUnprocessableEntity, Message: "The payment is for another merchant.", Err: ErrMerchant},
	httpx.Code{Code: "unsupported_currency", Status: http.StatusUnprocessableEntity, Message: "That currency is not accepted here.", Err: ErrCurrency},
	httpx.Code{Code: "payment_refused", Status: http.StatusUnprocessableEntity, Message: "The payment was refused.", Err: ErrRefused},
	httpx.Code{Code: "amount_mismatch", Status: http.StatusUnprocessableEntity, Message: "The amount is not the one the merchant asked for.", Err: ErrAmount},
	httpx.Code{Code: "no_quantum_key", Status: http.StatusServiceUnavailable, Message: "No payment keys are available right now; please try again shortly.", Err: ErrNoQuantumKey},
	httpx.Code{Code: "gateway_exists", Status: http.StatusConflict, Message: "That terminal is already registered.", Err: ErrGatewayExists},
)

// ErrorCodes returns the CSS's and PPS's error-code registry.
func ErrorCodes() *httpx.Registry { return codes }

func writeErr(w http.ResponseWriter, r *http.Request, err error) { codes.Write(w, r, err) }

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

func (c *Client) post(ctx context.Context, path, idem string, in, out any) error {
	hc := httpx.NewClient(c.Base, c.HTTP)
	hc.Codes, hc.Name, hc.MaxResponse = codes, "qmsp", 1<<20
	_, err := hc.Do(ctx, http.MethodPost, path, httpx.Idempotent(idem), in, out)
	return err
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
