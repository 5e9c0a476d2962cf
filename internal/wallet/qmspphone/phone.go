// Package qmspphone is the QMSP phone's steps 4–5 (seed 000 §3.4) for the
// browser wallet, compiled to WebAssembly with the wallet: read a
// gateway's code, and build the payment request — En_Info = pad ⊕ M with
// its one-time Poly1305 tag — that the wallet posts to /v1/qmsp/pay.
//
// # Why a copy of qmsp's phone code
//
// Package qmsp cannot be compiled for js/wasm: it holds the CSS and PPS
// too, which import the database (modernc.org/sqlite). The phone's part is
// small (the code's wire format, the pad XOR and Poly1305 from
// golang.org/x/crypto), so it is repeated here with the same Go libraries,
// and qmspphone_test.go proves it equal to qmsp's: every field parsed and
// every byte of the request, for random codes, and a fuzz target that
// accepts exactly what qmsp.Display.UnmarshalText accepts. The right fix
// is to move qmsp's wire format into a package of its own without the
// database; until then this copy is held to qmsp by those tests.
//
// Nothing secret leaves the browser that does not leave the CLI phone:
// the pad and the one-time MAC key stay in the page's memory; only the
// ciphertext, the tag and the code's public fields are sent.
package qmspphone

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/poly1305"

	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/qkd"
)

// ErrCode is a scanned code that is not a well-formed QMSP code.
var ErrCode = errors.New("not a payment code of this platform")

// ErrAmount is an amount the code does not allow.
var ErrAmount = errors.New("amount does not match the code")

const (
	padSize      = 32
	macKeySize   = 32
	maxGatewayID = 32
	maxSigSize   = 80
	maxAmount    = 1<<48 - 1
)

// Code is a parsed gateway code.
type Code struct {
	Gateway  string
	Merchant uint32
	Amount   int64  // signed sale in minor units (0: the payer enters it)
	Currency uint16 // ISO 4217 numeric
	KeyID    [16]byte
	Unit     uint16
	Expires  int64
	pad      [padSize]byte
	macKey   [macKeySize]byte
	Sig      []byte
}

// Parse reads a QR text "QMSP1:…" or "QMSP2:…" (see qmsp.Display.MarshalText).
func Parse(text string) (*Code, error) {
	sale := strings.HasPrefix(text, "QMSP2:")
	if !sale && !strings.HasPrefix(text, "QMSP1:") {
		return nil, fmt.Errorf("%w: no QMSP prefix", ErrCode)
	}
	if len(text) > 1024 {
		return nil, fmt.Errorf("%w: %d characters", ErrCode, len(text))
	}
	b, err := base64.RawURLEncoding.DecodeString(text[6:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCode, err)
	}
	r := reader{b: b}
	var c Code
	c.Gateway = string(r.bytes(int(r.byte())))
	c.Merchant = binary.BigEndian.Uint32(r.bytes(4))
	copy(c.KeyID[:], r.bytes(16))
	c.Unit = binary.BigEndian.Uint16(r.bytes(2))
	exp := binary.BigEndian.Uint64(r.bytes(8))
	if sale {
		a := r.bytes(6)
		c.Amount = int64(uint64(a[0])<<40 | uint64(a[1])<<32 | uint64(a[2])<<24 | uint64(a[3])<<16 | uint64(a[4])<<8 | uint64(a[5]))
		c.Currency = binary.BigEndian.Uint16(r.bytes(2))
		if r.err == nil && (c.Amount == 0 || c.Currency == 0) {
			return nil, fmt.Errorf("%w: a sale code without an amount", ErrCode)
		}
	}
	copy(c.pad[:], r.bytes(padSize))
	copy(c.macKey[:], r.bytes(macKeySize))
	sl := int(r.byte())
	c.Sig = append([]byte(nil), r.bytes(sl)...)
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCode, len(r.b))
	}
	if err := checkGatewayID(c.Gateway); err != nil {
		return nil, err
	}
	if sl == 0 || sl > maxSigSize {
		return nil, fmt.Errorf("%w: signature of %d bytes", ErrCode, sl)
	}
	if exp > 1<<40 {
		return nil, fmt.Errorf("%w: expiry out of range", ErrCode)
	}
	c.Expires = int64(exp)
	return &c, nil
}

// reader returns zero-filled slices after the first short read, so the
// parse above stays straight-line; r.err reports it.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b) {
		if r.err == nil {
			r.err = fmt.Errorf("%w: truncated", ErrCode)
		}
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte { return r.bytes(1)[0] }

