package platform

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/authz"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/console"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/pki"
)

// DefaultPublicURL is the origin people use to reach the platform when
// Config.PublicURL is empty (the default listener).
const DefaultPublicURL = "https://localhost:8443"

// startConsole mounts the operator console under /console and its
// administrative API: POST /v1/console/invites (the platform's admin client
// certificate) issues a single-use invitation link for a new operator.
func (p *Platform) startConsole(ctx context.Context) error {
	if p.Config.InsecureHTTP {
		// Passkeys and __Host- cookies need HTTPS end to end; behind a TLS
		// proxy the console is not offered rather than offered weakly.
		return nil
	}
	origin := p.Config.PublicURL
	if origin == "" {
		origin = DefaultPublicURL
	}
	cfg := console.Config{DB: p.DB, Ledger: p.Ledger, Audit: p.Audit, CA: p.CA, KME: p.KME, KeyCharge: p.KeyCharge, Origin: origin,
		ResultsDir: p.Config.ResultsDir, Log: p.Config.Log, AuditVerifierKey: p.auditVKey}
	if p.KME != nil && !p.Config.QKD.Off {
		p.LinkMonitor = console.NewLinkMonitor(p.KME, kmeUnitBits(p.KME), 300)
		cfg.Link = p.LinkMonitor
		mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); p.LinkMonitor.Run(mctx, 2*time.Second) }()
		p.closers = append(p.closers, func() error { cancel(); <-done; return nil })
	}
	for _, w := range p.Config.Audit.Witnesses {
		state, vkeyFile, ok := strings.Cut(w, "=")
		if !ok || state == "" || vkeyFile == "" {
			return fmt.Errorf("platform: audit witness %q: want STATE=VKEY", w)
		}
		vkey, err := audit.ReadVerifierKey(vkeyFile)
		if err != nil {
			return fmt.Errorf("platform: audit witness %q: %w", w, err)
		}
		cfg.Witnesses = append(cfg.Witnesses, console.WitnessConfig{StateFile: state, VerifierKey: vkey})
	}
	c, err := console.New(ctx, cfg)
	if err != nil {
		return fmt.Errorf("platform: console: %w", err)
	}
	p.Console = c
	// The console's background views: per-scheme series, checkpoint history.
	cctx, ccancel := context.WithCancel(context.WithoutCancel(ctx))
	cdone := make(chan struct{})
	go func() { defer close(cdone); c.Run(cctx, 5*time.Second) }()
	p.closers = append(p.closers, func() error { ccancel(); <-cdone; return nil })
	p.Router.Handle("/console/", authz.Public("the console authenticates its operators itself (passkeys, session cookies, its own roles)"), c)
	p.Router.Handle("GET /console", authz.Public("a redirect to /console/"), http.RedirectHandler("/console/", http.StatusMovedPermanently))
	p.Router.Handle("POST /v1/console/invites", authz.Allow(pki.PrincipalAdmin), http.HandlerFunc(p.consoleInvite))
	return nil
}

func kmeUnitBits(pair *kme.Pair) int { return pair.A.Config().KeySizeBits }

// InviteRequest is the body of POST /v1/console/invites.
type InviteRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// InviteResponse is its answer.
type InviteResponse struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (p *Platform) consoleInvite(w http.ResponseWriter, r *http.Request) {
	var req InviteRequest
	if !httpx.DecodeOrProblem(w, r, 4<<10, &req) {
		return
	}
	role, err := console.ParseRole(req.Role)
	if err != nil {
		httpx.WriteProblem(w, r, http.StatusUnprocessableEntity, "invalid_role", err.Error())
		return
	}
	link, exp, err := p.Console.Invite(r.Context(), req.Name, role, "admin:"+AdminName)
	if err != nil {
		httpx.WriteProblem(w, r, http.StatusUnprocessableEntity, "invalid_invite", err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, InviteResponse{URL: link, ExpiresAt: exp.UTC()})
}
