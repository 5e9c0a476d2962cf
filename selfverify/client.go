package selfverify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/qshield/qshield/httpx"
)

// The HTTP clients of the operator and a vendor, built on every platform:
// the CLI phone and vendor use them over net/http, and the browser wallet
// (internal/wallet/wasm) uses the same clients over the page's fetch.

// client is a small JSON-over-HTTPS client that turns problem responses back
// into this package's sentinel errors.
type client struct{ c *httpx.Client }

func newClient(base string, hc httpx.Doer) (client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return client{}, fmt.Errorf("selfverify: server URL %q must be http(s)://host[:port]", base)
	}
	c := httpx.NewClientDoer(base, hc)
	c.Codes, c.Name = codes, "selfverify"
	return client{c: c}, nil
}

// do sends in and decodes and validates the answer into out (every
// selfverify answer has a body).
func (c client) do(ctx context.Context, method, path, idemKey string, in, out any) error {
	h, err := signLookup(ctx, httpx.Idempotent(idemKey), method, path, ms(time.Now()))
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if _, err := c.c.Do(ctx, method, path, h, in, &raw); err != nil {
		if errors.Is(err, httpx.ErrBadResponse) {
			return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
		}
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
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
// "https://qshield.example:8443"); hc sends the requests: an *http.Client
// carrying the TLS trust, or the browser wallet's page fetch (nil: the
// default of httpx.Client).
func NewOperatorClient(base string, hc httpx.Doer) (*OperatorClient, error) {
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
func NewVendorClient(base string, hc httpx.Doer) (*VendorClient, error) {
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

// answeredByServer reports whether err is an answer of the operator or
// vendor (a problem document it wrote), as opposed to a transport failure
// or a proxy's page.
func answeredByServer(err error) bool {
	var p *httpx.Problem
	return errors.As(err, &p) && !strings.HasPrefix(p.Code, "http_")
}

func digestHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
