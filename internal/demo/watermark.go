package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/internal/client"
	"github.com/qshield/qshield/internal/platform"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/service"
	"github.com/qshield/qshield/watermark/trial"
)

// Watermark is seed 003: a payer's looping watermarked code, scanned close
// up, pays; a single photo, a distant burst and a re-captured photo do not.
// The demo platform runs with scanner challenges on (watermark_challenges,
// the default):
// the scanner fetches its challenge key and shows its challenge, the
// simulated phone reads it 100 ms later (trial.Clock's challenge fields) and
// binds its stamps, and the same claim relayed to another shop's scanner is
// refused.
func Watermark() Scenario {
	return Scenario{Name: "watermark", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		r := &watermarkRun{ctx: ctx, env: env, p: env.P, sfx: suffix()}
		err := r.run()
		return r.rows, err
	}}
}

// watermarkRun is one run of the Watermark scenario: each phase is a
// method, and the state one phase leaves for the next is a field.
type watermarkRun struct {
	ctx  context.Context
	env  *Env
	p    *platform.Platform
	sfx  string
	rows []Row
	// payer pays shop; otherShop is where a thief relays the payer's code.
	payer, shop, otherShop       string
	phone, scanner, otherScanner *client.Client
	screen                       *http.Client                 // fetches the phone's screen frames
	ck                           service.ChallengeKeyResponse // the payer's scanner's challenge key
	rng                          *rand.Rand
	closeScan                    camsim.Profile
	// firstLoop is the first code's loop; res its close scan, paid at the
	// payer's scanner.
	firstLoop *watermark.Loop
	res       trial.PayResult
}

func (r *watermarkRun) expect(step string, err error, want, detail string) error {
	return Expect(&r.rows, step, err, want, detail)
}

func (r *watermarkRun) run() error {
	if err := r.enrol(); err != nil {
		return err
	}
	defer r.phone.Close()
	defer r.scanner.Close()
	defer r.otherScanner.Close()
	defer r.screen.CloseIdleConnections()
	for _, phase := range []func() error{r.challengeKey, r.showCode, r.scanClose, r.relayThenPay,
		r.overLimit, r.unboundRelay, r.lateRecording, r.thefts, r.balances} {
		if err := phase(); err != nil {
			return err
		}
	}
	return nil
}

// enrol creates and funds the accounts, enrols the payer's phone (with her
// consent), her shop's scanner and a second shop's scanner, and opens
// their clients.
func (r *watermarkRun) enrol() error {
	ctx, p, sfx := r.ctx, r.p, r.sfx
	r.payer, r.shop = "wm-payer-"+sfx, "wm-shop-"+sfx
	for _, a := range []ledger.NewAccount{
		{ID: "wm-bank-" + sfx, Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
		{ID: r.payer, Owner: "payer", Kind: ledger.KindUser, Currency: "CNY"},
		{ID: r.shop, Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"},
	} {
		if _, err := p.Ledger.CreateAccount(ctx, a); err != nil {
			return err
		}
	}
	if _, err := p.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: newKey("wm-fund"), From: "wm-bank-" + sfx, To: r.payer, Amount: 200_00, Currency: "CNY"}); err != nil {
		return err
	}
	consentCode, err := p.IssueEnrolmentCode(ctx, "demo", r.payer) // the payer's consent
	if err != nil {
		return err
	}
	phoneIss, err := p.EnrolWatermarkDevice(ctx, "wm-phone-"+sfx, "phone", r.payer, consentCode, nil)
	if err != nil {
		return err
	}
	scanIss, err := p.EnrolWatermarkDevice(ctx, "wm-scanner-"+sfx, "scanner", r.shop, "", nil)
	if err != nil {
		return err
	}
	// A second shop's scanner, where a thief relays the payer's code.
	r.otherShop = "wm-shop2-" + sfx
	if _, err := p.Ledger.CreateAccount(ctx, ledger.NewAccount{ID: r.otherShop, Owner: "shop2", Kind: ledger.KindMerchant, Currency: "CNY"}); err != nil {
		return err
	}
	otherIss, err := p.EnrolWatermarkDevice(ctx, "wm-scanner2-"+sfx, "scanner", r.otherShop, "", nil)
	if err != nil {
		return err
	}
	phoneCert, _ := pki.TLSCertificate(phoneIss)
	scanCert, _ := pki.TLSCertificate(scanIss)
	otherCert, _ := pki.TLSCertificate(otherIss)
	r.phone = client.New(r.env.URL, r.env.ClientTLS(phoneCert))
	r.scanner = client.New(r.env.URL, r.env.ClientTLS(scanCert))
	r.screen = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: r.env.ClientTLS(phoneCert)}}
	r.otherScanner = client.New(r.env.URL, r.env.ClientTLS(otherCert))
	return nil
}

