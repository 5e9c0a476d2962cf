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

	"golang.org/x/crypto/cryptobyte"

	"github.com/qshield/qshield/bioqr/phonecode"
	"github.com/qshield/qshield/pki"
)

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
	if err := r.Validate(); err != nil {
		return nil, err
	}
	sig, err := u.Sign(r.SignedBytes())
	if err != nil {
		return nil, err
	}
	r.ProofOfPossession = sig
	return r, nil
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
	pub, encPub, err := req.Keys()
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
	tbs, err := phonecode.CredentialTBS(sigAlg, kind, cert.SerialNumber, cert.NotAfter, pub, encPub, extra)
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
