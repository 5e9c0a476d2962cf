package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
)

func (c *Console) routes() {
	c.mux = http.NewServeMux()
	open := func(pattern string, h http.HandlerFunc) {
		c.table = append(c.table, Route{Pattern: pattern})
		c.mux.HandleFunc(pattern, h)
	}
	guarded := func(pattern string, need Role, h func(http.ResponseWriter, *http.Request, *Session)) {
		c.table = append(c.table, Route{Pattern: pattern, Role: need})
		c.mux.HandleFunc(pattern, c.guard(need, h))
	}
	open("GET /console/static/", c.static)
	open("GET /console/login", c.loginPage)
	open("POST /console/login/begin", c.loginBegin)
	open("POST /console/login/finish", c.loginFinish)
	open("GET /console/invite/{token}", c.invitePage)
	open("POST /console/invite/{token}/begin", c.inviteBegin)
	open("POST /console/invite/{token}/finish", c.inviteFinish)

	guarded("POST /console/logout", RoleAuditor, c.logout)
	guarded("GET /console/{$}", RoleAuditor, c.dashboard)
	guarded("GET /console/accounts", RoleAuditor, c.accounts)
	guarded("POST /console/accounts", RoleOperator, c.createAccount)
	guarded("GET /console/accounts/{id}", RoleAuditor, c.account)
	guarded("POST /console/accounts/{id}/fund", RoleOperator, c.fundConfirm)
	guarded("POST /console/accounts/{id}/fund/confirm", RoleOperator, c.fund)
	guarded("POST /console/accounts/{id}/transfer", RoleOperator, c.transferConfirm)
	guarded("POST /console/accounts/{id}/transfer/confirm", RoleOperator, c.transfer)
	guarded("GET /console/transfers", RoleAuditor, c.transfers)
	guarded("GET /console/transfers/stream", RoleAuditor, c.transferStream)
	guarded("GET /console/devices", RoleAuditor, c.devices)
	guarded("POST /console/devices/{serial}/revoke", RoleAdmin, c.revoke)
	guarded("POST /console/storage/{serial}", RoleOperator, c.storageAction)
	guarded("GET /console/certs", RoleAdmin, c.certsPage)
	guarded("POST /console/certs", RoleAdmin, c.issueCert)
	guarded("GET /console/certs/{file}", RoleAuditor, c.certFile)
	guarded("GET /console/qkd", RoleAuditor, c.qkd)
	guarded("GET /console/qkd/stream", RoleAuditor, c.qkdStream)
	guarded("GET /console/schemes/stream", RoleAuditor, c.schemesStream)
	guarded("GET /console/audit", RoleAuditor, c.auditView)
	guarded("POST /console/audit/verify", RoleAuditor, c.auditVerify)
	guarded("GET /console/audit/record", RoleAuditor, c.auditRecordQuery)
	guarded("GET /console/audit/records/{seq}", RoleAuditor, c.auditRecord)
	guarded("GET /console/audit/proofs/{file}", RoleAuditor, c.auditProofFile)
	guarded("GET /console/audit/checkpoints", RoleAuditor, c.auditHistory)
	guarded("GET /console/operators", RoleAdmin, c.operators)
	guarded("POST /console/operators/invite", RoleAdmin, c.inviteOperator)
	guarded("POST /console/operators/{id}/disable", RoleAdmin, c.disableOperator)
	guarded("GET /console/experiments", RoleAuditor, c.experiments)
	guarded("GET /console/experiments/{file}", RoleAuditor, c.experimentFile)
	c.mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, c.sessionOf(r), http.StatusNotFound, "There is no such page in the console.")
	})
}

