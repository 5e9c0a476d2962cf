//go:build js && wasm

// Command wasm is the wallet's WebAssembly module (assets/wallet.wasm): the
// project's QR decoder (qrimg, on gozxing) for camera frames, and the QMSP
// phone's payment step (qmsp/paycode), and the self-verified shopper of seed
// 002 (selfverify.User, selfverify.go). The page calls the functions it sets
// on globalThis.qshield; each returns a plain object (the sv* functions a
// Promise of one), with "error" set to a sentence a payer can read when it
// fails.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"image"
	"syscall/js"
	"time"

	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/qmsp/paycode"
	"github.com/qshield/qshield/qrimg"
	"github.com/qshield/qshield/watermark"
	"github.com/qshield/qshield/watermark/scan"
)

func main() {
	api := js.Global().Get("Object").New()
	api.Set("decodeQR", js.FuncOf(decodeQR))
	api.Set("readCode", js.FuncOf(readCode))
	api.Set("buildPayment", js.FuncOf(buildPayment))
	var wm watermarkLoop
	api.Set("watermarkStart", js.FuncOf(wm.start))
	api.Set("watermarkFrame", js.FuncOf(wm.frame))
	api.Set("watermarkChallenge", js.FuncOf(wm.challenge))
	var ch challengeDisplay
	api.Set("challengeStart", js.FuncOf(ch.start))
	api.Set("challengeShow", js.FuncOf(ch.show))
	new(shop).register(api)
	var sc scanner
	api.Set("scanStart", js.FuncOf(sc.start))
	api.Set("scanFrame", js.FuncOf(sc.frame))
	api.Set("scanRequireBound", js.FuncOf(sc.requireBound))
	js.Global().Set("qshield", api)
	if cb := js.Global().Get("qshieldReady"); cb.Type() == js.TypeFunction {
		cb.Invoke()
	}
	select {}
}

func errorObj(msg string) any { return map[string]any{"error": msg} }

