package phonecode

import (
	"fmt"
	"math/big"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/qshield/qshield/bioqr/base45"
)

// PaymentMessage is the consumption authentication information InforPay of
// step 6: Sum + InforCn + RandCodeC + the phone's credential + (optionally)
// the probe InforFpN, plus — the standard fixes — the consumption QR's
// merchant account, currency, expiry and the serial of the POS it is meant
// for, all signed by the phone's secure unit. The patent's phone signs
// nothing, so anyone holding a copy of a phone's (public) credential could
// pay with a finger alone; the signature makes the phone a possession factor
// next to the fingerprint and lets the settlement server detect a POS that
// alters the amount or the payee.
type PaymentMessage struct {
	Amount          int64
	Currency        string // ISO 4217 numeric
	Account         string // paying account InforCn
	MerchantAccount string
	RandCode        [16]byte
	Expires         time.Time
	POSSerial       *big.Int // X.509 serial of the POS the phone verified
	Created         time.Time
	PhoneCredential []byte
	Probe           []byte // ISO/IEC 19794-2 record, or nil
	Signature       []byte
	// Raw is the full encoding, TBS the signed part.
	Raw, TBS []byte
}

const (
	paymentVersion = 1
	// PaymentContext prefixes what the phone signs; PaymentInfo is the
	// HPKE info of the payment QR's ciphertext.
	PaymentContext  = "qshield bioqr payment v1\x00"
	PaymentInfo     = "qshield bioqr payment v1"
	paymentQRPrefix = "QSP1:"
	// MaxProbe bounds a fingerprint probe.
	MaxProbe      = 8 << 10
	maxPaymentMsg = 16 << 10
)

// ComputeTBS encodes the bytes the phone signs.
func (m *PaymentMessage) ComputeTBS() ([]byte, error) {
	sb := m.POSSerial.Bytes()
	var b cryptobyte.Builder
	b.AddUint8(paymentVersion)
	b.AddUint64(uint64(m.Amount))
	AddString8(&b, m.Currency)
	AddString8(&b, m.Account)
	AddString8(&b, m.MerchantAccount)
	b.AddBytes(m.RandCode[:])
	b.AddUint32(uint32(m.Expires.Unix()))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sb) })
	b.AddUint32(uint32(m.Created.Unix()))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.PhoneCredential) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Probe) })
	return b.Bytes()
}

// SignWith fills TBS, Signature and Raw; sign returns the phone unit's
// ASN.1 DER signature of its argument (context label and TBS).
func (m *PaymentMessage) SignWith(sign func([]byte) ([]byte, error)) error {
	if len(m.Probe) > MaxProbe {
		return fmt.Errorf("%w: probe larger than %d bytes", ErrMalformed, MaxProbe)
	}
	tbs, err := m.ComputeTBS()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	sig, err := sign(append([]byte(PaymentContext), tbs...))
	if err != nil {
		return err
	}
	var b cryptobyte.Builder
	b.AddBytes(tbs)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sig) })
	raw, err := b.Bytes()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	m.TBS, m.Signature, m.Raw = tbs, sig, raw
	return nil
}

// ParsePaymentMessage decodes a payment message without verifying it.
func ParsePaymentMessage(data []byte) (*PaymentMessage, error) {
	if len(data) > maxPaymentMsg {
		return nil, fmt.Errorf("%w: payment message of %d bytes", ErrMalformed, len(data))
	}
	s := cryptobyte.String(data)
	m := &PaymentMessage{}
	var ver uint8
	var amount uint64
	var cur, acct, macct, serial, cred, probe, sig cryptobyte.String
	var exp, created uint32
	var rc []byte
	ok := s.ReadUint8(&ver) && ver == paymentVersion &&
		s.ReadUint64(&amount) &&
		s.ReadUint8LengthPrefixed(&cur) && s.ReadUint8LengthPrefixed(&acct) && s.ReadUint8LengthPrefixed(&macct) &&
		s.ReadBytes(&rc, 16) && s.ReadUint32(&exp) &&
		s.ReadUint8LengthPrefixed(&serial) && s.ReadUint32(&created) &&
		s.ReadUint16LengthPrefixed(&cred) && s.ReadUint16LengthPrefixed(&probe)
	if !ok {
		return nil, fmt.Errorf("%w: payment message layout", ErrMalformed)
	}
	tbsLen := len(data) - len(s)
	if !s.ReadUint8LengthPrefixed(&sig) || len(sig) == 0 || !s.Empty() {
		return nil, fmt.Errorf("%w: payment message signature", ErrMalformed)
	}
	if amount == 0 || amount > 1<<62 {
		return nil, fmt.Errorf("%w: amount out of range", ErrMalformed)
	}
	if len(serial) == 0 || len(serial) > 20 || serial[0] == 0 {
		return nil, fmt.Errorf("%w: POS serial", ErrMalformed)
	}
	if len(probe) > MaxProbe {
		return nil, fmt.Errorf("%w: probe too large", ErrMalformed)
	}
	for what, v := range map[string]cryptobyte.String{"currency": cur, "account": acct, "merchant account": macct} {
		if err := CheckText(what, string(v), 1, 64); err != nil {
			return nil, err
		}
	}
	raw := append([]byte(nil), data...)
	m.Amount = int64(amount)
	m.Currency, m.Account, m.MerchantAccount = string(cur), string(acct), string(macct)
	copy(m.RandCode[:], rc)
	m.Expires = time.Unix(int64(exp), 0).UTC()
	m.POSSerial = new(big.Int).SetBytes(serial)
	m.Created = time.Unix(int64(created), 0).UTC()
	m.PhoneCredential = append([]byte(nil), cred...)
	if len(probe) > 0 {
		m.Probe = append([]byte(nil), probe...)
	}
	m.Signature = append([]byte(nil), sig...)
	m.Raw, m.TBS = raw, raw[:tbsLen]
	return m, nil
}

