//go:build js && wasm

package main

import (
	"encoding/base64"
	"encoding/json"
	"syscall/js"
	"time"

	"github.com/qshield/qshield/bioqr/phonecode"
	"github.com/qshield/qshield/internal/wallet/wasm/bioqrphone"
	"github.com/qshield/qshield/pki/certinfo"
	"github.com/qshield/qshield/qrimg"
)

// The bioqr phone (seed 004) in the wallet: globalThis.qshieldBioqr, set
// before main runs. The page signs with its WebCrypto keys between each
// Prepare and Finish; this module never sees a private key.
func init() {
	var b bioqrState
	api := js.Global().Get("Object").New()
	api.Set("enrolPrepare", js.FuncOf(b.enrolPrepare))
	api.Set("enrolFinish", js.FuncOf(b.enrolFinish))
	api.Set("install", js.FuncOf(b.install))
	api.Set("read", js.FuncOf(b.read))
	api.Set("verify", js.FuncOf(b.verify))
	api.Set("paymentPrepare", js.FuncOf(b.paymentPrepare))
	api.Set("paymentFinish", js.FuncOf(b.paymentFinish))
	js.Global().Set("qshieldBioqr", api)
}

// bioqrQRScale is the pixels per module of the payment QR (version 17–19,
// 85–93 modules: 279–303 px with the quiet zone, shown at its own size so
// that every module stays whole pixels at phone width).
const bioqrQRScale = 3

type bioqrState struct {
	enrol    *bioqrphone.Enrolment
	verified *phonecode.Consumption
	payment  *bioqrphone.Payment
}

