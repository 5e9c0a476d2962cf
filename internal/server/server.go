// Package server is qshield's HTTP front: HTTPS with a certificate from the
// platform CA (plain HTTP only when explicitly asked for), a mux on which each
// scheme mounts its http.Handler under its own prefix, and the middleware every
// request passes through, outermost first:
//
//  1. request info: a request ID (the client's X-Request-ID when it is a
//     sane token, else a random one; echoed in the response and in every
//     problem) and a logger carrying it (httpx.RequestInfo);
//  2. access log (JSON through slog: request ID, route, principal, status,
//     duration) and Prometheus metrics by route, method and status;
//  3. panic recovery: 500 with the request ID, the panic logged with its stack;
//  4. load shedding: at most MaxInFlight requests run at once; others wait
//     in a queue of at most MaxQueue for at most QueueTimeout, and are
//     otherwise answered 503 "overloaded" with Retry-After (/healthz,
//     /readyz and /metrics are never shed);
//  5. a per-request deadline (RequestTimeout) on the request context, which
//     database calls honour, and the request body limit.
//
// /healthz is liveness (the process serves HTTP); /readyz runs the
// readiness checks (database, migrations, the node's duties) and answers
// 503 when one fails; /metrics serves Prometheus metrics when configured.
//
// Graceful shutdown: Run returns when its context is cancelled, after
// in-flight requests finish (bounded by ShutdownTimeout).
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/metrics"
)

// Config configures a Server.
type Config struct {
	// TLS is the server's TLS configuration; nil means plain HTTP, which is
	// allowed only with InsecureHTTP set.
	TLS          *tls.Config
	InsecureHTTP bool
	// MaxBody limits request bodies (default 1 MiB); handlers may set lower limits.
	MaxBody         int64
	ReadTimeout     time.Duration // default 15 s
	WriteTimeout    time.Duration // default 30 s
	IdleTimeout     time.Duration // default 120 s
	ShutdownTimeout time.Duration // default 10 s
	// RequestTimeout is the deadline put on each request's context
	// (default 20 s; it must stay below WriteTimeout).
	RequestTimeout time.Duration
	// MaxInFlight caps concurrently served requests (default 256; negative:
	// no cap); MaxQueue caps requests waiting for a slot (default
	// 4×MaxInFlight) and QueueTimeout how long one waits (default 2 s).
	MaxInFlight  int
	MaxQueue     int
	QueueTimeout time.Duration
	// MaxConns caps open connections per listener (default 4096; negative:
	// no cap): Accept waits while the cap is reached, bounding memory.
	MaxConns int
	// Metrics, when set, is served at /metrics and fed by the middleware.
	Metrics *metrics.Metrics
	// Ready are the readiness checks /readyz runs.
	Ready []Check
	// Principal names the caller of a request for logs and idempotency
	// scopes (default: the verified client certificate's common name).
	Principal func(*http.Request) string
	// MaxConnAge closes a kept-alive connection after the first response
	// once it is this old (0: no limit), so no connection outlives a
	// certificate revocation or rotation for long.
	MaxConnAge time.Duration
	Log        *slog.Logger
}

// Check is one readiness check: Func returns nil when the node is ready
// as far as Name is concerned.
type Check struct {
	Name string
	Func func(context.Context) error
}

// Server is the HTTP server.
type Server struct {
	cfg   Config
	mux   *http.ServeMux
	slots chan struct{} // load shedding semaphore (nil: no cap)
	queue chan struct{} // waiting room
	// patterns registered with Handle and Mount (see Patterns).
	patterns []string
}

// New returns a server with /healthz mounted.
func New(cfg Config) (*Server, error) {
	if cfg.TLS == nil && !cfg.InsecureHTTP {
		return nil, errors.New("server: no TLS configuration (plain HTTP needs the explicit insecure option)")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 4 * cfg.MaxInFlight
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 2 * time.Second
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 4096
	}
	if cfg.Principal == nil {
		cfg.Principal = certPrincipal
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	if cfg.MaxInFlight > 0 {
		s.slots = make(chan struct{}, cfg.MaxInFlight)
		s.queue = make(chan struct{}, cfg.MaxQueue)
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", cfg.Metrics.Handler())
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s, nil
}

// AddCheck adds a readiness check (before Run).
func (s *Server) AddCheck(c Check) { s.cfg.Ready = append(s.cfg.Ready, c) }

// Queued reports how many requests wait in the load-shedding queue now.
func (s *Server) Queued() int { return len(s.queue) }

// Log returns the server's logger.
func (s *Server) Log() *slog.Logger { return s.cfg.Log }

// Handle registers h for a ServeMux pattern (e.g. "POST /v1/transfers").
func (s *Server) Handle(pattern string, h http.Handler) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, h)
}

// Patterns lists the patterns registered with Handle and Mount (not the
// built-in /healthz and 404), so a test can check each has a policy.
func (s *Server) Patterns() []string { return append([]string(nil), s.patterns...) }

// Mount serves h under prefix (which must end in "/"), with the prefix kept in
// the request path.
func (s *Server) Mount(prefix string, h http.Handler) {
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s.patterns = append(s.patterns, prefix)
	s.mux.Handle(prefix, h)
}

