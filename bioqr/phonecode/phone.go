package phonecode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/qshield/qshield/pki/certinfo"
)

const (
	// MaxConsumptionTTL bounds a consumption QR's validity.
	MaxConsumptionTTL = 10 * time.Minute
	// TemplateInfo is the HPKE info of the owner template sealed to the
	// settlement server.
	TemplateInfo = "qshield bioqr owner template v1"
	// AttrMerchantAccount is the POS certificate attribute naming the
	// merchant account it is certified for.
	AttrMerchantAccount = "merchant_account"
	// DefaultClockSkew tolerates a POS clock ahead of the phone's.
	DefaultClockSkew = 5 * time.Second
)

// KeyID is the 8-byte identifier of a public key: the first bytes of
// SHA-256 of its compressed point.
func KeyID(pub *ecdsa.PublicKey) (id [8]byte) {
	if pub == nil {
		return id
	}
	h := sha256.Sum256(elliptic.MarshalCompressed(pub.Curve, pub.X, pub.Y))
	copy(id[:], h[:8])
	return id
}

// VerifySig checks an ASN.1 DER signature (ECDSA P-256 with SHA-256, or
// SM2 with SM3 and the default user ID).
func VerifySig(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if pub == nil || len(sig) == 0 {
		return false
	}
	if pub.Curve == sm2.P256() {
		return sm2.VerifyASN1WithSM2(pub, nil, msg, sig)
	}
	d := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(pub, d[:], sig)
}

// SealTemplate seals an owner template to the settlement server's
// credential, bound to the phone's public key, and returns the sealed
// template and the commitment that goes into the phone's credential.
func SealTemplate(settlement *Credential, phone *ecdsa.PublicKey, template []byte) (sealed []byte, commitment []byte, err error) {
	if settlement == nil || settlement.Kind != KindSettlement {
		return nil, nil, fmt.Errorf("%w: not a settlement credential", ErrIllegalServer)
	}
	to, err := settlement.SealKey()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrIllegalServer, err)
	}
	if phone == nil {
		return nil, nil, fmt.Errorf("%w: no phone key", ErrMalformed)
	}
	sealed, err = Seal(to, []byte(TemplateInfo), elliptic.MarshalCompressed(phone.Curve, phone.X, phone.Y), template)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.Sum256(sealed)
	return sealed, h[:], nil
}

// VerifyPOSCertificate checks the certificate (DER) of the POS that c names
// (step 5): signed by root, the serial c names, valid at now, a bioqr POS
// device certificate for c's merchant account with an EC signing key, and
// registering a separate encryption key, which it returns. Every error wraps
// ErrIllegalPOS. Revocation is the caller's separate, online check.
func VerifyPOSCertificate(root *x509.Certificate, der []byte, c *Consumption, now time.Time) (*x509.Certificate, *ecdsa.PublicKey, error) {
	if root == nil {
		return nil, nil, ErrNotCertified
	}
	cert, err := certinfo.ParseCertDER(der)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: POS certificate: %w", ErrIllegalPOS, err)
	}
	if cert.SerialNumber.Cmp(c.POSSerial) != 0 {
		return nil, nil, fmt.Errorf("%w: the certificate is not the one the QR names", ErrIllegalPOS)
	}
	if err := checkCertSignature(root, cert); err != nil {
		return nil, nil, fmt.Errorf("%w: POS certificate not signed by CA %q: %w", ErrIllegalPOS, root.Subject.CommonName, err)
	}
	if now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) {
		return nil, nil, fmt.Errorf("%w: POS certificate not valid at %s: %w", ErrIllegalPOS, now.Format(time.RFC3339), ErrExpired)
	}
	if role, err := certinfo.RoleOf(cert); err != nil || role != certinfo.RoleDevice {
		return nil, nil, fmt.Errorf("%w: not a device certificate", ErrIllegalPOS)
	}
	info, err := certinfo.DeviceInfoOf(cert)
	if err != nil || info == nil || info.Kind != certinfo.KindPOS {
		return nil, nil, fmt.Errorf("%w: not a POS certificate", ErrIllegalPOS)
	}
	if info.Attrs[AttrMerchantAccount] != c.Account {
		return nil, nil, fmt.Errorf("%w: POS certified for merchant account %q, QR pays %q", ErrIllegalPOS, info.Attrs[AttrMerchantAccount], c.Account)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, nil, fmt.Errorf("%w: POS key is not an EC key", ErrIllegalPOS)
	}
	enc, err := CertificateEncryptionKey(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrIllegalPOS, err)
	}
	return cert, enc, nil
}

