// Package authz is qshield's authorization layer: every HTTP route is
// registered together with its policy, and one middleware decides every
// request before a handler runs.
//
// # Design
//
// Principals, not names. A caller is the principal the platform CA recorded
// when it issued the caller's certificate (pki.Principal): its kind (admin,
// operator, phone, POS, charger…), scheme and scope. The middleware finds the
// client certificate — from the TLS connection, or, behind a configured
// trusted proxy, from a configured header — and asks the Authenticator
// (pki.CA.Authenticate) for the principal on every request, so a revoked
// certificate is refused on its next request even on a kept-alive
// connection. The common name is never consulted.
//
// Policies. A Policy names the kinds that may call a route, optionally
// with an ownership check run after authentication (a charger sees only its
// own charges, a POS only its own display). Parties that hold no platform
// certificate but a key of their scheme (seed 002's ECQV users and vendors)
// reach their own objects through a Signed policy: the middleware runs the
// route's RequestCheck, which verifies a signature over the request by the
// object owner's key. Public routes must say why they are public. A Router refuses (panics at start-up on) a route registered
// without a policy, and Routes lists every route with its policy, so a test
// can walk all routes with every kind of principal.
//
// Signed requests. A browser cannot present a client certificate, so a
// route may also accept a request signed with HTTP Message Signatures
// (package httpsig) by a registered principal (Policy.OrSigned): the
// Options.Signed authenticator verifies the signature and returns the
// principal of its key; a bad or replayed signature is a 401 like a bad
// certificate. Routes that do not opt in never look at a signature.
//
// Refusals. No or an unverifiable certificate: 401; a principal of the
// wrong kind or failing the ownership check: 403; too many requests from a
// principal or a source address: 429 with Retry-After. All are RFC 9457
// problem+json. Refusals are reported to Options.Denied; unauthenticated
// ones are aggregated per source address and minute (Flush), so a flood of
// anonymous requests writes one audit record per source and minute, under
// the actor "anonymous", never under a name the caller chose.
package authz

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpsig"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/pki"
)

// Authenticator maps a client certificate to its principal (pki.CA).
type Authenticator interface {
	Authenticate(ctx context.Context, cert *x509.Certificate) (*pki.Principal, error)
}

// ErrNotOwner is what an ownership check returns (wrapped) when the
// principal may not act on the resource.
var ErrNotOwner = errors.New("authz: the resource does not belong to this principal")

// OwnerCheck decides whether p may act on the resource r names. It runs
// after the kind check; it returns nil, an error wrapping ErrNotOwner (403)
// or another error (500).
type OwnerCheck func(r *http.Request, p *pki.Principal) error

// SignedAuthenticator authenticates a request signed with HTTP Message
// Signatures by a registered principal's key. It returns an error wrapping
// httpsig.ErrInvalid, httpsig.ErrReplay or httpsig.ErrUnknownKey for a
// signature it refuses (401); any other error is a 503.
type SignedAuthenticator interface {
	AuthenticateSigned(r *http.Request) (*pki.Principal, *x509.Certificate, error)
}

// ErrUnsigned is what a RequestCheck returns (wrapped) for a request that
// carries no usable signature (401).
var ErrUnsigned = errors.New("authz: the request is not signed by the owner's key")

// RequestCheck authenticates a request by a signature over it made with the
// key of the resource's owner: nil admits it; an error wrapping ErrUnsigned
// refuses it with 401, one wrapping ErrNotOwner (a signature by another key,
// or a resource that does not exist) with 403, any other with 500.
type RequestCheck func(r *http.Request) error

// Policy says who may call a route.
type Policy struct {
	signed    bool
	public    bool
	reason    string
	kinds     []pki.PrincipalKind
	owner     OwnerCheck
	ownerDesc string
	signedBy  RequestCheck
}

// Signed is the policy of a route whose caller proves with a signature over
// the request, checked by check, that it owns the resource (desc says by
// whose key, e.g. "signed by the token holder's key"). No certificate is
// needed and none is enough.
func Signed(desc string, check RequestCheck) Policy {
	if strings.TrimSpace(desc) == "" || check == nil {
		panic("authz: a signed route needs a description and a check")
	}
	return Policy{signedBy: check, ownerDesc: desc}
}