// challengeKey: the scanner fetches its challenge key over its certificate
// and shows N(s) = HMAC(key, s) each second beside its window; a phone may
// not fetch it.
func (r *watermarkRun) challengeKey() error {
	_, err := r.scanner.Do(r.ctx, http.MethodGet, "/v1/watermark/challenge-key", nil, nil, &r.ck)
	if err == nil && len(r.ck.Key) != watermark.ChallengeKeyLen {
		err = fmt.Errorf("challenge key of %d bytes", len(r.ck.Key))
	}
	if err := r.expect("scanner fetches its challenge key and shows its challenge to the payer's front camera", err, "", "now "+watermark.ChallengeAt(r.ck.Key, watermark.SlotAt(r.ck.ServerTime)).String()+" (changes every second)"); err != nil {
		return err
	}
	var phoneKey service.ChallengeKeyResponse
	_, err = r.phone.Do(r.ctx, http.MethodGet, "/v1/watermark/challenge-key", nil, nil, &phoneKey)
	return r.expect("a phone asks for a scanner's challenge key", err, "forbidden", "only a scanner's certificate opens it")
}

// issue has the phone issue a code for at most limit.
func (r *watermarkRun) issue(limit int64) (*service.CodeResponse, *watermark.Loop, error) {
	var code service.CodeResponse
	if _, err := r.phone.Do(r.ctx, http.MethodPost, "/v1/watermark/codes", nil, service.CodeRequest{Limit: limit}, &code); err != nil {
		return nil, nil, err
	}
	loop, err := watermark.NewLoop(code.Token, code.SlotKey, r.p.Watermark.Params, nil)
	return &code, loop, err
}

// scanClock places a simulated scan. The simulated scan runs slower than
// real time on a busy machine; it is placed 1.5 s ahead so that its
// simulated capture time covers the wall time the simulation takes (the
// server accepts slots up to 2 s ahead and 2 s after they end).
// The phone reads the scanner's challenge 100 ms after it appears and binds
// every frame it shows from then on.
func (r *watermarkRun) scanClock() trial.Clock {
	return trial.Clock{Start: time.Now().Add(1500 * time.Millisecond), ScannerKey: r.ck.Key, ChallengeDelay: 100 * time.Millisecond, Scanner: "wm-scanner-" + r.sfx}
}

// freshScan scans loop close up at the payer's scanner. On a heavily
// loaded machine (the multi-node soak, load 20–30 on two cores) the
// simulation can fall more than scanClock's 1.5 s behind, and a genuine
// scan reached the server with stale stamps. A real camera does not lag:
// unless the simulated submission time is still ahead when the scan ends,
// the scan runs again placed ahead by the lag it measured plus a second
// for the submission itself; a scan that ends early waits for its
// simulated submission time. The server's window is unchanged.
func (r *watermarkRun) freshScan(loop *watermark.Loop) (trial.PayResult, error) {
	ck := r.scanClock()
	for attempt := 0; ; attempt++ {
		started := time.Now()
		res, err := trial.Pay(r.ctx, loop, r.closeScan, r.rng, 3*time.Second, ck)
		if err != nil || !res.OK || attempt == 3 {
			return res, err
		}
		if ahead := time.Until(res.Submitted); ahead > 200*time.Millisecond {
			// Submit at about the simulated time, not seconds early.
			select {
			case <-r.ctx.Done():
				return res, r.ctx.Err()
			case <-time.After(ahead - 200*time.Millisecond):
			}
			return res, nil
		}
		ck.Start = time.Now().Add(time.Since(started) - res.Elapsed + time.Second)
	}
}

// payScanned submits a scan of loop for amount at the payer's scanner. A
// genuine scan whose submission reached the server after the window (a
// slow request on a loaded machine) is refused with stale_shares, which
// consumes nothing and tells the scanner to scan again; the scanner does
// so, at most twice more.
func (r *watermarkRun) payScanned(res trial.PayResult, loop *watermark.Loop, amount int64, key string) (trial.PayResult, error) {
	for attempt := 0; ; attempt++ {
		err := r.payAmount(res, amount, fmt.Sprintf("%s-%d", key, attempt))
		var he *httpx.Error
		if err == nil || !errors.As(err, &he) || he.Code != "stale_shares" || attempt == 2 {
			return res, err
		}
		if res, err = r.freshScan(loop); err != nil {
			return res, err
		}
		if !res.OK {
			return res, fmt.Errorf("close scan recovered no token in %d frames", res.Frames)
		}
	}
}

