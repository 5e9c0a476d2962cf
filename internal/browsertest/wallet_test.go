package browsertest_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qmsp"
	"github.com/qshield/qshield/qrimg"
)

// The payer's wallet in a real Chromium whose camera films the gateway
// page's own QR code (a Y4M rendered from a screenshot of the page, passed
// through the camera simulator's blur and noise): enrol with the holder's
// code, scan, confirm the amount the gateway signed, pay; the ledger moves
// exactly that amount once.

// filmGateway screenshots the gateway page's code (as the browser draws
// it), films it through qrimg's camera distortions into a short Y4M at
// path, and returns the code the screenshot shows.
func filmGateway(t *testing.T, tab context.Context, path string, prev qmsp.KeyRef) qmsp.Display {
	t.Helper()
	var d qmsp.Display
	for try := 0; ; try++ {
		waitJS(t, tab, "(function(){var c=document.getElementById('code');return !!c && c.complete && c.naturalWidth>0})()", "gateway code loaded")
		shot, err := browsertest.ShootElement(tab, "#code", 15*time.Second)
		if err != nil {
			if try < 3 {
				continue // no frame drawn in 15 s: try again
			}
			t.Fatalf("screenshot of the gateway code: %v", err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatal(err)
		}
		txt, err := qrimg.Decode(img)
		if err == nil && d.UnmarshalText([]byte(txt)) == nil && d.Ref != prev {
			var frames []image.Image
			for i := 0; i < 6; i++ {
				cam := qrimg.Distort(img, qrimg.Distortion{Rotate: float64(i%3) - 1, Blur: 1, Noise: 6, Contrast: 0.2, Seed: uint64(i + 1)})
				frames = append(frames, browsertest.Frame(cam, 640, 480, 0.8, 200))
			}
			if err := browsertest.WriteY4MFile(path, frames, 10); err != nil {
				t.Fatal(err)
			}
			return d
		}
		if try > 100 {
			t.Fatalf("the gateway page shows no new code (last read %v)", err)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func TestWalletPaysQMSPThroughCamera(t *testing.T) {
	p, base, stop := runPlatform(t)
	ctx := context.Background()
	cam := filepath.Join(t.TempDir(), "camera.y4m")
	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()), browsertest.FakeCamera(cam)...)
	if err := p.KME.Deposit(ctx, qkd.RandomKeys(2000, 32)); err != nil {
		t.Fatal(err)
	}
	g, err := p.QMSP.Gateway(ctx, platform.BuiltinGateway)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetSale(12_34, 156); err != nil {
		t.Fatal(err)
	}
	fundedAccount(t, p, "wallet-alice", 500_00)
	enrolCode, err := p.BioQR.IssueEnrolmentCode(ctx, "test", "wallet-alice")
	if err != nil {
		t.Fatal(err)
	}

	gw := browsertest.NewTab(t, bctx, 5*time.Minute)
	do(t, gw, "open gateway page", chromedp.Navigate(base+"/qmsp/gateways/"+platform.BuiltinGateway+"/"), chromedp.WaitVisible(chromedp.CSS("#code")))
	shown := filmGateway(t, gw, cam, qmsp.KeyRef{})

	w := browsertest.NewTab(t, bctx, 5*time.Minute)
	front(t, w)
	do(t, w, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1), chromedp.EmulateMobile))
	do(t, w, "open wallet", chromedp.Navigate(base+"/wallet/"))
	waitJS(t, w, "document.body.dataset.view === 'enrol'", "enrolment form")
	noSideScroll(t, w, "wallet-enrol")
	walletShot(t, w, "wallet-enrol")

	// A wrong code is refused in words.
	do(t, w, "enrol with a wrong code", chromedp.SendKeys(chromedp.CSS("#enrol-account"), "wallet-alice"),
		chromedp.SendKeys(chromedp.CSS("#enrol-code"), "AAAAAAAAAAAAAAAA"), chromedp.Click(chromedp.CSS("#enrol-submit")))
	if got := statusText(t, w, "not valid"); !strings.Contains(got, "Ask for a new code") {
		t.Errorf("wrong code: %q", got)
	}
	do(t, w, "enrol", chromedp.SetValue(chromedp.CSS("#enrol-code"), enrolCode.Code), chromedp.Click(chromedp.CSS("#enrol-submit")))
	waitJS(t, w, "document.body.dataset.view === 'home' && document.getElementById('home-balance').textContent === '500.00 CNY'", "home with the balance")
	// The key is a non-extractable CryptoKey kept in IndexedDB.
	ext := eval[string](t, w, `new Promise(function(res){var rq=indexedDB.open('qshield-wallet',1);rq.onsuccess=function(){var g=rq.result.transaction('kv').objectStore('kv').get('wallet');g.onsuccess=function(){var k=g.result.privateKey;res(k.type+' '+k.algorithm.name+' '+k.algorithm.namedCurve+' extractable='+k.extractable)}}})`)
	if ext != "private ECDSA P-256 extractable=false" {
		t.Errorf("device key: %s", ext)
	}
	noRawJSON(t, w, "wallet home")
	walletShot(t, w, "wallet-home")

	pay := func(i int) (time.Duration, int) {
		t0 := time.Now()
		front(t, w)
		do(t, w, "scan to pay", chromedp.Click(chromedp.CSS("#pay")))
		waitJS(t, w, "document.body.dataset.view === 'confirm'", "confirmation after scanning")
		if got := text(t, w, "#confirm-amount"); got != "12.34 CNY" {
			t.Fatalf("payment %d: the wallet shows %q, the gateway signed 12.34 CNY", i, got)
		}
		if eval[bool](t, w, "getComputedStyle(document.getElementById('confirm-amount-entry')).display !== 'none'") {
			t.Errorf("payment %d: the wallet asks for an amount although the code carries the merchant's", i)
		}
		if got := text(t, w, "#confirm-merchant"); got != "Merchant 1" {
			t.Errorf("merchant shown as %q", got)
		}
		if i == 0 {
			noSideScroll(t, w, "wallet-confirm")
			walletShot(t, w, "wallet-confirm")
		}
		if i == 0 {
			// Record the signed payment request as it leaves the page.
			eval[bool](t, w, `(function(){var f=window.fetch;window.recorded=[];window.fetch=function(u,init){window.recorded.push({url:String(u),init:init});return f(u,init)};return true})()`)
		}
		do(t, w, "pay", chromedp.Click(chromedp.CSS("#confirm-pay")))
		waitJS(t, w, "document.body.dataset.view === 'result'", "payment result")
		if r := eval[string](t, w, "document.body.dataset.result + ': ' + document.getElementById('result-text').textContent"); r != "paid: You paid 12.34 CNY to merchant 1." {
			t.Fatalf("payment %d: %s", i, r)
		}
		d := time.Since(t0)
		ms, _ := strconv.Atoi(eval[string](t, w, "document.body.dataset.payMs || '0'"))
		do(t, w, "done", chromedp.Click(chromedp.CSS("#result-done")))
		return d, ms
	}
	d0, ms0 := pay(0)
	t.Logf("first payment: %v from 'Scan to pay' to 'Paid' (signed request %d ms)", d0, ms0)
	a, _ := p.Ledger.Account(ctx, "wallet-alice")
	if a.Balance != 500_00-12_34 {
		t.Fatalf("balance %d after one payment, want %d", a.Balance, 500_00-12_34)
	}
	if used, err := p.QMSP.PPS.UnitUsed(ctx, shown.Ref); err != nil || !used {
		t.Fatalf("the filmed unit %v is not spent (%v)", shown.Ref, err)
	}
	waitJS(t, w, "document.body.dataset.view === 'home' && document.getElementById('home-balance').textContent === '487.66 CNY'", "balance after paying")

	// The recorded signed payment, replayed byte for byte by the page, is
	// refused by the signature layer (its nonce is spent), not answered
	// from the idempotency store, and moves no money.
	replayed := eval[string](t, w, `(async function(){var r=window.recorded.filter(function(x){return x.url.indexOf('/v1/qmsp/pay')>0})[0];
		var resp=await fetch(r.url,r.init);var p=await resp.json();return resp.status+' '+p.code})()`)
	if replayed != "401 signature_rejected" {
		t.Fatalf("replayed signed payment: %s", replayed)
	}
	if a2, _ := p.Ledger.Account(ctx, "wallet-alice"); a2.Balance != a.Balance {
		t.Fatalf("the replay moved money: %d → %d", a.Balance, a2.Balance)
	}
	if got := text(t, w, "#history li .amt"); got != "−12.34 CNY" {
		t.Errorf("newest history line %q", got)
	}
	walletShot(t, w, "wallet-paid")

	// The camera keeps filming the same, now spent, code: the wallet says
	// so in words and no money moves.
	front(t, w)
	do(t, w, "scan the spent code", chromedp.Click(chromedp.CSS("#pay")))
	waitJS(t, w, "document.body.dataset.view === 'confirm'", "confirmation")
	do(t, w, "pay again", chromedp.Click(chromedp.CSS("#confirm-pay")))
	waitJS(t, w, "document.body.dataset.view === 'result'", "refusal")
	if r := text(t, w, "#result-text"); !strings.Contains(r, "already used") {
		t.Errorf("spent code: %q", r)
	}
	noRawJSON(t, w, "wallet refusal")
	do(t, w, "done", chromedp.Click(chromedp.CSS("#result-done")))
	if a2, _ := p.Ledger.Account(ctx, "wallet-alice"); a2.Balance != a.Balance {
		t.Fatalf("a spent code moved money: %d → %d", a.Balance, a2.Balance)
	}

	// More payments, each through a new film of the gateway's next code:
	// the browser path's time to pay and payments per second.
	n := 3
	if v, err := strconv.Atoi(os.Getenv("QSHIELD_WALLET_BENCH")); err == nil && v > 0 {
		n = v
	}
	prev := shown.Ref
	var times []time.Duration
	var reqMs []int
	start := time.Now()
	for i := 1; i <= n; i++ {
		d := filmGateway(t, gw, cam, prev)
		prev = d.Ref
		dt, ms := pay(i)
		times = append(times, dt)
		reqMs = append(reqMs, ms)
	}
	total := time.Since(start)
	var paying time.Duration
	for _, d := range times {
		paying += d
	}
	slices.Sort(times)
	slices.Sort(reqMs)
	t.Logf("BENCH wallet browser path: %d payments, %.2f payments/s by one wallet (scan→Paid back to back; %v with the test filming each new code); time to pay (scan→Paid) median %v p90 %v max %v; signed pay request median %d ms max %d ms",
		n, float64(n)/paying.Seconds(), total.Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[int(math.Ceil(0.9*float64(len(times))))-1].Round(time.Millisecond),
		times[len(times)-1].Round(time.Millisecond), reqMs[len(reqMs)/2], reqMs[len(reqMs)-1])
	a3, _ := p.Ledger.Account(ctx, "wallet-alice")
	if want := int64(500_00 - (n+1)*12_34); a3.Balance != want {
		t.Fatalf("balance %d after %d payments, want %d", a3.Balance, n+1, want)
	}

	waitJS(t, w, fmt.Sprintf("document.body.dataset.view === 'home' && document.getElementById('home-balance').textContent === %q", formatCNY(a3.Balance)+" CNY"), "balance after the payments")

	// The peer in the same run: the CLI's phone (qmsp.Phone over HTTPS with
	// a client certificate) paying the same gateway, back to back.
	fundedAccount(t, p, "wallet-cli", 500_00)
	cliCode, err := p.BioQR.IssueEnrolmentCode(ctx, "test", "wallet-cli")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := p.QMSP.IssuePhone(ctx, "wallet-cli-phone", 77, "wallet-cli", cliCode.Code)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	cli := &qmsp.Phone{Payer: 77, Platform: qmsp.NewClient(base, p.ClientTLS(ctx, cert))}
	var cliTimes []time.Duration
	for i := 0; i < 20; i++ {
		d, err := g.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		txt, _ := d.MarshalText()
		t0 := time.Now()
		if _, err := cli.Pay(ctx, string(txt), 0, 0); err != nil {
			if strings.Contains(err.Error(), "already used") { // the page's poll and this loop race for the next unit
				_ = g.Advance()
				continue
			}
			t.Fatalf("CLI phone payment: %v", err)
		}
		cliTimes = append(cliTimes, time.Since(t0))
		_ = g.Advance()
	}
	slices.Sort(cliTimes)
	if len(cliTimes) > 0 {
		t.Logf("BENCH CLI phone (qmsp.Phone, mTLS) same run: %d payments, median %v, max %v per payment", len(cliTimes), cliTimes[len(cliTimes)/2].Round(100*time.Microsecond), cliTimes[len(cliTimes)-1].Round(100*time.Microsecond))
	}

	// The platform goes away: the service worker serves the shell, and the
	// wallet shows the balance it saved and says it is offline.
	if !eval[bool](t, w, "navigator.serviceWorker.ready.then(function(r){return !!r.active})") {
		t.Fatal("no active service worker")
	}
	stop()
	do(t, w, "reload offline", chromedp.Reload())
	waitJS(t, w, "document.body.dataset.view === 'home' && !document.getElementById('net').hidden", "offline home")
	if got, want := text(t, w, "#home-balance"), formatCNY(a3.Balance)+" CNY"; got != want {
		t.Errorf("offline balance %q, want %q", got, want)
	}
	noRawJSON(t, w, "offline wallet")
	walletShot(t, w, "wallet-offline")
}