// IsSigned reports whether the route is authenticated by a signature
// over the request rather than by a principal's certificate.
func (p Policy) IsSigned() bool { return p.signedBy != nil }

// Public is the policy of a route any caller may use, with or without a
// certificate; reason says why (it is listed with the route).
func Public(reason string) Policy {
	if strings.TrimSpace(reason) == "" {
		panic("authz: a public route needs a reason")
	}
	return Policy{public: true, reason: reason}
}

// Allow is the policy of a route for principals of kinds.
func Allow(kinds ...pki.PrincipalKind) Policy {
	if len(kinds) == 0 {
		panic("authz: Allow needs at least one kind")
	}
	for _, k := range kinds {
		if !k.Valid() || k == pki.PrincipalNone {
			panic(fmt.Sprintf("authz: kind %q cannot be allowed", k))
		}
	}
	return Policy{kinds: slices.Clone(kinds)}
}

// Owned adds an ownership check (desc says what it checks, e.g. "its own
// charges").
func (p Policy) Owned(desc string, check OwnerCheck) Policy {
	if p.public || check == nil {
		panic("authz: only an Allow policy takes an ownership check")
	}
	p.owner, p.ownerDesc = check, desc
	return p
}

// OrSigned makes an Allow policy also accept a request signed (RFC 9421)
// with the key of a registered principal of one of its kinds, in place of a
// client certificate (see SignedAuthenticator).
func (p Policy) OrSigned() Policy {
	if p.public {
		panic("authz: only an Allow policy accepts signed requests")
	}
	p.signed = true
	return p
}

// AcceptsSigned reports whether the route accepts signed requests.
func (p Policy) AcceptsSigned() bool { return p.signed }

// IsPublic reports whether the route needs no principal.
func (p Policy) IsPublic() bool { return p.public }

// Allows reports whether a principal of kind k passes the kind check.
func (p Policy) Allows(k pki.PrincipalKind) bool { return p.public || slices.Contains(p.kinds, k) }

// Kinds returns the kinds the policy admits (nil for a public route).
func (p Policy) Kinds() []pki.PrincipalKind { return slices.Clone(p.kinds) }

// HasOwnerCheck reports whether the policy checks ownership.
func (p Policy) HasOwnerCheck() bool { return p.owner != nil }

func (p Policy) valid() bool { return p.public || len(p.kinds) > 0 || p.signedBy != nil }

// String describes the policy ("public: reason", "admin, operator; owner: …").
func (p Policy) String() string {
	if p.public {
		return "public: " + p.reason
	}
	if p.signedBy != nil {
		return "signed: " + p.ownerDesc
	}
	ks := make([]string, len(p.kinds))
	for i, k := range p.kinds {
		ks[i] = string(k)
	}
	s := strings.Join(ks, ", ")
	if p.owner != nil {
		s += "; only " + p.ownerDesc
	}
	if p.signed {
		s += "; certificate or signed request"
	}
	return s
}

// Route is a registered route.
type Route struct {
	Pattern string // http.ServeMux pattern, e.g. "POST /v1/bioqr/enrol"
	Policy  Policy
	Handler http.Handler
}

// Registrar is where a Router registers wrapped routes (an http.ServeMux,
// or the platform's server).
type Registrar interface {
	Handle(pattern string, h http.Handler)
}

// Denial is a refused request, for the audit trail.
type Denial struct {
	Pattern string
	Source  string // client IP address
	// Principal is nil for an unauthenticated refusal.
	Principal *pki.Principal
	Status    int
	Code      string
	Reason    string
	// Count > 1 for an aggregated unauthenticated refusal (per source and minute).
	Count int
	// Minute is the aggregation window's start (unauthenticated refusals).
	Minute time.Time
}