// checkCertSignature checks that root signed cert (ECDSA or SM2).
func checkCertSignature(root, cert *x509.Certificate) error {
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); ok && k.Curve == sm2.P256() {
		return (*smx509.Certificate)(cert).CheckSignatureFrom((*smx509.Certificate)(root))
	}
	return cert.CheckSignatureFrom(root)
}

// AcceptConsumption finishes reading c (steps 4–5) once its POS certificate
// passed VerifyPOSCertificate (and, online, the revocation check): the
// POS's signature over the payload (ErrBadSignature) and the expiry
// (ErrExpired; a validity longer than MaxConsumptionTTL plus skew is
// ErrMalformed). It records the certificate and the encryption key in c
// for BuildPayment.
func AcceptConsumption(c *Consumption, cert *x509.Certificate, enc *ecdsa.PublicKey, now time.Time, skew time.Duration) error {
	tbs, err := c.SignedBytes()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !VerifySig(pub, tbs, RawToSig(c.Signature)) {
		return fmt.Errorf("%w: consumption QR not signed by the POS it names", ErrBadSignature)
	}
	c.POSCertificate, c.sealTo = cert, enc
	if skew == 0 {
		skew = DefaultClockSkew
	}
	if !now.Before(c.Expires) {
		return fmt.Errorf("%w: at %s", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	if c.Expires.Sub(now) > MaxConsumptionTTL+skew {
		return fmt.Errorf("%w: consumption QR valid for longer than %v", ErrMalformed, MaxConsumptionTTL)
	}
	return nil
}

// SealTo is the POS encryption key AcceptConsumption took from the POS
// certificate (nil before).
func (c *Consumption) SealTo() *ecdsa.PublicKey { return c.sealTo }

// NewPayment is the payment message for c (step 6) before it is signed:
// Sum, InforCn (account), RandCode, the phone's credential and the optional
// probe, plus the merchant account, currency, expiry and POS serial.
func NewPayment(c *Consumption, account string, credential, probe []byte, now time.Time) *PaymentMessage {
	return &PaymentMessage{
		Amount: c.Amount, Currency: c.Currency, Account: account, MerchantAccount: c.Account,
		RandCode: c.RandCode, Expires: c.Expires, POSSerial: c.POSSerial, Created: now,
		PhoneCredential: credential, Probe: probe,
	}
}

// SealPayment encrypts a signed payment message to the POS that c names
// (step 7) and returns the payment QR text: the key ID of the POS's
// signing key in clear, the message HPKE-sealed to its encryption key —
// never to its signing key.
func SealPayment(c *Consumption, m *PaymentMessage) (string, error) {
	if c.POSCertificate == nil {
		return "", fmt.Errorf("%w: POS not verified (read the consumption QR first)", ErrIllegalPOS)
	}
	if m.Raw == nil {
		return "", fmt.Errorf("%w: payment message not signed", ErrMalformed)
	}
	kid := KeyID(c.POSCertificate.PublicKey.(*ecdsa.PublicKey))
	to := c.sealTo
	if to == nil {
		return "", fmt.Errorf("%w: POS encryption key unknown (read the consumption QR first)", ErrIllegalPOS)
	}
	ct, err := Seal(to, []byte(PaymentInfo), PaymentAAD(kid), m.Raw)
	if err != nil {
		return "", err
	}
	return EncodePaymentQR(&PaymentQR{KeyID: kid, Ciphertext: ct}), nil
}
