package phonecode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"golang.org/x/crypto/cryptobyte"
)

// DeviceKind is the role a credential certifies.
type DeviceKind uint8

const (
	KindPhone      DeviceKind = 1 // 移动设备 (mobile device)
	KindPOS        DeviceKind = 2 // 支付设备 (payment device)
	KindSettlement DeviceKind = 3 // 支付结算服务器 (payment settlement server)
)

// Valid reports whether k is a defined kind.
func (k DeviceKind) Valid() bool { return k >= KindPhone && k <= KindSettlement }

func (k DeviceKind) String() string {
	switch k {
	case KindPhone:
		return "phone"
	case KindPOS:
		return "pos"
	case KindSettlement:
		return "settlement"
	}
	return fmt.Sprintf("DeviceKind(%d)", uint8(k))
}

// ParseDeviceKind is the inverse of String.
func ParseDeviceKind(s string) (DeviceKind, error) {
	for k := KindPhone; k <= KindSettlement; k++ {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown device kind %q", ErrMalformed, s)
}

// Credential is the compact CA-signed "security certification information"
// of the patent, PriA(InforA + InforX + PubX): it binds a device kind, the
// serial of the device's X.509 certificate (the CA register entry that
// revocation is checked against), an expiry, the device public key and, for
// a phone, the commitment to its sealed owner template (InforFp), under the
// CA's signature. It is small enough for a QR code (157–190 bytes with a
// P-256 CA, against about 550 for the X.509 certificate). Encoding:
//
//	u8 version = 2 ‖ u8 signature algorithm (1 ECDSA-P256-SHA256, 2 SM2-SM3)
//	‖ u8 kind ‖ u8-length serial (1..20 bytes, no leading zero) ‖ u32 not-after
//	(Unix seconds) ‖ u8 key algorithm (1 P-256, 2 SM2) ‖ 33-byte compressed
//	signing point ‖ 33-byte compressed encryption point ‖ u8-length extra
//	(0..64) ‖ u8-length signature (64 bytes: r ‖ s)
//
// The signature covers "qshield bioqr credential vN\x00" (N the version)
// and every byte before the signature's length.
//
// Two keys. The patent gives each device one key pair for signing and for
// decryption; a key used both ways lets an oracle for one use attack the
// other, and forbids escrowing or rotating them apart. A device therefore
// holds a signing key (PublicKey: its X.509 certificate's key, its payment
// and request signatures, mutual TLS) and a separate decryption key
// (EncryptionKey: what payment codes, envelopes, templates and its own
// secrets are sealed to), both bound here and in the certificate's device
// attributes (AttrEncryptionKey). Version 1 credentials, from before the
// keys were separated, still parse (EncryptionKey nil) but nothing can be
// sealed to them: such a device is certified again (the settlement server
// does so by itself at start-up).
type Credential struct {
	SigAlg    uint8
	Kind      DeviceKind
	Serial    *big.Int
	NotAfter  time.Time
	PublicKey *ecdsa.PublicKey
	// EncryptionKey is the key to seal to (nil in a version 1 credential).
	EncryptionKey *ecdsa.PublicKey
	Extra         []byte
	Signature     []byte
	// Raw is the full encoding; TBS the signed part.
	Raw, TBS []byte
}

const (
	credVersion = 2
	credV1      = 1
	// SigECDSAP256 and SigSM2 are the credential signature algorithms.
	SigECDSAP256  = 1
	SigSM2        = 2
	keyP256       = 1
	keySM2        = 2
	maxExtra      = 64
	credContextV1 = "qshield bioqr credential v1\x00"
	// CredContext is the label the CA signs a credential under.
	CredContext   = "qshield bioqr credential v2\x00"
	maxCredential = 1 + 1 + 1 + 21 + 4 + 1 + 33 + 33 + 1 + maxExtra + 1 + 64
)

func curveCode(pub *ecdsa.PublicKey) (uint8, error) {
	switch {
	case pub == nil:
	case pub.Curve == elliptic.P256():
		return keyP256, nil
	case pub.Curve == sm2.P256():
		return keySM2, nil
	}
	return 0, fmt.Errorf("%w: credential keys must be P-256 or SM2", ErrMalformed)
}

// CredentialTBS encodes the signed part (version 2).
func CredentialTBS(sigAlg uint8, kind DeviceKind, serial *big.Int, notAfter time.Time, pub, encPub *ecdsa.PublicKey, extra []byte) ([]byte, error) {
	kc, err := curveCode(pub)
	if err != nil {
		return nil, err
	}
	if ec, err := curveCode(encPub); err != nil || ec != kc {
		return nil, fmt.Errorf("%w: the encryption key must be on the signing key's curve", ErrMalformed)
	}
	if pub.Equal(encPub) {
		return nil, fmt.Errorf("%w: the encryption key must differ from the signing key", ErrMalformed)
	}
	sb := serial.Bytes()
	if serial.Sign() <= 0 || len(sb) > 20 {
		return nil, fmt.Errorf("%w: serial must be 1..20 bytes", ErrMalformed)
	}
	if len(extra) > maxExtra {
		return nil, fmt.Errorf("%w: credential extra data longer than %d bytes", ErrMalformed, maxExtra)
	}
	na := notAfter.Unix()
	if na <= 0 || na > 1<<32-1 {
		return nil, fmt.Errorf("%w: expiry out of range", ErrMalformed)
	}
	var b cryptobyte.Builder
	b.AddUint8(credVersion)
	b.AddUint8(sigAlg)
	b.AddUint8(uint8(kind))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sb) })
	b.AddUint32(uint32(na))
	b.AddUint8(kc)
	b.AddBytes(elliptic.MarshalCompressed(pub.Curve, pub.X, pub.Y))
	b.AddBytes(elliptic.MarshalCompressed(encPub.Curve, encPub.X, encPub.Y))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(extra) })
	return b.Bytes()
}

