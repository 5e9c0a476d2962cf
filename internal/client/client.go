// Package client is the Go client of qshield's platform HTTP API (accounts,
// transfers, history). It is what the CLI, the demo, the crash test and the
// ledger experiment use, so they exercise the same path a real client would.
// Errors from the server come back as *httpx.Problem.
package client

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/server"
	"github.com/qshield/qshield/ledger"
)

// Client talks to one qshield server.
type Client struct {
	c *httpx.Client
}

// New returns a client for baseURL (e.g. "https://127.0.0.1:8443") using
// tlsConfig (nil for plain HTTP).
func New(baseURL string, tlsConfig *tls.Config) *Client {
	tr := &http.Transport{
		TLSClientConfig:     tlsConfig,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	c := httpx.NewClient(baseURL, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	c.Codes, c.Name = server.LedgerCodes, "client"
	return &Client{c: c}
}

// Close releases idle connections.
func (c *Client) Close() { c.c.CloseIdleConnections() }

// Do sends a JSON request and decodes a JSON response into out (may be nil).
// A non-2xx answer is returned as *httpx.Error (see httpx.Client).
func (c *Client) Do(ctx context.Context, method, path string, headers map[string]string, in, out any) (int, error) {
	h := make(http.Header, len(headers))
	for k, v := range headers {
		h.Set(k, v)
	}
	return c.c.Do(ctx, method, path, h, in, out)
}

// ProblemCode returns the problem code of err, or "".
func ProblemCode(err error) string { return httpx.ProblemCode(err) }

// CreateAccount opens an account.
func (c *Client) CreateAccount(ctx context.Context, req server.AccountRequest) (ledger.Account, error) {
	var a ledger.Account
	_, err := c.Do(ctx, http.MethodPost, "/v1/accounts", nil, req, &a)
	return a, err
}

// Accounts returns one page of accounts in ID order, starting after cursor
// ("" for the first page; then the previous page's NextCursor). limit 0 is
// the server's default page size.
func (c *Client) Accounts(ctx context.Context, cursor string, limit int) (server.AccountPage, error) {
	var p server.AccountPage
	_, err := c.Do(ctx, http.MethodGet, "/v1/accounts"+pageQuery(cursor, limit), nil, nil, &p)
	return p, err
}

// Account fetches an account with its balances.
func (c *Client) Account(ctx context.Context, id string) (ledger.Account, error) {
	var a ledger.Account
	_, err := c.Do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(id), nil, nil, &a)
	return a, err
}

// Transfer moves money under idempotency key key. replayed reports whether the
// server answered with the result of an earlier request with the same key.
func (c *Client) Transfer(ctx context.Context, key string, req server.TransferRequest) (t ledger.Transfer, replayed bool, err error) {
	status, err := c.Do(ctx, http.MethodPost, "/v1/transfers", map[string]string{httpx.IdempotencyHeader: key}, req, &t)
	return t, status == http.StatusOK, err
}

// GetTransfer fetches one transfer.
func (c *Client) GetTransfer(ctx context.Context, id string) (ledger.Transfer, error) {
	var t ledger.Transfer
	_, err := c.Do(ctx, http.MethodGet, "/v1/transfers/"+url.PathEscape(id), nil, nil, &t)
	return t, err
}

// Post posts a pending transfer (amount 0: all of it).
func (c *Client) Post(ctx context.Context, key, id string, amount int64) (ledger.Transfer, error) {
	var t ledger.Transfer
	_, err := c.Do(ctx, http.MethodPost, "/v1/transfers/"+url.PathEscape(id)+"/post", map[string]string{httpx.IdempotencyHeader: key}, server.PostRequest{Amount: amount}, &t)
	return t, err
}

// Void voids a pending transfer.
func (c *Client) Void(ctx context.Context, key, id string) (ledger.Transfer, error) {
	var t ledger.Transfer
	_, err := c.Do(ctx, http.MethodPost, "/v1/transfers/"+url.PathEscape(id)+"/void", map[string]string{httpx.IdempotencyHeader: key}, nil, &t)
	return t, err
}

// History returns one page of an account's transfers, newest first.
func (c *Client) History(ctx context.Context, account, cursor string, limit int) (server.HistoryPage, error) {
	var p server.HistoryPage
	_, err := c.Do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(account)+"/transfers"+pageQuery(cursor, limit), nil, nil, &p)
	return p, err
}

// pageQuery is the query string of a paged listing ("" when both are unset).
func pageQuery(cursor string, limit int) string {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Healthz checks that the server answers.
func (c *Client) Healthz(ctx context.Context) error {
	_, err := c.Do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
	return err
}