// Options configure a Router.
type Options struct {
	// Auth authenticates client certificates (required unless every route
	// is public).
	Auth Authenticator
	// Mux receives the wrapped routes; nil: the Router's own ServeMux
	// (serve it with the Router itself).
	Mux Registrar
	// TrustedProxies are the addresses from which ClientCertHeader is
	// believed (for a TLS-terminating proxy in front of a plain-HTTP
	// listener). Empty: the header is ignored and only the TLS connection's
	// certificate counts.
	TrustedProxies []netip.Prefix
	// ClientCertHeader carries the verified client certificate from a
	// trusted proxy: URL-escaped PEM (nginx $ssl_client_escaped_cert) or
	// base64 DER. The certificate is verified again here.
	ClientCertHeader string
	// PerPrincipal is the sustained request rate per principal
	// (certificate serial); PerSource the rate per source address of
	// requests that carry no principal. 0 means unlimited. Burst is the
	// bucket size (default: 2 s' worth of each rate, at least 10).
	PerPrincipal, PerSource rate.Limit
	Burst                   int
	// Denied receives refusals: authenticated ones at once, unauthenticated
	// ones aggregated (the first of each source and minute at once, the
	// rest as one record with Count when the minute is flushed).
	Denied func(context.Context, Denial)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Signed authenticates signed requests on routes whose policy accepts
	// them (nil: no route does).
	Signed SignedAuthenticator
}

// Router registers routes with policies and enforces them.
type Router struct {
	opts    Options
	own     *http.ServeMux
	mu      sync.Mutex
	routes  []Route
	limits  *limiters
	anon    *anonymous
	proxies []netip.Prefix
}

// New returns a Router.
func New(opts Options) *Router {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rt := &Router{opts: opts, anon: newAnonymous()}
	if opts.Mux == nil {
		rt.own = http.NewServeMux()
		rt.opts.Mux = rt.own
	}
	if opts.PerPrincipal > 0 || opts.PerSource > 0 {
		rt.limits = newLimiters(opts.PerPrincipal, opts.PerSource, opts.Burst)
	}
	if opts.ClientCertHeader != "" {
		rt.proxies = slices.Clone(opts.TrustedProxies)
	}
	return rt
}

// Handle registers h for pattern under pol. It panics when pol is the zero
// Policy: no route exists without a declared policy.
func (rt *Router) Handle(pattern string, pol Policy, h http.Handler) {
	if !pol.valid() {
		panic("authz: route " + pattern + " registered without a policy")
	}
	if len(pol.kinds) > 0 && rt.opts.Auth == nil {
		panic("authz: route " + pattern + " needs an Authenticator")
	}
	rt.mu.Lock()
	rt.routes = append(rt.routes, Route{Pattern: pattern, Policy: pol, Handler: h})
	rt.mu.Unlock()
	rt.opts.Mux.Handle(pattern, rt.wrap(pattern, pol, h))
}

// HandleFunc is Handle for a function.
func (rt *Router) HandleFunc(pattern string, pol Policy, f func(http.ResponseWriter, *http.Request)) {
	rt.Handle(pattern, pol, http.HandlerFunc(f))
}

// Register registers routes (for example a scheme's Routes()).
func (rt *Router) Register(routes ...Route) {
	for _, r := range routes {
		rt.Handle(r.Pattern, r.Policy, r.Handler)
	}
}

// Routes returns every registered route, in registration order.
func (rt *Router) Routes() []Route {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Clone(rt.routes)
}