// payAt submits a scan's token and stamps for amount at scanner sc.
func (r *watermarkRun) payAt(sc *client.Client, res trial.PayResult, amount int64, key string) error {
	_, err := sc.Do(r.ctx, http.MethodPost, "/v1/watermark/pay", map[string]string{"Idempotency-Key": key},
		service.PayRequest{Handle: res.Handle, Token: res.Token, Stamps: res.Stamps, Amount: amount, Currency: "CNY"}, nil)
	return err
}

// payAmount submits at the payer's own scanner.
func (r *watermarkRun) payAmount(res trial.PayResult, amount int64, key string) error {
	return r.payAt(r.scanner, res, amount, key)
}

// showCode: the phone gets a code and its screen loops the watermarked
// frames, each a standard QR code of T1.
func (r *watermarkRun) showCode() error {
	code, loop, err := r.issue(50_00)
	if err := r.expect("phone gets an original token T0 and slot key (60 s, single use, limit 50.00 CNY)", err, "", fmt.Sprintf("T1 = %s", handleOf(code))); err != nil {
		return err
	}
	frame, err := get(r.ctx, r.screen, r.env.URL+code.Screen+"frame/0.png")
	if err == nil {
		var text string
		text, err = qrimg.DecodePNG(bytes.NewReader(frame), 8<<20)
		if err == nil && text != code.Handle {
			err = fmt.Errorf("frame decodes to %q", text)
		}
	}
	wp := r.p.Watermark.Params
	if err := r.expect("screen loops the watermarked frames", err, "", fmt.Sprintf("%d shares at %v each, every share stamped with the current second, (t, n) = (%d, %d); each frame reads as T1 with a standard decoder", wp.Shares, wp.FramePeriod().Round(time.Millisecond), wp.Threshold, wp.Shares)); err != nil {
		return err
	}
	r.firstLoop = loop
	return nil
}

// scanClose: the merchant's scanner reads the loop close up, its stamps
// bound to its challenge.
func (r *watermarkRun) scanClose() error {
	r.rng = rand.New(rand.NewPCG(7, 3))
	r.closeScan = trial.WithDisplay(camsim.CloseScan(), r.p.Watermark.Params)
	res, err := r.freshScan(r.firstLoop)
	if err == nil && !res.OK {
		err = fmt.Errorf("close scan recovered no token in %d frames", res.Frames)
	}
	bound := 0
	for _, st := range res.Stamps {
		if st.Bound {
			bound++
		}
	}
	r.res = res
	return r.expect("merchant scanner reads the loop at 10–20 cm", err, "", fmt.Sprintf("%d frames, T0 rebuilt from %d shares (%d bound to this scanner's challenge) in %v (simulated camera)", res.Frames, r.p.Watermark.Params.Threshold, bound, res.Elapsed.Round(time.Millisecond)))
}

// relayThenPay: a thief films the payer's screen from close by and relays
// it live to another shop's scanner: what reaches it is at best exactly the
// frames the payer's scanner saw, T0 and stamps bound to that scanner's
// challenge. They do not verify under the other scanner's. The payer's
// scanner then pays, once.
func (r *watermarkRun) relayThenPay() error {
	err := r.payAt(r.otherScanner, r.res, 42_00, newKey("wm-relay"))
	if err := r.expect("thief relays the same frames live to another shop's scanner", err, "wrong_scanner", "the stamps are bound to the challenge of the scanner the payer held the phone to; the code is not consumed"); err != nil {
		return err
	}
	r.res, err = r.payScanned(r.res, r.firstLoop, 42_00, newKey("wm-pay"))
	if err := r.expect("scanner submits T0 and the shares' time stamps: 42.00 CNY paid", err, "", ""); err != nil {
		return err
	}
	err = r.payAmount(r.res, 42_00, newKey("wm-again"))
	return r.expect("the same code again", err, "code_used", "")
}

// overLimit: a code for at most 10.00 CNY cannot be charged 42.00.
func (r *watermarkRun) overLimit() error {
	_, small, err := r.issue(10_00)
	if err != nil {
		return err
	}
	over, err := r.freshScan(small)
	if err == nil && !over.OK {
		err = fmt.Errorf("close scan recovered no token in %d frames", over.Frames)
	}
	if err == nil {
		_, err = r.payScanned(over, small, 42_00, newKey("wm-over"))
	}
	return r.expect("scanner charges 42.00 CNY on a code the payer limited to 10.00", err, "over_limit", "refused; the code is not consumed")
}