func (c *Console) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/console/")
	b, err := staticFS.ReadFile(name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	switch filepath.Ext(name) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(b)
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if s := c.sessionOf(r); s != nil {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", page{Title: "Sign in", NoChrome: true, Data: r.URL.Query().Get("next")})
}

func (c *Console) invitePage(w http.ResponseWriter, r *http.Request) {
	inv, err := c.st.invite(r.Context(), r.PathValue("token"))
	if err != nil {
		c.render(w, r, http.StatusGone, "error", page{Title: "Invitation", NoChrome: true,
			Error: "This invitation is unknown, already used or expired. Ask an administrator for a new one."})
		return
	}
	c.render(w, r, http.StatusOK, "invite", page{Title: "Create your passkey", NoChrome: true, Data: inv})
}

// dashboard: volume and refusals per scheme today, alarms.
type dashData struct {
	Since    time.Time
	Schemes  []schemeRow
	Alarms   []string
	Accounts int
	Head     int64
}

type schemeRow struct {
	Scheme            string
	Payments, Refused int64
}

// schemeEvents are the audit events that record each scheme's money (or key)
// movements: a success is a payment, anything else a refusal. An entry
// ending in "." matches every event below it.
var schemeEvents = []struct {
	scheme string
	events []string
}{
	{"QMSP (000)", []string{"qmsp.pay"}},
	{"Key charging (001)", []string{"keycharge.charge.commit", "keycharge.charge.abort"}},
	{"Self-verified (002)", []string{"selfverify.withdraw", "selfverify.deposit", "selfverify.settle", "selfverify.refund"}},
	{"Watermark (003)", []string{"watermark.pay"}},
	{"Biometric QR (004)", []string{"bioqr.settle"}},
	{"Ledger API", []string{"ledger."}},
}

func matchesEvent(event string, list []string) bool {
	for _, e := range list {
		if event == e || (strings.HasSuffix(e, ".") && strings.HasPrefix(event, e)) {
			return true
		}
	}
	return false
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	now := c.cfg.Now().UTC()
	since := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	d := dashData{Since: since}
	counts, err := c.cfg.Audit.Stats(ctx, audit.Query{From: since}, audit.ByEvent, audit.ByOutcome)
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The audit trail cannot be read right now; try again shortly.")
		return
	}
	for _, se := range schemeEvents {
		row := schemeRow{Scheme: se.scheme}
		for _, k := range counts {
			if len(k.Keys) != 2 || !matchesEvent(k.Keys[0], se.events) {
				continue
			}
			if k.Keys[1] == audit.OutcomeSuccess {
				row.Payments += k.N
			} else {
				row.Refused += k.N
			}
		}
		d.Schemes = append(d.Schemes, row)
	}
	if c.cfg.KME != nil && c.cfg.Link != nil {
		if ls := c.cfg.KME.A.Link(); ls.State != kme.LinkUp {
			msg := "QKD link " + ls.State
			if ls.Error != "" {
				msg += ": " + ls.Error
			}
			d.Alarms = append(d.Alarms, msg)
		}
	}
	if rep, err := c.cfg.Audit.Head(ctx); err == nil {
		d.Head = rep.Seq
	}
	d.Alarms = append(d.Alarms, c.auditAlarms(ctx)...)
	c.render(w, r, http.StatusOK, "dashboard", page{Title: "Dashboard", Nav: "dashboard", S: s, Data: d})
}

type accountsData struct {
	Q        string
	Accounts []ledger.Account
	Next     string
}

func (c *Console) accounts(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	after := r.URL.Query().Get("after")
	d := accountsData{Q: q}
	// Accounts are listed in ID order; a search lists the IDs starting with q.
	start := after
	if q != "" && after == "" {
		if a, err := c.cfg.Ledger.Account(ctx, q); err == nil {
			d.Accounts = append(d.Accounts, a)
		}
		start = q
	}
	const pageSize = 25
	list, err := c.cfg.Ledger.Accounts(ctx, start, pageSize+1)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The account list could not be read: "+err.Error())
		return
	}
	for _, a := range list {
		if q != "" && !strings.HasPrefix(a.ID, q) {
			break
		}
		if len(d.Accounts) == pageSize {
			d.Next = d.Accounts[len(d.Accounts)-1].ID
			break
		}
		d.Accounts = append(d.Accounts, a)
	}
	c.render(w, r, http.StatusOK, "accounts", page{Title: "Accounts", Nav: "accounts", S: s, Data: d})
}

