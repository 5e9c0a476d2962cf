package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

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
		phoneIss, err := p.EnrolWatermarkDevice(ctx, "wm-phone-"+sfx, "phone", payer, nil)
		if err != nil {
			return rows, err
		}
		scanIss, err := p.EnrolWatermarkDevice(ctx, "wm-scanner-"+sfx, "scanner", shop, nil)
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

		issue := func() (*service.CodeResponse, *watermark.Loop, error) {
			var code service.CodeResponse
			if _, err := phone.Do(ctx, http.MethodPost, "/v1/watermark/codes", nil, nil, &code); err != nil {
				return nil, nil, err
			}
			loop, err := watermark.NewLoop(code.Token, p.Watermark.Params, nil)
			return &code, loop, err
		}
		code, loop, err := issue()
		if err := Expect(&rows, "phone gets an original token T0 (60 s, single use)", err, "", fmt.Sprintf("T1 = %s", handleOf(code))); err != nil {
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
		if err := Expect(&rows, "screen loops the watermarked frames", err, "", fmt.Sprintf("%d frames at %v each, (t, n) = (%d, %d); each frame reads as T1 with a standard decoder", len(loop.Frames), p.Watermark.Params.FramePeriod().Round(time.Millisecond), p.Watermark.Params.Threshold, p.Watermark.Params.Shares)); err != nil {
			return rows, err
		}
		rng := rand.New(rand.NewPCG(7, 3))
		res, err := trial.Pay(ctx, loop, trial.WithDisplay(camsim.CloseScan(), p.Watermark.Params), rng, 3*time.Second)
		if err == nil && !res.OK {
			err = fmt.Errorf("close scan recovered no token in %d frames", res.Frames)
		}
		if err := Expect(&rows, "merchant scanner reads the loop at 10–20 cm", err, "", fmt.Sprintf("%d frames, T0 rebuilt from %d shares in %v (simulated camera)", res.Frames, p.Watermark.Params.Threshold, res.Elapsed.Round(time.Millisecond))); err != nil {
			return rows, err
		}
		pay := func(handle string, token []byte, key string) error {
			_, err := scanner.Do(ctx, http.MethodPost, "/v1/watermark/pay", map[string]string{"Idempotency-Key": key}, service.PayRequest{Handle: handle, Token: token, Amount: 42_00, Currency: "CNY"}, nil)
			return err
		}
		err = pay(res.Handle, res.Token, newKey("wm-pay"))
		if err := Expect(&rows, "scanner submits T0: 42.00 CNY paid", err, "", ""); err != nil {
			return rows, err
		}
		err = pay(res.Handle, res.Token, newKey("wm-again"))
		if err := Expect(&rows, "the same code again", err, "code_used", ""); err != nil {
			return rows, err
		}

		// Thefts, each against a fresh, unused code.
		code, loop, err = issue()
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
		err = pay(code.Handle, []byte("T1 is not the token"), newKey("wm-guess"))
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
