package phonecode

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/qshield/qshield/bioqr/emvqr"
	"github.com/qshield/qshield/money"
)

// GUI is the globally unique identifier of qshield's templates in the
// EMVCo payload (merchant account template 26 and unreserved templates 80+).
const GUI = "DEV.QSHIELD"

// Currency is an ISO 4217 currency (the EMVCo payload carries its numeric
// code, the ledger its alphabetic code).
type Currency = money.Currency

// LookupCurrency finds a currency by numeric or alphabetic code.
func LookupCurrency(code string) (Currency, error) {
	c, err := money.Lookup(code)
	if err != nil {
		return Currency{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return c, nil
}

// Merchant is what a POS prints in its consumption QR besides the amount.
type Merchant struct {
	Name     string `json:"name"`     // ≤ 25 characters
	City     string `json:"city"`     // ≤ 15 characters
	Country  string `json:"country"`  // ISO 3166-1 alpha-2
	MCC      string `json:"mcc"`      // ISO 18245 merchant category code
	Account  string `json:"account"`  // ledger account credited
	Currency string `json:"currency"` // ISO 4217 alphabetic or numeric
}

// Consumption is a decoded consumption QR (消费二维码): the amount Sum, the
// serial of the POS certificate (the patent's PriA_InforAP+PubP, which the
// phone fetches and verifies against the CA), the merchant account, the
// random perturbation code RandCodeP and an expiry, signed by the POS.
//
// The QR names the POS certificate instead of carrying the POS credential:
// the credential (157 bytes with the POS's separate encryption key)
// would push the payload past EMVCo's 512 characters, and the phone needs
// the certificate anyway, for the POS's encryption key (AttrEncryptionKey;
// nothing is sealed to the POS's signing key) and its revocation status.
type Consumption struct {
	Merchant
	Amount    int64 // minor units
	RandCode  [16]byte
	Expires   time.Time
	POSSerial *big.Int // the POS's X.509 certificate
	Signature []byte
	// Payload is the EMVCo string.
	Payload string
	// POSCertificate is the POS's certificate, verified against the
	// phone's CA root by VerifyConsumption (nil before).
	POSCertificate *x509.Certificate
	// sealTo is the POS's encryption key from POSCertificate.
	sealTo *ecdsa.PublicKey
}

const (
	consumptionVersion = 2
	consumptionContext = "qshield bioqr consumption v2\x00"
	chunkLen           = 80 // base64 characters per unreserved template
)

// SignedBytes is what the POS signs.
func (c *Consumption) SignedBytes() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddBytes([]byte(consumptionContext))
	b.AddUint8(consumptionVersion)
	for _, s := range []string{c.Account, c.MCC, c.Currency, c.Country, c.Name, c.City} {
		AddString8(&b, s)
	}
	b.AddUint64(uint64(c.Amount))
	b.AddUint32(uint32(c.Expires.Unix()))
	b.AddBytes(c.RandCode[:])
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(serialBytes(c.POSSerial)) })
	return b.Bytes()
}

// Validate checks the merchant fields and returns the currency.
func (m *Merchant) Validate() (Currency, error) {
	cur, err := LookupCurrency(m.Currency)
	if err != nil {
		return cur, err
	}
	if len(m.Name) == 0 || len(m.Name) > 25 || len(m.City) == 0 || len(m.City) > 15 {
		return cur, fmt.Errorf("%w: merchant name must be 1..25 and city 1..15 characters", ErrMalformed)
	}
	if len(m.Country) != 2 || strings.ToUpper(m.Country) != m.Country {
		return cur, fmt.Errorf("%w: country must be an ISO 3166-1 alpha-2 code", ErrMalformed)
	}
	if len(m.MCC) != 4 || strings.Trim(m.MCC, "0123456789") != "" {
		return cur, fmt.Errorf("%w: merchant category code must be 4 digits", ErrMalformed)
	}
	if err := CheckText("merchant account", m.Account, 1, 64); err != nil {
		return cur, err
	}
	return cur, nil
}