func (c *Console) createAccount(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	na := ledger.NewAccount{
		ID: strings.TrimSpace(r.PostFormValue("id")), Owner: strings.TrimSpace(r.PostFormValue("owner")),
		Kind: ledger.Kind(r.PostFormValue("kind")), Currency: strings.ToUpper(strings.TrimSpace(r.PostFormValue("currency"))),
	}
	// The console opens customer and merchant accounts only: accounts that may
	// go negative (issuers) are created by the platform's configuration.
	if na.Kind != ledger.KindUser && na.Kind != ledger.KindMerchant {
		c.fail(w, r, s, http.StatusBadRequest, "Choose the account kind: user or merchant.")
		return
	}
	a, err := c.cfg.Ledger.CreateAccount(ctx, na)
	outcome := audit.OutcomeSuccess
	if err != nil {
		outcome = audit.OutcomeFailure
	}
	if aerr := c.record(ctx, s, "console.account.create", outcome, na.ID, map[string]any{"owner": na.Owner, "kind": string(na.Kind), "currency": na.Currency}); aerr != nil && err == nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The account was created but the audit trail could not record it; check the audit trail.")
		return
	}
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The account was not created: "+ledgerMessage(err))
		return
	}
	http.Redirect(w, r, "/console/accounts/"+a.ID+"?flash=created", http.StatusSeeOther)
}

type accountData struct {
	Account ledger.Account
	History []ledger.Transfer
	Next    string
}

func (c *Console) account(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	a, err := c.cfg.Ledger.Account(ctx, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, s, http.StatusNotFound, "No such account: "+ledgerMessage(err))
		return
	}
	hist, next, err := c.cfg.Ledger.History(ctx, a.ID, r.URL.Query().Get("cursor"), 25)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The history could not be read: "+ledgerMessage(err))
		return
	}
	flash := ""
	switch r.URL.Query().Get("flash") {
	case "created":
		flash = "Account created."
	case "funded":
		flash = "Funds added."
	case "moved":
		flash = "Transfer made."
	}
	c.render(w, r, http.StatusOK, "account", page{Title: "Account " + a.ID, Nav: "accounts", S: s, Flash: flash,
		Data: accountData{Account: a, History: hist, Next: next}})
}

type fundData struct {
	Account ledger.Account
	Amount  int64
	Issuer  string
	Key     string
}

// fundConfirm shows what a funding would do, for a second, deliberate click.
func (c *Console) fundConfirm(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	a, err := c.cfg.Ledger.Account(ctx, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, s, http.StatusNotFound, "No such account: "+ledgerMessage(err))
		return
	}
	amt, err := parseMoney(r.PostFormValue("amount"), a.Currency)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	key, _ := randomToken()
	c.render(w, r, http.StatusOK, "fund", page{Title: "Confirm funding", Nav: "accounts", S: s,
		Data: fundData{Account: a, Amount: amt, Issuer: issuerAccount(a.Currency), Key: "console-fund-" + key[:22]}})
}

func issuerAccount(currency string) string { return "issuer." + currency }

func (c *Console) fund(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	a, err := c.cfg.Ledger.Account(ctx, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, s, http.StatusNotFound, "No such account: "+ledgerMessage(err))
		return
	}
	amt, err := strconv.ParseInt(r.PostFormValue("amount_minor"), 10, 64)
	key := r.PostFormValue("key")
	if err != nil || amt <= 0 || !strings.HasPrefix(key, "console-fund-") || len(key) > 64 {
		c.fail(w, r, s, http.StatusBadRequest, "The confirmation form was altered; start again.")
		return
	}
	iss := issuerAccount(a.Currency)
	if _, err := c.cfg.Ledger.EnsureAccount(ctx, ledger.NewAccount{ID: iss, Owner: "qshield issuer", Kind: ledger.KindSystem, Currency: a.Currency, AllowNegative: true}); err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The issuing account could not be opened: "+ledgerMessage(err))
		return
	}
	tr, err := c.cfg.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: key, From: iss, To: a.ID, Amount: amt, Currency: a.Currency,
		Memo: "funded by operator " + s.Operator.ID})
	outcome := audit.OutcomeSuccess
	details := map[string]any{"amount": amt, "currency": a.Currency, "from": iss}
	if err != nil {
		outcome = audit.OutcomeFailure
		details["error"] = ledgerMessage(err)
	} else {
		details["transfer"] = tr.ID
	}
	if aerr := c.record(ctx, s, "console.account.fund", outcome, a.ID, details); aerr != nil && err == nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The funds were added but the audit trail could not record the action; check the audit trail.")
		return
	}
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The account was not funded: "+ledgerMessage(err))
		return
	}
	http.Redirect(w, r, "/console/accounts/"+a.ID+"?flash=funded", http.StatusSeeOther)
}

