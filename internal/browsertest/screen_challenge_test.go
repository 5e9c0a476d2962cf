package browsertest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"image"
	"image/draw"
	"image/png"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/qshield/qshield/internal/browsertest"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/scan"
	"github.com/qshield/qshield/watermark/service"
)

// scannerTill opens the browser scanner page (/scanner/) in a tab of bctx
// and registers it as watermark scanner name for account.
func scannerTill(t *testing.T, p *platform.Platform, bctx context.Context, base, name, account string) context.Context {
	t.Helper()
	ctx := context.Background()
	s := browsertest.NewTab(t, bctx, 10*time.Minute)
	do(t, s, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1), chromedp.EmulateMobile))
	do(t, s, "open scanner", chromedp.Navigate(base+"/scanner/"))
	waitJS(t, s, "document.body.dataset.view === 'setup' && document.getElementById('setup-key').value.length > 0", "scanner setup")
	spki, err := base64.StdEncoding.DecodeString(eval[string](t, s, "document.getElementById('setup-key').value"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := p.EnrolWatermarkDevice(ctx, name, "scanner", account, "", pub)
	if err != nil {
		t.Fatal(err)
	}
	do(t, s, "device number", chromedp.SendKeys(chromedp.CSS("#setup-id"), sc.Cert.SerialNumber.Text(16)), chromedp.Click(chromedp.CSS("#setup-submit")))
	waitJS(t, s, "document.body.dataset.view === 'charge'", "charge form")
	return s
}

// screenFrameJS returns the frame the screen page shows, as a PNG data URL
// ("" while the image is loading).
const screenFrameJS = `(function(){var i=document.getElementById('code');if(!i||!i.complete||!i.naturalWidth)return '';
var c=document.createElement('canvas');c.width=i.naturalWidth;c.height=i.naturalHeight;c.getContext('2d').drawImage(i,0,0);return c.toDataURL('image/png');})()`

// greyCamera writes a film of plain grey to path: a camera that sees no
// code yet.
func greyCamera(t *testing.T, path string, fps int) {
	t.Helper()
	grey := browsertest.Frame(image.NewGray(image.Rect(0, 0, 2, 2)), 640, 480, 0, 128)
	if err := browsertest.WriteY4MFile(path, []image.Image{grey, grey}, fps); err != nil {
		t.Fatal(err)
	}
}

// filmChallenges writes to path what a phone's front camera sees when held
// to a scanner whose challenge key is key: its challenges from slot s0 on,
// five camera frames a slot, for 40 slots.
func filmChallenges(t *testing.T, path string, key []byte, s0 int64) {
	t.Helper()
	var frames []image.Image
	for i := 0; i < 5*40; i++ {
		q, err := qrimg.Encode(watermark.ChallengeAt(key, s0+int64(i/5)).String(), qrimg.M)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, browsertest.Frame(q.Image(1), 320, 240, 0.85, 200))
	}
	if err := browsertest.WriteY4MFile(path, frames, 5); err != nil {
		t.Fatal(err)
	}
}

