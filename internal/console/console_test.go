package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *fakeClock               { return &fakeClock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)} }

const origin = "https://console.test"

func newConsole(t *testing.T, clk *fakeClock) *Console {
	t.Helper()
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	led, err := ledger.Open(ctx, db, ledger.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	al, err := audit.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.RawKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA(ctx, db, "test", pki.Options{}, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(ctx, Config{DB: db, Ledger: led, Audit: al, CA: ca, Origin: origin, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signIn creates an operator of role r and a session for it, as a passkey
// sign-in would.
func signIn(t *testing.T, c *Console, name string, r Role) (cookie string, s *Session) {
	t.Helper()
	ctx := context.Background()
	tok, opID, _, err := c.st.createInvite(ctx, name, r, nil, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := c.st.invite(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cfg.DB.ExecContext(ctx, c.st.q(`INSERT INTO console_operators (id, name, role, handle, created_at) VALUES (?, ?, ?, ?, ?)`),
		opID, inv.Name, string(inv.Role), []byte(opID), int64(1)); err != nil {
		t.Fatal(err)
	}
	ck, err := c.st.createSession(ctx, opID)
	if err != nil {
		t.Fatal(err)
	}
	s, err = c.st.session(ctx, ck, time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ck, s
}

func request(c *Console, method, path, cookie, csrf string, form url.Values) *httptest.ResponseRecorder {
	if form == nil {
		form = url.Values{}
	}
	if csrf != "" {
		form.Set("csrf", csrf)
	}
	var body *strings.Reader
	if method == http.MethodGet {
		body = strings.NewReader("")
	} else {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, origin+path, body)
	// The live streams run until their client goes: this one goes soon.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r = r.WithContext(ctx)
	if method != http.MethodGet {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Origin", origin)
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	return w
}

// TestRoutePolicies walks every route with every role and with no session:
// a route whose role the caller lacks answers 403 (or sends an anonymous
// caller to sign in) and never runs its handler.
func TestRoutePolicies(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	sessions := map[Role][2]string{}
	for _, r := range []Role{RoleAdmin, RoleOperator, RoleAuditor} {
		ck, s := signIn(t, c, string(r)+" person", r)
		sessions[r] = [2]string{ck, s.CSRF}
	}
	for _, rt := range c.Routes() {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{$}", "", "{id}", "nobody", "{serial}", "1", "{token}", "x", "{file}", "x.png").Replace(path)
		if rt.Role == "" || rt.Pattern == "POST /console/logout" {
			continue // the sign-in pages are open by design; sign-out would end the sessions
		}
		if w := request(c, method, path, "", "", nil); w.Code != http.StatusUnauthorized && w.Code != http.StatusSeeOther {
			t.Errorf("%s without a session: %d", rt.Pattern, w.Code)
		}
		for role, sc := range sessions {
			w := request(c, method, path, sc[0], sc[1], nil)
			allowed := role.may(rt.Role)
			if !allowed && w.Code != http.StatusForbidden {
				t.Errorf("%s as %s: %d, want 403", rt.Pattern, role, w.Code)
			}
			if allowed && (w.Code == http.StatusForbidden || w.Code == http.StatusUnauthorized) {
				t.Errorf("%s as %s: %d, want it allowed", rt.Pattern, role, w.Code)
			}
		}
	}
	// Every refusal of a signed-in operator is in the audit trail.
	recs, err := c.cfg.Audit.Search(context.Background(), audit.Query{Event: "console.denied", Limit: 1000})
	if err != nil || len(recs) == 0 {
		t.Fatalf("refusals not audited: %d (%v)", len(recs), err)
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ck, s := signIn(t, c, "op", RoleOperator)
	form := url.Values{"id": {"acct1"}, "owner": {"A"}, "kind": {"user"}, "currency": {"CNY"}}
	if w := request(c, http.MethodPost, "/console/accounts", ck, "", form); w.Code != http.StatusForbidden {
		t.Fatalf("no CSRF token: %d", w.Code)
	}
	if w := request(c, http.MethodPost, "/console/accounts", ck, "wrong"+s.CSRF, form); w.Code != http.StatusForbidden {
		t.Fatalf("wrong CSRF token: %d", w.Code)
	}
	r := httptest.NewRequest(http.MethodPost, origin+"/console/accounts", strings.NewReader(url.Values{"csrf": {s.CSRF}, "id": {"acct1"}, "owner": {"A"}, "kind": {"user"}, "currency": {"CNY"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "https://evil.test")
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: ck})
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("cross-origin post: %d", w.Code)
	}
	if _, err := c.cfg.Ledger.Account(context.Background(), "acct1"); err == nil {
		t.Fatal("a refused form created the account")
	}
	if w := request(c, http.MethodPost, "/console/accounts", ck, s.CSRF, form); w.Code != http.StatusSeeOther {
		t.Fatalf("good form: %d %s", w.Code, w.Body)
	}
	if _, err := c.cfg.Ledger.Account(context.Background(), "acct1"); err != nil {
		t.Fatal(err)
	}
	// The console never opens an account that may go negative.
	form.Set("id", "acct2")
	form.Set("kind", "system")
	if w := request(c, http.MethodPost, "/console/accounts", ck, s.CSRF, form); w.Code != http.StatusBadRequest {
		t.Fatalf("system account: %d", w.Code)
	}
}

func TestSessionTimeouts(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ck, _ := signIn(t, c, "op", RoleAuditor)
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusOK {
		t.Fatalf("fresh session: %d", w.Code)
	}
	clk.Add(DefaultIdleTimeout - time.Minute)
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusOK {
		t.Fatalf("active session: %d", w.Code)
	}
	clk.Add(DefaultIdleTimeout + time.Second)
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("idle session: %d, want a redirect to sign in", w.Code)
	}
	// Kept busy, a session still ends at MaxSessionAge.
	ck, _ = signIn(t, c, "op2", RoleAuditor)
	for elapsed := time.Duration(0); elapsed < DefaultMaxSessionAge; elapsed += 10 * time.Minute {
		clk.Add(10 * time.Minute)
		request(c, http.MethodGet, "/console/", ck, "", nil)
	}
	clk.Add(time.Minute)
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("session past its maximum age: %d", w.Code)
	}
	// Sign-out ends the session at once.
	ck, s := signIn(t, c, "op3", RoleAuditor)
	if w := request(c, http.MethodPost, "/console/logout", ck, s.CSRF, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("sign out: %d", w.Code)
	}
	if w := request(c, http.MethodGet, "/console/", ck, "", nil); w.Code != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d", w.Code)
	}
}

func TestInvitations(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	if _, _, err := c.Invite(ctx, "", RoleAdmin, "test"); err == nil {
		t.Fatal("invitation without a name")
	}
	if _, err := ParseRole("root"); err == nil {
		t.Fatal("unknown role accepted")
	}
	link, _, err := c.Invite(ctx, "Bea", RoleOperator, "test")
	if err != nil {
		t.Fatal(err)
	}
	tok := link[strings.LastIndex(link, "/")+1:]
	if _, err := c.st.invite(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := c.st.invite(ctx, tok+"x"); err != ErrInviteInvalid {
		t.Fatalf("unknown token: %v", err)
	}
	clk.Add(DefaultInviteTTL + time.Second)
	if _, err := c.st.invite(ctx, tok); err != ErrInviteInvalid {
		t.Fatalf("expired invitation: %v", err)
	}
	if w := request(c, http.MethodGet, "/console/invite/"+tok, "", "", nil); w.Code != http.StatusGone {
		t.Fatalf("expired invitation page: %d", w.Code)
	}
	// Ceremonies refuse calls from another origin.
	r := httptest.NewRequest(http.MethodPost, origin+"/console/login/begin", strings.NewReader("{}"))
	r.Header.Set("Origin", "https://evil.test")
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("cross-origin sign-in: %d", w.Code)
	}
}

func TestFundNeedsConfirmation(t *testing.T) {
	clk := newClock()
	c := newConsole(t, clk)
	ctx := context.Background()
	ck, s := signIn(t, c, "op", RoleOperator)
	if _, err := c.cfg.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "yen", Owner: "Y", Kind: ledger.KindUser, Currency: "JPY"}); err != nil {
		t.Fatal(err)
	}
	w := request(c, http.MethodPost, "/console/accounts/yen/fund", ck, s.CSRF, url.Values{"amount": {"100"}})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "100 JPY") {
		t.Fatalf("confirmation page: %d %s", w.Code, w.Body)
	}
	if a, _ := c.cfg.Ledger.Account(ctx, "yen"); a.Balance != 0 {
		t.Fatal("funded before confirmation")
	}
	if w := request(c, http.MethodPost, "/console/accounts/yen/fund", ck, s.CSRF, url.Values{"amount": {"1.5"}}); w.Code != http.StatusBadRequest {
		t.Fatalf("decimals on a 0-decimal currency: %d", w.Code)
	}
	key := "console-fund-abcdefghijklmnopqrstuv"
	for range 2 { // a double click funds once
		if w := request(c, http.MethodPost, "/console/accounts/yen/fund/confirm", ck, s.CSRF, url.Values{"amount_minor": {"100"}, "key": {key}}); w.Code != http.StatusSeeOther {
			t.Fatalf("confirm: %d %s", w.Code, w.Body)
		}
	}
	if a, _ := c.cfg.Ledger.Account(ctx, "yen"); a.Balance != 100 {
		t.Fatalf("JPY balance %d, want 100 (¥100 typed)", a.Balance)
	}
	// A transfer between accounts: confirmation first; an overdraft changes nothing.
	if _, err := c.cfg.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "yen2", Owner: "Z", Kind: ledger.KindMerchant, Currency: "JPY"}); err != nil {
		t.Fatal(err)
	}
	w = request(c, http.MethodPost, "/console/accounts/yen/transfer", ck, s.CSRF, url.Values{"to": {"yen2"}, "amount": {"40"}})
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "40 JPY") {
		t.Fatalf("transfer confirmation: %d %s", w.Code, w.Body)
	}
	over := url.Values{"to": {"yen2"}, "amount_minor": {"101"}, "currency": {"JPY"}, "key": {"console-transfer-abcdefghijklmnopqrstuv"}}
	if w := request(c, http.MethodPost, "/console/accounts/yen/transfer/confirm", ck, s.CSRF, over); w.Code != http.StatusBadRequest {
		t.Fatalf("overdraft: %d", w.Code)
	}
	ok := url.Values{"to": {"yen2"}, "amount_minor": {"40"}, "currency": {"JPY"}, "key": {"console-transfer-bcdefghijklmnopqrstuvw"}}
	if w := request(c, http.MethodPost, "/console/accounts/yen/transfer/confirm", ck, s.CSRF, ok); w.Code != http.StatusSeeOther {
		t.Fatalf("transfer: %d %s", w.Code, w.Body)
	}
	a, _ := c.cfg.Ledger.Account(ctx, "yen")
	b, _ := c.cfg.Ledger.Account(ctx, "yen2")
	if a.Balance != 60 || b.Balance != 40 {
		t.Fatalf("balances %d / %d, want 60 / 40", a.Balance, b.Balance)
	}
}
