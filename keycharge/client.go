package keycharge

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/keycharge/channel"
)

// Client is the HTTP client of Handler, used by the charger, the phone and
// `qshield admin device`. Problems come back as errors that match the
// package's sentinel errors with errors.Is (and *httpx.Problem with errors.As).
type Client struct {
	c *httpx.Client
}

// NewClient returns a client for the platform at baseURL
// ("https://127.0.0.1:8443") presenting the client certificate in tlsConfig.
func NewClient(baseURL string, tlsConfig *tls.Config) *Client {
	tr := &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	return NewClientWithHTTP(baseURL, &http.Client{Transport: tr, Timeout: 2 * time.Minute})
}

// NewClientWithHTTP uses a caller's http.Client (e.g. httptest's).
func NewClientWithHTTP(baseURL string, hc *http.Client) *Client {
	c := httpx.NewClient(baseURL, hc)
	c.Codes, c.Name, c.MaxResponse = codes, "keycharge", maxResponse
	return &Client{c: c}
}

// maxResponse bounds an answer: a key list of the largest page is a few
// MiB, so 16 MiB leaves room and still bounds a hostile server.
const maxResponse = 16 << 20

// Close releases idle connections.
func (c *Client) Close() { c.c.CloseIdleConnections() }

func (c *Client) raw(ctx context.Context, method, path, ctype string, body []byte) ([]byte, error) {
	resp, err := c.c.Send(ctx, httpx.Request{Method: method, Path: path, Body: body, ContentType: ctype})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.c.Do(ctx, method, path, nil, in, out)
	return err
}

func esc(s string) string { return url.PathEscape(s) }

// Register records a manufactured device.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*Device, error) {
	var d Device
	return &d, c.do(ctx, http.MethodPost, "/v1/keycharge/devices", req, &d)
}

// Devices lists the registry.
func (c *Client) Devices(ctx context.Context) ([]*Device, error) {
	var d []*Device
	return d, c.do(ctx, http.MethodGet, "/v1/keycharge/devices", nil, &d)
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, serial string) (*Device, error) {
	var d Device
	return &d, c.do(ctx, http.MethodGet, "/v1/keycharge/devices/"+esc(serial), nil, &d)
}

// Transition applies a lifecycle action.
func (c *Client) Transition(ctx context.Context, serial string, req TransitionRequest) (*TransitionResult, error) {
	var r TransitionResult
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/devices/"+esc(serial)+"/transitions", req, &r)
}

// Keys lists a device's stored keys.
func (c *Client) Keys(ctx context.Context, serial string, limit int) ([]KeyRecord, error) {
	var k []KeyRecord
	return k, c.do(ctx, http.MethodGet, "/v1/keycharge/devices/"+esc(serial)+"/keys?limit="+strconv.Itoa(limit), nil, &k)
}

// ReportPINFailure reports a wrong PIN entered at a charger.
func (c *Client) ReportPINFailure(ctx context.Context, serial string) (int, error) {
	var r map[string]int
	err := c.do(ctx, http.MethodPost, "/v1/keycharge/devices/"+esc(serial)+"/pin-failures", nil, &r)
	return r["pin_failures"], err
}

// BeginCharge starts a charge.
func (c *Client) BeginCharge(ctx context.Context, req BeginRequest) (*BeginResponse, error) {
	var r BeginResponse
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/charges", req, &r)
}

// AuthenticateCharge sends the device's signature.
func (c *Client) AuthenticateCharge(ctx context.Context, id string, sig []byte) error {
	return c.do(ctx, http.MethodPost, "/v1/keycharge/charges/"+esc(id)+"/authenticate", AuthenticateRequest{Signature: sig}, nil)
}

// CommitCharge ends a charge with the consistency check.
func (c *Client) CommitCharge(ctx context.Context, id string, req CommitRequest) (*ChargeStatus, error) {
	var r ChargeStatus
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/charges/"+esc(id)+"/commit", req, &r)
}

// ChargeStatus returns a charge.
func (c *Client) ChargeStatus(ctx context.Context, id string) (*ChargeStatus, error) {
	var r ChargeStatus
	return &r, c.do(ctx, http.MethodGet, "/v1/keycharge/charges/"+esc(id), nil, &r)
}

// AbortCharge aborts an open charge.
func (c *Client) AbortCharge(ctx context.Context, id, reason string) (*ChargeStatus, error) {
	var r ChargeStatus
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/charges/"+esc(id)+"/abort", AbortRequest{Reason: reason}, &r)
}

// PoolKeys announces prefetched key IDs (the platform fetches and pools them).
func (c *Client) PoolKeys(ctx context.Context, req PoolRequest) (*PoolStatus, error) {
	var r PoolStatus
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/pool", req, &r)
}

// ResetPool drops the charger's pool on the platform.
func (c *Client) ResetPool(ctx context.Context) (*PoolStatus, error) {
	var r PoolStatus
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/pool/reset", struct{}{}, &r)
}

// AuditStats counts keycharge audit records (by: "event", "resource", "day"…).
func (c *Client) AuditStats(ctx context.Context, by string) ([]audit.Count, error) {
	var r []audit.Count
	return r, c.do(ctx, http.MethodGet, "/v1/keycharge/audit/stats?by="+url.QueryEscape(by), nil, &r)
}

// AuditSearch lists keycharge audit records.
func (c *Client) AuditSearch(ctx context.Context, event, resource string, limit int) ([]audit.Record, error) {
	var r []audit.Record
	q := url.Values{"event": {event}, "resource": {resource}, "limit": {strconv.Itoa(limit)}}
	return r, c.do(ctx, http.MethodGet, "/v1/keycharge/audit/search?"+q.Encode(), nil, &r)
}

// OpenChannel opens a QSSC session.
func (c *Client) OpenChannel(ctx context.Context, req channel.OpenRequest) (*channel.OpenResponse, error) {
	var r channel.OpenResponse
	return &r, c.do(ctx, http.MethodPost, "/v1/keycharge/channel/open", req, &r)
}

// ChannelMessage sends one frame and returns the reply frame.
func (c *Client) ChannelMessage(ctx context.Context, frame []byte) ([]byte, error) {
	return c.raw(ctx, http.MethodPost, "/v1/keycharge/channel/message", "application/octet-stream", frame)
}
