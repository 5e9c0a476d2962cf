package browsertest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"image"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/selfverify"
)

// Seed 002 from the browser wallet: the payer registers an ECQV key made
// and kept in the page (sealed in IndexedDB under a non-extractable AES-GCM
// key), withdraws a prepaid token, scans a shop's payment code with a real
// (fake-device) camera and pays the shop at its own origin three times
// (the first under K_UV, then down the hash chain), the shop deposits, and
// the wallet confirms; the ledger moves exactly what was paid. A payment
// changed in transit is refused and the wallet says so in words; a replay
// of a payment moves nothing.
func TestWalletSelfVerifyThroughCamera(t *testing.T) {
	p, base, _ := runPlatform(t)
	ctx := context.Background()
	op := p.SelfVerify
	const escrow = "selfverify.escrow.CNY"

	// The payer's account and the shop's.
	fundedAccount(t, p, "sv-alice", 500_00)
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "sv-shop", Owner: "sv-shop", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}

	// The shop: a vendor registered with the operator, serving its API at
	// its own origin (another port) over TLS from the platform's CA.
	vcode, err := op.Enroll(ctx, "shop-1", selfverify.RoleVendor, "sv-shop")
	if err != nil {
		t.Fatal(err)
	}
	vcred, err := selfverify.Register(ctx, op.Local(), nil, "shop-1", selfverify.RoleVendor, vcode)
	if err != nil {
		t.Fatal(err)
	}
	vendor, err := selfverify.NewVendor(ctx, p.DB, vcred, selfverify.VendorConfig{Operator: op.Local(), Catalog: []selfverify.Item{
		{ID: "coffee", Description: "A cup of coffee", Price: 12_00}},
		Goods: func(selfverify.Item, string) string { return "Enjoy your coffee." }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vendor.Close() })
	vcert, err := p.CA.IssueTLS(ctx, pki.RoleServer, "shop-1", []string{"localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	vln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	vsrv := &http.Server{Handler: vendor.Handler(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{vcert}, MinVersion: tls.VersionTLS12}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = vsrv.ServeTLS(vln, "", "") }()
	t.Cleanup(func() { vsrv.Close() })
	vendorURL := fmt.Sprintf("https://localhost:%d", vln.Addr().(*net.TCPAddr).Port)

	// The shop's till shows its payment code; the phone's camera films it.
	code := selfverify.VendorCode{URL: vendorURL, Item: "coffee"}
	qr, err := qrimg.Encode(code.String(), "M")
	if err != nil {
		t.Fatal(err)
	}
	var frames []image.Image
	for i := 0; i < 6; i++ {
		cam := qrimg.Distort(qr.Image(6), qrimg.Distortion{Rotate: float64(i%3) - 1, Blur: 1, Noise: 6, Contrast: 0.2, Seed: uint64(i + 1)})
		frames = append(frames, browsertest.Frame(cam, 640, 480, 0.8, 200))
	}
	cam := filepath.Join(t.TempDir(), "camera.y4m")
	if err := browsertest.WriteY4MFile(cam, frames, 10); err != nil {
		t.Fatal(err)
	}
	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()), browsertest.FakeCamera(cam)...)

	// The wallet, enrolled as in TestWalletPaysQMSPThroughCamera.
	enrolCode, err := p.BioQR.IssueEnrolmentCode(ctx, "test", "sv-alice")
	if err != nil {
		t.Fatal(err)
	}
	w := browsertest.NewTab(t, bctx, 5*time.Minute)
	do(t, w, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1), chromedp.EmulateMobile))
	do(t, w, "open wallet", chromedp.Navigate(base+"/wallet/"))
	waitJS(t, w, "document.body.dataset.view === 'enrol'", "enrolment form")
	do(t, w, "enrol", chromedp.SendKeys(chromedp.CSS("#enrol-account"), "sv-alice"),
		chromedp.SendKeys(chromedp.CSS("#enrol-code"), enrolCode.Code), chromedp.Click(chromedp.CSS("#enrol-submit")))
	waitJS(t, w, "document.body.dataset.view === 'home' && document.getElementById('home-balance').textContent === '500.00 CNY'", "home with the balance")

	// Set up shopping: a wrong code is refused in words, the right one
	// registers the ECQV key made in the page.
	svCode, err := op.Enroll(ctx, "alice-shopper", selfverify.RoleUser, "sv-alice")
	if err != nil {
		t.Fatal(err)
	}
	do(t, w, "open shopping", chromedp.Click(chromedp.CSS("#shop")))
	waitJS(t, w, "document.body.dataset.view === 'shop' && !document.getElementById('shop-setup').hidden", "shopping set-up form")
	do(t, w, "register with a wrong code", chromedp.SendKeys(chromedp.CSS("#shop-reg-id"), "alice-shopper"),
		chromedp.SendKeys(chromedp.CSS("#shop-reg-code"), strings.Repeat("0", len(svCode))), chromedp.Click(chromedp.CSS("#shop-reg-submit")))
	if got := statusText(t, w, "not valid"); !strings.Contains(got, "new code") {
		t.Errorf("wrong shopping code: %q", got)
	}
	do(t, w, "register", chromedp.SetValue(chromedp.CSS("#shop-reg-code"), svCode), chromedp.Click(chromedp.CSS("#shop-reg-submit")))
	waitJS(t, w, "!document.getElementById('shop-ready').hidden", "shopping ready")
	noSideScroll(t, w, "wallet-shop")
	walletShot(t, w, "wallet-shop")

	// The wallet on the device: the sealing key is a non-extractable
	// AES-GCM CryptoKey, and what is stored is ciphertext only.
	sealed := eval[string](t, w, `new Promise(function(res){var rq=indexedDB.open('qshield-wallet',1);rq.onsuccess=function(){var s=rq.result.transaction('kv').objectStore('kv');
		var k=s.get('sv-seal-key');k.onsuccess=function(){var b=s.get('sv-wallet');b.onsuccess=function(){var key=k.result,box=b.result;
		res(key.type+' '+key.algorithm.name+' extractable='+key.extractable+' box='+Object.keys(box).sort().join(',')+' '+(box.ct instanceof ArrayBuffer)+' '+(new TextDecoder().decode(box.ct).indexOf('alice-shopper')<0))}}}})`)
	if sealed != "secret AES-GCM extractable=false box=ct,iv true true" {
		t.Errorf("sealed wallet: %s", sealed)
	}

	// Withdraw W = 300.00: it moves into escrow.
	do(t, w, "withdraw", chromedp.SendKeys(chromedp.CSS("#shop-wd-amount"), "300.00"), chromedp.Click(chromedp.CSS("#shop-wd-submit")))
	statusText(t, w, "is ready until")
	waitJS(t, w, "document.getElementById('shop-left').textContent === '300.00 CNY'", "prepaid balance shown")
	wantBalance(t, p.Ledger, "sv-alice", 200_00)
	wantBalance(t, p.Ledger, escrow, 300_00)

	// The phone is reopened: the sealed wallet is opened again (its keys
	// re-checked, d_U·G = e·P_U + Q_N) and the token is still there.
	do(t, w, "reload", chromedp.Reload())
	waitJS(t, w, "document.body.dataset.view === 'home'", "home after reload")
	do(t, w, "open shopping", chromedp.Click(chromedp.CSS("#shop")))
	waitJS(t, w, "!document.getElementById('shop-ready').hidden && document.getElementById('shop-left').textContent === '300.00 CNY'", "the unsealed token after reload")

	// Pay the shop by scanning its code.
	pay := func(i int) (string, time.Duration, int) {
		t0 := time.Now()
		do(t, w, "scan the shop's code", chromedp.Click(chromedp.CSS("#shop-scan")))
		waitJS(t, w, "document.body.dataset.view === 'shoppay' && !document.getElementById('shoppay-pay').disabled || document.body.dataset.view === 'result'", "the shop's price")
		if got := text(t, w, "#shoppay-vendor") + " / " + text(t, w, "#shoppay-price"); got != "shop-1 / 12.00 CNY" {
			t.Fatalf("payment %d: the wallet shows %q", i, got)
		}
		if i == 0 {
			noSideScroll(t, w, "wallet-shoppay")
			walletShot(t, w, "wallet-shoppay")
		}
		do(t, w, "pay the shop", chromedp.Click(chromedp.CSS("#shoppay-pay")))
		waitJS(t, w, "document.body.dataset.view === 'result'", "payment result")
		r := eval[string](t, w, "document.body.dataset.result + ': ' + document.getElementById('result-text').textContent")
		d := time.Since(t0)
		ms, _ := strconv.Atoi(eval[string](t, w, "document.body.dataset.payMs || '0'"))
		do(t, w, "done", chromedp.Click(chromedp.CSS("#result-done")), chromedp.Click(chromedp.CSS("#shop")))
		return r, d, ms
	}
	// Record what leaves the page, to replay it later.
	eval[bool](t, w, `(function(){var f=window.fetch;window.recorded=[];window.fetch=function(u,init){window.recorded.push({url:String(u),init:init});return f(u,init)};return true})()`)
	n := 3
	if v, err := strconv.Atoi(os.Getenv("QSHIELD_WALLET_BENCH")); err == nil && v >= 3 && v <= 20 {
		n = v
	}
	var times []time.Duration
	var reqMs []int
	for i := 0; i < n; i++ {
		r, d, ms := pay(i)
		if r != "paid: You paid 12.00 CNY to shop-1 for A cup of coffee. Enjoy your coffee." {
			t.Fatalf("payment %d: %s", i, r)
		}
		times, reqMs = append(times, d), append(reqMs, ms)
	}
	if got := vendorPayments(t, vendor); got != n {
		t.Fatalf("the shop recorded %d payments, want %d", got, n)
	}
	waitJS(t, w, fmt.Sprintf("document.getElementById('shop-left').textContent === %q", formatCNY(int64(300_00-n*12_00))+" CNY"), "prepaid balance after the payments")

	// Attack: the payment is changed on the way to the shop (one bit of
	// its ciphertext). The shop cannot open it and refuses; the wallet says
	// so in words; nothing is reserved or recorded. The burnt chain key is
	// skipped and the next payment goes through.
	eval[bool](t, w, `(function(){var f=window.fetch;window.fetch=function(u,init){
		if(String(u).indexOf('/v1/vendor/pay')>0 && init && init.body){var m=JSON.parse(init.body);var b=atob(m.ciphertext);
		m.ciphertext=btoa(String.fromCharCode(b.charCodeAt(0)^1)+b.slice(1));init=Object.assign({},init,{body:JSON.stringify(m)});window.fetch=f}
		return f(u,init)};return true})()`)
	r, _, _ := pay(n)
	if !strings.HasPrefix(r, "refused: ") || !strings.Contains(r, "changed on the way") || !strings.Contains(r, "Nothing was paid") {
		t.Fatalf("tampered payment: %s", r)
	}
	if got := vendorPayments(t, vendor); got != n {
		t.Fatalf("a tampered payment was recorded: %d payments", got)
	}
	t.Logf("tampered payment, as the wallet shows it: %q", strings.TrimPrefix(r, "refused: "))
	if r, _, _ := pay(n + 1); r != "paid: You paid 12.00 CNY to shop-1 for A cup of coffee. Enjoy your coffee." {
		t.Fatalf("payment after the tampered one: %s", r)
	}

	// Replay: a recorded payment sent again byte for byte gets the shop's
	// stored answer back and moves nothing (no second payment, no new
	// reservation).
	replayed := eval[string](t, w, `(async function(){var r=window.recorded.filter(function(x){return x.url.indexOf('/v1/vendor/pay')>0})[0];
		var resp=await fetch(r.url,r.init);return String(resp.status)})()`)
	if got := vendorPayments(t, vendor); got != n+1 {
		t.Fatalf("after a replay (answered %s) the shop has %d payments, want %d", replayed, got, n+1)
	}
	paid := int64(n+1) * 12_00

	// The shop deposits; the wallet confirms the payments it made, and
	// only then is the shop paid from escrow.
	dep, err := vendor.Deposit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deposit %s: %+v", dep.ID, dep)
	wantBalance(t, p.Ledger, "sv-shop", 0)
	do(t, w, "confirm deposits", chromedp.Click(chromedp.CSS("#shop-confirm")))
	waitJS(t, w, "document.querySelectorAll('#shop-answers li').length > 0", "confirmation answers")
	if got, want := text(t, w, "#shop-answers li"), fmt.Sprintf("You confirmed %s CNY to shop-1 (%d payments you made).", formatCNY(paid), n+1); got != want {
		t.Errorf("confirmation shown as %q", got)
	}
	noRawJSON(t, w, "wallet shopping")
	walletShot(t, w, "wallet-shop-confirmed")
	wantBalance(t, p.Ledger, "sv-shop", paid)
	wantBalance(t, p.Ledger, escrow, 300_00-paid)
	wantBalance(t, p.Ledger, "sv-alice", 200_00)

	// Nothing is left to confirm.
	do(t, w, "confirm again", chromedp.Click(chromedp.CSS("#shop-confirm")))
	statusText(t, w, "No shop is waiting")

	// The first payment includes starting the camera and K_UV; later ones
	// step the chain.
	first := times[0]
	later, laterMs := slices.Clone(times[1:]), slices.Clone(reqMs[1:])
	slices.Sort(later)
	slices.Sort(laterMs)
	t.Logf("BENCH wallet selfverify path: first payment (camera start, K_UV) %v scan→Paid, svPay %d ms; %d later payments (chain step) scan→Paid median %v max %v, svPay median %d ms max %d ms",
		first.Round(time.Millisecond), reqMs[0], len(later), later[len(later)/2].Round(time.Millisecond), later[len(later)-1].Round(time.Millisecond),
		laterMs[len(laterMs)/2], laterMs[len(laterMs)-1])

	// The peer in the same run: the CLI phone's code (selfverify.User over
	// OperatorClient and VendorClient, HTTPS) paying the same shop.
	fundedAccount(t, p, "sv-bob", 500_00)
	bobCode, err := op.Enroll(ctx, "bob-shopper", selfverify.RoleUser, "sv-bob")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.CA.Certificate())
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	oc, err := selfverify.NewOperatorClient(base, hc)
	if err != nil {
		t.Fatal(err)
	}
	vc, err := selfverify.NewVendorClient(vendorURL, hc)
	if err != nil {
		t.Fatal(err)
	}
	bcred, err := selfverify.Register(ctx, oc, nil, "bob-shopper", selfverify.RoleUser, bobCode)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := selfverify.OpenUser(selfverify.NewWallet(bcred), oc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Withdraw(ctx, 300_00, 0); err != nil {
		t.Fatal(err)
	}
	var cli []time.Duration
	for i := 0; i < 20; i++ {
		t0 := time.Now()
		if _, err := bob.Pay(ctx, vc, "coffee"); err != nil {
			t.Fatalf("CLI user payment %d: %v", i, err)
		}
		cli = append(cli, time.Since(t0))
	}
	cliFirst := cli[0]
	cli = cli[1:]
	slices.Sort(cli)
	t.Logf("BENCH CLI user (selfverify.User over HTTPS) same run: first payment %v; %d later payments median %v max %v",
		cliFirst.Round(100*time.Microsecond), len(cli), cli[len(cli)/2].Round(100*time.Microsecond), cli[len(cli)-1].Round(100*time.Microsecond))
}

func wantBalance(t *testing.T, l *ledger.Ledger, id string, want int64) {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if errors.Is(err, ledger.ErrAccountNotFound) && want == 0 {
		return
	}
	if err != nil {
		t.Fatalf("account %s: %v", id, err)
	}
	if a.Balance != want {
		t.Fatalf("account %s holds %d, want %d", id, a.Balance, want)
	}
}

func vendorPayments(t *testing.T, v *selfverify.Vendor) int {
	t.Helper()
	ps, err := v.Payments(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(ps)
}