// VerifySignature checks the phone's signature with its credential's key.
func (m *PaymentMessage) VerifySignature(c *Credential) error {
	if !VerifySig(c.PublicKey, append([]byte(PaymentContext), m.TBS...), m.Signature) {
		return fmt.Errorf("%w: payment message not signed by the phone's key", ErrBadSignature)
	}
	return nil
}

// PaymentQR is a decoded payment QR (支付二维码 ImageC): the 8-byte key ID of
// the POS it is encrypted to, in clear, and PubP_InforPay.
type PaymentQR struct {
	KeyID      [8]byte
	Ciphertext []byte
}

// maxPaymentQR bounds the text of a payment QR (a version-40 QR holds 4296
// alphanumeric characters).
const maxPaymentQR = 4296

// EncodePaymentQR returns the QR text: "QSP1:" and the Base45 encoding of
// key ID ‖ ciphertext (alphanumeric mode, 8.25 bits per byte).
func EncodePaymentQR(p *PaymentQR) string {
	return paymentQRPrefix + base45.Encode(append(p.KeyID[:], p.Ciphertext...))
}

// ParsePaymentQR decodes the QR text of a payment code.
func ParsePaymentQR(text string) (*PaymentQR, error) {
	if len(text) > maxPaymentQR {
		return nil, fmt.Errorf("%w: payment QR of %d characters", ErrMalformed, len(text))
	}
	if !strings.HasPrefix(text, paymentQRPrefix) {
		return nil, fmt.Errorf("%w: not a qshield payment QR", ErrMalformed)
	}
	b, err := base45.Decode(text[len(paymentQRPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(b) < 8+1+16 {
		return nil, fmt.Errorf("%w: payment QR too short", ErrMalformed)
	}
	p := &PaymentQR{Ciphertext: b[8:]}
	copy(p.KeyID[:], b[:8])
	return p, nil
}

// PaymentAAD is the payment QR ciphertext's additional data.
func PaymentAAD(keyID [8]byte) []byte {
	return append([]byte("qshield bioqr payment QR v1\x00"), keyID[:]...)
}

// Envelope is PubS_InforPay of step 12: the payment message as the phone
// signed it and, when the phone sent no probe, the one the POS captured,
// sealed to the settlement server's key. Encoding: u8 version ‖ u16-length
// message ‖ u8 probe source (1 phone, 2 POS sensor) ‖ u16-length POS probe ‖
// u32 POS time.
type Envelope struct {
	Message     []byte
	ProbeSource uint8
	POSProbe    []byte
	POSTime     time.Time
}

const (
	ProbeFromPhone uint8 = 1
	ProbeFromPOS   uint8 = 2
	// EnvelopeInfo is the HPKE info of the settlement envelope.
	EnvelopeInfo = "qshield bioqr settlement v1"
)

// Marshal encodes e.
func (e *Envelope) Marshal() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint8(1)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.Message) })
	b.AddUint8(e.ProbeSource)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.POSProbe) })
	b.AddUint32(uint32(e.POSTime.Unix()))
	return b.Bytes()
}

// ParseEnvelope decodes a decrypted envelope.
func ParseEnvelope(data []byte) (*Envelope, error) {
	s := cryptobyte.String(data)
	var ver, src uint8
	var msg, probe cryptobyte.String
	var t uint32
	if !s.ReadUint8(&ver) || ver != 1 || !s.ReadUint16LengthPrefixed(&msg) || !s.ReadUint8(&src) ||
		!s.ReadUint16LengthPrefixed(&probe) || !s.ReadUint32(&t) || !s.Empty() {
		return nil, fmt.Errorf("%w: settlement envelope layout", ErrMalformed)
	}
	if src != ProbeFromPhone && src != ProbeFromPOS {
		return nil, fmt.Errorf("%w: probe source %d", ErrMalformed, src)
	}
	if len(probe) > MaxProbe {
		return nil, fmt.Errorf("%w: probe too large", ErrMalformed)
	}
	e := &Envelope{Message: append([]byte(nil), msg...), ProbeSource: src, POSTime: time.Unix(int64(t), 0).UTC()}
	if len(probe) > 0 {
		e.POSProbe = append([]byte(nil), probe...)
	}
	return e, nil
}

// EnvelopeAAD is the settlement envelope's additional data.
func EnvelopeAAD(posSerial *big.Int) []byte {
	return append([]byte("qshield bioqr envelope v1\x00"), posSerial.Bytes()...)
}
