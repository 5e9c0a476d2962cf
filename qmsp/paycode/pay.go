// Package paycode is the QMSP payment code (seed 000 §3.4) and the phone's
// cryptographic step: the QR text a gateway shows ([Display], its wire
// format), the payment information M ([PaymentInfo]), and step 5, En_Info =
// pad ⊕ M with a one-time Poly1305 tag ([SealPayment], [Build]), as well as
// the platform's inverse, step 8 ([OpenPayment]).
//
// It imports no database and no network, so the same code runs in the CLI
// phone and servers (through package qmsp, which re-exports these types) and
// in the browser wallet compiled to WebAssembly.
//
// Nothing secret leaves the phone: the pad and the one-time MAC key stay in
// its memory; a [PaymentRequest] carries only the ciphertext, the tag and
// the code's public fields.
package paycode

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/qkd"
	// Deprecated for general-purpose MACs; used here as exactly what it is, a
	// one-time authenticator whose key (quantum key) is never reused.
	"golang.org/x/crypto/poly1305"
)

// UnitKeys splits a payment unit into the Poly1305 one-time key (r ‖ s) and
// the pad: r = unit[0:16] (the seed's 16-byte DivQ segment), pad = unit[16:48]
// (the seed's 32-byte segment shown in the QR), s = unit[48:64].
func UnitKeys(u *[UnitSize]byte) (pad [PadSize]byte, macKey [MACKeySize]byte) {
	copy(pad[:], u[16:48])
	copy(macKey[:16], u[0:16])
	copy(macKey[16:], u[48:64])
	return pad, macKey
}

// paymentMACInput is what the one-time MAC covers: the display's signed
// fields and the ciphertext.
func paymentMACInput(gi string, ref KeyRef, expires int64, ct []byte) []byte {
	b := make([]byte, 0, 96)
	b = append(b, "qmsp-pay-v1"...)
	b = append(b, byte(len(gi)))
	b = append(b, gi...)
	b = append(b, ref.KeyID[:]...)
	b = binary.BigEndian.AppendUint16(b, ref.Unit)
	b = binary.BigEndian.AppendUint64(b, uint64(expires))
	b = append(b, ct...)
	return b
}

// SealPayment is the phone's step 5: En_Info = pad ⊕ M, plus a one-time
// Poly1305 tag over the reference and the ciphertext.
func SealPayment(d *Display, m *PaymentInfo) (ct [InfoSize]byte, tag [TagSize]byte, err error) {
	pt, err := m.MarshalBinary()
	if err != nil {
		return ct, tag, err
	}
	subtle.XORBytes(ct[:], pt, d.Pad[:])
	poly1305.Sum(&tag, paymentMACInput(d.Gateway, d.Ref, d.Expires.Unix(), ct[:]), &d.MACKey)
	return ct, tag, nil
}

// OpenPayment is the platform's step 8: verify the tag (constant time), then
// De_Info = pad ⊕ En_Info.
func OpenPayment(gi string, ref KeyRef, expires int64, unit *[UnitSize]byte, ct []byte, tag []byte) (*PaymentInfo, error) {
	if len(ct) != InfoSize || len(tag) != TagSize {
		return nil, fmt.Errorf("%w: ciphertext %d bytes and tag %d bytes", ErrFormat, len(ct), len(tag))
	}
	pad, macKey := UnitKeys(unit)
	var want [TagSize]byte
	poly1305.Sum(&want, paymentMACInput(gi, ref, expires, ct), &macKey)
	if subtle.ConstantTimeCompare(want[:], tag) != 1 {
		return nil, fmt.Errorf("%w: payment tag does not verify (modified in transit?)", ErrAuth)
	}
	var pt [InfoSize]byte
	subtle.XORBytes(pt[:], ct, pad[:])
	var m PaymentInfo
	if err := m.UnmarshalBinary(pt[:]); err != nil {
		return nil, err
	}
	return &m, nil
}

// PaymentRequest is what the phone sends to the payment platform (step 6):
// the displayed reference, the gateway's signature, En_Info and its tag.
// Its JSON is the body of POST /v1/qmsp/pay.
type PaymentRequest struct {
	Gateway  string `json:"gateway"`
	Merchant uint32 `json:"merchant"`
	KeyID    string `json:"key_id"`
	Unit     uint16 `json:"unit"`
	Expires  int64  `json:"expires"`
	// Amount and Currency are the code's signed sale (0 when the payer
	// entered the amount); the gateway's signature covers them.
	Amount     int64  `json:"amount,omitempty"`
	Currency   uint16 `json:"currency,omitempty"`
	GatewaySig []byte `json:"gateway_sig"`
	Ciphertext []byte `json:"ciphertext"`
	Tag        []byte `json:"tag"`
}

// Build is step 5 for payer number payer on a parsed code: M = version ‖
// payer ‖ amount ‖ currency ‖ merchant ‖ fresh 11-byte nonce, sealed with
// [SealPayment]. When the code carries a signed sale, the payment is for
// exactly that amount: amount 0 takes it, another amount is refused
// ([ErrAmount]). Otherwise amount and currency are the payer's (an amount
// outside 1..MaxAmount or a currency outside 1..999 is [ErrFormat]).
func Build(d *Display, payer uint64, amount int64, currency uint16) (*PaymentRequest, error) {
	var nonce [11]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("qmsp: payment nonce: %w", err)
	}
	return build(d, payer, amount, currency, nonce)
}

func build(d *Display, payer uint64, amount int64, currency uint16, nonce [11]byte) (*PaymentRequest, error) {
	if d.Amount != 0 {
		if amount == 0 {
			amount, currency = d.Amount, d.Currency
		}
		if amount != d.Amount || currency != d.Currency {
			return nil, fmt.Errorf("%w: the code asks %d (currency %d), the payer entered %d (currency %d)", ErrAmount, d.Amount, d.Currency, amount, currency)
		}
	}
	m := PaymentInfo{Payer: payer, Amount: amount, Currency: currency, Merchant: d.Merchant, Nonce: nonce}
	ct, tag, err := SealPayment(d, &m)
	if err != nil {
		return nil, err
	}
	return &PaymentRequest{
		Gateway: d.Gateway, Merchant: d.Merchant, Amount: d.Amount, Currency: d.Currency, KeyID: qkd.FormatKeyID(d.Ref.KeyID), Unit: d.Ref.Unit, Expires: d.Expires.Unix(),
		GatewaySig: d.Sig, Ciphertext: ct[:], Tag: tag[:],
	}, nil
}

// IdempotencyKey is the key a phone pays a code under ("qmsp-" +
// reference), so a retried payment of the same code is one payment.
func (d *Display) IdempotencyKey() string { return "qmsp-" + d.Ref.String() }

// FormatAmount formats minor units of an ISO 4217 numeric currency
// ("12.34 CNY"); an unknown currency is shown by its number.
func FormatAmount(amount int64, currency uint16) string {
	if c, err := money.ByNumeric(currency); err == nil {
		return c.Format(amount) + " " + c.Code
	}
	return fmt.Sprintf("%d (currency %d)", amount, currency)
}

// Describe is what the phone shows before paying: the merchant and, for a
// code carrying a sale, the amount the gateway signed.
func (d *Display) Describe() string {
	if d.Amount == 0 {
		return fmt.Sprintf("pay merchant %d (gateway %s); enter the amount", d.Merchant, d.Gateway)
	}
	return fmt.Sprintf("pay %s to merchant %d (gateway %s, signed)", FormatAmount(d.Amount, d.Currency), d.Merchant, d.Gateway)
}