// ParseCredential decodes a credential without verifying it (see Verify).
func ParseCredential(data []byte) (*Credential, error) {
	if len(data) > maxCredential {
		return nil, fmt.Errorf("%w: credential of %d bytes", ErrMalformed, len(data))
	}
	s := cryptobyte.String(data)
	var ver, sigAlg, kind, kc uint8
	var serial, point, encPoint, extra, sig cryptobyte.String
	var na uint32
	if !s.ReadUint8(&ver) || (ver != credVersion && ver != credV1) {
		return nil, fmt.Errorf("%w: credential version", ErrMalformed)
	}
	if !s.ReadUint8(&sigAlg) || (sigAlg != SigECDSAP256 && sigAlg != SigSM2) {
		return nil, fmt.Errorf("%w: credential signature algorithm", ErrMalformed)
	}
	if !s.ReadUint8(&kind) || !DeviceKind(kind).Valid() {
		return nil, fmt.Errorf("%w: credential kind", ErrMalformed)
	}
	if !s.ReadUint8LengthPrefixed(&serial) || len(serial) == 0 || len(serial) > 20 || serial[0] == 0 {
		return nil, fmt.Errorf("%w: credential serial", ErrMalformed)
	}
	if !s.ReadUint32(&na) || na == 0 {
		return nil, fmt.Errorf("%w: credential expiry", ErrMalformed)
	}
	if !s.ReadUint8(&kc) || !s.ReadBytes((*[]byte)(&point), 33) {
		return nil, fmt.Errorf("%w: credential key", ErrMalformed)
	}
	var curve elliptic.Curve
	switch kc {
	case keyP256:
		curve = elliptic.P256()
	case keySM2:
		curve = sm2.P256()
	default:
		return nil, fmt.Errorf("%w: credential key algorithm %d", ErrMalformed, kc)
	}
	x, y := elliptic.UnmarshalCompressed(curve, point)
	if x == nil {
		return nil, fmt.Errorf("%w: credential key is not a point on %s", ErrMalformed, curve.Params().Name)
	}
	var encKey *ecdsa.PublicKey
	if ver == credVersion {
		if !s.ReadBytes((*[]byte)(&encPoint), 33) {
			return nil, fmt.Errorf("%w: credential encryption key", ErrMalformed)
		}
		ex, ey := elliptic.UnmarshalCompressed(curve, encPoint)
		if ex == nil {
			return nil, fmt.Errorf("%w: credential encryption key is not a point on %s", ErrMalformed, curve.Params().Name)
		}
		if ex.Cmp(x) == 0 && ey.Cmp(y) == 0 {
			return nil, fmt.Errorf("%w: credential encryption key equals its signing key", ErrMalformed)
		}
		encKey = &ecdsa.PublicKey{Curve: curve, X: ex, Y: ey}
	}
	if !s.ReadUint8LengthPrefixed(&extra) || len(extra) > maxExtra {
		return nil, fmt.Errorf("%w: credential extra data", ErrMalformed)
	}
	tbsLen := len(data) - len(s)
	if !s.ReadUint8LengthPrefixed(&sig) || len(sig) != 64 || !s.Empty() {
		return nil, fmt.Errorf("%w: credential signature", ErrMalformed)
	}
	raw := append([]byte(nil), data...)
	return &Credential{
		SigAlg:        sigAlg,
		Kind:          DeviceKind(kind),
		Serial:        new(big.Int).SetBytes(serial),
		NotAfter:      time.Unix(int64(na), 0).UTC(),
		PublicKey:     &ecdsa.PublicKey{Curve: curve, X: x, Y: y},
		EncryptionKey: encKey,
		Extra:         append([]byte(nil), extra...),
		Signature:     append([]byte(nil), sig...),
		Raw:           raw,
		TBS:           raw[:tbsLen],
	}, nil
}