func b64arg(v js.Value) ([]byte, bool) {
	if v.Type() != js.TypeString {
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(v.String())
	return b, err == nil
}

func toJS(b []byte) js.Value {
	arr := js.Global().Get("Uint8Array").New(len(b))
	js.CopyBytesToJS(arr, b)
	return arr
}

func offerObj(o bioqrphone.Offer) map[string]any {
	return map[string]any{"merchant": o.Merchant, "city": o.City, "amountText": o.AmountText, "posSerial": o.POSSerial, "expires": float64(o.Expires.UnixMilli())}
}

// enrolPrepare(settlementCredential b64, caRoot b64, signPub b64 (raw), encPub b64 (raw), template b64, subject) → {tbs} | {error}.
func (b *bioqrState) enrolPrepare(_ js.Value, args []js.Value) any {
	if len(args) != 6 {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	cred, ok1 := b64arg(args[0])
	rootDER, ok2 := b64arg(args[1])
	sp, ok3 := b64arg(args[2])
	ep, ok4 := b64arg(args[3])
	tmpl, ok5 := b64arg(args[4])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	if !ok5 || len(tmpl) == 0 {
		return errorObj(bioqrphone.MsgBadTemplate)
	}
	root, err := certinfo.ParseCertDER(rootDER)
	if err != nil {
		return errorObj(bioqrphone.MsgServer)
	}
	signPub, err1 := bioqrphone.PublicKey(sp)
	encPub, err2 := bioqrphone.PublicKey(ep)
	if err1 != nil || err2 != nil {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	e, tbs, err := bioqrphone.PrepareEnrolment(root, cred, signPub, encPub, tmpl, args[5].String(), time.Now())
	clear(tmpl)
	if err != nil {
		if s := bioqrphone.Sentence(err); s == bioqrphone.MsgServer {
			return errorObj(s)
		}
		return errorObj(bioqrphone.MsgBadTemplate)
	}
	b.enrol = e
	return map[string]any{"tbs": toJS(tbs)}
}

// enrolFinish(signature b64 (r ‖ s), code) → {body} | {error}.
func (b *bioqrState) enrolFinish(_ js.Value, args []js.Value) any {
	if b.enrol == nil || len(args) != 2 {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	sig, ok := b64arg(args[0])
	if !ok {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	body, err := b.enrol.Finish(sig, args[1].String())
	b.enrol = nil
	if err != nil {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	return map[string]any{"body": string(body)}
}

// install(pinnedRoot b64, certified JSON, signPub b64 (raw)) → {serial} | {error}.
func (b *bioqrState) install(_ js.Value, args []js.Value) any {
	if len(args) != 3 {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	rootDER, ok1 := b64arg(args[0])
	sp, ok2 := b64arg(args[2])
	var c bioqrphone.Certified
	if !ok1 || !ok2 || json.Unmarshal([]byte(args[1].String()), &c) != nil {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	root, err := certinfo.ParseCertDER(rootDER)
	if err != nil {
		return errorObj(bioqrphone.MsgServer)
	}
	pub, err := bioqrphone.PublicKey(sp)
	if err != nil {
		return errorObj(bioqrphone.MsgSetupFailed)
	}
	cred, err := bioqrphone.Install(root, &c, pub, time.Now())
	if err != nil {
		return errorObj(bioqrphone.MsgServer)
	}
	return map[string]any{"serial": cred.Serial.Text(16), "notAfter": float64(cred.NotAfter.UnixMilli())}
}

// read(payload) → offer | {error}: which POS certificate to look up.
func (b *bioqrState) read(_ js.Value, args []js.Value) any {
	if len(args) != 1 {
		return errorObj(bioqrphone.MsgNotCode)
	}
	o, err := bioqrphone.ReadConsumption(args[0].String())
	if err != nil {
		return errorObj(bioqrphone.MsgNotCode)
	}
	return offerObj(o)
}

// verify(payload, caRoot b64, certificate b64 (or ""), known, revoked) → offer | {error}.
func (b *bioqrState) verify(_ js.Value, args []js.Value) any {
	b.verified, b.payment = nil, nil
	if len(args) != 5 {
		return errorObj(bioqrphone.MsgNotCode)
	}
	rootDER, ok := b64arg(args[1])
	if !ok {
		return errorObj(bioqrphone.MsgNotEnrolled)
	}
	root, err := certinfo.ParseCertDER(rootDER)
	if err != nil {
		return errorObj(bioqrphone.MsgNotEnrolled)
	}
	der, _ := b64arg(args[2])
	c, err := bioqrphone.VerifyConsumption(root, args[0].String(), bioqrphone.POSStatus{Certificate: der, Known: args[3].Truthy(), Revoked: args[4].Truthy()}, time.Now())
	if err != nil {
		return errorObj(bioqrphone.Sentence(err))
	}
	b.verified = c
	return offerObj(bioqrphone.OfferOf(c))
}

// paymentPrepare(account, credential b64) → {tbs} | {error}: the payment
// message for the verified code, to be signed by the wallet's bioqr key.
func (b *bioqrState) paymentPrepare(_ js.Value, args []js.Value) any {
	if b.verified == nil || len(args) != 2 {
		return errorObj(bioqrphone.MsgPrepareFailed)
	}
	cred, ok := b64arg(args[1])
	if !ok {
		return errorObj(bioqrphone.MsgNotEnrolled)
	}
	p, tbs, err := bioqrphone.NewPayment(b.verified, args[0].String(), cred, time.Now())
	if err != nil {
		return errorObj(bioqrphone.Sentence(err))
	}
	b.payment = p
	return map[string]any{"tbs": toJS(tbs)}
}

// paymentFinish(signature b64 (r ‖ s)) → {text, png, modules} | {error}:
// the payment QR for the POS's camera.
func (b *bioqrState) paymentFinish(_ js.Value, args []js.Value) any {
	if b.payment == nil || len(args) != 1 {
		return errorObj(bioqrphone.MsgPrepareFailed)
	}
	sig, ok := b64arg(args[0])
	if !ok {
		return errorObj(bioqrphone.MsgPrepareFailed)
	}
	text, err := b.payment.Finish(sig)
	b.payment, b.verified = nil, nil
	if err != nil {
		return errorObj(bioqrphone.Sentence(err))
	}
	code, err := qrimg.Encode(text, qrimg.M)
	if err != nil {
		return errorObj(bioqrphone.MsgPrepareFailed)
	}
	png, err := code.PNG(bioqrQRScale)
	if err != nil {
		return errorObj(bioqrphone.MsgPrepareFailed)
	}
	return map[string]any{"text": text, "png": toJS(png), "version": code.Info.Version}
}
