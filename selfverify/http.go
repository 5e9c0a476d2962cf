package selfverify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/ledger"
)

// Prefixes under which the handlers serve.
const (
	OperatorPrefix = "/v1/selfverify/"
	VendorPrefix   = "/v1/vendor/"
)

// errorCodes maps sentinel errors to problem codes and HTTP statuses; the
// clients map the codes back, so errors.Is works across HTTP.
var errorCodes = []struct {
	err    error
	code   string
	status int
}{
	{ErrInvalidMessage, "invalid_message", http.StatusBadRequest},
	{ErrBadEnrollment, "bad_enrollment", http.StatusForbidden},
	{ErrNotRegistered, "not_registered", http.StatusForbidden},
	{ErrBadSignature, "bad_signature", http.StatusUnauthorized},
	{ErrBadMAC, "bad_mac", http.StatusUnauthorized},
	{ErrStale, "stale_request", http.StatusUnauthorized},
	{ErrReplay, "replay", http.StatusConflict},
	{ErrInsufficientFunds, "insufficient_funds", http.StatusUnprocessableEntity},
	{ErrTokenNotFound, "token_not_found", http.StatusNotFound},
	{ErrTokenExpired, "token_expired", http.StatusGone},
	{ErrTokenClosed, "token_closed", http.StatusGone},
	{ErrOverspend, "overspend", http.StatusUnprocessableEntity},
	{ErrDoubleDeposit, "double_deposit", http.StatusConflict},
	{ErrUnknownPayment, "unknown_payment", http.StatusUnprocessableEntity},
	{ErrNotFound, "not_found", http.StatusNotFound},
	{ErrDeadline, "deadline_passed", http.StatusGone},
	{ErrDecided, "already_decided", http.StatusConflict},
	{ErrRefused, "refused", http.StatusConflict},
	{ErrDecrypt, "decrypt_failed", http.StatusBadRequest},
	{ErrSequence, "sequence", http.StatusConflict},
	{ErrWrongVendor, "wrong_vendor", http.StatusBadRequest},
	{ErrPrice, "wrong_price", http.StatusUnprocessableEntity},
	{ErrCurrency, "currency_mismatch", http.StatusUnprocessableEntity},
	{ledger.ErrAccountNotFound, "account_not_found", http.StatusUnprocessableEntity},
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			httpx.WriteProblem(w, r, e.status, e.code, err.Error())
			return
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		httpx.WriteProblem(w, r, http.StatusServiceUnavailable, "unavailable", "request cancelled")
		return
	}
	httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
}

// decode reads and validates a JSON body of type T.
func decode[T any, P interface {
	*T
	validator
}](w http.ResponseWriter, r *http.Request) (*T, bool) {
	v := new(T)
	if !httpx.DecodeOrProblem(w, r, 1<<20, v) {
		return nil, false
	}
	if err := P(v).validate(); err != nil {
		writeError(w, r, err)
		return nil, false
	}
	return v, true
}

