package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

// Defaults.
const (
	DefaultIdleTimeout   = 15 * time.Minute
	DefaultMaxSessionAge = 12 * time.Hour
	DefaultInviteTTL     = 24 * time.Hour
	ceremonyTTL          = 5 * time.Minute
	sessionCookie        = "__Host-qshield_console"
	ceremonyCookie       = "__Host-qshield_ceremony"
)

// Config is what the console needs from the platform.
type Config struct {
	DB     *sqldb.DB
	Ledger *ledger.Ledger
	Audit  *audit.Log
	CA     *pki.CA
	// KME is the pair of key managers (optional: the QKD view says so).
	KME *kme.Pair
	// KeyCharge is seed 001's platform, for key storage devices (optional).
	KeyCharge *keycharge.QKMP
	// Link samples the QKD link for the live view (optional).
	Link *LinkMonitor
	// Revoke, when set, revokes a certificate (the platform's own revocation,
	// which also ends the principal's open connections); nil uses CA.Revoke.
	Revoke func(ctx context.Context, serial string, reason string) error
	// Origin is the console's origin, e.g. "https://localhost:8443"; its host
	// is the WebAuthn relying-party ID (a domain name, not an IP address).
	Origin string
	// AuditVerifierKey is the audit log's checkpoint verifier key (a
	// signed-note key, audit-checkpoint.vkey): the console checks every
	// checkpoint's signature with it. "" shows checkpoints as unverified.
	AuditVerifierKey string
	// Witnesses are the audit witnesses whose latest cosigned checkpoint the
	// console shows (optional).
	Witnesses []WitnessConfig
	// ResultsDir holds experiment results (NAME.md, NAME.png) shown in the
	// experiments view; "" hides them.
	ResultsDir string
	// IdleTimeout, MaxSessionAge and InviteTTL default to the constants above.
	IdleTimeout, MaxSessionAge, InviteTTL time.Duration
	Log                                   *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Console serves /console.
type Console struct {
	cfg    Config
	st     *store
	wa     *webauthn.WebAuthn
	origin *url.URL
	pages  map[string]*template.Template
	mux    *http.ServeMux
	table  []Route
	series *seriesTail
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New opens the console's tables and prepares its pages.
func New(ctx context.Context, cfg Config) (*Console, error) {
	if cfg.DB == nil || cfg.Ledger == nil || cfg.Audit == nil || cfg.CA == nil {
		return nil, errors.New("console: DB, Ledger, Audit and CA are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxSessionAge <= 0 {
		cfg.MaxSessionAge = DefaultMaxSessionAge
	}
	if cfg.InviteTTL <= 0 {
		cfg.InviteTTL = DefaultInviteTTL
	}
	origin, err := url.Parse(cfg.Origin)
	if err != nil || origin.Scheme == "" || origin.Host == "" {
		return nil, fmt.Errorf("console: origin %q is not an absolute URL", cfg.Origin)
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          origin.Hostname(),
		RPDisplayName: "qshield console",
		RPOrigins:     []string{origin.Scheme + "://" + origin.Host},
	})
	if err != nil {
		return nil, fmt.Errorf("console: webauthn: %w", err)
	}
	st, err := newStore(ctx, cfg.DB, cfg.Now)
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, st: st, wa: wa, origin: origin, series: newSeriesTail()}
	if err := c.parsePages(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// ServeHTTP serves every /console route.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

// Route is one console route with the least role that may use it; Role ""
// means no session is needed (the sign-in and invitation pages).
type Route struct {
	Pattern string
	Role    Role
}

// Routes lists every route and its policy (the route-by-role test walks it).
func (c *Console) Routes() []Route { return c.table }

func (c *Console) parsePages() error {
	funcs := template.FuncMap{
		"money":  formatMoney,
		"time":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"may":    func(r Role, need string) bool { return r.may(Role(need)) },
		"signed": signedMoney,
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	c.pages = map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("console: template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	return nil
}

// page is the data every page template gets.
type page struct {
	Title    string
	Nav      string
	S        *Session
	Flash    string
	Error    string
	Data     any
	Origin   string
	NoChrome bool
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	t, ok := c.pages[name]
	if !ok {
		c.cfg.Log.Error("console: no template", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	p.Origin = c.cfg.Origin
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout.html", p); err != nil {
		c.cfg.Log.Error("console: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer browsers send "Origin: null"
	// on form posts, and the origin check would refuse every form.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// fail shows an error page that names what went wrong in words.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *Session, status int, msg string) {
	c.render(w, r, status, "error", page{Title: http.StatusText(status), S: s, Error: msg})
}

// sessionOf returns the request's live session, or nil.
func (c *Console) sessionOf(r *http.Request) *Session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	s, err := c.st.session(r.Context(), ck.Value, c.cfg.IdleTimeout, c.cfg.MaxSessionAge)
	if err != nil {
		if !errors.Is(err, ErrNoSession) {
			c.cfg.Log.Warn("console: session", "err", err)
		}
		return nil
	}
	// A revoked principal's sessions end at their next request.
	if ok, err := c.principalActive(r.Context(), s.Operator); err != nil || !ok {
		c.st.endSession(r.Context(), s.idHash)
		return nil
	}
	return s
}

// guard wraps a handler with the route's policy: a session whose role
// includes need, and for state-changing methods the CSRF token and origin.
func (c *Console) guard(need Role, h func(http.ResponseWriter, *http.Request, *Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.sessionOf(r)
		if s == nil {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/stream") {
				http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusUnauthorized, "Your session has ended. Sign in again.")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !c.sameOrigin(r) || !c.csrfOK(r, s) {
				c.record(r.Context(), s, "console.csrf", audit.OutcomeFailure, r.URL.Path, map[string]any{"origin": r.Header.Get("Origin"), "same_origin": c.sameOrigin(r), "csrf": c.csrfOK(r, s)})
				c.fail(w, r, s, http.StatusForbidden, "This form has expired or came from another site. Reload the page and try again.")
				return
			}
		}
		if !s.Operator.Role.may(need) {
			c.record(r.Context(), s, "console.denied", audit.OutcomeFailure, r.Method+" "+r.URL.Path, map[string]any{"role": string(s.Operator.Role), "needs": string(need)})
			c.fail(w, r, s, http.StatusForbidden, fmt.Sprintf("Your role (%s) may not do this; it needs %s.", s.Operator.Role, need))
			return
		}
		h(w, r, s)
	}
}

func (c *Console) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	return o == c.origin.Scheme+"://"+c.origin.Host
}

func (c *Console) csrfOK(r *http.Request, s *Session) bool {
	t := r.Header.Get("X-CSRF-Token")
	if t == "" {
		t = r.PostFormValue("csrf")
	}
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(s.CSRF)) == 1
}

// record appends a console action to the audit trail; a failure to record is
// logged and, for actions, stops them (see act).
func (c *Console) record(ctx context.Context, s *Session, event, outcome, resource string, details map[string]any) error {
	actor := "anonymous"
	if s != nil {
		actor = "operator:" + s.Operator.ID
	}
	_, err := c.cfg.Audit.Append(ctx, audit.Entry{Actor: actor, Event: event, Outcome: outcome, Origin: "console", Resource: resource, Details: stringify(details)})
	if err != nil {
		c.cfg.Log.Error("console: audit", "event", event, "err", err)
	}
	return err
}

func (c *Console) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge / time.Second)})
}