// readBoundLoop reads the frames page w draws (frameJS returns one as a
// PNG data URL, "" while there is none) until they hold a code with
// watermark.MinBoundStamps bound stamps, what a scanner that shows a
// challenge waits for, reading at most limit frames. It returns the
// distinct frames in the order seen and how many stamps are bound.
func readBoundLoop(t *testing.T, w context.Context, frameJS string, limit int) (loop []*image.Gray, bound, stamps int) {
	t.Helper()
	sess, err := scan.NewSession(watermark.DefaultParams(), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	sess.RequireBound = true
	seen := map[[32]byte]bool{}
	var res *scan.Result
	for i := 0; res == nil; i++ {
		if i > limit {
			t.Fatalf("no bound reconstruction after %d reads of the page: %+v", i, sess.Stats())
		}
		url := eval[string](t, w, frameJS)
		if url == "" {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(url, "data:image/png;base64,"))
		if err != nil {
			t.Fatal(err)
		}
		f, err := png.Decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		g := image.NewGray(f.Bounds())
		draw.Draw(g, g.Bounds(), f, f.Bounds().Min, draw.Src)
		if h := sha256.Sum256(g.Pix); !seen[h] {
			seen[h] = true
			loop = append(loop, g)
		}
		ev, err := sess.Add(context.Background(), g)
		if err != nil {
			t.Fatal(err)
		}
		res = ev.Result
	}
	for _, st := range res.Stamps {
		if st.Bound {
			bound++
		}
	}
	return loop, bound, len(res.Stamps)
}

// filmLoopForScanners films loop, shown on a phone's screen, with the
// camera simulator's close-scan profile 11 cm away (setup from seed, noise
// from seed+1) into a 30 fps Y4M at path for the scanners' camera, and
// returns the number of camera frames.
func filmLoopForScanners(t *testing.T, loop []*image.Gray, path string, seed uint64) int {
	t.Helper()
	prof := camsim.CloseScan()
	setup, err := prof.Draw(rand.New(rand.NewPCG(18, seed)), 0, 110)
	if err != nil {
		t.Fatal(err)
	}
	film, err := setup.Camera.NewSession(&camsim.Scene{Display: prof.Display, Frames: loop, FrameRate: watermark.DefaultParams().FrameRate}, setup.Pose)
	if err != nil {
		t.Fatal(err)
	}
	noise := rand.New(rand.NewPCG(18, seed+1))
	n := 2*len(loop) + 2
	captureFilm(t, film, n, noise, path)
	return n
}

// captureFilm writes n frames of film, captured at 30 frames a second with
// noise, as a 30 fps Y4M at path (a scanner's camera).
func captureFilm(t *testing.T, film *camsim.Session, n int, noise *rand.Rand, path string) {
	t.Helper()
	var frames []image.Image
	for i := 0; i < n; i++ {
		g, err := film.Capture(time.Duration(i)*time.Second/30, noise)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, g)
	}
	if err := browsertest.WriteY4MFile(path, frames, 30); err != nil {
		t.Fatal(err)
	}
}

// chargeAtTill charges 12.34 at scanner page s, which scans what its
// camera films, and returns "paid: …" or "refused: …" as the page says.
func chargeAtTill(t *testing.T, s context.Context, what string) string {
	t.Helper()
	do(t, s, what, chromedp.SetValue(chromedp.CSS("#charge-amount"), "12.34"), chromedp.Click(chromedp.CSS("#charge-scan")))
	t0 := time.Now()
	waitJS(t, s, "document.body.dataset.view === 'result'", what+": result")
	r := eval[string](t, s, "document.body.dataset.result + ': ' + document.getElementById('result-text').textContent")
	t.Logf("%s: %q after %v (scan to answer; in the page: %s camera frames read in %s ms until the code was rebuilt, payment request %s ms)", what, r, time.Since(t0).Round(time.Millisecond),
		eval[string](t, s, "document.body.dataset.scanFrames || '?'"), eval[string](t, s, "document.body.dataset.scanMs || '?'"), eval[string](t, s, "document.body.dataset.payMs || '-'"))
	return r
}

