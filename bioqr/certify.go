package bioqr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/qshield/qshield/pki"
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
	info, err := pki.DeviceInfoOf(cert)
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
	addString8(&b, r.Subject)
	addString8(&b, r.Model)
	addString8(&b, r.Curve)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.PublicKey) })
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.EncryptionKey) })
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.Extra) })
	// Attributes are signed in sorted order.
	keys := sortedKeys(r.Attrs)
	b.AddUint8(uint8(len(keys)))
	for _, k := range keys {
		addString8(&b, k)
		addString8(&b, r.Attrs[k])
	}
	out, err := b.Bytes()
	if err != nil { // only on over-long fields, which Validate refuses
		return nil
	}
	return out
}

func addString8(b *cryptobyte.Builder, s string) {
	if len(s) > 255 {
		b.SetError(fmt.Errorf("%w: field longer than 255 bytes", ErrMalformed))
		return
	}
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

// NewCertRequest builds and signs a request inside the unit (steps A, C / a, b).
func NewCertRequest(u *SecureUnit, subject, model string, extra []byte, attrs map[string]string) (*CertRequest, error) {
	pub, encPub := u.Public(), u.EncryptionPublic()
	curve := "P-256"
	if pub.Curve != elliptic.P256() {
		curve = "SM2"
	}
	r := &CertRequest{Kind: u.Kind(), Subject: subject, Model: model, Curve: curve,
		PublicKey:     elliptic.MarshalCompressed(pub.Curve, pub.X, pub.Y),
		EncryptionKey: elliptic.MarshalCompressed(encPub.Curve, encPub.X, encPub.Y), Extra: extra, Attrs: attrs}
	if err := r.validate(); err != nil {
		return nil, err
	}
	sig, err := u.Sign(r.SignedBytes())
	if err != nil {
		return nil, err
	}
	r.ProofOfPossession = sig
	return r, nil
}

func (r *CertRequest) validate() error {
	if !r.Kind.Valid() {
		return fmt.Errorf("%w: unknown device kind", ErrMalformed)
	}
	if err := checkText("subject", r.Subject, 1, 64); err != nil {
		return err
	}
	if err := checkText("model", r.Model, 0, 64); err != nil {
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
		if err := checkText("attribute name", k, 1, 64); err != nil {
			return err
		}
		if err := checkText("attribute "+k, v, 0, 128); err != nil {
			return err
		}
	}
	return nil
}

func checkText(what, s string, min, max int) error {
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

// publicKey decodes and checks the requested signing key and the proof of
// possession.
func (r *CertRequest) publicKey() (*ecdsa.PublicKey, error) {
	pub, _, err := r.keys()
	return pub, err
}

// keys decodes and checks both requested keys and the proof of possession:
// two points on the same curve, distinct.
func (r *CertRequest) keys() (sig, enc *ecdsa.PublicKey, err error) {
	if err := r.validate(); err != nil {
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
	if msg == nil || !verifySig(pub, msg, r.ProofOfPossession) {
		return nil, nil, fmt.Errorf("%w: proof of possession", ErrBadSignature)
	}
	return pub, enc, nil
}

// Certified is what the CA returns to a device (steps E / d).
type Certified struct {
	CertDER    []byte `json:"cert"`
	Credential []byte `json:"credential"`
	CARoot     []byte `json:"ca_root"`
}

// Install stores c in the unit after checking it against the expected root
// (nil: trust the root in c, for first contact over an authenticated channel).
func (c *Certified) Install(u *SecureUnit, root *x509.Certificate) error {
	got, err := pki.ParseCertDER(c.CARoot)
	if err != nil {
		return fmt.Errorf("%w: CA root: %v", ErrMalformed, err)
	}
	if root != nil && !root.Equal(got) {
		return fmt.Errorf("%w: the CA root differs from the trusted one", ErrBadSignature)
	}
	cred, err := ParseCredential(c.Credential)
	if err != nil {
		return err
	}
	if err := cred.Verify(got, u.Kind(), time.Now()); err != nil {
		return err
	}
	return u.Install(got, c.CertDER, c.Credential)
}

// Certifier is the certification centre's side of steps D and c: it checks a
// request, issues the X.509 certificate through the platform CA (recorded in
// its register, so it can be revoked) and signs the compact credential with
// the same CA key.
type Certifier struct {
	CA       *pki.CA
	Validity time.Duration // 0: one year
}

// Certify issues a certificate and a credential for req. The device serial
// (req.Subject) must not be held by another active device of its kind.
func (c *Certifier) Certify(ctx context.Context, req *CertRequest) (*Certified, error) {
	return c.certify(ctx, req, nil, nil)
}

// principalKinds maps a bioqr device kind to the principal it becomes.
var principalKinds = map[DeviceKind]pki.PrincipalKind{KindPhone: pki.PrincipalPhone, KindPOS: pki.PrincipalPOS, KindSettlement: pki.PrincipalSettlement}

// certify is Certify with the principal's scope and the serial of the
// certificate it supersedes (nil: none).
func (c *Certifier) certify(ctx context.Context, req *CertRequest, scope []string, replaces *big.Int) (*Certified, error) {
	pub, encPub, err := req.keys()
	if err != nil {
		return nil, err
	}
	validity := c.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	kind := map[DeviceKind]string{KindPhone: pki.KindPhone, KindPOS: pki.KindPOS, KindSettlement: pki.KindServer}[req.Kind]
	attrs := map[string]string{}
	for k, v := range req.Attrs {
		attrs[k] = v
	}
	attrs[AttrEncryptionKey] = hex.EncodeToString(req.EncryptionKey) // registered with the certificate
	iss, err := c.CA.Issue(ctx, pki.IssueRequest{
		Role:       pki.RoleDevice,
		CommonName: req.Kind.String() + " " + req.Subject,
		PublicKey:  pub,
		Device:     &pki.DeviceInfo{Serial: req.Subject, Model: req.Model, Kind: kind, Attrs: attrs},
		Validity:   validity,
		Kind:       principalKinds[req.Kind],
		Scheme:     "bioqr",
		Scope:      scope,
		Replaces:   replaces,
	})
	if errors.Is(err, pki.ErrDeviceTaken) {
		return nil, fmt.Errorf("%w: %s %q is already certified (revoke it first): %w", ErrExists, req.Kind, req.Subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bioqr: issue certificate for %s %q: %w", req.Kind, req.Subject, err)
	}
	cred, err := c.signCredential(req.Kind, iss.Cert, pub, encPub, req.Extra)
	if err != nil {
		return nil, err
	}
	return &Certified{CertDER: iss.DER, Credential: cred, CARoot: c.CA.Certificate().Raw}, nil
}

func (c *Certifier) signCredential(kind DeviceKind, cert *x509.Certificate, pub, encPub *ecdsa.PublicKey, extra []byte) ([]byte, error) {
	sigAlg := uint8(sigECDSAP256)
	if c.CA.Algorithm() == pki.SM2 {
		sigAlg = sigSM2
	}
	tbs, err := credentialTBS(sigAlg, kind, cert.SerialNumber, cert.NotAfter, pub, encPub, extra)
	if err != nil {
		return nil, err
	}
	der, err := signWith(c.CA.Signer(), append([]byte(credContext), tbs...))
	if err != nil {
		return nil, err
	}
	sig, err := sigToRaw(der)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddBytes(tbs)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sig) })
	return b.Bytes()
}
