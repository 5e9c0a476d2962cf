package browsertest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/internal/console"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/keycharge"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/watermark/service"
)

// startPlatform runs a platform on a free loopback port with the console's
// origin set to it, and returns it with its base URL; it stops when the test
// ends (runPlatform also returns a stop function).
func startPlatform(t *testing.T) (*platform.Platform, string) {
	t.Helper()
	p, base, _ := runPlatform(t)
	return p, base
}

// passkeyTab opens a tab with a virtual platform authenticator (resident
// keys, user verification) and returns it with the authenticator's ID.
func passkeyTab(t *testing.T, bctx context.Context) (context.Context, cdpwebauthn.AuthenticatorID) {
	t.Helper()
	return passkeyTabFor(t, bctx, 90*time.Second)
}

// passkeyTabFor is passkeyTab whose actions, all together, may take d.
func passkeyTabFor(t *testing.T, bctx context.Context, d time.Duration) (context.Context, cdpwebauthn.AuthenticatorID) {
	t.Helper()
	ctx := browsertest.NewTab(t, bctx, d)
	if _, err := chromedp.Call(ctx, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	res, err := chromedp.Call(ctx, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{
		Options: &cdpwebauthn.VirtualAuthenticatorOptions{Protocol: cdpwebauthn.AuthenticatorProtocolCtap2, Transport: cdpwebauthn.AuthenticatorTransportInternal,
			HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}})
	if err != nil {
		t.Fatalf("add virtual authenticator: %v", err)
	}
	return ctx, res.AuthenticatorID
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// clickAndLoad clicks sel and waits for the page load it causes.
func clickAndLoad(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitPath waits until the tab's location path is path.
func waitPath(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	for {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string]("location.pathname"))
		if err == nil && got == path {
			return
		}
		select {
		case <-ctx.Done():
			st, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string]("((document.getElementById('status')||{}).textContent||'') + ' | ' + document.body.innerText.slice(0, 300)"))
			t.Fatalf("waiting for %s: at %q (%v); page status %q", path, got, err, st)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// register opens an invitation link and creates a passkey.
func register(t *testing.T, ctx context.Context, link string) {
	t.Helper()
	do(t, ctx, "open invitation", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#register")))
	do(t, ctx, "create passkey", chromedp.Click(chromedp.CSS("#register")))
	waitPath(t, ctx, "/console/")
}

// screenshot saves the tab at 1280×800 and 390×844 under
// $QSHIELD_SCREENSHOTS (when set) and checks that phones 360, 390 and 430
// px wide get no horizontal scroll.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	for _, vp := range []struct {
		w, h   int64
		suffix string
		mobile bool
	}{{1280, 800, "desktop", false}, {360, 740, "", true}, {430, 932, "", true}, {390, 844, "phone", true}} {
		opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
		if vp.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		do(t, ctx, "viewport", chromedp.EmulateViewport(vp.w, vp.h, opts...), chromedp.Sleep(200*time.Millisecond))
		// Against the emulated width, not window.innerWidth: a mobile layout
		// viewport grows to fit content that is too wide.
		if vp.mobile {
			wide := eval[string](t, ctx, fmt.Sprintf(`(() => { const w = %d; if (document.documentElement.scrollWidth <= w) return "";
				const out = []; for (const el of document.querySelectorAll("body *")) { const r = el.getBoundingClientRect();
				if (r.right > w + 1 && el.parentElement.getBoundingClientRect().right <= w + 1) out.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className ? "." + el.className : "") + " " + Math.round(r.right)); }
				return document.documentElement.scrollWidth + " px: " + out.slice(0, 8).join(", "); })()`, vp.w))
			if wide != "" {
				t.Errorf("%s scrolls sideways at %d px (%s)", name, vp.w, wide)
			}
		}
		if dir := os.Getenv("QSHIELD_SCREENSHOTS"); dir != "" && vp.suffix != "" {
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name+"-"+vp.suffix+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	do(t, ctx, "reset viewport", chromedp.EmulateReset())
}

func TestConsole(t *testing.T) {
	p, base := startPlatform(t)
	caPEM := pki.EncodeCertPEM(p.CA.Certificate())
	bctx := browsertest.Browser(t, caPEM)
	ctx := context.Background()

	// An admin, invited through the platform's API, registers a passkey.
	link, _, err := p.Console.Invite(ctx, "Ada Admin", console.RoleAdmin, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, base+"/console/invite/") {
		t.Fatalf("invitation link %q", link)
	}
	admin, authID := passkeyTab(t, bctx)
	register(t, admin, link)
	if got := text(t, admin, "h1"); got != "Dashboard" {
		t.Fatalf("after registration: %q", got)
	}
	creds, err := chromedp.Call(admin, cdpwebauthn.GetCredentials, cdpwebauthn.GetCredentialsParams{AuthenticatorID: authID})
	if err != nil || len(creds.Credentials) != 1 || !creds.Credentials[0].IsResidentCredential {
		t.Fatalf("virtual authenticator holds %+v (%v), want one resident credential", creds, err)
	}
	screenshot(t, admin, "console-dashboard")

	// The invitation is single use.
	other, _ := passkeyTab(t, bctx)
	do(t, other, "reuse invitation", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS(".error")))

	// Open an account and fund it, with the confirmation step.
	do(t, admin, "accounts", chromedp.Navigate(base+"/console/accounts"), chromedp.WaitVisible(chromedp.CSS("summary")))
	do(t, admin, "open form", chromedp.Click(chromedp.CSS("summary")),
		chromedp.SetValue(chromedp.CSS("#id"), "alice"), chromedp.SetValue(chromedp.CSS("#owner"), "Alice Example"))
	clickAndLoad(t, admin, "details form button[type=submit]")
	waitPath(t, admin, "/console/accounts/alice")
	do(t, admin, "amount", chromedp.SetValue(chromedp.CSS("#amount"), "12.34"))
	clickAndLoad(t, admin, "form[action$='/fund'] button")
	if got := text(t, admin, "#confirm"); !strings.Contains(got, "12.34 CNY") {
		t.Fatalf("confirmation button says %q", got)
	}
	if a, _ := p.Ledger.Account(ctx, "alice"); a.Balance != 0 {
		t.Fatalf("funded before confirmation: %d", a.Balance)
	}
	clickAndLoad(t, admin, "#confirm")
	if got := text(t, admin, "#balance"); got != "12.34 CNY" {
		t.Fatalf("balance shown %q", got)
	}
	if a, err := p.Ledger.Account(ctx, "alice"); err != nil || a.Balance != 1234 {
		t.Fatalf("ledger balance %d (%v), want 1234", a.Balance, err)
	}
	screenshot(t, admin, "console-account")

	// The live feed shows a payment made elsewhere without a reload.
	do(t, admin, "transfers", chromedp.Navigate(base+"/console/transfers"), chromedp.WaitVisible(chromedp.CSS("#feed")))
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "shop", Owner: "Shop", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	tr, err := p.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: "feed-1", From: "alice", To: "shop", Amount: 500, Currency: "CNY"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(admin, chromedp.Poll[bool](fmt.Sprintf("document.body.innerText.includes(%q)", tr.ID))); err != nil {
		t.Fatalf("the feed did not show transfer %s: %v", tr.ID, err)
	}
	screenshot(t, admin, "console-transfers")

	// Revoke a phone's certificate from the devices view.
	iss, err := p.CA.IssueTLS(ctx, pki.RoleClient, "stolen-phone", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pki.ParseCertDER(iss.Certificate[0])
	do(t, admin, "devices", chromedp.Navigate(base+"/console/devices"), chromedp.WaitVisible(chromedp.CSS("table")),
		chromedp.Evaluate[chromedp.Void]("window.confirm = () => true"))
	clickAndLoad(t, admin, fmt.Sprintf("form[action='/console/devices/%s/revoke'] button", leaf.SerialNumber.Text(16)))
	if revoked, err := p.CA.IsRevoked(ctx, leaf.SerialNumber); err != nil || !revoked {
		t.Fatalf("certificate not revoked (%v)", err)
	}
	// Cancel a key storage device from the same view (its lifecycle is the
	// QKMP's: the console only asks).
	if _, err := p.KeyCharge.Register(ctx, keycharge.Principal{Name: "test-admin", Kind: pki.PrincipalAdmin}, keycharge.RegisterRequest{Serial: "SN-CONSOLE-1", Model: "QK-UKEY", Kind: "ukey"}); err != nil {
		t.Fatal(err)
	}
	do(t, admin, "devices again", chromedp.Navigate(base+"/console/devices"), chromedp.WaitVisible(chromedp.CSS("table")),
		chromedp.Evaluate[chromedp.Void]("window.confirm = () => true"),
		chromedp.SetValue(chromedp.CSS("#aSN-CONSOLE-1"), "cancel"))
	clickAndLoad(t, admin, "form[action='/console/storage/SN-CONSOLE-1'] button")
	if dev, err := p.KeyCharge.Device(ctx, keycharge.Principal{Name: "test-admin", Kind: pki.PrincipalAdmin}, "SN-CONSOLE-1"); err != nil || dev.State != keycharge.StateCancelled {
		t.Fatalf("device after cancel: %+v (%v)", dev, err)
	}
	screenshot(t, admin, "console-devices")

	// Verify the audit trail from the console.
	do(t, admin, "audit", chromedp.Navigate(base+"/console/audit"), chromedp.WaitVisible(chromedp.CSS("#verify")))
	clickAndLoad(t, admin, "#verify")
	if got := text(t, admin, "#verdict"); !strings.HasPrefix(got, "Intact") {
		t.Fatalf("audit verdict %q", got)
	}
	if got := text(t, admin, "#reconcile"); !strings.HasPrefix(got, "Ledger and trail agree") {
		t.Fatalf("reconciliation %q", got)
	}

	// An auditor can look but not act: the server refuses, whatever the page.
	alink, _, err := p.Console.Invite(ctx, "Otto Auditor", console.RoleAuditor, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	auditor, _ := passkeyTab(t, bctx)
	register(t, auditor, alink)
	do(t, auditor, "auditor accounts", chromedp.Navigate(base+"/console/accounts"), chromedp.WaitVisible(chromedp.CSS("table")))
	if n := eval[int](t, auditor, "document.querySelectorAll('details form').length"); n != 0 {
		t.Fatalf("auditor sees %d account forms", n)
	}
	status := eval[int](t, auditor, `(async () => {
		const f = new FormData(); f.set("csrf", document.body.dataset.csrf); f.set("id", "mallory"); f.set("owner", "M"); f.set("kind", "user"); f.set("currency", "CNY");
		return (await fetch("/console/accounts", {method: "POST", body: new URLSearchParams(f)})).status; })()`)
	if status != 403 {
		t.Fatalf("auditor creating an account: status %d, want 403", status)
	}
	if _, err := p.Ledger.Account(ctx, "mallory"); err == nil {
		t.Fatal("the auditor's refused request created an account")
	}
	denied, err := p.Audit.Search(ctx, audit.Query{Event: "console.denied"})
	if err != nil || len(denied) != 1 || !strings.HasPrefix(denied[0].Actor, "operator:op_") {
		t.Fatalf("refusal not audited: %+v (%v)", denied, err)
	}
	// A form posted without the session's CSRF token is refused too.
	status = eval[int](t, admin, `(async () => (await fetch("/console/operators/invite", {method: "POST", body: new URLSearchParams({name: "x", role: "admin"})})).status)()`)
	if status != 403 {
		t.Fatalf("POST without CSRF token: status %d, want 403", status)
	}

	// Sign out, then sign in again with the passkey.
	clickAndLoad(t, admin, "form.who button")
	waitPath(t, admin, "/console/login")
	do(t, admin, "sign in", chromedp.Click(chromedp.CSS("#signin")))
	waitPath(t, admin, "/console/")
	if got := text(t, admin, ".who strong"); got != "admin" {
		t.Fatalf("signed in as %q", got)
	}
	screenshot(t, admin, "console-login-done")
}

// TestConsoleAdminTools drives what the console does beyond the first
// version: operators as principals of the CA's register, certificate
// issuance with a key made in the browser, audit inclusion proofs and the
// checkpoint history (a rolled-back log shown as an alarm), and the live
// per-scheme charts after a real QMSP payment.
func TestConsoleAdminTools(t *testing.T) {
	p, base := startPlatform(t)
	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()))
	ctx := context.Background()

	link, _, err := p.Console.Invite(ctx, "Ada Admin", console.RoleAdmin, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	// One tab does most of this test: give it time on a loaded machine.
	admin, authID := passkeyTabFor(t, bctx, 5*time.Minute)
	register(t, admin, link)

	// The admin is a principal of the CA's register whose certificate
	// certifies the passkey the virtual authenticator holds.
	admins, err := p.CA.Principals(ctx, pki.PrincipalFilter{Kind: pki.PrincipalAdmin, ActiveOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var opP *pki.Principal
	for _, a := range admins {
		if a.Scheme == "console" && strings.HasPrefix(a.Name, "Ada Admin <op_") {
			opP = a
		}
	}
	if opP == nil {
		t.Fatalf("no console admin principal among %+v", admins)
	}
	creds, err := chromedp.Call(admin, cdpwebauthn.GetCredentials, cdpwebauthn.GetCredentialsParams{AuthenticatorID: authID})
	if err != nil || len(creds.Credentials) != 1 {
		t.Fatalf("credentials: %v", err)
	}
	pk, err := x509.ParsePKCS8PrivateKey(creds.Credentials[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := p.CA.CertificateDER(ctx, opP.Serial)
	opCert, _ := x509.ParseCertificate(der)
	if !pk.(*ecdsa.PrivateKey).PublicKey.Equal(opCert.PublicKey) {
		t.Fatal("the admin's principal does not certify its passkey")
	}
	do(t, admin, "operators", chromedp.Navigate(base+"/console/operators"), chromedp.WaitVisible(chromedp.CSS("table")))
	if got := text(t, admin, "tbody"); !strings.Contains(got, opP.Serial) {
		t.Fatalf("operators view does not show the principal %s: %q", opP.Serial, got)
	}

	// Issue a gateway certificate: the key pair is made in the browser, the
	// server gets only the signing request.
	do(t, admin, "certificates", chromedp.Navigate(base+"/console/certs"), chromedp.WaitVisible(chromedp.CSS("#genkey")),
		chromedp.SetValue(chromedp.CSS("#ckind"), "gateway"), chromedp.SetValue(chromedp.CSS("#cname"), "gw-browser"),
		chromedp.SetValue(chromedp.CSS("#cscheme"), "qmsp"), chromedp.SetValue(chromedp.CSS("#cscope"), "merchant:1"),
		chromedp.Click(chromedp.CSS("#genkey")), chromedp.WaitVisible(chromedp.CSS("#keylink")))
	keyPEM := eval[string](t, admin, `atob(document.getElementById("keylink").href.split(",")[1])`)
	if !strings.Contains(eval[string](t, admin, `document.getElementById("csr").value`), "BEGIN CERTIFICATE REQUEST") {
		t.Fatal("no signing request in the form")
	}
	screenshot(t, admin, "console-certs")
	do(t, admin, "no prompt", chromedp.Evaluate[chromedp.Void]("window.confirm = () => true"))
	clickAndLoad(t, admin, "#issue")
	serial := text(t, admin, "#issued-serial")
	gw, err := p.CA.PrincipalBySerial(ctx, serial)
	if err != nil || gw.Kind != pki.PrincipalGateway || gw.Scheme != "qmsp" || !gw.MayActFor("merchant:1") {
		t.Fatalf("issued principal %+v (%v)", gw, err)
	}
	blk, _ := pem.Decode([]byte(keyPEM))
	if blk == nil {
		t.Fatalf("saved key %q", keyPEM)
	}
	gk, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, _ = p.CA.CertificateDER(ctx, serial)
	gwCert, _ := x509.ParseCertificate(der)
	if !gk.(*ecdsa.PrivateKey).PublicKey.Equal(gwCert.PublicKey) {
		t.Fatal("the certificate is not for the key the browser made")
	}

	// Key storage devices: a new device's next step is the CLI where the
	// device is connected; once initialised (here the device's key and proof
	// are made in the test, as `qshield admin init` makes them inside the
	// device), distributing and binding are done in the console.
	kadmin := keycharge.Principal{Name: "test-admin", Kind: pki.PrincipalAdmin}
	if _, err := p.KeyCharge.Register(ctx, kadmin, keycharge.RegisterRequest{Serial: "SN-CONSOLE-2", Model: "QK-UKEY", Kind: "ukey"}); err != nil {
		t.Fatal(err)
	}
	do(t, admin, "devices", chromedp.Navigate(base+"/console/devices"), chromedp.WaitVisible(chromedp.CSS("#init-SN-CONSOLE-2")))
	if got := text(t, admin, "#init-SN-CONSOLE-2"); !strings.Contains(got, "qshield admin init --dir") {
		t.Fatalf("initialise step %q", got)
	}
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	encKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devPub, _ := x509.MarshalPKIXPublicKey(&devKey.PublicKey)
	encPub, _ := x509.MarshalPKIXPublicKey(&encKey.PublicKey)
	proof, _ := ecdsa.SignASN1(rand.Reader, devKey, keycharge.InitialiseDigest("SN-CONSOLE-2", devPub, encPub))
	if _, err := p.KeyCharge.Transition(ctx, kadmin, "SN-CONSOLE-2", keycharge.TransitionRequest{Action: keycharge.ActInitialise, PublicKey: devPub, EncryptionKey: encPub, Proof: proof}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ action, who, want string }{{"distribute", "Ursula Admin", "distributed"}, {"bind", "alice", "bound"}, {"activate", "", "active"}} {
		do(t, admin, "devices "+step.action, chromedp.Navigate(base+"/console/devices"), chromedp.WaitVisible(chromedp.CSS("#aSN-CONSOLE-2")),
			chromedp.Evaluate[chromedp.Void]("window.confirm = () => true"),
			chromedp.SetValue(chromedp.CSS("#aSN-CONSOLE-2"), step.action))
		if step.who != "" {
			do(t, admin, "who", chromedp.SetValue(chromedp.CSS("#wSN-CONSOLE-2"), step.who))
		}
		clickAndLoad(t, admin, "form[action='/console/storage/SN-CONSOLE-2'] button")
		if got := text(t, admin, "#state-SN-CONSOLE-2"); got != step.want {
			t.Fatalf("after %s the device is %q, want %s", step.action, got, step.want)
		}
	}
	if dev, err := p.KeyCharge.Device(ctx, kadmin, "SN-CONSOLE-2"); err != nil || dev.Administrator != "Ursula Admin" || dev.User != "alice" || dev.State != keycharge.StateActive {
		t.Fatalf("device %+v (%v)", dev, err)
	}
	screenshot(t, admin, "console-storage")
	// Its page lists its keys' life on the platform (none charged yet).
	clickAndLoad(t, admin, "a[href='/console/storage/SN-CONSOLE-2']")
	if got := text(t, admin, "#dev-state"); got != "active" {
		t.Fatalf("device page state %q", got)
	}
	if got := text(t, admin, "#dev-keys"); !strings.Contains(got, "No key has been charged") {
		t.Fatalf("device keys %q", got)
	}

	// An inclusion proof of record 1 against the latest signed checkpoint.
	kept, _, err := p.Publisher.PublishNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	verifyKept := func(what string) string {
		do(t, admin, what, chromedp.Navigate(base+"/console/audit"), chromedp.WaitVisible(chromedp.CSS("#seq")),
			chromedp.Click(chromedp.CSS("details.card summary")), chromedp.SetValue(chromedp.CSS("#kept"), string(kept)))
		clickAndLoad(t, admin, "#verify-kept")
		return text(t, admin, "#kept-verdict")
	}
	if got := verifyKept("verify a kept checkpoint"); !strings.Contains(got, "append-only extension") {
		t.Fatalf("kept checkpoint: %q", got)
	}
	do(t, admin, "prove", chromedp.Navigate(base+"/console/audit"), chromedp.WaitVisible(chromedp.CSS("#seq")),
		chromedp.SetValue(chromedp.CSS("#seq"), "1"))
	clickAndLoad(t, admin, "form[action='/console/audit/record'] button")
	if got := text(t, admin, "#proof-verdict"); !strings.HasPrefix(got, "Proved: record 1") || !strings.Contains(got, "signature verifies") {
		t.Fatalf("proof verdict %q", got)
	}
	screenshot(t, admin, "console-audit-proof")
	do(t, admin, "checkpoints", chromedp.Navigate(base+"/console/audit/checkpoints"), chromedp.WaitVisible(chromedp.CSS("#sign-now")))
	clickAndLoad(t, admin, "#sign-now")
	if got := text(t, admin, "#cp-verdict"); !strings.Contains(got, "extends every checkpoint") {
		t.Fatalf("checkpoint view after signing: %q", got)
	}

	// A real QMSP payment shows in the per-scheme charts without a reload.
	do(t, admin, "charts", chromedp.Navigate(base+"/console/qkd"), chromedp.WaitVisible(chromedp.CSS("#chart-pay")))
	if err := p.KME.Deposit(ctx, qkd.RandomKeys(2000, 32)); err != nil {
		t.Fatal(err)
	}
	g, err := p.QMSP.Gateway(ctx, platform.BuiltinGateway)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := g.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fundedAccount(t, p, "charts-alice", 100_00)
	enrol, err := p.IssueEnrolmentCode(ctx, "test", "charts-alice")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := p.QMSP.IssuePhone(ctx, "charts-phone", 4343, "charts-alice", enrol)
	if err != nil {
		t.Fatal(err)
	}
	phoneCert, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	payer := &qmsp.Phone{Payer: 4343, Platform: qmsp.NewClient(base, p.ClientTLS(ctx, phoneCert))}
	code, _ := unit.MarshalText()
	if _, err := payer.Pay(ctx, string(code), 7_50, 156); err != nil {
		t.Fatalf("pay: %v", err)
	}
	if _, err := chromedp.Run(admin, chromedp.Poll[bool](`(() => { const r = document.getElementById("scheme-totals").tBodies[0].rows[0];
		return r.cells[1].textContent === "1" && r.cells[3].textContent === "7.50 CNY"; })()`)); err != nil {
		t.Fatalf("the charts did not show the payment: %v (%s)", err, text(t, admin, "#scheme-totals"))
	}
	if n := eval[int](t, admin, `document.querySelectorAll("#chart-pay polyline").length`); n != 5 {
		t.Fatalf("payments chart has %d lines, want one per scheme", n)
	}
	noRawJSON(t, admin, "live charts")
	screenshot(t, admin, "console-charts")

	// The merchant's operator (an invitation naming merchant 1) sets the
	// built-in till's next sale; the till's screen then asks for it.
	mlink, _, err := p.Console.InviteScoped(ctx, "Mia Merchant", console.RoleOperator, []string{"merchant:1"}, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	merchant, _ := passkeyTab(t, bctx)
	register(t, merchant, mlink)
	do(t, merchant, "tills", chromedp.Navigate(base+"/console/tills"), chromedp.WaitVisible(chromedp.CSS("#amount-GW-0001")),
		chromedp.SetValue(chromedp.CSS("#amount-GW-0001"), "8.80"))
	clickAndLoad(t, merchant, "form[action='/console/tills/GW-0001/sale'] button")
	if got := text(t, merchant, ".flash"); !strings.Contains(got, "8.80 CNY") {
		t.Fatalf("after setting the sale: %q", got)
	}
	screenshot(t, merchant, "console-tills")
	do(t, merchant, "till screen", chromedp.Navigate(base+"/qmsp/gateways/"+platform.BuiltinGateway+"/"), chromedp.WaitVisible(chromedp.CSS("#amount")))
	if got := text(t, merchant, "#amount"); got != "8.80 CNY" {
		t.Fatalf("the till's screen shows %q, want the sale's 8.80 CNY", got)
	}
	if d, err := g.Current(ctx); err != nil || d.Amount != 8_80 || d.Currency != 156 {
		t.Fatalf("the till's code carries %+v (%v)", d, err)
	}

	// An auditor may read the proofs but not issue certificates.
	alink, _, err := p.Console.Invite(ctx, "Otto Auditor", console.RoleAuditor, "admin:test")
	if err != nil {
		t.Fatal(err)
	}
	auditor, _ := passkeyTab(t, bctx)
	register(t, auditor, alink)
	status := eval[int](t, auditor, `(async () => {
		const f = new URLSearchParams({csrf: document.body.dataset.csrf, kind: "admin", name: "mallory", csr: "x"});
		return (await fetch("/console/certs", {method: "POST", body: f})).status; })()`)
	if status != 403 {
		t.Fatalf("auditor issuing a certificate: %d, want 403", status)
	}
	if ps, _ := p.CA.Principals(ctx, pki.PrincipalFilter{Name: "mallory"}); len(ps) != 0 {
		t.Fatal("the auditor's refused request issued a certificate")
	}

	// An insider rolls the database back: the console's kept checkpoints
	// show it as an alarm on the checkpoint view and the dashboard.
	for _, q := range []string{
		`DELETE FROM audit_log WHERE seq > 3`,
		`DELETE FROM audit_tlog_runs WHERE start >= ` + strconv.FormatInt(tlog.StoredHashIndex(0, 3), 10),
		`UPDATE audit_tlog_runs SET hashes = substr(hashes, 1, (` + strconv.FormatInt(tlog.StoredHashIndex(0, 3), 10) + ` - start) * 32)
			WHERE start + length(hashes) / 32 > ` + strconv.FormatInt(tlog.StoredHashIndex(0, 3), 10),
		`UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3) WHERE id = 1`,
		`DELETE FROM audit_checkpoints WHERE size > 3`,
	} {
		if _, err := p.DB.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	do(t, admin, "checkpoints after rollback", chromedp.Navigate(base+"/console/audit/checkpoints"), chromedp.WaitVisible(chromedp.CSS("#cp-alarm")))
	screenshot(t, admin, "console-audit-alarm")
	do(t, admin, "dashboard after rollback", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.CSS(".alarm")))
	if got := text(t, admin, ".alarm"); !strings.Contains(got, "AUDIT LOG REWRITTEN OR ROLLED BACK") {
		t.Fatalf("dashboard alarm %q", got)
	}
	if got := verifyKept("verify a kept checkpoint after the rollback"); !strings.Contains(got, "NOT an extension") {
		t.Fatalf("kept checkpoint after the rollback: %q", got)
	}
}

// TestWatermarkScreenPaid: the payer's watermark screen turns to "Paid" by
// itself once its code is redeemed (the status route reads the token
// store; the scan-and-pay flow itself is tested in watermark/service).
func TestWatermarkScreenPaid(t *testing.T) {
	p, base := startPlatform(t)
	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()))
	ctx := context.Background()
	phoneAPI := watermarkPhone(t, p, base, "wm-paid-payer", "wm-paid-phone")
	var code service.CodeResponse
	if _, err := phoneAPI.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, map[string]int64{"limit": 20_00}, &code); err != nil {
		t.Fatal(err)
	}
	tab := browsertest.NewTab(t, bctx, 90*time.Second)
	do(t, tab, "open screen", chromedp.Navigate(base+code.Screen), chromedp.WaitVisible(chromedp.CSS("#code")))
	if got := text(t, tab, "#status"); !strings.Contains(got, "at most 20.00 CNY") {
		t.Fatalf("status before payment %q", got)
	}
	if err := p.Watermark.Store().MarkUsed(ctx, code.Handle, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := statusText(t, tab, "Paid"); got != "Paid. Thank you!" {
		t.Fatalf("after the payment the screen says %q", got)
	}
	noRawJSON(t, tab, "paid watermark screen")
}
