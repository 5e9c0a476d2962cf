// Package browsertest drives a real Chromium (Debian's package) through
// chromedp against a running platform: the operator console with passkeys
// from a virtual authenticator, and the pages payers and merchants see.
//
// Chromium refuses WebAuthn on pages with certificate errors, so the browser
// runs with its own HOME whose NSS database trusts the platform CA (certutil,
// from libnss3-tools). Tests skip with a message when chromium or certutil is
// missing, unless QSHIELD_TEST_BROWSER=1 (CI), in which case they fail.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// EnvRequire makes missing browser tools a failure instead of a skip.
const EnvRequire = "QSHIELD_TEST_BROWSER"

// Browser starts Chromium with a fresh profile whose NSS database trusts
// caPEM, and returns a context for new tabs (NewTab). The browser stops when
// the test ends. extra adds command-line flags (FakeCamera).
func Browser(t testing.TB, caPEM []byte, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	certutil, cerr := exec.LookPath("certutil")
	if bin == "" || cerr != nil {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%s is set but chromium (%q) or certutil (%v) is missing: apt-get install chromium libnss3-tools", EnvRequire, bin, cerr)
		}
		t.Skip("chromium or certutil not installed (apt-get install chromium libnss3-tools); set " + EnvRequire + "=1 to require them")
	}
	home := t.TempDir()
	nss := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(nss, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(home, "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-d", "sql:" + nss, "-N", "--empty-password"},
		{"-d", "sql:" + nss, "-A", "-t", "C,,", "-n", "qshield-test", "-i", ca},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.Env("HOME="+home),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// Start the browser on a context without a deadline (see chromedp.Run).
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx
}

// NewTab opens a new tab in the browser of bctx, in a browser context of its
// own (cookies and storage not shared: another person at another device);
// every action in it has the timeout d.
func NewTab(t testing.TB, bctx context.Context, d time.Duration) context.Context {
	t.Helper()
	tctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(tctx, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		t.Fatalf("new tab: %v", err)
	}
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(tctx, d)
	t.Cleanup(cancelT)
	return ctx
}

// Front brings tab's page to the front of its window. Chromium draws only
// the page in front: a screenshot of another waits for a frame that does
// not come, and a hidden page's timers and camera frames are throttled. A
// test working in two tabs (a POS page and the wallet filming it) brings
// the one it uses to the front first.
func Front(tab context.Context) error {
	_, err := chromedp.Call(tab, page.BringToFront, cdp.Empty{})
	return err
}

// ShootElement brings tab to the front and screenshots the element sel,
// waiting at most d for it to be visible and drawn.
func ShootElement(tab context.Context, sel string, d time.Duration) ([]byte, error) {
	if err := Front(tab); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel), chromedp.NodeVisible))
}