type transferData struct {
	From, To ledger.Account
	Amount   int64
	Memo     string
	Key      string
}

// transferConfirm shows a transfer between two accounts for confirmation.
func (c *Console) transferConfirm(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	from, err := c.cfg.Ledger.Account(ctx, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, s, http.StatusNotFound, "No such account: "+ledgerMessage(err))
		return
	}
	to, err := c.cfg.Ledger.Account(ctx, strings.TrimSpace(r.PostFormValue("to")))
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The receiving account: "+ledgerMessage(err))
		return
	}
	if to.Currency != from.Currency {
		c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("%s holds %s and %s holds %s: a transfer stays in one currency.", from.ID, from.Currency, to.ID, to.Currency))
		return
	}
	amt, err := parseMoney(r.PostFormValue("amount"), from.Currency)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	memo := strings.TrimSpace(r.PostFormValue("memo"))
	if len(memo) > 200 {
		c.fail(w, r, s, http.StatusBadRequest, "The note is longer than 200 characters.")
		return
	}
	key, _ := randomToken()
	c.render(w, r, http.StatusOK, "transfer", page{Title: "Confirm transfer", Nav: "accounts", S: s,
		Data: transferData{From: from, To: to, Amount: amt, Memo: memo, Key: "console-transfer-" + key[:22]}})
}

func (c *Console) transfer(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	from := r.PathValue("id")
	to := r.PostFormValue("to")
	amt, err := strconv.ParseInt(r.PostFormValue("amount_minor"), 10, 64)
	key := r.PostFormValue("key")
	cur := r.PostFormValue("currency")
	if err != nil || amt <= 0 || !strings.HasPrefix(key, "console-transfer-") || len(key) > 64 {
		c.fail(w, r, s, http.StatusBadRequest, "The confirmation form was altered; start again.")
		return
	}
	memo := r.PostFormValue("memo")
	if memo == "" {
		memo = "by operator " + s.Operator.ID
	}
	tr, err := c.cfg.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: key, From: from, To: to, Amount: amt, Currency: cur, Memo: memo})
	outcome := audit.OutcomeSuccess
	details := map[string]any{"to": to, "amount": amt, "currency": cur}
	if err != nil {
		outcome = audit.OutcomeFailure
		details["error"] = ledgerMessage(err)
	} else {
		details["transfer"] = tr.ID
	}
	if aerr := c.record(ctx, s, "console.transfer", outcome, from, details); aerr != nil && err == nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The transfer was made but the audit trail could not record the action; check the audit trail.")
		return
	}
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The transfer was not made: "+ledgerMessage(err))
		return
	}
	http.Redirect(w, r, "/console/accounts/"+from+"?flash=moved", http.StatusSeeOther)
}

func (c *Console) transfers(w http.ResponseWriter, r *http.Request, s *Session) {
	feed, err := c.cfg.Ledger.Since(r.Context(), 0, 50)
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The transfers cannot be read right now; try again shortly.")
		return
	}
	// newest first on the page
	for i, j := 0, len(feed)-1; i < j; i, j = i+1, j-1 {
		feed[i], feed[j] = feed[j], feed[i]
	}
	c.render(w, r, http.StatusOK, "transfers", page{Title: "Transfers", Nav: "transfers", S: s, Data: feed})
}