// ServeHTTP serves the Router's own mux (when Options.Mux was nil).
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rt.own == nil {
		httpx.WriteProblem(w, r, http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	rt.own.ServeHTTP(w, r)
}

type ctxKey struct{}

// PrincipalFrom returns the principal the middleware authenticated for this
// request (nil on a public route called without a certificate).
func PrincipalFrom(ctx context.Context) *pki.Principal {
	p, _ := ctx.Value(ctxKey{}).(*pki.Principal)
	return p
}

// WithPrincipal returns ctx carrying p (for in-process callers and tests
// that call a handler without the middleware).
func WithPrincipal(ctx context.Context, p *pki.Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

type certKey struct{}

// CertificateFrom returns the client certificate the principal was
// authenticated with (nil when there is none).
func CertificateFrom(ctx context.Context) *x509.Certificate {
	c, _ := ctx.Value(certKey{}).(*x509.Certificate)
	return c
}

// WithCertificate returns ctx carrying cert (see WithPrincipal).
func WithCertificate(ctx context.Context, cert *x509.Certificate) context.Context {
	return context.WithValue(ctx, certKey{}, cert)
}

// Decision is the outcome of Authorize.
type Decision struct {
	// Principal is the authenticated caller (nil: none).
	Principal *pki.Principal
	// Certificate is the client certificate it was authenticated with.
	Certificate *x509.Certificate
	// Status is 0 when the request may proceed, else the HTTP status of the
	// refusal (401, 403, 503), with Code and Reason.
	Status       int
	Code, Reason string
}

// Authorize decides a request against pol without rate limiting or
// reporting: who the caller is, and whether pol admits it (for tests and
// for callers that check a policy outside the router).
func (rt *Router) Authorize(r *http.Request, pol Policy) Decision {
	cert, err := rt.clientCert(r)
	if err != nil {
		return Decision{Status: http.StatusUnauthorized, Code: "client_certificate_rejected", Reason: err.Error()}
	}
	var d Decision
	if cert != nil && rt.opts.Auth != nil {
		p, err := rt.opts.Auth.Authenticate(r.Context(), cert)
		if err != nil {
			if r.Context().Err() != nil || (!errors.Is(err, pki.ErrUntrusted) && !errors.Is(err, pki.ErrRevoked) &&
				!errors.Is(err, pki.ErrExpired) && !errors.Is(err, pki.ErrWrongRole) && !errors.Is(err, pki.ErrKeyMismatch)) {
				return Decision{Status: http.StatusServiceUnavailable, Code: "authentication_unavailable", Reason: "cannot check the client certificate now"}
			}
			return Decision{Status: http.StatusUnauthorized, Code: "client_certificate_rejected", Reason: err.Error()}
		}
		d.Principal, d.Certificate = p, cert
	}
	if cert == nil && pol.signed && rt.opts.Signed != nil && r.Header.Get("Signature-Input") != "" {
		p, c, err := rt.opts.Signed.AuthenticateSigned(r)
		if err != nil {
			if r.Context().Err() != nil || (!errors.Is(err, httpsig.ErrInvalid) && !errors.Is(err, httpsig.ErrReplay) && !errors.Is(err, httpsig.ErrUnknownKey)) {
				return Decision{Status: http.StatusServiceUnavailable, Code: "authentication_unavailable", Reason: "cannot check the request signature now"}
			}
			return Decision{Status: http.StatusUnauthorized, Code: "signature_rejected", Reason: err.Error()}
		}
		d.Principal, d.Certificate = p, c
	}
	if pol.public {
		return d
	}
	if pol.signedBy != nil {
		if err := pol.signedBy(r); err != nil {
			switch {
			case errors.Is(err, ErrUnsigned):
				d.Status, d.Code, d.Reason = http.StatusUnauthorized, "signature_required", err.Error()
			case errors.Is(err, ErrNotOwner):
				d.Status, d.Code, d.Reason = http.StatusForbidden, "not_owner", err.Error()
			default:
				d.Status, d.Code, d.Reason = http.StatusInternalServerError, "internal", "internal error"
			}
		}
		return d
	}
	if d.Principal == nil {
		d.Status, d.Code, d.Reason = http.StatusUnauthorized, "client_certificate_required", "this endpoint needs a client certificate issued by the platform CA"
		return d
	}
	if !pol.Allows(d.Principal.Kind) {
		d.Status, d.Code, d.Reason = http.StatusForbidden, "forbidden", fmt.Sprintf("a %s may not call this endpoint (allowed: %s)", d.Principal.Kind, pol)
		return d
	}
	if pol.owner != nil {
		if err := pol.owner(r, d.Principal); err != nil {
			if !errors.Is(err, ErrNotOwner) {
				d.Status, d.Code, d.Reason = http.StatusInternalServerError, "internal", "internal error"
				return d
			}
			d.Status, d.Code, d.Reason = http.StatusForbidden, "not_owner", err.Error()
		}
	}
	return d
}

func (rt *Router) wrap(pattern string, pol Policy, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := sourceOf(r)
		d := rt.Authorize(r, pol)
		if rt.limits != nil {
			var wait time.Duration
			ok := true
			if d.Principal != nil {
				wait, ok = rt.limits.allowPrincipal(d.Principal.Serial, rt.opts.Now())
			} else {
				wait, ok = rt.limits.allowSource(src, rt.opts.Now())
			}
			if !ok {
				rt.tooMany(w, r, wait)
				return
			}
		}
		switch {
		case d.Status == 0:
		case d.Principal == nil && (d.Status == http.StatusUnauthorized || d.Status == http.StatusForbidden):
			rt.refuseAnonymous(w, r, pattern, src, d.Status, d.Code, d.Reason)
			return
		case d.Status == http.StatusForbidden:
			rt.refuse(w, r, Denial{Pattern: pattern, Source: src, Principal: d.Principal, Status: d.Status, Code: d.Code, Reason: d.Reason})
			return
		default:
			httpx.WriteProblem(w, r, d.Status, d.Code, d.Reason)
			return
		}
		if d.Principal != nil {
			// The server named the caller from the TLS connection before
			// routing; behind a trusted proxy there is none, so name the
			// authenticated principal here (logs, idempotency scopes).
			if ri := httpx.RequestInfoFrom(r.Context()); ri != nil {
				ri.SetPrincipal("cert:" + d.Principal.Serial)
			}
			ctx := audit.WithActor(r.Context(), d.Principal.Serial)
			r = r.WithContext(WithCertificate(WithPrincipal(ctx, d.Principal), d.Certificate))
		}
		h.ServeHTTP(w, r)
	})
}

