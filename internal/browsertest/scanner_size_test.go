package browsertest_test

import (
	"context"
	"image"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/service"
)

// TestScannerReadsFarCodeAtFullSize: the browser scanner reads camera
// frames of 1280×720 and more at half size while that brings shares of the
// code (a phone 10–14 cm away), and falls back to full size when it does
// not. At 16 cm the close-scan camera sees the code at about 9 px per
// module, so half-size frames fall below the scanner's floor of 5 px per
// module and every one is refused (0 of 24 in Go; full size 24 of 24): the
// scanner must pay from full-size frames, and say so (data-scan-size).
// Fails if the page kept reading half-size frames. Challenges off, as in
// TestScannerReadsWatermarkLoop; the window is widened for the loaded
// machine.
func TestScannerReadsFarCodeAtFullSize(t *testing.T) {
	p, base, _ := runPlatform(t, func(c *platform.Config) {
		c.WatermarkWindow = watermark.Window{MaxAge: 60 * time.Second, MaxLead: 2 * time.Second}
		c.WatermarkChallengesOff = true
	})
	ctx := context.Background()
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "far-shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	phone := watermarkPhone(t, p, base, "far-payer", "far-phone")
	cam := filepath.Join(t.TempDir(), "loop.y4m")
	grey := browsertest.Frame(image.NewGray(image.Rect(0, 0, 2, 2)), 640, 480, 0, 128)
	if err := browsertest.WriteY4MFile(cam, []image.Image{grey, grey}, 30); err != nil {
		t.Fatal(err)
	}
	bctx := browsertest.Browser(t, pki.EncodeCertPEM(p.CA.Certificate()), browsertest.FakeCamera(cam)...)
	s := scannerTill(t, p, bctx, base, "far-till", "far-shop")

	var code service.CodeResponse
	if _, err := phone.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, map[string]int64{"limit": 50_00}, &code); err != nil {
		t.Fatal(err)
	}
	loop, err := watermark.NewLoop(code.Token, code.SlotKey, watermark.DefaultParams(), nil)
	if err != nil {
		t.Fatal(err)
	}
	prof := camsim.CloseScan()
	setup, err := prof.Draw(rand.New(rand.NewPCG(18, 5)), 0, 160)
	if err != nil {
		t.Fatal(err)
	}
	scene := &camsim.Scene{Display: prof.Display, Frames: loop.Frames(watermark.SlotAt(time.Now())), FrameRate: watermark.DefaultParams().FrameRate}
	film, err := setup.Camera.NewSession(scene, setup.Pose)
	if err != nil {
		t.Fatal(err)
	}
	noise := rand.New(rand.NewPCG(18, 6))
	captureFilm(t, film, 30, noise, cam)
	do(t, s, "charge", chromedp.SetValue(chromedp.CSS("#charge-amount"), "12.34"), chromedp.Click(chromedp.CSS("#charge-scan")))
	t0 := time.Now()
	// A page that never falls back to full size never pays: give up
	// after 2 minutes rather than the tab's 10.
	wctx, cancel := context.WithTimeout(s, 2*time.Minute)
	defer cancel()
	waitJS(t, wctx, "document.body.dataset.view === 'result'", "result")
	r := eval[string](t, s, "document.body.dataset.result + ': ' + document.getElementById('result-text').textContent")
	t.Logf("a code 16 cm from the camera: %q after %v (in the page: %s camera frames read in %s ms, the last at %s size)", r, time.Since(t0).Round(time.Millisecond),
		eval[string](t, s, "document.body.dataset.scanFrames || '?'"), eval[string](t, s, "document.body.dataset.scanMs || '?'"), eval[string](t, s, "document.body.dataset.scanSize || '?'"))
	if r != "paid: Paid 12.34 CNY." {
		t.Fatalf("scanner: %s", r)
	}
	if got := eval[string](t, s, "document.body.dataset.scanSize"); got != "full" {
		t.Fatalf("the code 16 cm away was rebuilt from a %q frame", got)
	}
}