// feedRow is a transfer as the live feed sends it (already formatted).
type feedRow struct {
	Seq    int64  `json:"seq"`
	ID     string `json:"id"`
	Time   string `json:"time"`
	From   string `json:"from"`
	To     string `json:"to"`
	Amount string `json:"amount"`
	State  string `json:"state"`
	Memo   string `json:"memo"`
}

func (c *Console) transferStream(w http.ResponseWriter, r *http.Request, s *Session) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if after < 0 {
		after = 0
	}
	c.stream(w, r, time.Second, func(send func(event string, v any) error) error {
		feed, err := c.cfg.Ledger.Since(r.Context(), after, 100)
		if err != nil {
			return err
		}
		if after == 0 && len(feed) == 0 {
			return nil
		}
		for _, e := range feed {
			if err := send("transfer", feedRow{Seq: e.Seq, ID: e.ID, Time: e.CreatedAt.UTC().Format("15:04:05"), From: e.From, To: e.To,
				Amount: formatMoney(e.Amount, e.Currency), State: string(e.State), Memo: e.Memo}); err != nil {
				return err
			}
			after = e.Seq
		}
		return nil
	})
}

// stream serves server-sent events: poll runs every period and sends what is
// new; the stream ends when the client goes or the session expires.
func (c *Console) stream(w http.ResponseWriter, r *http.Request, period time.Duration, poll func(send func(string, any) error) error) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		fl.Flush()
		return nil
	}
	fmt.Fprint(w, "retry: 3000\n\n")
	fl.Flush()
	t := time.NewTicker(period)
	defer t.Stop()
	idleCheck := time.NewTicker(time.Minute)
	defer idleCheck.Stop()
	for {
		if err := poll(send); err != nil {
			c.cfg.Log.Debug("console: stream", "path", r.URL.Path, "err", err)
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-idleCheck.C:
			if c.sessionOf(r) == nil {
				send("end", "session ended")
				return
			}
		case <-t.C:
		}
	}
}

type devicesData struct {
	Kind       string
	Kinds      []string
	Principals []*pki.Principal
	Storage    []*keycharge.Device
	StorageErr string
	Actions    []keycharge.Action
}

// storageActions are the key storage device transitions the console offers
// (initialise, distribute and bind need the device or its user present).
var storageActions = []keycharge.Action{keycharge.ActActivate, keycharge.ActFreeze, keycharge.ActUnfreeze, keycharge.ActReportLost, keycharge.ActCancel}

func (c *Console) devices(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	kind := r.URL.Query().Get("kind")
	d := devicesData{Kind: kind, Actions: storageActions}
	for _, k := range pki.PrincipalKinds() {
		if k != "" {
			d.Kinds = append(d.Kinds, string(k))
		}
	}
	ps, err := c.cfg.CA.Principals(ctx, pki.PrincipalFilter{Kind: pki.PrincipalKind(kind), Limit: 5000})
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The principals register cannot be read right now.")
		return
	}
	d.Principals = ps
	if c.cfg.KeyCharge != nil {
		devs, err := c.cfg.KeyCharge.Devices(ctx, s.principal(), 1000)
		if err != nil {
			d.StorageErr = "The key storage devices cannot be read right now."
		}
		d.Storage = devs
	}
	flash := ""
	switch r.URL.Query().Get("flash") {
	case "revoked":
		flash = "Certificate revoked: the device is refused from its next request."
	case "device":
		flash = "Key storage device updated."
	}
	c.render(w, r, http.StatusOK, "devices", page{Title: "Devices and certificates", Nav: "devices", S: s, Data: d, Flash: flash})
}

// principal is the signed-in operator as the schemes' authorization sees it:
// an admin is an admin, anyone else an operator (the console's own role
// check has already run).
func (s *Session) principal() keycharge.Principal {
	kind := pki.PrincipalOperator
	if s.Operator.Role == RoleAdmin {
		kind = pki.PrincipalAdmin
	}
	return keycharge.Principal{Name: "operator:" + s.Operator.ID, Kind: kind}
}