// decodeQR(rgba Uint8ClampedArray, width, height) → {text} | {error}.
func decodeQR(_ js.Value, args []js.Value) any {
	if len(args) != 3 {
		return errorObj("decodeQR needs pixels, width and height")
	}
	w, h := args[1].Int(), args[2].Int()
	if w <= 0 || h <= 0 || w*h > 4096*4096 || args[0].Length() != w*h*4 {
		return errorObj("frame size does not match its pixels")
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	js.CopyBytesToGo(img.Pix, args[0])
	text, err := qrimg.Decode(img)
	if err != nil {
		return errorObj("no code in this frame")
	}
	return map[string]any{"text": text}
}

// readCode(text) → what the wallet shows before paying.
func readCode(_ js.Value, args []js.Value) any {
	if len(args) != 1 {
		return errorObj("readCode needs the code's text")
	}
	var c paycode.Display
	if err := c.UnmarshalText([]byte(args[0].String())); err != nil {
		return errorObj("This is not a payment code of this platform.")
	}
	out := map[string]any{"gateway": c.Gateway, "merchant": int(c.Merchant), "expires": float64(c.Expires.Unix()), "sale": c.Amount != 0, "ref": c.Ref.String()}
	if c.Amount != 0 {
		out["amountText"] = paycode.FormatAmount(c.Amount, c.Currency)
	}
	return out
}

// buildPayment(text, payer (decimal string), amountText, currencyCode) →
// {body, idempotencyKey, amountText} | {error}. amountText is ignored for a
// code that carries the merchant's amount.
func buildPayment(_ js.Value, args []js.Value) any {
	if len(args) != 4 {
		return errorObj("buildPayment needs code, payer, amount and currency")
	}
	var c paycode.Display
	if err := c.UnmarshalText([]byte(args[0].String())); err != nil {
		return errorObj("This is not a payment code of this platform.")
	}
	var payer uint64
	for _, ch := range args[1].String() {
		if ch < '0' || ch > '9' || payer > (1<<64-1)/10-9 {
			return errorObj("This wallet's payer number is damaged; enrol it again.")
		}
		payer = payer*10 + uint64(ch-'0')
	}
	var amount int64
	var cur uint16
	if c.Amount == 0 {
		a, err := money.ParsePositive(args[2].String(), args[3].String())
		if err != nil {
			return errorObj("Enter an amount such as 12.34.")
		}
		amount, cur = a.Minor, a.Currency.Numeric
	}
	req, err := paycode.Build(&c, payer, amount, cur)
	if err != nil {
		return errorObj("The amount does not match what the merchant asks.")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return errorObj("The payment could not be prepared.")
	}
	shown := amount
	if c.Amount != 0 {
		shown, cur = c.Amount, c.Currency
	}
	return map[string]any{"body": string(body), "idempotencyKey": c.IdempotencyKey(), "amountText": paycode.FormatAmount(shown, cur)}
}

// watermarkLoop renders a watermark code's looping frames on the phone
// (seed 003): T0 and the slot key come from POST /v1/watermark/codes; every
// frame is the share the loop shows at that moment of the server-set slot
// clock, stamped with its slot. Once started it needs no server, so the
// code keeps looping offline until it expires.
//
// With scanner challenges (issue 18) the page also feeds the loop every
// challenge its front camera reads from the scanner's display
// (watermarkChallenge); while the tracker holds one, every frame's stamp is
// bound to it, so the code pays only at that scanner.
type watermarkLoop struct {
	loop    *watermark.Loop
	offset  time.Duration // server clock − local clock at issue
	period  time.Duration
	tracker watermark.ChallengeTracker
}

// start(token b64, slotKey b64, serverTimeMs, localTimeMs) → {frameMs} | {error}.
func (w *watermarkLoop) start(_ js.Value, args []js.Value) any {
	if len(args) != 4 {
		return errorObj("watermarkStart needs token, slot key and the two clocks")
	}
	t0, err1 := base64.StdEncoding.DecodeString(args[0].String())
	key, err2 := base64.StdEncoding.DecodeString(args[1].String())
	if err1 != nil || err2 != nil {
		return errorObj("The payment code could not be read.")
	}
	p := watermark.DefaultParams()
	l, err := watermark.NewLoop(t0, key, p, nil)
	if err != nil {
		return errorObj("The payment code could not be shown.")
	}
	w.loop = l
	w.tracker = watermark.ChallengeTracker{}
	w.offset = time.Duration(args[2].Float()-args[3].Float()) * time.Millisecond
	w.period = time.Duration(float64(time.Second) / p.FrameRate)
	return map[string]any{"frameMs": float64(w.period.Milliseconds()), "handle": l.Handle}
}

// frame(localTimeMs) → {width, height, gray Uint8Array, bound} of the frame
// to show now; bound tells whether its stamp is bound to a scanner's
// challenge.
func (w *watermarkLoop) frame(_ js.Value, args []js.Value) any {
	if w.loop == nil || len(args) != 1 {
		return errorObj("no code is being shown")
	}
	at := time.UnixMilli(int64(args[0].Float())).Add(w.offset)
	c, bound := w.tracker.Current(at)
	var g *image.Gray
	if bound {
		g = w.loop.ShowBoundAt(at, c)
	} else {
		g = w.loop.ShowAt(at)
	}
	b := g.Bounds()
	arr := js.Global().Get("Uint8Array").New(len(g.Pix))
	js.CopyBytesToJS(arr, g.Pix)
	return map[string]any{"width": b.Dx(), "height": b.Dy(), "gray": arr, "bound": bound}
}

// challenge(text, localTimeMs) → {bound} | {error}: the front camera read
// text; if it is a scanner's challenge the tracker takes it (bound: whether
// frames are now bound to a scanner). Other codes in view are ignored with
// an error the page need not show.
func (w *watermarkLoop) challenge(_ js.Value, args []js.Value) any {
	if w.loop == nil || len(args) != 2 {
		return errorObj("no code is being shown")
	}
	c, err := watermark.ParseChallenge(args[0].String())
	if err != nil {
		return errorObj("This is not a scanner's challenge.")
	}
	at := time.UnixMilli(int64(args[1].Float())).Add(w.offset)
	w.tracker.Observe(c, at)
	_, bound := w.tracker.Current(at)
	return map[string]any{"bound": bound}
}

// challengeDisplay is the merchant scanner's challenge display (issue 18):
// from the scanner's challenge key (GET /v1/watermark/challenge-key) and the
// server's clock it renders, every slot, the challenge QR code the payer's
// front camera reads.
type challengeDisplay struct {
	key    []byte
	offset time.Duration // server clock − local clock
}

// start(key b64, serverTimeMs, localTimeMs) → {slotMs} | {error}.
func (d *challengeDisplay) start(_ js.Value, args []js.Value) any {
	if len(args) != 3 {
		return errorObj("challengeStart needs the key and the two clocks")
	}
	k, err := base64.StdEncoding.DecodeString(args[0].String())
	if err != nil || len(k) != watermark.ChallengeKeyLen {
		return errorObj("The scanner's challenge key could not be read.")
	}
	d.key = k
	d.offset = time.Duration(args[1].Float()-args[2].Float()) * time.Millisecond
	return map[string]any{"slotMs": float64(watermark.SlotDuration.Milliseconds())}
}

// show(localTimeMs) → {text, slot, nextMs, size, gray Uint8Array}: the
// challenge QR code (one pixel per module, quiet zone included) of the
// current slot; nextMs is the local time at which the next slot starts.
func (d *challengeDisplay) show(_ js.Value, args []js.Value) any {
	if d.key == nil || len(args) != 1 {
		return errorObj("the challenge display is not started")
	}
	at := time.UnixMilli(int64(args[0].Float())).Add(d.offset)
	slot := watermark.SlotAt(at)
	c := watermark.ChallengeAt(d.key, slot)
	text := c.String()
	code, err := qrimg.Encode(text, qrimg.M)
	if err != nil {
		return errorObj("The challenge could not be shown.")
	}
	g, ok := code.Image(1).(*image.Gray)
	if !ok {
		return errorObj("The challenge could not be shown.")
	}
	arr := js.Global().Get("Uint8Array").New(len(g.Pix))
	js.CopyBytesToJS(arr, g.Pix)
	next := watermark.SlotStart(slot + 1).Add(-d.offset)
	return map[string]any{"text": text, "slot": float64(slot), "nextMs": float64(next.UnixMilli()), "size": g.Bounds().Dx(), "gray": arr}
}

// scanner is the merchant scanner's side of seed 003: camera frames are
// added to a watermark/scan session until the shares of one code
// reconstruct T0; the result becomes the body of POST /v1/watermark/pay.
type scanner struct {
	sess     *scan.Session
	amount   int64
	currency string
	attempt  string // idempotency: one scan session is one payment attempt
}

// start(amountText, currencyCode) → {need} | {error}: a new session for a
// payment of that amount.
func (s *scanner) start(_ js.Value, args []js.Value) any {
	if len(args) != 2 {
		return errorObj("scanStart needs the amount and the currency")
	}
	a, err := money.ParsePositive(args[0].String(), args[1].String())
	if err != nil {
		return errorObj("Enter an amount such as 12.34.")
	}
	p := watermark.DefaultParams()
	sess, err := scan.NewSession(p, true, nil)
	if err != nil {
		return errorObj("The scanner could not start.")
	}
	var nb [9]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return errorObj("The scanner could not start.")
	}
	s.sess, s.amount, s.currency, s.attempt = sess, a.Minor, a.Currency.Code, base64.RawURLEncoding.EncodeToString(nb[:])
	return map[string]any{"need": p.Threshold, "amountText": a.String()}
}

