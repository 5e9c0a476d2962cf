package browsertest_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"image"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/service"
)

// TestScannerReadsWatermarkLoop: the merchant scanner page films a payer's
// looping watermark code through Chromium's fake camera (a Y4M of the
// loop, stamped with the current slot, filmed through the camera
// simulator), reconstructs the token
// frame by frame in WebAssembly, and pays with a request signed by its own
// key, registered by the administrator; the same recording played again
// is refused in words and moves no money. Scanner challenges are off (the
// opt-out): the page then shows no challenge and takes unbound shares
// (TestWalletBindsToScannerChallenge runs them on).
func TestScannerReadsWatermarkLoop(t *testing.T) {
	p, base, _ := runPlatform(t, func(c *platform.Config) {
		c.WatermarkWindow = watermark.Window{MaxAge: 60 * time.Second, MaxLead: 2 * time.Second}
		c.WatermarkChallengesOff = true
	})
	ctx := context.Background()
	fundedAccount(t, p, "scan-payer", 100_00)
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "scan-shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	// The payer's phone (the CLI's way, certificate) asks for a code.
	pc, err := p.BioQR.IssueEnrolmentCode(ctx, "test", "scan-payer")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := p.EnrolWatermarkDevice(ctx, "scan-payer-phone", "phone", "scan-payer", pc.Code, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.TLSCertificate(iss)
	if err != nil {
		t.Fatal(err)
	}
	phone := client.New(base, p.ClientTLS(ctx, cert))
	defer phone.Close()
	// The scanner's camera: grey until the code is filmed (Chromium opens
	// the file when the page starts capturing). The browser and the
	// scanner's registration come first: a code lives 60 s, and on a loaded
	// machine they take longer than that.
	cam := filepath.Join(t.TempDir(), "loop.y4m")
	grey := browsertest.Frame(image.NewGray(image.Rect(0, 0, 2, 2)), 640, 480, 0, 128)
	if err := browsertest.WriteY4MFile(cam, []image.Image{grey, grey}, 30); err != nil {
		t.Fatal(err)
	}
	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()), browsertest.FakeCamera(cam)...)
	s := browsertest.NewTab(t, bctx, 4*time.Minute)
	do(t, s, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1), chromedp.EmulateMobile))
	do(t, s, "open scanner", chromedp.Navigate(base+"/scanner/"))
	waitJS(t, s, "document.body.dataset.view === 'setup' && document.getElementById('setup-key').value.length > 0", "scanner setup")
	noSideScroll(t, s, "scanner-setup")
	walletShot(t, s, "scanner-setup")
	// The administrator registers the key the page shows.
	spki, err := base64.StdEncoding.DecodeString(eval[string](t, s, "document.getElementById('setup-key').value"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := p.EnrolWatermarkDevice(ctx, "scan-till-1", "scanner", "scan-shop", "", pub)
	if err != nil {
		t.Fatal(err)
	}
	do(t, s, "device number", chromedp.SendKeys(chromedp.CSS("#setup-id"), sc.Cert.SerialNumber.Text(16)), chromedp.Click(chromedp.CSS("#setup-submit")))
	waitJS(t, s, "document.body.dataset.view === 'charge'", "charge form")

	var code service.CodeResponse
	if _, err := phone.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, map[string]int64{"limit": 50_00}, &code); err != nil {
		t.Fatal(err)
	}
	loop, err := watermark.NewLoop(code.Token, code.SlotKey, watermark.DefaultParams(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The recording: the phone's loop (the current slot's frames at 15
	// frames/s) filmed through the camera simulator's close-scan profile (a
	// 1280×720 scanner camera 11 cm from the screen: perspective, panel
	// structure, optics and motion blur, rolling shutter, sensor noise,
	// JPEG), one second at 30 frames/s.
	prof := camsim.CloseScan()
	setup, err := prof.Draw(rand.New(rand.NewPCG(19, 3)), 0, 110)
	if err != nil {
		t.Fatal(err)
	}
	scene := &camsim.Scene{Display: prof.Display, Frames: loop.Frames(watermark.SlotAt(time.Now())), FrameRate: watermark.DefaultParams().FrameRate}
	film, err := setup.Camera.NewSession(scene, setup.Pose)
	if err != nil {
		t.Fatal(err)
	}
	noise := rand.New(rand.NewPCG(19, 4))
	captureFilm(t, film, 30, noise, cam)

	charge := func(what string) string { return chargeAtTill(t, s, what) }
	if r := charge("charge 12.34"); r != "paid: Paid 12.34 CNY." {
		t.Fatalf("scanner: %s", r)
	}
	if c := eval[string](t, s, "document.body.dataset.challenge"); c != "off" {
		t.Errorf("with challenges off the scanner page says its challenge is %q", c)
	}
	payer, _ := p.Ledger.Account(ctx, "scan-payer")
	shop, _ := p.Ledger.Account(ctx, "scan-shop")
	if payer.Balance != 100_00-12_34 || shop.Balance != 12_34 {
		t.Fatalf("after the scan: payer %d, shop %d", payer.Balance, shop.Balance)
	}
	noRawJSON(t, s, "scanner result")
	walletShot(t, s, "scanner-paid")

	// The same recording, played to the camera again later, is refused.
	do(t, s, "next customer", chromedp.Click(chromedp.CSS("#result-done")))
	if r := charge("replayed recording"); !strings.HasPrefix(r, "refused: ") || !strings.Contains(r, "already used") {
		t.Fatalf("replayed recording: %s", r)
	}
	walletShot(t, s, "scanner-refused")
	if p2, _ := p.Ledger.Account(ctx, "scan-payer"); p2.Balance != payer.Balance {
		t.Fatal("the replayed recording moved money")
	}
}