func (c *Console) storageAction(w http.ResponseWriter, r *http.Request, s *Session) {
	if c.cfg.KeyCharge == nil {
		c.fail(w, r, s, http.StatusNotFound, "Key charging does not run on this platform.")
		return
	}
	action := keycharge.Action(r.PostFormValue("action"))
	if !slices.Contains(storageActions, action) {
		c.fail(w, r, s, http.StatusBadRequest, "Choose an action: activate, freeze, unfreeze, report lost or cancel.")
		return
	}
	serial := r.PathValue("serial")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" {
		reason = "by operator " + s.Operator.ID + " in the console"
	}
	// The QKMP records the transition and its audit record in one transaction.
	_, err := c.cfg.KeyCharge.Transition(r.Context(), s.principal(), serial, keycharge.TransitionRequest{Action: action, Reason: reason})
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("The device was not changed (%s): %s", action, storageMessage(err)))
		return
	}
	http.Redirect(w, r, "/console/devices?flash=device", http.StatusSeeOther)
}

func storageMessage(err error) string {
	switch {
	case errors.Is(err, keycharge.ErrTransition):
		return "that action is not possible in the device's current state"
	case errors.Is(err, keycharge.ErrForbidden):
		return "your role may not change devices"
	}
	return err.Error()
}

func (c *Console) revoke(w http.ResponseWriter, r *http.Request, s *Session) {
	ctx := r.Context()
	serial, ok := new(big.Int).SetString(r.PathValue("serial"), 16)
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if !ok || serial.Sign() <= 0 {
		c.fail(w, r, s, http.StatusBadRequest, "That is not a certificate serial number.")
		return
	}
	if reason == "" {
		reason = "revoked by operator " + s.Operator.ID
	}
	var err error
	if c.cfg.Revoke != nil {
		err = c.cfg.Revoke(ctx, serial.Text(16), reason)
	} else {
		err = c.cfg.CA.Revoke(ctx, serial, reason)
	}
	outcome := audit.OutcomeSuccess
	details := map[string]any{"reason": reason}
	if err != nil {
		outcome = audit.OutcomeFailure
		details["error"] = err.Error()
	}
	c.record(ctx, s, "console.cert.revoke", outcome, serial.Text(16), details)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The certificate was not revoked: "+err.Error())
		return
	}
	http.Redirect(w, r, "/console/devices?flash=revoked", http.StatusSeeOther)
}

func (c *Console) qkd(w http.ResponseWriter, r *http.Request, s *Session) {
	var samples []LinkSample
	if c.cfg.Link != nil {
		samples = c.cfg.Link.Samples()
	}
	if err := c.pollSeries(r.Context()); err != nil {
		c.cfg.Log.Warn("console: scheme series", "err", err)
	}
	c.render(w, r, http.StatusOK, "qkd", page{Title: "Live charts", Nav: "qkd", S: s, Data: struct {
		On      bool
		Samples []LinkSample
		Series  seriesJSON
	}{c.cfg.Link != nil, samples, c.seriesSnapshot()}})
}

func (c *Console) schemesStream(w http.ResponseWriter, r *http.Request, s *Session) {
	c.stream(w, r, 2*time.Second, func(send func(string, any) error) error {
		if err := c.pollSeries(r.Context()); err != nil {
			return err
		}
		return send("series", c.seriesSnapshot())
	})
}

func (c *Console) qkdStream(w http.ResponseWriter, r *http.Request, s *Session) {
	if c.cfg.Link == nil {
		http.Error(w, "the QKD link is not running on this node", http.StatusNotFound)
		return
	}
	ch, done := c.cfg.Link.subscribe()
	defer done()
	sent := false
	c.stream(w, r, 500*time.Millisecond, func(send func(string, any) error) error {
		if !sent {
			sent = true
			return send("samples", c.cfg.Link.Samples())
		}
		for {
			select {
			case smp := <-ch:
				if err := send("sample", smp); err != nil {
					return err
				}
			default:
				return nil
			}
		}
	})
}

type auditData struct {
	Q          audit.Query
	Since      string
	Records    []audit.Record
	Report     *audit.Report
	Reconcile  *ledger.ReconcileReport
	Checkpoint string // the latest signed checkpoint (signed-note text)
	Err        string
}