// EncodeConsumption signs c with sign (the POS unit's ASN.1 DER signature)
// and builds the EMVCo payload.
func EncodeConsumption(c *Consumption, sign func([]byte) ([]byte, error)) error {
	cur, err := c.Merchant.Validate()
	if err != nil {
		return err
	}
	c.Currency = cur.NumericCode()
	if c.Amount <= 0 {
		return fmt.Errorf("%w: amount %d must be positive", ErrMalformed, c.Amount)
	}
	if sb := serialBytes(c.POSSerial); len(sb) == 0 || len(sb) > 20 {
		return fmt.Errorf("%w: POS certificate serial must be 1..20 bytes", ErrMalformed)
	}
	amount := cur.Format(c.Amount)
	if err := emvqr.CheckAmount(amount); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	tbs, err := c.SignedBytes()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	der, err := sign(tbs)
	if err != nil {
		return err
	}
	sig, err := SigToRaw(der)
	if err != nil {
		return err
	}
	c.Signature = sig
	var b cryptobyte.Builder
	b.AddUint8(consumptionVersion)
	b.AddUint32(uint32(c.Expires.Unix()))
	b.AddBytes(c.RandCode[:])
	b.AddBytes(sig)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(serialBytes(c.POSSerial)) })
	blob, err := b.Bytes()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	text := base64.RawURLEncoding.EncodeToString(blob)
	acct, err := emvqr.EncodeObjects([]emvqr.DataObject{{ID: "00", Value: GUI}, {ID: "01", Value: c.Account}})
	if err != nil {
		return err
	}
	objs := []emvqr.DataObject{
		{ID: "00", Value: "01"}, {ID: "01", Value: emvqr.PointOfInitDynamic},
		{ID: "26", Value: acct},
		{ID: "52", Value: c.MCC}, {ID: "53", Value: cur.NumericCode()}, {ID: "54", Value: amount},
		{ID: "58", Value: c.Country}, {ID: "59", Value: c.Name}, {ID: "60", Value: c.City},
	}
	for i := 0; len(text) > 0; i++ {
		if i > 19 {
			return fmt.Errorf("%w: scheme data too long", ErrMalformed)
		}
		n := min(chunkLen, len(text))
		v, err := emvqr.EncodeObjects([]emvqr.DataObject{{ID: "00", Value: GUI}, {ID: "01", Value: text[:n]}})
		if err != nil {
			return err
		}
		objs = append(objs, emvqr.DataObject{ID: fmt.Sprintf("%02d", 80+i), Value: v})
		text = text[n:]
	}
	p, err := emvqr.Encode(objs)
	if err != nil {
		return fmt.Errorf("%w: consumption QR: %v", ErrMalformed, err)
	}
	c.Payload = p
	return nil
}

// ParseConsumption decodes a consumption QR payload. It checks the EMVCo
// structure and CRC and decodes the scheme data, but does not verify the
// POS credential or signature: that is VerifyConsumption (bioqr.Phone.ReadConsumption).
func ParseConsumption(payload string) (*Consumption, error) {
	p, err := emvqr.Parse(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if v, _ := p.Get(emvqr.IDPointOfInitiation); v != emvqr.PointOfInitDynamic {
		return nil, fmt.Errorf("%w: not a dynamic (one-payment) QR", ErrMalformed)
	}
	c := &Consumption{Payload: payload}
	c.MCC, _ = p.Get("52")
	c.Currency, _ = p.Get("53")
	c.Country, _ = p.Get("58")
	c.Name, _ = p.Get("59")
	c.City, _ = p.Get("60")
	cur, err := LookupCurrency(c.Currency)
	if err != nil {
		return nil, err
	}
	amt, ok := p.Get("54")
	if !ok {
		return nil, fmt.Errorf("%w: no amount", ErrMalformed)
	}
	// emvqr.Parse has checked the field's syntax; the value is exact in
	// the currency's minor units or refused.
	if c.Amount, err = cur.Parse(amt); err != nil || c.Amount <= 0 {
		return nil, fmt.Errorf("%w: amount %q in %s", ErrMalformed, amt, cur.Code)
	}
	acct, ok, err := p.Template("26")
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: no merchant account template 26", ErrMalformed)
	}
	if g, _ := emvqr.Lookup(acct, "00"); g != GUI {
		return nil, fmt.Errorf("%w: merchant account template is not qshield's", ErrMalformed)
	}
	c.Account, _ = emvqr.Lookup(acct, "01")
	var text strings.Builder
	for i := 0; i < 20; i++ {
		t, ok, err := p.Template(fmt.Sprintf("%02d", 80+i))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if !ok {
			break
		}
		if g, _ := emvqr.Lookup(t, "00"); g != GUI {
			return nil, fmt.Errorf("%w: template %d is not qshield's", ErrMalformed, 80+i)
		}
		part, _ := emvqr.Lookup(t, "01")
		text.WriteString(part)
	}
	blob, err := base64.RawURLEncoding.DecodeString(text.String())
	if err != nil {
		return nil, fmt.Errorf("%w: scheme data: %v", ErrMalformed, err)
	}
	s := cryptobyte.String(blob)
	var ver uint8
	var exp uint32
	var rc, sig, serial []byte
	if !s.ReadUint8(&ver) || ver != consumptionVersion || !s.ReadUint32(&exp) || !s.ReadBytes(&rc, 16) ||
		!s.ReadBytes(&sig, 64) || !s.ReadUint8LengthPrefixed((*cryptobyte.String)(&serial)) || !s.Empty() {
		return nil, fmt.Errorf("%w: scheme data layout", ErrMalformed)
	}
	if len(serial) == 0 || len(serial) > 20 || serial[0] == 0 {
		return nil, fmt.Errorf("%w: POS certificate serial must be 1..20 bytes without a leading zero", ErrMalformed)
	}
	copy(c.RandCode[:], rc)
	c.Expires = time.Unix(int64(exp), 0).UTC()
	c.Signature = append([]byte(nil), sig...)
	c.POSSerial = new(big.Int).SetBytes(serial)
	if _, err := c.Merchant.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// serialBytes is serial's big-endian encoding (nil for a missing or
// non-positive serial, which EncodeConsumption refuses).
func serialBytes(serial *big.Int) []byte {
	if serial == nil || serial.Sign() <= 0 {
		return nil
	}
	return serial.Bytes()
}