// unboundRelay: a phone that reads no challenge (the payer is at no
// scanner, or shows the code in the browser screen page) stamps unbound
// shares: relayed to a scanner, or shown to one, they are refused.
func (r *watermarkRun) unboundRelay() error {
	_, loose, err := r.issue(50_00)
	if err != nil {
		return err
	}
	unboundCk := r.scanClock()
	unboundCk.ScannerKey, unboundCk.Scanner = nil, ""
	free, err := trial.Pay(r.ctx, loose, r.closeScan, r.rng, 3*time.Second, unboundCk)
	if err == nil && !free.OK {
		err = fmt.Errorf("close scan recovered no token in %d frames", free.Frames)
	}
	if err == nil {
		err = r.payAt(r.otherScanner, free, 42_00, newKey("wm-unbound"))
	}
	return r.expect("thief relays a code filmed away from any scanner (no challenge read)", err, "unbound_shares", "T0 rebuilt, but no share is bound to this scanner; the code is not consumed")
}

// lateRecording: a recording replayed later than the window: the scanner
// rebuilds T0, but the shares' stamps are too old.
func (r *watermarkRun) lateRecording() error {
	_, recorded, err := r.issue(50_00)
	if err != nil {
		return err
	}
	rec, err := trial.Pay(r.ctx, recorded, r.closeScan, r.rng, 3*time.Second, r.scanClock())
	if err == nil && !rec.OK {
		err = fmt.Errorf("close scan recovered no token in %d frames", rec.Frames)
	}
	if err == nil {
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-time.After(time.Until(rec.Submitted.Add(5 * time.Second))):
		}
		err = r.payAmount(rec, 42_00, newKey("wm-late"))
	}
	return r.expect("a close recording of the code replayed 5 s later", err, "stale_shares", "T0 rebuilt, but no share was shown within the window; the code is not consumed")
}

// thefts, each against a fresh, unused code: a single photo, a distant
// burst, stolen photos re-captured by a real scanner, and T1 with a
// guessed T0.
func (r *watermarkRun) thefts() error {
	ctx, wp := r.ctx, r.p.Watermark.Params
	code, loop, err := r.issue(50_00)
	if err != nil {
		return err
	}
	thief := trial.WithDisplay(camsim.OnSiteTheft(), wp)
	single, err := trial.OnSite(ctx, loop, thief, r.rng, 2, 1000, 1)
	if err == nil && single.OK {
		err = fmt.Errorf("a single photo recovered T0")
	}
	if err := theftRefused(&r.rows, "thief: one sharp photo at 1 m (2× lens)", err, fmt.Sprintf("%d of %d shares, T1 readable but worthless", single.Shares, wp.Threshold)); err != nil {
		return err
	}
	burst, err := trial.OnSite(ctx, loop, thief, r.rng, 0, 3000, 5)
	if err == nil && burst.OK {
		err = fmt.Errorf("a distant burst recovered T0")
	}
	if err := theftRefused(&r.rows, "thief: burst of 5 photos at 3 m", err, fmt.Sprintf("%d shares", burst.Shares)); err != nil {
		return err
	}
	re, err := trial.Collaborative(ctx, loop, thief, trial.WithDisplay(camsim.CloseScan(), wp), camsim.ReplayDisplay(), r.rng, 2, 1000, 5, 1)
	if err == nil && re.OK {
		err = fmt.Errorf("a re-captured photo recovered T0")
	}
	if err := theftRefused(&r.rows, "accomplice shows stolen photos to a real scanner", err, fmt.Sprintf("%d shares survive re-capture", re.Shares)); err != nil {
		return err
	}
	// What the thief can read, T1, does not pay.
	err = r.payAmount(trial.PayResult{Handle: code.Handle, Token: []byte("T1 is not the token")}, 42_00, newKey("wm-guess"))
	return r.expect("pay with T1 and a guessed T0", err, "wrong_token", "the payer's code is not consumed")
}

// balances: one payment, no theft, nothing at the relay's shop.
func (r *watermarkRun) balances() error {
	a, _ := r.p.Ledger.Account(r.ctx, r.payer)
	o, _ := r.p.Ledger.Account(r.ctx, r.otherShop)
	err := check(a.Balance == 200_00-42_00 && o.Balance == 0, "payer has %d, the relay's shop %d", a.Balance, o.Balance)
	return r.expect("balances", err, "", "payer "+money.Format(a.Balance, a.Currency)+": one payment, no theft; the relay's shop "+money.Format(o.Balance, o.Currency))
}

func handleOf(c *service.CodeResponse) string {
	if c == nil {
		return ""
	}
	return c.Handle
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 8<<20))
}

// theftRefused records a theft attempt whose outcome check passed (err nil
// means the thief recovered nothing).
func theftRefused(rows *[]Row, step string, err error, detail string) error {
	if err != nil {
		*rows = append(*rows, Row{Step: step, Outcome: "UNEXPECTED", Detail: err.Error()})
		return fmt.Errorf("%s: %w", step, err)
	}
	*rows = append(*rows, Row{Step: step, Outcome: "refused (no token)", Detail: detail})
	return nil
}