func (c *Console) auditView(w http.ResponseWriter, r *http.Request, s *Session) {
	q := r.URL.Query()
	aq := audit.Query{Actor: q.Get("actor"), Event: q.Get("event"), Resource: q.Get("resource"), Limit: 100}
	d := auditData{Q: aq, Since: q.Get("since")}
	if cp, err := c.cfg.Audit.LatestCheckpoint(r.Context()); err == nil && cp != nil {
		d.Checkpoint = string(cp)
	}
	if d.Since != "" {
		t, err := audit.ParseTime(d.Since, c.cfg.Now())
		if err != nil {
			d.Err = "The date was not understood: use 2026-12-06, 2026-12-06T10:00:00Z or 24h."
		}
		aq.From = t
	}
	if d.Err == "" {
		recs, err := c.cfg.Audit.Search(r.Context(), aq)
		if err != nil {
			d.Err = "The search failed: " + err.Error()
		}
		d.Records = recs
	}
	c.render(w, r, http.StatusOK, "audit", page{Title: "Audit trail", Nav: "audit", S: s, Data: d})
}

func (c *Console) auditVerify(w http.ResponseWriter, r *http.Request, s *Session) {
	// As `qshield audit verify`: the chain and tree, then the ledger and the
	// trail reconciled (every transfer audited exactly once).
	rep, err := c.cfg.Audit.Verify(r.Context())
	d := auditData{Report: &rep}
	outcome := audit.OutcomeSuccess
	if err != nil {
		d.Err = "Verification could not run: " + err.Error()
		outcome = audit.OutcomeFailure
	} else if !rep.OK {
		outcome = audit.OutcomeFailure
	}
	if err == nil {
		rec, rerr := c.cfg.Ledger.Reconcile(r.Context(), c.cfg.Audit)
		if rerr != nil {
			d.Err = "Reconciliation could not run: " + rerr.Error()
			outcome = audit.OutcomeFailure
		} else {
			d.Reconcile = &rec
			if !rec.OK {
				outcome = audit.OutcomeFailure
			}
		}
	}
	if cp, err := c.cfg.Audit.LatestCheckpoint(r.Context()); err == nil && cp != nil {
		d.Checkpoint = string(cp)
	}
	c.record(r.Context(), s, "console.audit.verify", outcome, "audit", map[string]any{"records": rep.Records})
	c.render(w, r, http.StatusOK, "audit", page{Title: "Audit trail", Nav: "audit", S: s, Data: d})
}

type operatorsData struct {
	Operators []operatorRow
	Link      string
	Expires   time.Time
}

// operatorRow is an operator with its principal in the CA's register.
type operatorRow struct {
	Operator
	Principal *pki.Principal
}

func (c *Console) operatorRows(ctx context.Context) ([]operatorRow, error) {
	ops, err := c.st.operators(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]operatorRow, 0, len(ops))
	for _, o := range ops {
		row := operatorRow{Operator: o}
		if o.PrincipalSerial != "" {
			row.Principal, _ = c.cfg.CA.PrincipalBySerial(ctx, o.PrincipalSerial)
		}
		out = append(out, row)
	}
	return out, nil
}

func (c *Console) operators(w http.ResponseWriter, r *http.Request, s *Session) {
	ops, err := c.operatorRows(r.Context())
	if err != nil {
		c.fail(w, r, s, http.StatusServiceUnavailable, "The operators cannot be read right now.")
		return
	}
	c.render(w, r, http.StatusOK, "operators", page{Title: "Operators", Nav: "operators", S: s, Data: operatorsData{Operators: ops}})
}

func (c *Console) inviteOperator(w http.ResponseWriter, r *http.Request, s *Session) {
	role, err := ParseRole(r.PostFormValue("role"))
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "Choose a role: admin, operator or auditor.")
		return
	}
	scope := strings.Fields(strings.ReplaceAll(r.PostFormValue("scope"), ",", " "))
	link, exp, err := c.InviteScoped(r.Context(), strings.TrimSpace(r.PostFormValue("name")), role, scope, "operator:"+s.Operator.ID)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "No invitation was made: "+err.Error())
		return
	}
	ops, _ := c.operatorRows(r.Context())
	c.render(w, r, http.StatusOK, "operators", page{Title: "Operators", Nav: "operators", S: s, Data: operatorsData{Operators: ops, Link: link, Expires: exp},
		Flash: "Invitation created. Send the link to the person privately; it works once."})
}