func (rt *Router) tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	secs := int(wait/time.Second) + 1
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	httpx.WriteProblem(w, r, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("too many requests; retry after %d s", secs))
}

func (rt *Router) refuse(w http.ResponseWriter, r *http.Request, d Denial) {
	httpx.WriteProblem(w, r, d.Status, d.Code, d.Reason)
	if rt.opts.Denied != nil {
		d.Count = 1
		rt.opts.Denied(context.WithoutCancel(r.Context()), d)
	}
}

func (rt *Router) refuseAnonymous(w http.ResponseWriter, r *http.Request, pattern, src string, status int, code, reason string) {
	httpx.WriteProblem(w, r, status, code, reason)
	if rt.opts.Denied == nil {
		return
	}
	minute := rt.opts.Now().UTC().Truncate(time.Minute)
	if rt.anon.add(src, minute) {
		rt.opts.Denied(context.WithoutCancel(r.Context()), Denial{Pattern: pattern, Source: src, Status: status, Code: code, Reason: reason, Count: 1, Minute: minute})
	}
}

// Flush reports the aggregated unauthenticated refusals of minutes that
// have ended (all of them with final set); run it about once a minute.
func (rt *Router) Flush(ctx context.Context, final bool) {
	if rt.opts.Denied == nil {
		return
	}
	now := rt.opts.Now().UTC().Truncate(time.Minute)
	for _, b := range rt.anon.take(now, final) {
		rt.opts.Denied(ctx, Denial{Source: b.source, Status: http.StatusUnauthorized, Code: "unauthenticated",
			Reason: fmt.Sprintf("%d more unauthenticated requests refused in this minute", b.count), Count: b.count, Minute: b.minute})
	}
}

// Run calls Flush every minute until ctx ends, then a final Flush.
func (rt *Router) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			rt.Flush(context.WithoutCancel(ctx), true)
			return
		case <-t.C:
			rt.Flush(ctx, false)
		}
	}
}

// clientCert returns the client certificate of r: the TLS connection's
// verified one, or a trusted proxy's header. No certificate is (nil, nil).
func (rt *Router) clientCert(r *http.Request) (*x509.Certificate, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if len(r.TLS.VerifiedChains) == 0 {
			return nil, errors.New("the TLS layer did not verify the client certificate")
		}
		return r.TLS.PeerCertificates[0], nil
	}
	if len(rt.proxies) == 0 {
		return nil, nil
	}
	v := r.Header.Get(rt.opts.ClientCertHeader)
	if v == "" {
		return nil, nil
	}
	if !rt.fromProxy(r) {
		return nil, fmt.Errorf("header %s accepted only from a trusted proxy", rt.opts.ClientCertHeader)
	}
	return ParseCertHeader(v)
}

func (rt *Router) fromProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range rt.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maxCertHeader bounds a forwarded certificate.
const maxCertHeader = 16 << 10

