//go:build js && wasm

// Command wasm is the wallet's WebAssembly module (assets/wallet.wasm): the
// project's QR decoder (qrimg, on gozxing) for camera frames, and the QMSP
// phone's payment step (qmspphone). The page calls the functions it sets on
// globalThis.qshield; each returns a plain object, with "error" set to a
// sentence a payer can read when it fails.
package main

import (
	"image"
	"syscall/js"

	"github.com/qshield/qshield/internal/wallet/qmspphone"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/qrimg"
)

func main() {
	api := js.Global().Get("Object").New()
	api.Set("decodeQR", js.FuncOf(decodeQR))
	api.Set("readCode", js.FuncOf(readCode))
	api.Set("buildPayment", js.FuncOf(buildPayment))
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
	c, err := qmspphone.Parse(args[0].String())
	if err != nil {
		return errorObj("This is not a payment code of this platform.")
	}
	out := map[string]any{"gateway": c.Gateway, "merchant": int(c.Merchant), "expires": float64(c.Expires), "sale": c.Amount != 0, "ref": c.Ref()}
	if c.Amount != 0 {
		out["amountText"] = qmspphone.FormatAmount(c.Amount, c.Currency)
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
	c, err := qmspphone.Parse(args[0].String())
	if err != nil {
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
	req, err := c.Build(payer, amount, cur)
	if err != nil {
		return errorObj("The amount does not match what the merchant asks.")
	}
	body, err := req.JSON()
	if err != nil {
		return errorObj("The payment could not be prepared.")
	}
	shown := amount
	if c.Amount != 0 {
		shown, cur = c.Amount, c.Currency
	}
	return map[string]any{"body": string(body), "idempotencyKey": c.IdempotencyKey(), "amountText": qmspphone.FormatAmount(shown, cur)}
}