// Verify checks the credential against the CA root: the CA's signature, the
// expected kind and expiry at time at. Revocation is a separate, online
// check (RevocationChecker). Failures wrap ErrBadSignature, ErrExpired or
// ErrMalformed.
func (c *Credential) Verify(root *x509.Certificate, kind DeviceKind, at time.Time) error {
	if root == nil {
		return fmt.Errorf("%w: no CA root", ErrBadSignature)
	}
	pub, ok := root.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: CA key type %T", ErrBadSignature, root.PublicKey)
	}
	want := uint8(SigECDSAP256)
	if pub.Curve == sm2.P256() {
		want = SigSM2
	}
	if c.SigAlg != want {
		return fmt.Errorf("%w: credential signature algorithm does not match the CA", ErrBadSignature)
	}
	ctxLabel := CredContext
	if c.EncryptionKey == nil {
		ctxLabel = credContextV1
	}
	if !VerifySig(pub, append([]byte(ctxLabel), c.TBS...), RawToSig(c.Signature)) {
		return fmt.Errorf("%w: credential not signed by CA %q", ErrBadSignature, root.Subject.CommonName)
	}
	if c.Kind != kind {
		return fmt.Errorf("%w: credential is for a %s, need a %s", ErrMalformed, c.Kind, kind)
	}
	if !at.Before(c.NotAfter) {
		return fmt.Errorf("%w: credential expired at %s", ErrExpired, c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// ErrNoEncryptionKey is a credential from before signing and decryption
// keys were separated: nothing may be sealed to its signing key.
var ErrNoEncryptionKey = fmt.Errorf("%w: credential has no separate encryption key (certified before keys were separated; certify the device again)", ErrMalformed)

// SealKey is the key to seal to for c.
func (c *Credential) SealKey() (*ecdsa.PublicKey, error) {
	if c == nil || c.EncryptionKey == nil {
		return nil, ErrNoEncryptionKey
	}
	return c.EncryptionKey, nil
}
