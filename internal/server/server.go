// Package server is qshield's HTTP front: HTTPS with a certificate from the
// platform CA (plain HTTP only when explicitly asked for), a mux on which each
// scheme mounts its http.Handler under its own prefix, and the middleware every
// request passes through: panic recovery, a request body limit, timeouts,
// structured access logs, and errors as RFC 9457 problem+json.
//
// Graceful shutdown: Run returns when its context is cancelled, after
// in-flight requests finish (bounded by ShutdownTimeout).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/qshield/qshield/httpx"
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
	// MaxConnAge closes a kept-alive connection after the first response
	// once it is this old (0: no limit), so no connection outlives a
	// certificate revocation or rotation for long.
	MaxConnAge time.Duration
	Log        *slog.Logger
}

// Server is the HTTP server.
type Server struct {
	cfg      Config
	mux      *http.ServeMux
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
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s, nil
}

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
func (s *Server) Handler() http.Handler {
	return s.recoverer(s.limitBody(s.logRequests(s.connAge(s.mux))))
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
				s.cfg.Log.Error("panic in handler", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
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

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.cfg.Log.Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.cfg.Log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "elapsed", time.Since(start), "remote", r.RemoteAddr)
	})
}
