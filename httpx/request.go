package httpx

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
)

// RequestInfo is what a server's middleware knows about one request: its
// ID (echoed in the X-Request-ID header and in every problem), the logger
// carrying that ID, and the authenticated principal once an authentication
// layer has set it.
type RequestInfo struct {
	ID  string
	Log *slog.Logger

	mu        sync.Mutex
	principal string
	problem   string
	route     string
}

// SetRoute records the mux pattern that served the request.
func (ri *RequestInfo) SetRoute(p string) {
	ri.mu.Lock()
	ri.route = p
	ri.mu.Unlock()
}

// Route returns the mux pattern that served the request ("" if none matched).
func (ri *RequestInfo) Route() string {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.route
}

// Problem returns the code of the last problem written for the request ("" if none).
func (ri *RequestInfo) Problem() string {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.problem
}

func (ri *RequestInfo) setProblem(code string) {
	ri.mu.Lock()
	ri.problem = code
	ri.mu.Unlock()
}

// SetPrincipal records who made the request (a certificate name, a device
// ID); access logs and idempotency scopes use it.
func (ri *RequestInfo) SetPrincipal(p string) {
	ri.mu.Lock()
	ri.principal = p
	ri.mu.Unlock()
}

// Principal returns what SetPrincipal recorded ("" when nobody did).
func (ri *RequestInfo) Principal() string {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.principal
}

type requestInfoKey struct{}

// WithRequestInfo returns ctx carrying ri.
func WithRequestInfo(ctx context.Context, ri *RequestInfo) context.Context {
	return context.WithValue(ctx, requestInfoKey{}, ri)
}

// RequestInfoFrom returns the request's RequestInfo, or nil.
func RequestInfoFrom(ctx context.Context) *RequestInfo {
	ri, _ := ctx.Value(requestInfoKey{}).(*RequestInfo)
	return ri
}

// PrincipalOf returns the request's principal, or "" (for
// deriving per-caller identifiers).
func PrincipalOf(ctx context.Context) string {
	if ri := RequestInfoFrom(ctx); ri != nil {
		return ri.Principal()
	}
	return ""
}

// RequestID returns the request's ID, or "".
func RequestID(ctx context.Context) string {
	if ri := RequestInfoFrom(ctx); ri != nil {
		return ri.ID
	}
	return ""
}

// Logger returns the request's logger, or a logger that discards.
func Logger(ctx context.Context) *slog.Logger {
	if ri := RequestInfoFrom(ctx); ri != nil && ri.Log != nil {
		return ri.Log
	}
	return slog.New(slog.DiscardHandler)
}

// ErrUnavailable marks an error as "this node cannot serve the request right
// now, try again later": WriteError answers it with 503 and Retry-After.
// Wrap it (fmt.Errorf("…: %w", httpx.ErrUnavailable)) for conditions such as
// a duty this node is not ready for.
var ErrUnavailable = errors.New("service unavailable")

// RetryAfterSeconds is the Retry-After WriteError sends with a 503.
const RetryAfterSeconds = 2

// WriteError answers a request that failed for a reason other than the
// caller's input. Failures of the database or the node — a lost or refused
// connection, a commit in doubt, a statement timeout, a full disk, a closed
// pool (see [sqldb.IsUnavailable]) or [ErrUnavailable] — become 503
// "unavailable" with Retry-After, logged at warning level with the cause. A
// request whose client went away gets 503 "cancelled" (logged at info).
// Anything else is a bug: 500 "internal" carrying the request ID, logged at
// error level with the cause. The cause is never sent to the client.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	log := Logger(r.Context())
	switch {
	case r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded),
		errors.Is(err, context.Canceled) && !dbUnavailable(err):
		log.Info("request cancelled by the client", "err", err)
		WriteProblem(w, r, http.StatusServiceUnavailable, "cancelled", "request cancelled")
	case errors.Is(err, ErrUnavailable) || dbUnavailable(err) || errors.Is(r.Context().Err(), context.DeadlineExceeded):
		log.Warn("request failed: service unavailable", "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		WriteProblem(w, r, http.StatusServiceUnavailable, CodeUnavailable,
			"the service is temporarily unavailable; retry later (with the same Idempotency-Key for a POST)")
	default:
		log.Error("request failed: internal error", "err", err)
		WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
	}
}
