package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxResponse bounds a response body when Client.MaxResponse is 0.
const DefaultMaxResponse = 4 << 20

// Client is the one JSON HTTP client of qshield's APIs. A 2xx answer is a
// success; anything else becomes an *Error carrying the problem's code,
// status, detail and Retry-After, which also matches (errors.Is) the
// sentinel error its Registry maps the code to. A response body larger than
// MaxResponse is an error, never silently truncated.
//
// A Client is safe for concurrent use; set its fields before the first call.
type Client struct {
	// BaseURL is prefixed to every path ("https://host:port", no trailing slash needed).
	BaseURL string
	// HTTP sends the requests: an *http.Client carrying the transport and
	// TLS trust, or another Doer (the browser wallet's page fetch). nil: an
	// http.Client with a 30 s timeout.
	HTTP Doer
	// MaxResponse bounds a response body (0: DefaultMaxResponse).
	MaxResponse int64
	// Codes maps problem codes back to the API's sentinel errors (nil: none).
	Codes *Registry
	// DecodeError turns a non-2xx answer into an error, for APIs whose error
	// body is not problem+json (ETSI GS QKD 014). nil: problem+json.
	DecodeError func(status int, header http.Header, body []byte) error
	// Name prefixes error messages ("bioqr", "keycharge"; default "httpx").
	Name string
}

// Doer sends one HTTP request, as *http.Client does.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// NewClient returns a client for baseURL over hc (nil: the default, see
// Client.HTTP).
func NewClient(baseURL string, hc *http.Client) *Client {
	return NewClientDoer(baseURL, hc)
}

// NewClientDoer returns a client for baseURL over d (nil, or a nil
// *http.Client: the default, see Client.HTTP).
func NewClientDoer(baseURL string, d Doer) *Client {
	c := &Client{BaseURL: strings.TrimRight(baseURL, "/")}
	if hc, ok := d.(*http.Client); !ok || hc != nil {
		c.HTTP = d
	}
	return c
}

// Error is a non-2xx answer from a qshield API.
type Error struct {
	Problem
	// RetryAfter is the server's Retry-After (0 when absent).
	RetryAfter time.Duration
	// sentinel is the registry's error for Code (nil when unknown).
	sentinel error
}

func (e *Error) Error() string { return e.Problem.Error() }

// Unwrap returns the sentinel error the code maps to and the *Problem, so
// both errors.Is(err, pkg.ErrX) and errors.As(err, **Problem) work.
func (e *Error) Unwrap() []error {
	if e.sentinel != nil {
		return []error{e.sentinel, &e.Problem}
	}
	return []error{&e.Problem}
}

// ProblemCode returns the problem code carried by err, or "".
func ProblemCode(err error) string {
	var p *Problem
	if errors.As(err, &p) {
		return p.Code
	}
	return ""
}

// Request is one raw call.
type Request struct {
	Method string
	Path   string
	Header http.Header
	// Body and ContentType: the request body (nil: none).
	Body        []byte
	ContentType string
}

// Response is a successful (2xx) answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (c *Client) name() string {
	if c.Name == "" {
		return "httpx"
	}
	return c.Name
}

// Send performs one request and reads the whole answer (at most
// MaxResponse bytes). A non-2xx answer is returned as an error (see Error).
func (c *Client) Send(ctx context.Context, r Request) (*Response, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimRight(c.BaseURL, "/")+r.Path, body)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", c.name(), err)
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.Body != nil && r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json, "+ProblemContentType)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultDoer()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", c.name(), r.Method, redactQuery(r.Path), err)
	}
	defer resp.Body.Close()
	max := c.MaxResponse
	if max <= 0 {
		max = DefaultMaxResponse
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: read response: %w", c.name(), r.Method, redactQuery(r.Path), err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: %s %s: response larger than %d bytes", c.name(), r.Method, redactQuery(r.Path), max)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if c.DecodeError != nil {
			return nil, c.DecodeError(resp.StatusCode, resp.Header, data)
		}
		return nil, c.problem(resp, data)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// problem decodes a problem+json answer (or makes one up for a body that is
// not one: code "http_<status>", the start of the body as detail).
func (c *Client) problem(resp *http.Response, data []byte) *Error {
	e := &Error{RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if json.Unmarshal(data, &e.Problem) != nil || e.Code == "" {
		detail := strings.TrimSpace(string(data))
		if len(detail) > 200 {
			detail = detail[:200]
		}
		if detail == "" {
			detail = http.StatusText(resp.StatusCode)
		}
		e.Problem = Problem{Code: "http_" + strconv.Itoa(resp.StatusCode), Detail: detail}
	}
	e.Status = resp.StatusCode // the status line is authoritative
	e.sentinel = c.Codes.Sentinel(e.Code)
	return e
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date (relative to now). Anything else, or a time in the past, is 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 || n > 1<<31 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Do sends in as JSON (nil: no body) and decodes a 2xx answer into out (nil
// or an empty body: ignored). It returns the HTTP status of a success.
func (c *Client) Do(ctx context.Context, method, path string, header http.Header, in, out any) (int, error) {
	r := Request{Method: method, Path: path, Header: header}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("%s: encode request: %w", c.name(), err)
		}
		r.Body, r.ContentType = b, "application/json"
	}
	resp, err := c.Send(ctx, r)
	if err != nil {
		return 0, err
	}
	if out != nil && len(bytes.TrimSpace(resp.Body)) > 0 {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return resp.Status, fmt.Errorf("%s: %s %s: %w: %w", c.name(), method, redactQuery(path), ErrBadResponse, err)
		}
	}
	return resp.Status, nil
}

// ErrBadResponse is a 2xx answer whose body does not decode as the
// expected JSON (Client.Do).
var ErrBadResponse = errors.New("undecodable response")

// Idempotent returns a header carrying an Idempotency-Key (nil for "").
func Idempotent(key string) http.Header {
	if key == "" {
		return nil
	}
	return http.Header{IdempotencyHeader: {key}}
}

// CloseIdleConnections releases the client's idle connections.
func (c *Client) CloseIdleConnections() {
	if ci, ok := c.HTTP.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// redactQuery drops a query (it may hold key IDs) from a path for errors.
func redactQuery(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}
