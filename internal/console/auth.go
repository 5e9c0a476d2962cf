package console

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/qshield/qshield/audit"
)

// The WebAuthn ceremonies. Each begin answers the options as JSON and keeps the
// challenge server-side under a one-time ceremony cookie; each finish takes the
// browser's response, checks it against that challenge and the relying party,
// and answers {"next": URL} or a problem with a message for the page.

type ceremonyReply struct {
	Next  string `json:"next,omitempty"`
	Error string `json:"error,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	securityHeaders(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ceremonyOrigin refuses cross-site ceremony calls (no session exists yet, so
// the CSRF token cannot protect them; the Origin header can).
func (c *Console) ceremonyOrigin(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Origin") != c.origin.Scheme+"://"+c.origin.Host {
		writeJSON(w, http.StatusForbidden, ceremonyReply{Error: "This request did not come from the console's own page."})
		return false
	}
	return true
}

func (c *Console) inviteBegin(w http.ResponseWriter, r *http.Request) {
	if !c.ceremonyOrigin(w, r) {
		return
	}
	inv, err := c.st.invite(r.Context(), r.PathValue("token"))
	if err != nil {
		writeJSON(w, http.StatusGone, ceremonyReply{Error: "This invitation is unknown, already used or expired. Ask an administrator for a new one."})
		return
	}
	handle := make([]byte, 32)
	rand.Read(handle)
	user := &Operator{ID: inv.OperatorID, Name: inv.Name, Role: inv.Role, Handle: handle}
	creation, sd, err := c.wa.BeginRegistration(user,
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementRequired,
			UserVerification: protocol.VerificationRequired,
		}))
	if err != nil {
		c.cfg.Log.Error("console: begin registration", "err", err)
		writeJSON(w, http.StatusInternalServerError, ceremonyReply{Error: "The passkey could not be prepared. Try again."})
		return
	}
	tok, err := c.st.saveCeremony(r.Context(), "register", sd, inv.hash)
	if err != nil {
		c.cfg.Log.Error("console: save ceremony", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "The console cannot reach its database. Try again shortly."})
		return
	}
	c.setCookie(w, ceremonyCookie, tok, ceremonyTTL)
	writeJSON(w, http.StatusOK, creation)
}

func (c *Console) inviteFinish(w http.ResponseWriter, r *http.Request) {
	if !c.ceremonyOrigin(w, r) {
		return
	}
	ctx := r.Context()
	inv, err := c.st.invite(ctx, r.PathValue("token"))
	if err != nil {
		writeJSON(w, http.StatusGone, ceremonyReply{Error: "This invitation is unknown, already used or expired. Ask an administrator for a new one."})
		return
	}
	ck, err := r.Cookie(ceremonyCookie)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ceremonyReply{Error: "The passkey request expired; start again."})
		return
	}
	c.clearCookie(w, ceremonyCookie)
	sd, invHash, err := c.st.takeCeremony(ctx, ck.Value, "register")
	if err != nil || string(invHash) != string(inv.hash) {
		writeJSON(w, http.StatusBadRequest, ceremonyReply{Error: "The passkey request expired; start again."})
		return
	}
	user := &Operator{ID: inv.OperatorID, Name: inv.Name, Role: inv.Role, Handle: sd.UserID}
	cred, err := c.wa.FinishRegistration(user, *sd, r)
	if err != nil {
		c.record(ctx, nil, "console.register", audit.OutcomeFailure, inv.OperatorID, map[string]any{"error": protocolMessage(err)})
		writeJSON(w, http.StatusBadRequest, ceremonyReply{Error: "The passkey was not accepted: " + protocolMessage(err)})
		return
	}
	// The operator becomes a principal of the CA's register, its passkey's
	// key certified (principals.go), before the invitation is spent.
	op := &Operator{ID: inv.OperatorID, Name: inv.Name, Role: inv.Role}
	serial, err := c.issueOperatorPrincipal(ctx, op, inv.Scope, cred, inv.CreatedBy)
	if err != nil {
		c.cfg.Log.Error("console: operator principal", "err", err)
		c.record(ctx, nil, "console.register", audit.OutcomeFailure, inv.OperatorID, map[string]any{"error": "principal not registered: " + err.Error()})
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "Your passkey could not be entered in the principals register. Try again shortly."})
		return
	}
	op.PrincipalSerial = serial
	if err := c.st.redeemInvite(ctx, inv, sd.UserID, cred, serial); err != nil {
		if rerr := c.revokeOperatorPrincipal(ctx, op, "console invitation not redeemed"); rerr != nil {
			c.cfg.Log.Error("console: revoke unredeemed principal", "serial", serial, "err", rerr)
		}
		if errors.Is(err, ErrInviteInvalid) {
			writeJSON(w, http.StatusGone, ceremonyReply{Error: "This invitation was used meanwhile."})
			return
		}
		c.cfg.Log.Error("console: redeem invitation", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "The console cannot reach its database. Try again shortly."})
		return
	}
	if err := c.record(ctx, &Session{Operator: op}, "console.register", audit.OutcomeSuccess, inv.OperatorID,
		map[string]any{"name": inv.Name, "role": string(inv.Role), "invited_by": inv.CreatedBy, "principal": serial}); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "The console cannot write its audit trail. Try again shortly."})
		return
	}
	c.startSession(w, r, op.ID)
}

func (c *Console) startSession(w http.ResponseWriter, r *http.Request, operatorID string) {
	tok, err := c.st.createSession(r.Context(), operatorID)
	if err != nil {
		c.cfg.Log.Error("console: session", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "The console cannot reach its database. Try again shortly."})
		return
	}
	c.setCookie(w, sessionCookie, tok, c.cfg.MaxSessionAge)
	next := r.URL.Query().Get("next")
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		next = "/console/"
	}
	writeJSON(w, http.StatusOK, ceremonyReply{Next: next})
}

func (c *Console) loginBegin(w http.ResponseWriter, r *http.Request) {
	if !c.ceremonyOrigin(w, r) {
		return
	}
	assertion, sd, err := c.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		c.cfg.Log.Error("console: begin login", "err", err)
		writeJSON(w, http.StatusInternalServerError, ceremonyReply{Error: "Sign-in could not be prepared. Try again."})
		return
	}
	tok, err := c.st.saveCeremony(r.Context(), "login", sd, nil)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "The console cannot reach its database. Try again shortly."})
		return
	}
	c.setCookie(w, ceremonyCookie, tok, ceremonyTTL)
	writeJSON(w, http.StatusOK, assertion)
}

func (c *Console) loginFinish(w http.ResponseWriter, r *http.Request) {
	if !c.ceremonyOrigin(w, r) {
		return
	}
	ctx := r.Context()
	ck, err := r.Cookie(ceremonyCookie)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ceremonyReply{Error: "The sign-in attempt expired; start again."})
		return
	}
	c.clearCookie(w, ceremonyCookie)
	sd, _, err := c.st.takeCeremony(ctx, ck.Value, "login")
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ceremonyReply{Error: "The sign-in attempt expired; start again."})
		return
	}
	var found *Operator
	lookup := func(rawID, userHandle []byte) (webauthn.User, error) {
		op, err := c.st.operatorBy(ctx, "handle", userHandle)
		if err != nil {
			return nil, err
		}
		if op.Disabled {
			return nil, errors.New("operator disabled")
		}
		found = op
		return op, nil
	}
	cred, err := c.wa.FinishDiscoverableLogin(lookup, *sd, r)
	if err != nil || found == nil {
		resource := ""
		if found != nil {
			resource = found.ID
		}
		c.record(ctx, nil, "console.login", audit.OutcomeFailure, resource, map[string]any{"error": protocolMessage(err)})
		writeJSON(w, http.StatusUnauthorized, ceremonyReply{Error: "That passkey is not registered for this console, or its operator is disabled."})
		return
	}
	if cred.Authenticator.CloneWarning {
		c.record(ctx, &Session{Operator: found}, "console.login", audit.OutcomeFailure, found.ID, map[string]any{"error": "signature counter went backwards (possible cloned authenticator)"})
		writeJSON(w, http.StatusUnauthorized, ceremonyReply{Error: "This passkey looks cloned; it was refused. Contact an administrator."})
		return
	}
	// The passkey maps to the operator's principal: a revoked one cannot
	// sign in; an operator from before principals gets one now.
	if found.PrincipalSerial == "" {
		serial, err := c.issueOperatorPrincipal(ctx, found, nil, cred, "operator:"+found.ID)
		if err == nil {
			err = c.st.setPrincipal(ctx, found.ID, serial)
		}
		if err != nil {
			c.cfg.Log.Error("console: operator principal", "operator", found.ID, "err", err)
			writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "Your passkey could not be entered in the principals register. Try again shortly."})
			return
		}
	} else if ok, err := c.principalActive(ctx, found); err != nil || !ok {
		c.record(ctx, &Session{Operator: found}, "console.login", audit.OutcomeFailure, found.ID, map[string]any{"error": "principal " + found.PrincipalSerial + " revoked or unreadable"})
		writeJSON(w, http.StatusUnauthorized, ceremonyReply{Error: "Your access to the console has been revoked. Contact an administrator."})
		return
	}
	if err := c.st.updateCredential(ctx, found.ID, cred); err != nil {
		c.cfg.Log.Warn("console: update credential", "err", err)
	}
	if err := c.record(ctx, &Session{Operator: found}, "console.login", audit.OutcomeSuccess, found.ID, nil); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, ceremonyReply{Error: "The console cannot write its audit trail. Try again shortly."})
		return
	}
	c.startSession(w, r, found.ID)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *Session) {
	c.st.endSession(r.Context(), s.idHash)
	c.record(r.Context(), s, "console.logout", audit.OutcomeSuccess, s.Operator.ID, nil)
	c.clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// protocolMessage is a WebAuthn error in words (the library's detail, never
// a stack or internal code).
func protocolMessage(err error) string {
	if err == nil {
		return "unknown passkey"
	}
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Details != "" {
		return pe.Details
	}
	return err.Error()
}
