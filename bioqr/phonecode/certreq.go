package phonecode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/qshield/qshield/pki/certinfo"
)

// CertRequest is a device's certification request (steps C and b): its
// signing and encryption public keys, its device information and, for a
// phone, the commitment to its sealed owner template, signed by the signing
// key as proof that the requester holds it (the CSR's self-signature). The
// encryption key cannot sign; the unit vouches for it under that signature
// (it never leaves the unit, and anything sealed to it is useless to
// whoever does not hold it).
type CertRequest struct {
	Kind      DeviceKind `json:"kind"`
	Subject   string     `json:"subject"` // device serial, InforC / InforP / InforS
	Model     string     `json:"model,omitempty"`
	PublicKey []byte     `json:"public_key"` // compressed point (signing)
	// EncryptionKey is the compressed point of the separate decryption key.
	EncryptionKey []byte            `json:"encryption_key"`
	Curve         string            `json:"curve"` // "P-256" or "SM2"
	Extra         []byte            `json:"extra,omitempty"`
	Attrs         map[string]string `json:"attrs,omitempty"`
	// ProofOfPossession is the device's signature over SignedBytes.
	ProofOfPossession []byte `json:"pop"`
}

const popContext = "qshield bioqr certification request v2\x00"

// AttrEncryptionKey is the device attribute of a bioqr certificate that
// registers the device's encryption key (hex of the compressed point) with
// its signing key, the certificate's own.
const AttrEncryptionKey = "encryption_key"

// CertificateEncryptionKey returns the encryption key a bioqr device
// certificate registers (AttrEncryptionKey): what is sealed to that device.
// Never the certificate's own key, which only signs: a certificate without
// the attribute (issued before the keys were separated), or whose attribute
// repeats the signing key, is refused. It does not verify the certificate.
func CertificateEncryptionKey(cert *x509.Certificate) (*ecdsa.PublicKey, error) {
	sig, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: device certificate key is not an EC key", ErrMalformed)
	}
	info, err := certinfo.DeviceInfoOf(cert)
	if err != nil || info == nil || info.Attrs[AttrEncryptionKey] == "" {
		return nil, fmt.Errorf("%w: the device certificate registers no encryption key (certify the device again)", ErrNoEncryptionKey)
	}
	b, err := hex.DecodeString(info.Attrs[AttrEncryptionKey])
	if err != nil || len(b) != 33 {
		return nil, fmt.Errorf("%w: device certificate encryption key is not a hex compressed point", ErrMalformed)
	}
	x, y := elliptic.UnmarshalCompressed(sig.Curve, b)
	if x == nil {
		return nil, fmt.Errorf("%w: device certificate encryption key is not on the signing key's curve", ErrMalformed)
	}
	enc := &ecdsa.PublicKey{Curve: sig.Curve, X: x, Y: y}
	if enc.Equal(sig) {
		return nil, fmt.Errorf("%w: device certificate encryption key equals its signing key", ErrMalformed)
	}
	return enc, nil
}

// SignedBytes is the canonical encoding the proof of possession covers.
func (r *CertRequest) SignedBytes() []byte {
	var b cryptobyte.Builder
	b.AddBytes([]byte(popContext))
	b.AddUint8(uint8(r.Kind))
	AddString8(&b, r.Subject)
	AddString8(&b, r.Model)
	AddString8(&b, r.Curve)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.PublicKey) })
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.EncryptionKey) })
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.Extra) })
	// Attributes are signed in sorted order.
	keys := sortedKeys(r.Attrs)
	b.AddUint8(uint8(len(keys)))
	for _, k := range keys {
		AddString8(&b, k)
		AddString8(&b, r.Attrs[k])
	}
	out, err := b.Bytes()
	if err != nil { // only on over-long fields, which Validate refuses
		return nil
	}
	return out
}

// AddString8 appends s with a one-byte length (an error when longer than 255 bytes).
func AddString8(b *cryptobyte.Builder, s string) {
	if len(s) > 255 {
		b.SetError(fmt.Errorf("%w: field longer than 255 bytes", ErrMalformed))
		return
	}
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

// Validate checks the request's fields (not its keys or signature).
func (r *CertRequest) Validate() error {
	if !r.Kind.Valid() {
		return fmt.Errorf("%w: unknown device kind", ErrMalformed)
	}
	if err := CheckText("subject", r.Subject, 1, 64); err != nil {
		return err
	}
	if err := CheckText("model", r.Model, 0, 64); err != nil {
		return err
	}
	if len(r.Extra) > maxExtra {
		return fmt.Errorf("%w: extra data longer than %d bytes", ErrMalformed, maxExtra)
	}
	if len(r.Attrs) > 16 {
		return fmt.Errorf("%w: more than 16 attributes", ErrMalformed)
	}
	if _, ok := r.Attrs[AttrEncryptionKey]; ok {
		return fmt.Errorf("%w: attribute %s is set by the CA", ErrMalformed, AttrEncryptionKey)
	}
	for k, v := range r.Attrs {
		if err := CheckText("attribute name", k, 1, 64); err != nil {
			return err
		}
		if err := CheckText("attribute "+k, v, 0, 128); err != nil {
			return err
		}
	}
	return nil
}

// CheckText checks a text field: min..max bytes of UTF-8 without control characters.
func CheckText(what, s string, min, max int) error {
	if len(s) < min || len(s) > max || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s must be %d..%d bytes of UTF-8", ErrMalformed, what, min, max)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: %s contains a control character", ErrMalformed, what)
		}
	}
	return nil
}

// SigningKey decodes and checks the requested signing key and the proof of
// possession.
func (r *CertRequest) SigningKey() (*ecdsa.PublicKey, error) {
	pub, _, err := r.Keys()
	return pub, err
}

// Keys decodes and checks both requested keys and the proof of possession:
// two points on the same curve, distinct.
func (r *CertRequest) Keys() (sig, enc *ecdsa.PublicKey, err error) {
	if err := r.Validate(); err != nil {
		return nil, nil, err
	}
	var curve elliptic.Curve
	switch r.Curve {
	case "P-256":
		curve = elliptic.P256()
	case "SM2":
		curve = sm2Curve()
	default:
		return nil, nil, fmt.Errorf("%w: curve %q", ErrMalformed, r.Curve)
	}
	point := func(what string, b []byte) (*ecdsa.PublicKey, error) {
		if len(b) != 33 {
			return nil, fmt.Errorf("%w: %s must be a 33-byte compressed point", ErrMalformed, what)
		}
		x, y := elliptic.UnmarshalCompressed(curve, b)
		if x == nil {
			return nil, fmt.Errorf("%w: %s is not on %s", ErrMalformed, what, r.Curve)
		}
		return &ecdsa.PublicKey{Curve: curve, X: x, Y: y}, nil
	}
	pub, err := point("public key", r.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	enc, err = point("encryption key", r.EncryptionKey)
	if err != nil {
		return nil, nil, err
	}
	if pub.Equal(enc) {
		return nil, nil, fmt.Errorf("%w: the encryption key must differ from the signing key", ErrMalformed)
	}
	msg := r.SignedBytes()
	if msg == nil || !VerifySig(pub, msg, r.ProofOfPossession) {
		return nil, nil, fmt.Errorf("%w: proof of possession", ErrBadSignature)
	}
	return pub, enc, nil
}