func (c *Console) disableOperator(w http.ResponseWriter, r *http.Request, s *Session) {
	id := r.PathValue("id")
	if id == s.Operator.ID {
		c.fail(w, r, s, http.StatusBadRequest, "You cannot disable yourself.")
		return
	}
	err := c.st.setDisabled(r.Context(), id, true)
	if err == nil {
		// Its principal is revoked too: the register says it is gone.
		if op, oerr := c.st.operatorBy(r.Context(), "id", id); oerr == nil {
			err = c.revokeOperatorPrincipal(r.Context(), op, "console operator disabled by "+s.Operator.ID)
		}
	}
	outcome := audit.OutcomeSuccess
	if err != nil {
		outcome = audit.OutcomeFailure
	}
	c.record(r.Context(), s, "console.operator.disable", outcome, id, nil)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, "The operator was not disabled: "+err.Error())
		return
	}
	http.Redirect(w, r, "/console/operators", http.StatusSeeOther)
}

type experimentRow struct {
	Name    string
	Summary string
	Plots   []string
	Updated time.Time
}

func (c *Console) experiments(w http.ResponseWriter, r *http.Request, s *Session) {
	var rows []experimentRow
	if c.cfg.ResultsDir != "" {
		mds, _ := filepath.Glob(filepath.Join(c.cfg.ResultsDir, "*.md"))
		for _, md := range mds {
			name := strings.TrimSuffix(filepath.Base(md), ".md")
			b, err := os.ReadFile(md)
			if err != nil {
				continue
			}
			st, _ := os.Stat(md)
			row := experimentRow{Name: name, Summary: firstParagraph(string(b)), Updated: st.ModTime()}
			pngs, _ := filepath.Glob(filepath.Join(c.cfg.ResultsDir, name+"*.png"))
			for _, p := range pngs {
				row.Plots = append(row.Plots, filepath.Base(p))
			}
			rows = append(rows, row)
		}
	}
	c.render(w, r, http.StatusOK, "experiments", page{Title: "Experiments", Nav: "experiments", S: s, Data: struct {
		Dir  string
		Rows []experimentRow
	}{c.cfg.ResultsDir, rows}})
}

func (c *Console) experimentFile(w http.ResponseWriter, r *http.Request, s *Session) {
	name := r.PathValue("file")
	if c.cfg.ResultsDir == "" || name != filepath.Base(name) || !strings.HasSuffix(name, ".png") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFile(w, r, filepath.Join(c.cfg.ResultsDir, name))
}

func firstParagraph(md string) string {
	for _, para := range strings.Split(md, "\n\n") {
		p := strings.TrimSpace(para)
		if p == "" || strings.HasPrefix(p, "#") || strings.HasPrefix(p, "|") {
			continue
		}
		if len(p) > 400 {
			p = p[:400] + "…"
		}
		return p
	}
	return ""
}

// ledgerMessage is a ledger error in words for an operator.
func ledgerMessage(err error) string {
	switch {
	case errors.Is(err, ledger.ErrAccountExists):
		return "an account with this ID already exists"
	case errors.Is(err, ledger.ErrAccountNotFound):
		return "no such account"
	case errors.Is(err, ledger.ErrInvalidAccount):
		return "the account ID or its fields are not valid (IDs: letters, digits, '.', '-', '_')"
	case errors.Is(err, ledger.ErrInvalidAmount):
		return "the amount is not valid"
	case errors.Is(err, ledger.ErrInsufficientFunds):
		return "the account does not have enough available funds"
	case errors.Is(err, ledger.ErrCurrencyMismatch):
		return "the two accounts hold different currencies"
	}
	return err.Error()
}