func (c *Console) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// Invite issues a single-use invitation link for a new operator (used by the
// platform's administrative API and by admins in the console).
func (c *Console) Invite(ctx context.Context, name string, role Role, by string) (link string, expires time.Time, err error) {
	return c.InviteScoped(ctx, name, role, nil, by)
}

// InviteScoped is Invite whose operator's principal gets scope (e.g.
// "merchant:7": the merchants whose tills an operator may set).
func (c *Console) InviteScoped(ctx context.Context, name string, role Role, scope []string, by string) (link string, expires time.Time, err error) {
	for _, e := range scope {
		if !scopeEntry.MatchString(e) {
			return "", time.Time{}, fmt.Errorf("console: %q is not a scope entry (account:ID, device:SERIAL, merchant:N or *)", e)
		}
	}
	tok, opID, exp, err := c.st.createInvite(ctx, name, role, scope, by, c.cfg.InviteTTL)
	if err != nil {
		return "", time.Time{}, err
	}
	if _, err := c.cfg.Audit.Append(ctx, audit.Entry{Actor: by, Event: "console.invite", Outcome: audit.OutcomeSuccess, Origin: "console",
		Resource: opID, Details: map[string]string{"name": name, "role": string(role), "scope": strings.Join(scope, " "), "expires": exp.UTC().Format(time.RFC3339)}}); err != nil {
		return "", time.Time{}, fmt.Errorf("console: audit invitation: %w", err)
	}
	return c.cfg.Origin + "/console/invite/" + tok, exp, nil
}

func stringify(m map[string]any) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}