// Handler returns the full handler chain (useful for tests with httptest).
// Every request's context names its principal for the audit trail
// (audit.WithActor with Principal), so that money a scheme moves through
// the ledger is audited with the caller's certificate serial as actor.
func (s *Server) Handler() http.Handler {
	route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every request names its principal for the audit trail.
		r = r.WithContext(audit.WithActor(r.Context(), Principal(r)))
		s.mux.ServeHTTP(w, r)
		// ServeMux records the matched pattern in r; nested muxes of
		// mounted schemes overwrite it with theirs, which is what we want.
		if ri := httpx.RequestInfoFrom(r.Context()); ri != nil {
			ri.SetRoute(r.Pattern)
		}
	})
	return s.requestInfo(s.logRequests(s.recoverer(s.shed(s.deadline(s.limitBody(s.connAge(route)))))))
}

type connStartKey struct{}

// connAge marks the response "Connection: close" once the connection is
// older than MaxConnAge.
func (s *Server) connAge(next http.Handler) http.Handler {
	if s.cfg.MaxConnAge <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := r.Context().Value(connStartKey{}).(time.Time); ok && time.Since(t) > s.cfg.MaxConnAge {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// Run serves on ln until ctx is cancelled, then shuts down gracefully.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connStartKey{}, time.Now())
		},
	}
	if s.cfg.MaxConns > 0 {
		ln = limitListener(ln, s.cfg.MaxConns)
	}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLS != nil {
			errc <- hs.Serve(tls.NewListener(ln, s.cfg.TLS))
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				httpx.Logger(r.Context()).Error("panic in handler", "panic", v, "stack", string(debug.Stack()))
				httpx.WriteProblem(w, r, http.StatusInternalServerError, "internal", "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBody {
			httpx.WriteProblem(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body larger than %d bytes", s.cfg.MaxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets streaming handlers (server-sent events) flush through the
// wrapper; they look for http.Flusher with a type assertion.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// RequestIDHeader carries the request ID in both directions.
const RequestIDHeader = "X-Request-ID"

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// validRequestID accepts a client's ID only when it is a short token.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// certPrincipal names the caller by its verified client certificate.
func certPrincipal(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return r.TLS.VerifiedChains[0][0].Subject.CommonName
	}
	return ""
}

func (s *Server) requestInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		ri := &httpx.RequestInfo{ID: id, Log: s.cfg.Log.With("request_id", id)}
		ri.SetPrincipal(s.cfg.Principal(r))
		next.ServeHTTP(w, r.WithContext(httpx.WithRequestInfo(r.Context(), ri)))
	})
}

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		if m := s.cfg.Metrics; m != nil {
			m.InFlight(1)
			defer m.InFlight(-1)
		}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		ri := httpx.RequestInfoFrom(r.Context())
		route := ri.Route()
		if m := s.cfg.Metrics; m != nil {
			m.ObserveHTTP(stripMethod(route), r.Method, sw.status, ri.Problem(), time.Since(start))
		}
		level := slog.LevelInfo
		if route == "GET /healthz" || route == "GET /readyz" || route == "GET /metrics" {
			level = slog.LevelDebug
		}
		if !ri.Log.Enabled(r.Context(), level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("route", route), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("elapsed", time.Since(start)),
			slog.String("principal", ri.Principal()), slog.String("remote", r.RemoteAddr),
		}
		if p := ri.Problem(); p != "" {
			attrs = append(attrs, slog.String("problem", p))
		}
		ri.Log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// stripMethod turns "POST /v1/transfers" into "/v1/transfers".
func stripMethod(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return pattern[i+1:]
	}
	return pattern
}

// exempt reports whether a request bypasses shedding and the deadline:
// probes and scrapes must answer even when the node is saturated, and
// server-sent event streams (the console's live feeds) last as long as the
// page is open — they would hold a slot each and be cut at the deadline.
func exempt(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

func (s *Server) shed(next http.Handler) http.Handler {
	if s.slots == nil {
		return next
	}
	overloaded := func(w http.ResponseWriter, r *http.Request, reason string) {
		if m := s.cfg.Metrics; m != nil {
			m.Shed(reason)
		}
		httpx.Logger(r.Context()).Warn("request shed", "reason", reason)
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, http.StatusServiceUnavailable, "overloaded", "this node is at capacity; retry shortly")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r) {
			next.ServeHTTP(w, r)
			return
		}
		select {
		case s.slots <- struct{}{}:
		default:
			select {
			case s.queue <- struct{}{}:
			default:
				overloaded(w, r, "queue_full")
				return
			}
			t := time.NewTimer(s.cfg.QueueTimeout)
			select {
			case s.slots <- struct{}{}:
				t.Stop()
				<-s.queue
			case <-t.C:
				<-s.queue
				overloaded(w, r, "queue_timeout")
				return
			case <-r.Context().Done():
				t.Stop()
				<-s.queue
				return
			}
		}
		defer func() { <-s.slots }()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// readyz runs the readiness checks, each bounded to 2 s.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	results := make(map[string]string, len(s.cfg.Ready))
	ready := true
	for _, c := range s.cfg.Ready {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := c.Func(ctx)
		cancel()
		if err != nil {
			ready = false
			results[c.Name] = err.Error()
			httpx.Logger(r.Context()).Warn("not ready", "check", c.Name, "err", err)
		} else {
			results[c.Name] = "ok"
		}
	}
	if !ready {
		w.Header().Set("Retry-After", "5")
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not_ready", "checks": results})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": results})
}