// idempotency requires the Idempotency-Key header on a money-moving POST and,
// where the body carries a signed nonce, that the two agree.
func idempotency(w http.ResponseWriter, r *http.Request, nonce string) bool {
	k, ok := httpx.IdempotencyKey(w, r)
	if !ok {
		return false
	}
	if nonce != "" && k != nonce {
		httpx.WriteProblem(w, r, http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must equal the request's signed nonce")
		return false
	}
	return true
}

// Handler serves the operator's API under /v1/selfverify/. Mount it on the
// server mux without stripping the prefix:
//
//	mux.Handle("/v1/selfverify/", op.Handler())
func (o *Operator) Handler() http.Handler {
	rt := authz.New(authz.Options{})
	rt.Register(o.Routes()...)
	rt.HandleFunc(OperatorPrefix, authz.Public("answers 404 for unknown paths"), func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return rt
}

// Routes returns the operator's API with its policies. Seed 002's parties
// are not X.509 principals: users and vendors hold ECQV keys certified by
// the operator and sign every request that changes state, so at the HTTP
// layer the routes are public and the operator checks the signatures.
// The look-ups (token, deposit, confirmations) are reached by unguessable
// identifiers; they are not yet restricted to the token's holder or vendor
// (see SECURITY.md).
func (o *Operator) Routes() []authz.Route {
	var routes []authz.Route
	p := OperatorPrefix
	pub := func(reason string) authz.Policy { return authz.Public(reason) }
	handle := func(pattern string, pol authz.Policy, f http.HandlerFunc) {
		routes = append(routes, authz.Route{Pattern: pattern, Policy: pol, Handler: f})
	}
	handle("GET "+p+"params", pub("the public system parameters and the operator's public key"), func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, o.Params())
	})
	handle("POST "+p+"register", pub("a user or vendor registers a key: the request is checked by the operator's registration rules"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[RegisterRequest](w, r)
		if !ok {
			return
		}
		resp, err := o.Register(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("GET "+p+"vendors/{id}", pub("a vendor's public identity"), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.Identity(r.Context(), r.PathValue("id"))
		reply(w, r, resp, err)
	})
	handle("POST "+p+"withdraw", pub("signed by the user's certified ECQV key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[WithdrawRequest](w, r)
		if !ok || !idempotency(w, r, req.Nonce) {
			return
		}
		resp, err := o.Withdraw(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("POST "+p+"reserve", pub("signed by the vendor's certified ECQV key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[ReserveRequest](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		resp, err := o.Reserve(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("POST "+p+"deposits", pub("signed by the vendor's certified ECQV key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[DepositRequest](w, r)
		if !ok || !idempotency(w, r, req.Nonce) {
			return
		}
		resp, err := o.Deposit(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("GET "+p+"deposits/{id}", pub("status by an unguessable deposit ID"), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.DepositStatus(r.Context(), r.PathValue("id"))
		reply(w, r, resp, err)
	})
	handle("GET "+p+"tokens/{serial}", pub("status by an unguessable token serial (not yet holder-only)"), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.TokenStatus(r.Context(), r.PathValue("serial"))
		reply(w, r, resp, err)
	})
	handle("GET "+p+"tokens/{serial}/confirmations", pub("pending confirmations by an unguessable token serial"), func(w http.ResponseWriter, r *http.Request) {
		resp, err := o.Confirmations(r.Context(), r.PathValue("serial"))
		reply(w, r, resp, err)
	})
	handle("POST "+p+"tokens/{serial}/close", pub("signed by the token holder's key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[CloseRequest](w, r)
		if !ok || !idempotency(w, r, req.Nonce) {
			return
		}
		if req.Serial != r.PathValue("serial") {
			writeError(w, r, invalid("serial in path and body differ"))
			return
		}
		resp, err := o.CloseToken(r.Context(), *req)
		reply(w, r, resp, err)
	})
	handle("POST "+p+"confirmations/{id}", pub("signed by the token holder's key"), func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[ConfirmAnswer](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		if req.ID != r.PathValue("id") {
			writeError(w, r, invalid("id in path and body differ"))
			return
		}
		resp, err := o.Confirm(r.Context(), *req)
		reply(w, r, resp, err)
	})
	return routes
}

func reply[T any](w http.ResponseWriter, r *http.Request, v *T, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}

// Handler serves a vendor's API under /v1/vendor/.
func (v *Vendor) Handler() http.Handler {
	mux := http.NewServeMux()
	p := VendorPrefix
	mux.HandleFunc("GET "+p+"info", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, v.Info())
	})
	mux.HandleFunc("POST "+p+"pay/open", func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[OpenPayment](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		resp, err := v.OpenPayment(r.Context(), *req)
		reply(w, r, resp, err)
	})
	mux.HandleFunc("POST "+p+"pay", func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode[NextPayment](w, r)
		if !ok || !idempotency(w, r, "") {
			return
		}
		resp, err := v.NextPayment(r.Context(), *req)
		reply(w, r, resp, err)
	})
	mux.HandleFunc("GET "+p+"sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := v.Session(r.Context(), r.PathValue("id"))
		reply(w, r, resp, err)
	})
	mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// ---- Clients ----

// client is a small JSON-over-HTTPS client that turns problem responses back
// into this package's sentinel errors.
type client struct {
	base string
	hc   *http.Client
}

func newClient(base string, hc *http.Client) (client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return client{}, fmt.Errorf("selfverify: server URL %q must be http(s)://host[:port]", base)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return client{base: strings.TrimRight(base, "/"), hc: hc}, nil
}

// ProblemError is a problem response mapped to a sentinel error.
type ProblemError struct {
	Problem httpx.Problem
	err     error
}

func (e *ProblemError) Error() string { return e.Problem.Error() }

// Unwrap returns the sentinel error and the problem.
func (e *ProblemError) Unwrap() []error { return []error{e.err, &e.Problem} }

func (c client) do(ctx context.Context, method, path, idemKey string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("selfverify: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set(httpx.IdempotencyHeader, idemKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("selfverify: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("selfverify: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var p httpx.Problem
		if json.Unmarshal(data, &p) != nil || p.Code == "" {
			return fmt.Errorf("selfverify: %s %s: HTTP %d", method, path, resp.StatusCode)
		}
		pe := &ProblemError{Problem: p, err: fmt.Errorf("HTTP %d", resp.StatusCode)}
		for _, e := range errorCodes {
			if e.code == p.Code {
				pe.err = e.err
			}
		}
		return pe
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s %s: response: %v", ErrInvalidMessage, method, path, err)
	}
	if v, ok := out.(validator); ok {
		if err := v.validate(); err != nil {
			return fmt.Errorf("selfverify: %s %s: response: %w", method, path, err)
		}
	}
	return nil
}

// OperatorClient talks to an operator over HTTPS; it implements OperatorAPI.
type OperatorClient struct{ c client }

// NewOperatorClient returns a client for the operator at base (e.g.
// "https://qshield.example:8443"); hc carries the TLS trust (nil: default).
func NewOperatorClient(base string, hc *http.Client) (*OperatorClient, error) {
	c, err := newClient(base, hc)
	if err != nil {
		return nil, err
	}
	return &OperatorClient{c: c}, nil
}

const op = "/v1/selfverify/"

func (oc *OperatorClient) Params(ctx context.Context) (*Params, error) {
	var out Params
	return &out, oc.c.do(ctx, http.MethodGet, op+"params", "", nil, &out)
}

func (oc *OperatorClient) Register(ctx context.Context, req RegisterRequest) (*RegisterResponse, error) {
	var out RegisterResponse
	return &out, oc.c.do(ctx, http.MethodPost, op+"register", "", req, &out)
}

func (oc *OperatorClient) Vendor(ctx context.Context, id string) (*Identity, error) {
	var out Identity
	return &out, oc.c.do(ctx, http.MethodGet, op+"vendors/"+url.PathEscape(id), "", nil, &out)
}

func (oc *OperatorClient) Withdraw(ctx context.Context, req WithdrawRequest) (*SignedToken, error) {
	var out SignedToken
	return &out, oc.c.do(ctx, http.MethodPost, op+"withdraw", req.Nonce, req, &out)
}

func (oc *OperatorClient) Reserve(ctx context.Context, req ReserveRequest) (*ReserveResponse, error) {
	var out ReserveResponse
	return &out, oc.c.do(ctx, http.MethodPost, op+"reserve", "reserve-"+req.Ref, req, &out)
}

func (oc *OperatorClient) Deposit(ctx context.Context, req DepositRequest) (*DepositResponse, error) {
	var out DepositResponse
	return &out, oc.c.do(ctx, http.MethodPost, op+"deposits", req.Nonce, req, &out)
}

func (oc *OperatorClient) DepositStatus(ctx context.Context, id string) (*DepositResponse, error) {
	var out DepositResponse
	return &out, oc.c.do(ctx, http.MethodGet, op+"deposits/"+url.PathEscape(id), "", nil, &out)
}

func (oc *OperatorClient) Confirmations(ctx context.Context, serial string) (*ConfirmationList, error) {
	var out ConfirmationList
	return &out, oc.c.do(ctx, http.MethodGet, op+"tokens/"+url.PathEscape(serial)+"/confirmations", "", nil, &out)
}

func (oc *OperatorClient) Confirm(ctx context.Context, ans ConfirmAnswer) (*ConfirmationStatus, error) {
	var out ConfirmationStatus
	return &out, oc.c.do(ctx, http.MethodPost, op+"confirmations/"+url.PathEscape(ans.ID), "confirm-"+ans.ID, ans, &out)
}

func (oc *OperatorClient) CloseToken(ctx context.Context, req CloseRequest) (*TokenStatus, error) {
	var out TokenStatus
	return &out, oc.c.do(ctx, http.MethodPost, op+"tokens/"+url.PathEscape(req.Serial)+"/close", req.Nonce, req, &out)
}

func (oc *OperatorClient) TokenStatus(ctx context.Context, serial string) (*TokenStatus, error) {
	var out TokenStatus
	return &out, oc.c.do(ctx, http.MethodGet, op+"tokens/"+url.PathEscape(serial), "", nil, &out)
}

// VendorClient talks to a vendor over HTTPS; it implements VendorAPI. It
// caches the vendor's published info (identity, point, catalogue) for
// InfoTTL, so that later payments cost one round trip.
type VendorClient struct {
	c client

	mu      sync.Mutex
	info    *VendorInfo
	fetched time.Time
}

// InfoTTL is how long a VendorClient reuses a vendor's info.
const InfoTTL = time.Minute

// NewVendorClient returns a client for the vendor at base.
func NewVendorClient(base string, hc *http.Client) (*VendorClient, error) {
	c, err := newClient(base, hc)
	if err != nil {
		return nil, err
	}
	return &VendorClient{c: c}, nil
}

const vp = "/v1/vendor/"

func (vc *VendorClient) Info(ctx context.Context) (*VendorInfo, error) {
	vc.mu.Lock()
	if vc.info != nil && time.Since(vc.fetched) < InfoTTL {
		info := vc.info
		vc.mu.Unlock()
		return info, nil
	}
	vc.mu.Unlock()
	var out VendorInfo
	if err := vc.c.do(ctx, http.MethodGet, vp+"info", "", nil, &out); err != nil {
		return nil, err
	}
	vc.mu.Lock()
	vc.info, vc.fetched = &out, time.Now()
	vc.mu.Unlock()
	return &out, nil
}

func (vc *VendorClient) OpenPayment(ctx context.Context, m OpenPayment) (*PaymentResponse, error) {
	var out PaymentResponse
	return &out, vc.c.do(ctx, http.MethodPost, vp+"pay/open", "pay-"+digestHex(m.Ciphertext)[:32], m, &out)
}

func (vc *VendorClient) NextPayment(ctx context.Context, m NextPayment) (*PaymentResponse, error) {
	var out PaymentResponse
	return &out, vc.c.do(ctx, http.MethodPost, vp+"pay", "pay-"+digestHex(m.Ciphertext)[:32], m, &out)
}

func (vc *VendorClient) Session(ctx context.Context, id string) (*SessionState, error) {
	var out SessionState
	return &out, vc.c.do(ctx, http.MethodGet, vp+"sessions/"+url.PathEscape(id), "", nil, &out)
}