// requireBound() makes the session wait, once it holds t shares, until
// watermark.MinBoundStamps of their stamps are bound to a scanner challenge:
// the scanner shows one (issue 18), and the payer's phone binds its frames
// to it a moment after the scan starts.
func (s *scanner) requireBound(_ js.Value, _ []js.Value) any {
	if s.sess == nil {
		return errorObj("the scanner is not started")
	}
	s.sess.RequireBound = true
	return map[string]any{}
}

// frame(rgba, width, height) → {have, need} and, once the code is
// reconstructed, {body, idempotencyKey}.
func (s *scanner) frame(_ js.Value, args []js.Value) any {
	if s.sess == nil || len(args) != 3 {
		return errorObj("the scanner is not started")
	}
	w, h := args[1].Int(), args[2].Int()
	if w <= 0 || h <= 0 || w*h > 4096*4096 || args[0].Length() != w*h*4 {
		return errorObj("frame size does not match its pixels")
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	js.CopyBytesToGo(img.Pix, args[0])
	ev, err := s.sess.Add(context.Background(), img)
	if err != nil {
		return errorObj("the frame could not be read")
	}
	out := map[string]any{"have": ev.Have, "need": ev.Need}
	if r := ev.Result; r != nil {
		body, err := json.Marshal(map[string]any{"handle": r.Handle, "token": r.Token, "stamps": r.Stamps, "amount": s.amount, "currency": s.currency})
		if err != nil {
			return errorObj("the payment could not be prepared")
		}
		out["body"] = string(body)
		out["idempotencyKey"] = "wm-" + r.Handle + "-" + s.attempt
	}
	return out
}