// TestWatermarkScreenBindsToScannerChallenge is issue 18 for the
// platform's screen page (/watermark/screen/{id}/), with challenges on as
// the platform's default:
//
//   - the merchant scanner page (/scanner/, tills A and B, each its own key)
//     shows its rotating challenge;
//   - the payer's phone asks for a code (its certificate) and opens the
//     code's screen page, whose front camera films A's challenges for the
//     coming slots (a Y4M rendered from watermark.ChallengeAt, one slot a
//     second); the page decodes them in WebAssembly and posts them to its
//     server, which binds the frames it renders to them;
//   - the frames the page shows are filmed (camera simulator, close-scan
//     profile) and played to the scanners' camera: at till B the film is
//     refused in words ("shown to another scanner") and moves no money; at
//     till A it pays, and the screen says "Paid".
//
// Without the page's camera (or the server's binding) the film is refused
// at till A as "not shown to this scanner". The window is widened to 2
// minutes as in TestWalletBindsToScannerChallenge: headless browsers on a
// loaded machine are far slower than a phone and a scanner, and the front
// camera's film starts only when the page opens the camera.
func TestWatermarkScreenBindsToScannerChallenge(t *testing.T) {
	p, base, _ := runPlatformWindow(t, watermark.Window{MaxAge: 2 * time.Minute, MaxLead: 2 * time.Second})
	ctx := context.Background()
	start := time.Now()
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: "sc-shop", Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	phoneAPI := watermarkPhone(t, p, base, "sc-payer", "sc-phone")
	caPEM := pki.EncodeCertPEM(p.CA.Certificate())
	dir := t.TempDir()

	// The scanners' camera: grey until the payer's code is filmed.
	scanCam := filepath.Join(dir, "scanner.y4m")
	greyCamera(t, scanCam, 30)
	sbctx := browsertest.Browser(t, caPEM, browsertest.FakeCamera(scanCam)...)
	tillA, tillB := scannerTill(t, p, sbctx, base, "sc-till-A", "sc-shop"), scannerTill(t, p, sbctx, base, "sc-till-B", "sc-shop")
	keyA, err := p.Watermark.ChallengeKey("sc-till-A")
	if err != nil {
		t.Fatal(err)
	}

	// The payer's phone, held to till A: its front camera films A's
	// challenges from the current slot on, five camera frames a slot
	// (Chromium opens the file when the page starts capturing).
	frontCam := filepath.Join(dir, "front.y4m")
	s0 := watermark.SlotAt(time.Now())
	filmChallenges(t, frontCam, keyA, s0)
	pbctx := browsertest.Browser(t, caPEM, browsertest.FakeCamera(frontCam)...)
	w := browsertest.NewTab(t, pbctx, 10*time.Minute)
	do(t, w, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1), chromedp.EmulateMobile))
	var code service.CodeResponse
	if _, err := phoneAPI.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, map[string]int64{"limit": 50_00}, &code); err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	t.Logf("the payer's code is issued %v into the test", time.Since(start).Round(time.Second))
	do(t, w, "open the screen", chromedp.Navigate(base+code.Screen), chromedp.WaitVisible(chromedp.CSS("#code")))
	waitJS(t, w, "document.body.dataset.camera === 'on'", "the front camera")
	camera := time.Since(issued)
	waitJS(t, w, "document.body.dataset.bound === '1'", "the screen bound to till A's challenge")
	t.Logf("after the code was issued: front camera on %v, frames bound to till A's challenge %v (polled every 150 ms); the camera's film started %v after its first slot",
		camera.Round(time.Millisecond), time.Since(issued).Round(time.Millisecond), time.Since(watermark.SlotStart(s0)).Round(time.Second))
	if got := text(t, w, "#note"); got != "The scanner has been recognised." {
		t.Errorf("the screen says %q once bound", got)
	}
	if got := text(t, w, "#status"); !strings.Contains(got, "front camera") || !strings.Contains(got, "at most 50.00 CNY") {
		t.Errorf("the screen's status %q", got)
	}
	noSideScroll(t, w, "watermark-screen-bound")
	noRawJSON(t, w, "watermark screen bound")
	walletShot(t, w, "watermark-screen-bound")

	// The frames the page shows, until they hold a code bound to till A.
	loop, bound, stamps := readBoundLoop(t, w, screenFrameJS, 600)
	t.Logf("the screen's loop: %d distinct frames read, %d of %d stamps bound, %v after the code was issued", len(loop), bound, stamps, time.Since(issued).Round(time.Second))
	// The phone is another device: its page stops so that it does not take
	// the scanners' CPU.
	do(t, w, "leave the screen", chromedp.Navigate("about:blank"))

	// The scanners' camera films the loop 11 cm from the phone's screen.
	nf := filmLoopForScanners(t, loop, scanCam, 5)
	t.Logf("the scanners' film: %d camera frames, ready %v after the code was issued", nf, time.Since(issued).Round(time.Second))

	charge := func(s context.Context, what string) string {
		r := chargeAtTill(t, s, what)
		t.Logf("%s: answered %v after the code was issued", what, time.Since(issued).Round(time.Second))
		return r
	}
	// The film of the screen bound to till A, played to till B: refused.
	if r := charge(tillB, "the film at till B"); !strings.HasPrefix(r, "refused: ") || !strings.Contains(r, "another scanner") {
		t.Fatalf("the screen's film bound to till A, at till B: %s", r)
	}
	noRawJSON(t, tillB, "scanner refusal")
	if a, _ := p.Ledger.Account(ctx, "sc-payer"); a.Balance != 100_00 {
		t.Fatal("the relay moved money")
	}
	// At till A, the scanner the screen's camera saw: paid.
	if r := charge(tillA, "the film at till A"); r != "paid: Paid 12.34 CNY." {
		t.Fatalf("till A: %s", r)
	}
	payer, _ := p.Ledger.Account(ctx, "sc-payer")
	shop, _ := p.Ledger.Account(ctx, "sc-shop")
	if payer.Balance != 100_00-12_34 || shop.Balance != 12_34 {
		t.Fatalf("after the payment: payer %d, shop %d", payer.Balance, shop.Balance)
	}
	// The screen says so, and its camera is off.
	do(t, w, "back to the screen", chromedp.Navigate(base+code.Screen), chromedp.WaitVisible(chromedp.CSS("#status")))
	if got := statusText(t, w, "Paid"); got != "Paid. Thank you!" {
		t.Fatalf("after the payment the screen says %q", got)
	}
	waitJS(t, w, "document.body.dataset.camera !== 'on'", "the camera off once paid")
	noRawJSON(t, w, "paid watermark screen")
}