// ParseCertHeader decodes a forwarded client certificate: URL-escaped PEM
// (nginx $ssl_client_escaped_cert), PEM, or standard base64 DER.
func ParseCertHeader(v string) (*x509.Certificate, error) {
	if len(v) > maxCertHeader {
		return nil, errors.New("forwarded client certificate too large")
	}
	if strings.Contains(v, "%") {
		u, err := url.PathUnescape(v) // '+' is a base64 character, not a space
		if err != nil {
			return nil, fmt.Errorf("forwarded client certificate: %w", err)
		}
		v = u
	}
	var der []byte
	if strings.Contains(v, "-----BEGIN") {
		b, rest := pem.Decode([]byte(v))
		if b == nil || b.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
			return nil, errors.New("forwarded client certificate: not one PEM CERTIFICATE")
		}
		der = b.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(v); err != nil {
			return nil, fmt.Errorf("forwarded client certificate: %w", err)
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("forwarded client certificate: %w", err)
	}
	return c, nil
}

// sourceOf is the request's source IP address (the connection's; a proxy's
// X-Forwarded-For is not believed).
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limiters holds the token buckets, dropping idle ones.
type limiters struct {
	perPrincipal, perSource rate.Limit
	burst                   int // 0: per limit, 2 s' worth and at least 10
	mu                      sync.Mutex
	m                       map[string]*bucket
	sweep                   time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

const maxBuckets = 100000

func newLimiters(pp, ps rate.Limit, burst int) *limiters {
	return &limiters{perPrincipal: pp, perSource: ps, burst: burst, m: map[string]*bucket{}}
}

func (l *limiters) allowSource(src string, now time.Time) (time.Duration, bool) {
	if l.perSource <= 0 {
		return 0, true
	}
	return l.allow("s:"+src, l.perSource, now)
}

func (l *limiters) allowPrincipal(serial string, now time.Time) (time.Duration, bool) {
	if l.perPrincipal <= 0 {
		return 0, true
	}
	return l.allow("p:"+serial, l.perPrincipal, now)
}

func (l *limiters) allow(key string, lim rate.Limit, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweep) > time.Minute || len(l.m) >= maxBuckets {
		for k, b := range l.m {
			if now.Sub(b.seen) > 5*time.Minute || len(l.m) >= maxBuckets {
				delete(l.m, k)
			}
		}
		l.sweep = now
	}
	b, ok := l.m[key]
	if !ok {
		burst := l.burst
		if burst <= 0 {
			burst = max(int(2*lim), 10)
		}
		b = &bucket{l: rate.NewLimiter(lim, burst)}
		l.m[key] = b
	}
	b.seen = now
	res := b.l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// anonymous aggregates unauthenticated refusals per source and minute.
type anonymous struct {
	mu sync.Mutex
	m  map[anonKey]int
}

type anonKey struct {
	source string
	minute time.Time
}

type anonBucket struct {
	source string
	minute time.Time
	count  int
}

const maxAnonBuckets = 10000

func newAnonymous() *anonymous { return &anonymous{m: map[anonKey]int{}} }

// add counts one refusal and reports whether it is the first of its bucket
// (reported at once); later ones are reported by take.
func (a *anonymous) add(source string, minute time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := anonKey{source, minute}
	n, ok := a.m[k]
	if !ok && len(a.m) >= maxAnonBuckets {
		// Too many distinct sources: fold the newcomer into one bucket
		// rather than grow without bound or drop the count.
		k = anonKey{"(many sources)", minute}
		n, ok = a.m[k]
	}
	a.m[k] = n + 1
	return !ok
}

// take removes the buckets of minutes before now (all with final) whose
// count exceeds the one already reported.
func (a *anonymous) take(now time.Time, final bool) []anonBucket {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []anonBucket
	for k, n := range a.m {
		if !final && !k.minute.Before(now) {
			continue
		}
		delete(a.m, k)
		if n > 1 {
			out = append(out, anonBucket{k.source, k.minute, n - 1})
		}
	}
	slices.SortFunc(out, func(x, y anonBucket) int {
		if c := x.minute.Compare(y.minute); c != 0 {
			return c
		}
		return strings.Compare(x.source, y.source)
	})
	return out
}
