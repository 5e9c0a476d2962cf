package paycode

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/qshield/qshield/qkd"
	"strings"
	"time"
)

// Sizes fixed by the scheme.
const (
	PadSize      = 32 // the one-time pad shown in the QR (seed step 3)
	MACKeySize   = 32 // Poly1305 one-time key r‖s
	UnitSize     = 64 // one payment's quantum key: r(16) ‖ pad(32) ‖ s(16)
	TagSize      = 16
	InfoSize     = 32 // the payment information M
	maxGatewayID = 32
	maxSigSize   = 80
	qrPrefix     = "QMSP1:"
	qrPrefixSale = "QMSP2:" // a code carrying the gateway-signed amount
	infoVersion  = 1
)

// Errors of the code and the payment step; test with errors.Is. Package
// qmsp reports the same values (qmsp.ErrFormat is ErrFormat, and so on).
var (
	// ErrFormat is malformed input: a code, M, or a request's fields.
	ErrFormat = errors.New("qmsp: malformed message")
	// ErrAmount: the payment's amount or currency is not the one the
	// gateway signed into the code.
	ErrAmount = errors.New("qmsp: payment amount differs from the amount the gateway signed")
	// ErrAuth: a payment's one-time tag does not verify.
	ErrAuth = errors.New("qmsp: authentication failed")
)

// PaymentInfo is M, the 32-byte plaintext the phone encrypts with the pad:
//
//	version(1) ‖ payer(8) ‖ amount(6) ‖ currency(2) ‖ merchant(4) ‖ nonce(11)
//
// payer and merchant are numbers registered at the payment platform, amount
// is in minor units (< 2^48), currency is ISO 4217 numeric (156 = CNY).
type PaymentInfo struct {
	Payer    uint64
	Amount   int64
	Currency uint16
	Merchant uint32
	Nonce    [11]byte
}

// MaxAmount is the largest amount M can carry.
const MaxAmount = 1<<48 - 1

// MarshalBinary encodes M.
func (m *PaymentInfo) MarshalBinary() ([]byte, error) {
	if m.Amount <= 0 || m.Amount > MaxAmount {
		return nil, fmt.Errorf("%w: amount %d outside 1..%d", ErrFormat, m.Amount, int64(MaxAmount))
	}
	if m.Currency == 0 || m.Currency > 999 {
		return nil, fmt.Errorf("%w: currency %d is not an ISO 4217 numeric code", ErrFormat, m.Currency)
	}
	b := make([]byte, InfoSize)
	b[0] = infoVersion
	binary.BigEndian.PutUint64(b[1:9], m.Payer)
	putUint48(b[9:15], uint64(m.Amount))
	binary.BigEndian.PutUint16(b[15:17], m.Currency)
	binary.BigEndian.PutUint32(b[17:21], m.Merchant)
	copy(b[21:32], m.Nonce[:])
	return b, nil
}

// UnmarshalBinary decodes M, refusing anything that is not a valid version-1 M.
func (m *PaymentInfo) UnmarshalBinary(b []byte) error {
	if len(b) != InfoSize {
		return fmt.Errorf("%w: payment information is %d bytes, want %d", ErrFormat, len(b), InfoSize)
	}
	if b[0] != infoVersion {
		return fmt.Errorf("%w: payment information version %d", ErrFormat, b[0])
	}
	amount := int64(uint48(b[9:15]))
	cur := binary.BigEndian.Uint16(b[15:17])
	if amount == 0 {
		return fmt.Errorf("%w: zero amount", ErrFormat)
	}
	if cur == 0 || cur > 999 {
		return fmt.Errorf("%w: currency %d", ErrFormat, cur)
	}
	*m = PaymentInfo{
		Payer:    binary.BigEndian.Uint64(b[1:9]),
		Amount:   amount,
		Currency: cur,
		Merchant: binary.BigEndian.Uint32(b[17:21]),
	}
	copy(m.Nonce[:], b[21:32])
	return nil
}

