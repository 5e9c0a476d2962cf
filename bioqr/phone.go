package bioqr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/qshield/qshield/pki"
)

// RevocationChecker answers whether the certificate with this serial has
// been revoked (or is unknown to the CA). A phone asks it about the POS
// before paying; in-process it is the CA register (CARevocation), remotely
// the settlement server's status endpoint (Client).
type RevocationChecker interface {
	CheckRevoked(ctx context.Context, serial *big.Int) error
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

// Phone is the mobile device (移动设备 1): its secure unit holds the key, the
// CA root, its certificate and credential and the sealed account list.
type Phone struct {
	Unit       *SecureUnit
	Revocation RevocationChecker // nil: no revocation check (offline), not recommended
	Now        func() time.Time
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
// 4 and 5): the POS credential must be signed by the phone's CA, be a POS
// credential, unexpired and not revoked — otherwise the error wraps
// ErrIllegalPOS ("支付设备非法") — and the payload must carry the POS's
// valid signature (ErrBadSignature) and not be expired (ErrExpired).
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
	if err := c.Credential.Verify(root, KindPOS, now); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIllegalPOS, err)
	}
	if p.Revocation != nil {
		if err := p.Revocation.CheckRevoked(ctx, c.Credential.Serial); err != nil {
			if errors.Is(err, pki.ErrRevoked) || errors.Is(err, pki.ErrUnknownCert) || errors.Is(err, ErrIllegalPOS) {
				return nil, fmt.Errorf("%w: %w", ErrIllegalPOS, err)
			}
			return nil, fmt.Errorf("bioqr: POS revocation status: %w", err)
		}
	}
	tbs, err := c.signedBytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !verifySig(c.Credential.PublicKey, tbs, rawToSig(c.Signature)) {
		return nil, fmt.Errorf("%w: consumption QR not signed by the POS it names", ErrBadSignature)
	}
	skew := p.MaxClockSkew
	if skew == 0 {
		skew = 5 * time.Second
	}
	if !now.Before(c.Expires) {
		return nil, fmt.Errorf("%w: at %s", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	if c.Expires.Sub(now) > maxConsumptionTTL+skew {
		return nil, fmt.Errorf("%w: consumption QR valid for longer than %v", ErrMalformed, maxConsumptionTTL)
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
	m := &PaymentMessage{
		Amount: c.Amount, Currency: c.Currency, Account: account, MerchantAccount: c.Account,
		RandCode: c.RandCode, Expires: c.Expires, POSSerial: c.Credential.Serial, Created: p.now(),
		PhoneCredential: cred.Raw, Probe: probe,
	}
	if err := m.sign(p.Unit); err != nil {
		return "", err
	}
	kid := keyID(c.Credential.PublicKey)
	ct, err := seal(c.Credential.PublicKey, []byte(paymentInfo), paymentAAD(kid), m.Raw)
	if err != nil {
		return "", err
	}
	return EncodePaymentQR(&PaymentQR{KeyID: kid, Ciphertext: ct}), nil
}
