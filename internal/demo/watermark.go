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
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/camsim"
	"github.com/qshield/qshield/watermark/service"
	"github.com/qshield/qshield/watermark/trial"
)

// Watermark is seed 003: a payer's looping watermarked code, scanned close
// up, pays; a single photo, a distant burst and a re-captured photo do not.
func Watermark() Scenario {
	return Scenario{Name: "watermark", Run: func(ctx context.Context, env *Env) ([]Row, error) {
		var rows []Row
		p := env.P
		sfx := suffix()
		payer, shop := "wm-payer-"+sfx, "wm-shop-"+sfx
		for _, a := range []ledger.NewAccount{
			{ID: "wm-bank-" + sfx, Owner: "bank", Kind: ledger.KindSystem, Currency: "CNY", AllowNegative: true},
			{ID: payer, Owner: "payer", Kind: ledger.KindUser, Currency: "CNY"},
			{ID: shop, Owner: "shop", Kind: ledger.KindMerchant, Currency: "CNY"},
		} {
			if _, err := p.Ledger.CreateAccount(ctx, a); err != nil {
				return rows, err
			}
		}
		if _, err := p.Ledger.Transfer(ctx, ledger.TransferRequest{IdempotencyKey: newKey("wm-fund"), From: "wm-bank-" + sfx, To: payer, Amount: 200_00, Currency: "CNY"}); err != nil {
			return rows, err
		}
		consentCode, err := p.IssueEnrolmentCode(ctx, "demo", payer) // the payer's consent
		if err != nil {
			return rows, err
		}
		phoneIss, err := p.EnrolWatermarkDevice(ctx, "wm-phone-"+sfx, "phone", payer, consentCode, nil)
		if err != nil {
			return rows, err
		}
		scanIss, err := p.EnrolWatermarkDevice(ctx, "wm-scanner-"+sfx, "scanner", shop, "", nil)
		if err != nil {
			return rows, err
		}
		phoneCert, _ := pki.TLSCertificate(phoneIss)
		scanCert, _ := pki.TLSCertificate(scanIss)
		phone := client.New(env.URL, env.ClientTLS(phoneCert))
		scanner := client.New(env.URL, env.ClientTLS(scanCert))
		screen := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: env.ClientTLS(phoneCert)}}
		defer phone.Close()
		defer scanner.Close()
		defer screen.CloseIdleConnections()

		issue := func(limit int64) (*service.CodeResponse, *watermark.Loop, error) {
			var code service.CodeResponse
			if _, err := phone.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, service.CodeRequest{Limit: limit}, &code); err != nil {
				return nil, nil, err
			}
			loop, err := watermark.NewLoop(code.Token, code.SlotKey, p.Watermark.Params, nil)
			return &code, loop, err
		}
		// The simulated scan runs slower than real time on a busy machine;
		// it is placed 1.5 s ahead so that its simulated capture time covers
		// the wall time the simulation takes (the server accepts slots up to
		// 2 s ahead and 2 s after they end).
		scanClock := func() trial.Clock { return trial.Clock{Start: time.Now().Add(1500 * time.Millisecond)} }
		code, loop, err := issue(50_00)
		if err := Expect(&rows, "phone gets an original token T0 and slot key (60 s, single use, limit 50.00 CNY)", err, "", fmt.Sprintf("T1 = %s", handleOf(code))); err != nil {
			return rows, err
		}
		// Every frame the phone's screen shows is a standard QR code of T1.
		frame, err := get(ctx, screen, env.URL+code.Screen+"frame/0.png")
		if err == nil {
			var text string
			text, err = qrimg.DecodePNG(bytes.NewReader(frame), 8<<20)
			if err == nil && text != code.Handle {
				err = fmt.Errorf("frame decodes to %q", text)
			}
		}
		if err := Expect(&rows, "screen loops the watermarked frames", err, "", fmt.Sprintf("%d shares at %v each, every share stamped with the current second, (t, n) = (%d, %d); each frame reads as T1 with a standard decoder", p.Watermark.Params.Shares, p.Watermark.Params.FramePeriod().Round(time.Millisecond), p.Watermark.Params.Threshold, p.Watermark.Params.Shares)); err != nil {
			return rows, err
		}
		rng := rand.New(rand.NewPCG(7, 3))
		closeScan := trial.WithDisplay(camsim.CloseScan(), p.Watermark.Params)
		// On a heavily loaded machine (the multi-node soak, load 20–30 on
		// two cores) the simulation can fall more than scanClock's 1.5 s
		// behind, and a genuine scan reached the server with stale stamps.
		// A real camera does not lag: unless the simulated submission time
		// is still ahead when the scan ends, the scan runs again placed
		// ahead by the lag it measured plus a second for the submission
		// itself; a scan that ends early waits for its simulated submission
		// time. The server's window is unchanged.
		freshScan := func(loop *watermark.Loop) (trial.PayResult, error) {
			ck := scanClock()
			for attempt := 0; ; attempt++ {
				started := time.Now()
				res, err := trial.Pay(ctx, loop, closeScan, rng, 3*time.Second, ck)
				if err != nil || !res.OK || attempt == 3 {
					return res, err
				}
				if ahead := time.Until(res.Submitted); ahead > 200*time.Millisecond {
					// Submit at about the simulated time, not seconds early.
					select {
					case <-ctx.Done():
						return res, ctx.Err()
					case <-time.After(ahead - 200*time.Millisecond):
					}
					return res, nil
				}
				ck = trial.Clock{Start: time.Now().Add(time.Since(started) - res.Elapsed + time.Second)}
			}
		}
		res, err := freshScan(loop)
		if err == nil && !res.OK {
			err = fmt.Errorf("close scan recovered no token in %d frames", res.Frames)
		}
		if err := Expect(&rows, "merchant scanner reads the loop at 10–20 cm", err, "", fmt.Sprintf("%d frames, T0 rebuilt from %d shares in %v (simulated camera)", res.Frames, p.Watermark.Params.Threshold, res.Elapsed.Round(time.Millisecond))); err != nil {
			return rows, err
		}
		payAmount := func(r trial.PayResult, amount int64, key string) error {
			_, err := scanner.Do(ctx, http.MethodPost, "/v1/watermark/pay", map[string]string{"Idempotency-Key": key},
				service.PayRequest{Handle: r.Handle, Token: r.Token, Stamps: r.Stamps, Amount: amount, Currency: "CNY"}, nil)
			return err
		}
		// A genuine scan whose submission reached the server after the
		// window (a slow request on a loaded machine) is refused with
		// stale_shares, which consumes nothing and tells the scanner to
		// scan again; the scanner does so, at most twice more.
		payScanned := func(r trial.PayResult, loop *watermark.Loop, amount int64, key string) (trial.PayResult, error) {
			for attempt := 0; ; attempt++ {
				err := payAmount(r, amount, fmt.Sprintf("%s-%d", key, attempt))
				var he *httpx.Error
				if err == nil || !errors.As(err, &he) || he.Code != "stale_shares" || attempt == 2 {
					return r, err
				}
				if r, err = freshScan(loop); err != nil {
					return r, err
				}
				if !r.OK {
					return r, fmt.Errorf("close scan recovered no token in %d frames", r.Frames)
				}
			}
		}
		res, err = payScanned(res, loop, 42_00, newKey("wm-pay"))
		if err := Expect(&rows, "scanner submits T0 and the shares' time stamps: 42.00 CNY paid", err, "", ""); err != nil {
			return rows, err
		}
		err = payAmount(res, 42_00, newKey("wm-again"))
		if err := Expect(&rows, "the same code again", err, "code_used", ""); err != nil {
			return rows, err
		}

		// The payer's limit: a code for at most 10.00 CNY cannot be charged 42.00.
		_, small, err := issue(10_00)
		if err != nil {
			return rows, err
		}
		over, err := freshScan(small)
		if err == nil && !over.OK {
			err = fmt.Errorf("close scan recovered no token in %d frames", over.Frames)
		}
		if err == nil {
			over, err = payScanned(over, small, 42_00, newKey("wm-over"))
		}
		if err := Expect(&rows, "scanner charges 42.00 CNY on a code the payer limited to 10.00", err, "over_limit", "refused; the code is not consumed"); err != nil {
			return rows, err
		}

		// A recording replayed later than the window: the scanner rebuilds
		// T0, but the shares' stamps are too old.
		_, recorded, err := issue(50_00)
		if err != nil {
			return rows, err
		}
		rec, err := trial.Pay(ctx, recorded, closeScan, rng, 3*time.Second, scanClock())
		if err == nil && !rec.OK {
			err = fmt.Errorf("close scan recovered no token in %d frames", rec.Frames)
		}
		if err == nil {
			select {
			case <-ctx.Done():
				return rows, ctx.Err()
			case <-time.After(time.Until(rec.Submitted.Add(5 * time.Second))):
			}
			err = payAmount(rec, 42_00, newKey("wm-late"))
		}
		if err := Expect(&rows, "a close recording of the code replayed 5 s later", err, "stale_shares", "T0 rebuilt, but no share was shown within the window; the code is not consumed"); err != nil {
			return rows, err
		}

		// Thefts, each against a fresh, unused code.
		code, loop, err = issue(50_00)
		if err != nil {
			return rows, err
		}
		thief := trial.WithDisplay(camsim.OnSiteTheft(), p.Watermark.Params)
		single, err := trial.OnSite(ctx, loop, thief, rng, 2, 1000, 1)
		if err == nil && single.OK {
			err = fmt.Errorf("a single photo recovered T0")
		}
		if err := theftRefused(&rows, "thief: one sharp photo at 1 m (2× lens)", err, fmt.Sprintf("%d of %d shares, T1 readable but worthless", single.Shares, p.Watermark.Params.Threshold)); err != nil {
			return rows, err
		}
		burst, err := trial.OnSite(ctx, loop, thief, rng, 0, 3000, 5)
		if err == nil && burst.OK {
			err = fmt.Errorf("a distant burst recovered T0")
		}
		if err := theftRefused(&rows, "thief: burst of 5 photos at 3 m", err, fmt.Sprintf("%d shares", burst.Shares)); err != nil {
			return rows, err
		}
		re, err := trial.Collaborative(ctx, loop, thief, trial.WithDisplay(camsim.CloseScan(), p.Watermark.Params), camsim.ReplayDisplay(), rng, 2, 1000, 5, 1)
		if err == nil && re.OK {
			err = fmt.Errorf("a re-captured photo recovered T0")
		}
		if err := theftRefused(&rows, "accomplice shows stolen photos to a real scanner", err, fmt.Sprintf("%d shares survive re-capture", re.Shares)); err != nil {
			return rows, err
		}
		// What the thief can read, T1, does not pay.
		err = payAmount(trial.PayResult{Handle: code.Handle, Token: []byte("T1 is not the token")}, 42_00, newKey("wm-guess"))
		if err := Expect(&rows, "pay with T1 and a guessed T0", err, "wrong_token", "the payer's code is not consumed"); err != nil {
			return rows, err
		}
		a, _ := p.Ledger.Account(ctx, payer)
		err = check(a.Balance == 200_00-42_00, "payer has %d", a.Balance)
		return rows, Expect(&rows, "balances", err, "", fmt.Sprintf("payer %d.%02d CNY: one payment, no theft", a.Balance/100, a.Balance%100))
	}}
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