func formatCNY(minor int64) string { return fmt.Sprintf("%d.%02d", minor/100, minor%100) }

func noSideScroll(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if !eval[bool](t, ctx, "document.documentElement.scrollWidth <= window.innerWidth") {
		t.Errorf("%s scrolls sideways at phone width", name)
	}
}

func walletShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("QSHIELD_SCREENSHOTS")
	if dir == "" {
		return
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+"-phone.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWriteY4M checks the camera file's layout: header, then per frame
// "FRAME\n" and w·h + 2·(w/2·h/2) bytes.
func TestWriteY4M(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 8, 6))
	var b bytes.Buffer
	if err := browsertest.WriteY4M(&b, []image.Image{img, img}, 10); err != nil {
		t.Fatal(err)
	}
	hdr := "YUV4MPEG2 W8 H6 F10:1 Ip A1:1 C420jpeg\n"
	if !strings.HasPrefix(b.String(), hdr) || b.Len() != len(hdr)+2*(6+48+2*12) {
		t.Fatalf("y4m of %d bytes: %q", b.Len(), b.String()[:min(60, b.Len())])
	}
	if err := browsertest.WriteY4M(&b, []image.Image{image.NewRGBA(image.Rect(0, 0, 7, 6))}, 10); err == nil {
		t.Fatal("odd width accepted")
	}
}
