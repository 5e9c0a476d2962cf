package bioqr

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/qshield/qshield/bioqr/phonecode"
	"github.com/qshield/qshield/pki"
)

// RevocationChecker answers whether the certificate with this serial has
// been revoked (or is unknown to the CA). A phone asks it about the POS
// before paying; in-process it is the CA register (CARevocation), remotely
// the settlement server's status endpoint (Client).
type RevocationChecker interface {
	CheckRevoked(ctx context.Context, serial *big.Int) error
}

// CertificateSource gives the DER of the X.509 certificate the CA issued
// with this serial. A phone takes a POS's encryption key from there (the
// consumption QR has no room for it); it verifies what it gets against its
// own CA root, so the source need not be trusted. In-process it is the CA
// register (CARevocation), remotely the settlement server (Client).
type CertificateSource interface {
	CertificateDER(ctx context.Context, serial *big.Int) ([]byte, error)
}

// CARevocation checks the CA register directly.
type CARevocation struct{ CA *pki.CA }

// CheckRevoked returns an error wrapping pki.ErrRevoked, or the register's
// error for a serial it never issued.
func (r CARevocation) CheckRevoked(ctx context.Context, serial *big.Int) error {
	revoked, err := r.CA.IsRevoked(ctx, serial)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("%w: serial %s", pki.ErrRevoked, serial.Text(16))
	}
	return nil
}

// CertificateDER returns the certificate the CA register holds for serial.
func (r CARevocation) CertificateDER(ctx context.Context, serial *big.Int) ([]byte, error) {
	return r.CA.CertificateDER(ctx, serial.Text(16))
}

// Phone is the mobile device (移动设备 1): its secure unit holds the key, the
// CA root, its certificate and credential and the sealed account list.
type Phone struct {
	Unit       *SecureUnit
	Revocation RevocationChecker // nil: no revocation check (offline), not recommended
	// Certificates gives the POS's certificate, which registers the POS's
	// encryption key. Required to pay: nothing is ever sealed to the POS's
	// signing key.
	Certificates CertificateSource
	Now          func() time.Time
	// MaxClockSkew tolerates a POS clock ahead of the phone's (default 5 s).
	MaxClockSkew time.Duration
}

func (p *Phone) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

const accountsSecret = "accounts"

// SetAccounts stores the paying accounts in the secure unit, sealed to its
// own key (step F).
func (p *Phone) SetAccounts(accounts []string) error {
	if len(accounts) == 0 || len(accounts) > 16 {
		return fmt.Errorf("%w: 1..16 accounts", ErrMalformed)
	}
	for _, a := range accounts {
		if err := checkText("account", a, 1, 64); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(accounts)
	return p.Unit.PutSecret(accountsSecret, b)
}

// Accounts returns the accounts stored by SetAccounts.
func (p *Phone) Accounts() ([]string, error) {
	b, err := p.Unit.Secret(accountsSecret)
	if err != nil {
		return nil, err
	}
	var out []string
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%w: stored accounts: %v", ErrMalformed, err)
	}
	return out, nil
}

// ReadConsumption decodes a consumption QR and authenticates the POS (steps
// 4 and 5): the POS certificate the QR names (fetched from Certificates)
// must be signed by the phone's CA, be a POS's device certificate for the
// QR's merchant account, valid now, not revoked and register an encryption
// key — otherwise the error wraps ErrIllegalPOS ("支付设备非法") — and the
// payload must carry the POS's valid signature (ErrBadSignature) and not be
// expired (ErrExpired).
func (p *Phone) ReadConsumption(ctx context.Context, payload string) (*Consumption, error) {
	c, err := ParseConsumption(payload)
	if err != nil {
		return nil, err
	}
	root := p.Unit.Root()
	if root == nil {
		return nil, ErrNotCertified
	}
	now := p.now()
	cert, enc, err := p.posCertificate(ctx, root, c, now)
	if err != nil {
		return nil, err
	}
	if p.Revocation != nil {
		if err := p.Revocation.CheckRevoked(ctx, c.POSSerial); err != nil {
			if errors.Is(err, pki.ErrRevoked) || errors.Is(err, pki.ErrUnknownCert) || errors.Is(err, ErrIllegalPOS) {
				return nil, fmt.Errorf("%w: %w", ErrIllegalPOS, err)
			}
			return nil, fmt.Errorf("bioqr: POS revocation status: %w", err)
		}
	}
	if err := phonecode.AcceptConsumption(c, cert, enc, now, p.MaxClockSkew); err != nil {
		return nil, err
	}
	return c, nil
}

// Pay builds the payment QR text for c (steps 6 and 7): the payment message
// signed in the secure unit and encrypted to the POS key in c's verified
// credential. account must be one of the unit's accounts; probe is the
// optional ISO/IEC 19794-2 record from the phone's own sensor.
func (p *Phone) Pay(ctx context.Context, c *Consumption, account string, probe []byte) (string, error) {
	cred := p.Unit.Credential()
	if cred == nil {
		return "", ErrNotCertified
	}
	accts, err := p.Accounts()
	if err != nil {
		return "", err
	}
	found := false
	for _, a := range accts {
		found = found || a == account
	}
	if !found {
		return "", fmt.Errorf("%w: %q is not in this phone's secure unit", ErrAccountNotEnrolled, account)
	}
	m := phonecode.NewPayment(c, account, cred.Raw, probe, p.now())
	if err := m.SignWith(p.Unit.Sign); err != nil {
		return "", err
	}
	return phonecode.SealPayment(c, m)
}

// posCertificate fetches the certificate of the POS that c names and
// checks it (phonecode.VerifyPOSCertificate): signed by root, the serial c
// names, valid at now, a bioqr POS device certificate for c's merchant
// account with an EC signing key, and registering a separate encryption
// key, which it returns. Errors wrap ErrIllegalPOS, except a failure to
// reach the source.
func (p *Phone) posCertificate(ctx context.Context, root *x509.Certificate, c *Consumption, now time.Time) (*x509.Certificate, *ecdsa.PublicKey, error) {
	if p.Certificates == nil {
		return nil, nil, fmt.Errorf("bioqr: phone has no source for POS certificates (Phone.Certificates)")
	}
	der, err := p.Certificates.CertificateDER(ctx, c.POSSerial)
	if errors.Is(err, pki.ErrUnknownCert) {
		return nil, nil, fmt.Errorf("%w: %w", ErrIllegalPOS, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("bioqr: POS certificate %s: %w", c.POSSerial.Text(16), err)
	}
	return phonecode.VerifyPOSCertificate(root, der, c, now)
}