func putUint48(b []byte, v uint64) {
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func uint48(b []byte) uint64 {
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// KeyRef names one payment unit: the ETSI 014 key ID of the quantum key batch
// and the unit's index in it.
type KeyRef struct {
	KeyID [16]byte // the UUID's bytes
	Unit  uint16
}

// String is "uuid/unit".
func (r KeyRef) String() string { return qkd.FormatKeyID(r.KeyID) + "/" + fmt.Sprint(r.Unit) }

// Display is what the gateway shows as a QR code: the key reference, its
// identity and an expiry, signed with its device key, and the 64 bytes of
// quantum key the phone needs (pad and one-time MAC key).
//
// A code may also carry the sale: the amount and currency the merchant asks
// for, signed by the gateway with the rest (Amount 0: the payer enters the
// amount, as in the seed). The phone shows the merchant and the signed
// amount before paying and pays exactly that; the platform refuses a
// payment whose amount differs.
type Display struct {
	Gateway  string
	Merchant uint32 // the gateway's merchant number
	Amount   int64  // signed sale amount in minor units (0: the payer enters it)
	Currency uint16 // ISO 4217 numeric code of Amount
	Ref      KeyRef
	Expires  time.Time // whole seconds
	Pad      [PadSize]byte
	MACKey   [MACKeySize]byte
	Sig      []byte // gateway's ECDSA signature over SignedBytes()
}

// SignedBytes is what the gateway signs: everything but the key material.
func (d *Display) SignedBytes() []byte {
	b := make([]byte, 0, 72)
	if d.Amount != 0 {
		b = append(b, "qmsp-display-v2"...)
	} else {
		b = append(b, "qmsp-display-v1"...)
	}
	b = append(b, byte(len(d.Gateway)))
	b = append(b, d.Gateway...)
	b = binary.BigEndian.AppendUint32(b, d.Merchant)
	b = append(b, d.Ref.KeyID[:]...)
	b = binary.BigEndian.AppendUint16(b, d.Ref.Unit)
	b = binary.BigEndian.AppendUint64(b, uint64(d.Expires.Unix()))
	if d.Amount != 0 {
		var a [6]byte
		putUint48(a[:], uint64(d.Amount))
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, d.Currency)
	}
	return b
}

// CheckSale validates a display's sale fields: Amount within 0..MaxAmount,
// Currency an ISO 4217 numeric code (1..999), and Amount and Currency both
// zero or both set.
func (d *Display) CheckSale() error {
	if d.Amount < 0 || d.Amount > MaxAmount || d.Currency > 999 || (d.Amount == 0) != (d.Currency == 0) {
		return fmt.Errorf("%w: sale amount %d currency %d", ErrFormat, d.Amount, d.Currency)
	}
	return nil
}

// MarshalText encodes the display as the QR text "QMSP1:" + base64url:
//
//	len(gi)(1) ‖ gi ‖ merchant(4) ‖ keyID(16) ‖ unit(2) ‖ expires(8) ‖ pad(32) ‖ macKey(32) ‖ len(sig)(1) ‖ sig
//
// or, for a code carrying a sale, "QMSP2:" + base64url with amount(6) ‖
// currency(2) after expires.
func (d *Display) MarshalText() ([]byte, error) {
	if err := CheckGatewayID(d.Gateway); err != nil {
		return nil, err
	}
	if err := d.CheckSale(); err != nil {
		return nil, err
	}
	if len(d.Sig) == 0 || len(d.Sig) > maxSigSize {
		return nil, fmt.Errorf("%w: signature of %d bytes", ErrFormat, len(d.Sig))
	}
	b := make([]byte, 0, 1+len(d.Gateway)+4+16+2+8+PadSize+MACKeySize+1+len(d.Sig))
	b = append(b, byte(len(d.Gateway)))
	b = append(b, d.Gateway...)
	b = binary.BigEndian.AppendUint32(b, d.Merchant)
	b = append(b, d.Ref.KeyID[:]...)
	b = binary.BigEndian.AppendUint16(b, d.Ref.Unit)
	b = binary.BigEndian.AppendUint64(b, uint64(d.Expires.Unix()))
	prefix := qrPrefix
	if d.Amount != 0 {
		var a [6]byte
		putUint48(a[:], uint64(d.Amount))
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, d.Currency)
		prefix = qrPrefixSale
	}
	b = append(b, d.Pad[:]...)
	b = append(b, d.MACKey[:]...)
	b = append(b, byte(len(d.Sig)))
	b = append(b, d.Sig...)
	return []byte(prefix + base64.RawURLEncoding.EncodeToString(b)), nil
}

// UnmarshalText parses a QR text, refusing anything malformed.
func (d *Display) UnmarshalText(text []byte) error {
	s := string(text)
	sale := strings.HasPrefix(s, qrPrefixSale)
	if !sale && !strings.HasPrefix(s, qrPrefix) {
		return fmt.Errorf("%w: not a QMSP code (no %q prefix)", ErrFormat, qrPrefix)
	}
	if len(s) > 1024 {
		return fmt.Errorf("%w: code of %d characters", ErrFormat, len(s))
	}
	b, err := base64.RawURLEncoding.DecodeString(s[len(qrPrefix):])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	r := reader{b: b}
	n := int(r.byte())
	gi := string(r.bytes(n))
	var out Display
	out.Gateway = gi
	out.Merchant = r.uint32()
	copy(out.Ref.KeyID[:], r.bytes(16))
	out.Ref.Unit = r.uint16()
	exp := r.uint64()
	if sale {
		if a := r.bytes(6); a != nil {
			out.Amount = int64(uint48(a))
		}
		out.Currency = r.uint16()
		if r.err == nil && (out.Amount == 0 || out.Currency == 0) {
			return fmt.Errorf("%w: a QMSP2 code without an amount", ErrFormat)
		}
		if r.err == nil {
			// A signed sale the payer could not pay (a currency no ISO
			// 4217 code has) is refused when the code is read, not later.
			if err := out.CheckSale(); err != nil {
				return err
			}
		}
	}
	copy(out.Pad[:], r.bytes(PadSize))
	copy(out.MACKey[:], r.bytes(MACKeySize))
	sl := int(r.byte())
	out.Sig = append([]byte(nil), r.bytes(sl)...)
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrFormat, len(r.b))
	}
	if err := CheckGatewayID(gi); err != nil {
		return err
	}
	if sl == 0 || sl > maxSigSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrFormat, sl)
	}
	if exp > 1<<40 {
		return fmt.Errorf("%w: expiry out of range", ErrFormat)
	}
	out.Expires = time.Unix(int64(exp), 0).UTC()
	*d = out
	return nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated (need %d bytes, have %d)", ErrFormat, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if v := r.bytes(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// CheckGatewayID reports whether gi is a valid gateway identifier GI_i:
// 1–32 characters of [A-Za-z0-9._-].
func CheckGatewayID(gi string) error {
	if len(gi) == 0 || len(gi) > maxGatewayID {
		return fmt.Errorf("%w: gateway identifier must be 1-%d characters", ErrFormat, maxGatewayID)
	}
	for i := 0; i < len(gi); i++ {
		c := gi[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: gateway identifier %q has a character outside [A-Za-z0-9._-]", ErrFormat, gi)
		}
	}
	return nil
}