func checkGatewayID(gi string) error {
	if len(gi) == 0 || len(gi) > maxGatewayID {
		return fmt.Errorf("%w: gateway identifier of %d characters", ErrCode, len(gi))
	}
	for i := 0; i < len(gi); i++ {
		c := gi[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: gateway identifier has %q", ErrCode, c)
		}
	}
	return nil
}

// Ref is the code's key reference "uuid/unit".
func (c *Code) Ref() string { return qkd.FormatKeyID(c.KeyID) + "/" + fmt.Sprint(c.Unit) }

// FormatAmount formats minor units of an ISO 4217 numeric currency
// ("12.34 CNY"); an unknown currency is shown by its number.
func FormatAmount(amount int64, currency uint16) string {
	if c, err := money.ByNumeric(currency); err == nil {
		return c.Format(amount) + " " + c.Code
	}
	return fmt.Sprintf("%d (currency %d)", amount, currency)
}

// Request is the body of POST /v1/qmsp/pay (qmsp.PaymentRequest's JSON).
type Request struct {
	Gateway    string `json:"gateway"`
	Merchant   uint32 `json:"merchant"`
	KeyID      string `json:"key_id"`
	Unit       uint16 `json:"unit"`
	Expires    int64  `json:"expires"`
	Amount     int64  `json:"amount,omitempty"`
	Currency   uint16 `json:"currency,omitempty"`
	GatewaySig []byte `json:"gateway_sig"`
	Ciphertext []byte `json:"ciphertext"`
	Tag        []byte `json:"tag"`
}

// Build is step 5 for payer number payer: M = version ‖ payer ‖ amount ‖
// currency ‖ merchant ‖ 11-byte nonce, En_Info = pad ⊕ M, tag =
// Poly1305(r‖s; "qmsp-pay-v1" ‖ gateway ‖ key ‖ unit ‖ expires ‖ En_Info).
// For a sale code amount 0 takes the signed amount and any other is
// refused; otherwise amount and currency are the payer's.
func (c *Code) Build(payer uint64, amount int64, currency uint16) (*Request, error) {
	var nonce [11]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("qmspphone: nonce: %w", err)
	}
	return c.build(payer, amount, currency, nonce)
}

func (c *Code) build(payer uint64, amount int64, currency uint16, nonce [11]byte) (*Request, error) {
	if c.Amount != 0 {
		if amount == 0 {
			amount, currency = c.Amount, c.Currency
		}
		if amount != c.Amount || currency != c.Currency {
			return nil, fmt.Errorf("%w: the merchant asks %s", ErrAmount, FormatAmount(c.Amount, c.Currency))
		}
	}
	if amount <= 0 || amount > maxAmount {
		return nil, fmt.Errorf("%w: enter an amount above zero", ErrAmount)
	}
	if currency == 0 || currency > 999 {
		return nil, fmt.Errorf("%w: currency %d", ErrAmount, currency)
	}
	m := make([]byte, 32)
	m[0] = 1
	binary.BigEndian.PutUint64(m[1:9], payer)
	for i := 0; i < 6; i++ {
		m[9+i] = byte(uint64(amount) >> (40 - 8*i))
	}
	binary.BigEndian.PutUint16(m[15:17], currency)
	binary.BigEndian.PutUint32(m[17:21], c.Merchant)
	copy(m[21:], nonce[:])
	ct := make([]byte, 32)
	subtle.XORBytes(ct, m, c.pad[:])
	in := make([]byte, 0, 96)
	in = append(in, "qmsp-pay-v1"...)
	in = append(in, byte(len(c.Gateway)))
	in = append(in, c.Gateway...)
	in = append(in, c.KeyID[:]...)
	in = binary.BigEndian.AppendUint16(in, c.Unit)
	in = binary.BigEndian.AppendUint64(in, uint64(c.Expires))
	in = append(in, ct...)
	var tag [16]byte
	poly1305.Sum(&tag, in, &c.macKey)
	return &Request{Gateway: c.Gateway, Merchant: c.Merchant, KeyID: qkd.FormatKeyID(c.KeyID), Unit: c.Unit, Expires: c.Expires,
		Amount: c.Amount, Currency: c.Currency, GatewaySig: c.Sig, Ciphertext: ct, Tag: tag[:]}, nil
}

// JSON is the request body.
func (r *Request) JSON() ([]byte, error) { return json.Marshal(r) }

// IdempotencyKey is the key the CLI phone uses for the same code
// ("qmsp-" + reference), so a retried payment is one payment.
func (c *Code) IdempotencyKey() string { return "qmsp-" + c.Ref() }