// TestWatermarkScreenWithoutCamera: a phone whose page cannot use a front
// camera (none, or the permission refused) is told in words, at 390 px,
// that the scanner will refuse its code and what to do; the code still
// loops. (With challenges off the page runs no camera script at all:
// watermark/service TestScreenChallengeRefusals.)
func TestWatermarkScreenWithoutCamera(t *testing.T) {
	p, base := startPlatform(t)
	ctx := context.Background()
	caPEM := pki.EncodeCertPEM(p.CA.Certificate())
	phoneAPI := watermarkPhone(t, p, base, "nc-payer", "nc-phone")
	for _, tc := range []struct {
		name  string
		flags []chromedp.ExecAllocatorOption
		state string
		says  string
	}{
		// Headless Chromium without a fake device has no camera.
		{"no camera", nil, "none", "no front camera"},
		{"permission refused", []chromedp.ExecAllocatorOption{chromedp.Flag("use-fake-device-for-media-stream", true), chromedp.Flag("deny-permission-prompts", true)}, "denied", "may not use the camera"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bctx := browsertest.Browser(t, caPEM, tc.flags...)
			tab := browsertest.NewTab(t, bctx, 3*time.Minute)
			do(t, tab, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
			var code service.CodeResponse
			if _, err := phoneAPI.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, map[string]int64{"limit": 20_00}, &code); err != nil {
				t.Fatal(err)
			}
			do(t, tab, "open the screen", chromedp.Navigate(base+code.Screen), chromedp.WaitVisible(chromedp.CSS("#code")))
			waitJS(t, tab, "!!document.body.dataset.camera", "the camera's answer")
			if got := eval[string](t, tab, "document.body.dataset.camera"); got != tc.state {
				t.Errorf("camera state %q, want %q", got, tc.state)
			}
			note := text(t, tab, "#note")
			if !strings.Contains(note, tc.says) || !strings.Contains(note, "scanner will refuse this code") || !strings.Contains(note, "qshield wallet") {
				t.Errorf("the screen says %q", note)
			}
			first := eval[string](t, tab, "document.getElementById('code').src")
			waitJS(t, tab, "document.getElementById('code').src !== '"+first+"'", "the next frame")
			noSideScroll(t, tab, "watermark-screen-"+tc.state)
			noRawJSON(t, tab, "watermark screen without camera")
			walletShot(t, tab, "watermark-screen-"+strings.ReplaceAll(tc.name, " ", "-"))
		})
	}
}
