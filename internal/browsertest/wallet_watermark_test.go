package browsertest_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/scan"
	"github.com/qshield/qshield/watermark/service"
)

// TestWalletShowsWatermarkLoop: the wallet asks for a watermark code with a
// signed request and renders its looping frames itself (WebAssembly),
// full-screen; frames screenshotted from the page (device scale 2, as a
// phone's screen) reconstruct T0 with the project's scanner and pay the
// merchant; the same recording submitted again is refused; with the
// platform gone the loop keeps running on the phone.
//
// The watermark window is widened to 60 s here: a headless browser on a
// loaded test machine takes screenshots far slower than a camera films, and
// the window is the watermark package's concern (its experiment measures
// it); this test is about the wallet. Scanner
// challenges are off (the opt-out): this browser has no camera, so the loop
// stays unbound; TestWalletBindsToScannerChallenge films a scanner's
// challenge with the front camera.
func TestWalletShowsWatermarkLoop(t *testing.T) {
	p, base, stop := runPlatform(t, func(c *platform.Config) {
		c.WatermarkWindow = watermark.Window{MaxAge: 60 * time.Second, MaxLead: 2 * time.Second}
		c.WatermarkChallengesOff = true
	})
	ctx := context.Background()

	fundedAccount(t, p, "wm-wallet-alice", 100_00)
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "wm-wallet-shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	iss, err := p.EnrolWatermarkDevice(ctx, "wm-wallet-scanner", "scanner", "wm-wallet-shop", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	scanner := client.New(base, p.ClientTLS(ctx, cert))
	defer scanner.Close()
	code, err := p.BioQR.IssueEnrolmentCode(ctx, "test", "wm-wallet-alice")
	if err != nil {
		t.Fatal(err)
	}

	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()))
	w := browsertest.NewTab(t, bctx, 3*time.Minute)
	do(t, w, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	do(t, w, "open wallet", chromedp.Navigate(base+"/wallet/"))
	waitJS(t, w, "document.body.dataset.view === 'enrol'", "enrolment form")
	do(t, w, "enrol", chromedp.SendKeys(chromedp.CSS("#enrol-account"), "wm-wallet-alice"),
		chromedp.SendKeys(chromedp.CSS("#enrol-code"), code.Code), chromedp.Click(chromedp.CSS("#enrol-submit")))
	waitJS(t, w, "document.body.dataset.view === 'home'", "home")
	do(t, w, "show a code", chromedp.Click(chromedp.CSS("#show-code")))
	waitJS(t, w, "document.body.dataset.view === 'wmset'", "limit form")
	do(t, w, "limit", chromedp.SendKeys(chromedp.CSS("#wm-limit"), "50.00"), chromedp.Click(chromedp.CSS("#wm-submit")))
	waitJS(t, w, "document.body.dataset.view === 'wm' && document.getElementById('wm-canvas').width === 444", "the looping code")
	noSideScroll(t, w, "wallet-watermark")
	noRawJSON(t, w, "wallet watermark")
	walletShot(t, w, "wallet-watermark")
	handle := eval[string](t, w, "document.body.dataset.wmHandle")

	// The merchant's scanner films the phone's screen: frame by frame until
	// the shares reconstruct T0.
	sess, err := scan.NewSession(watermark.DefaultParams(), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var res *scan.Result
	var qrText string
	for i := 0; res == nil; i++ {
		if i > 300 {
			t.Fatalf("no reconstruction after %d screenshots: %+v", i, sess.Stats())
		}
		shot, err := chromedp.Run(w, chromedp.Screenshot(chromedp.CSS("#wm-canvas"), chromedp.NodeVisible))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatal(err)
		}
		if qrText == "" {
			qrText, _ = qrimg.Decode(img)
		}
		ev, err := sess.Add(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		res = ev.Result
	}
	if res.Handle != handle || qrText != handle {
		t.Fatalf("scanned handle %q (QR %q), the wallet shows %q", res.Handle, qrText, handle)
	}
	pay := service.PayRequest{Handle: res.Handle, Token: res.Token, Stamps: res.Stamps, Amount: 12_34, Currency: "CNY"}
	var tr ledger.Transfer
	if st, err := scanner.Do(ctx, http.MethodPost, "/v1/watermark/pay", map[string]string{"Idempotency-Key": "wm-" + res.Handle}, pay, &tr); err != nil || st != http.StatusOK {
		t.Fatalf("scanner pays with the wallet's code: %d %v", st, err)
	}
	a, _ := p.Ledger.Account(ctx, "wm-wallet-alice")
	m, _ := p.Ledger.Account(ctx, "wm-wallet-shop")
	if a.Balance != 100_00-12_34 || m.Balance != 12_34 {
		t.Fatalf("after the watermark payment: payer %d, merchant %d", a.Balance, m.Balance)
	}
	// The same recording, submitted again later, is refused.
	if st, err := scanner.Do(ctx, http.MethodPost, "/v1/watermark/pay", map[string]string{"Idempotency-Key": "wm-replay-" + res.Handle}, pay, nil); err == nil || st == http.StatusOK {
		t.Fatalf("replayed recording: %d %v", st, err)
	}
	if a2, _ := p.Ledger.Account(ctx, "wm-wallet-alice"); a2.Balance != a.Balance {
		t.Fatal("the replay moved money")
	}

	// Offline: the loop is rendered on the phone and keeps changing.
	stop()
	first := eval[string](t, w, "document.getElementById('wm-canvas').toDataURL()")
	waitJS(t, w, fmt.Sprintf("document.getElementById('wm-canvas').toDataURL() !== %q", first), "the loop running offline")
}

// runPlatformWindow is runPlatform with the watermark service's window.
func runPlatformWindow(t *testing.T, win watermark.Window) (*platform.Platform, string, func()) {
	t.Helper()
	return runPlatform(t, func(c *platform.Config) { c.WatermarkWindow = win })
}
