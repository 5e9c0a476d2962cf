package bioqr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"

	"github.com/emmansun/gmsm/sm2"

	"github.com/qshield/qshield/bioqr/phonecode"
)

// The phone's side of the scheme — codes, credentials, the payment message,
// the sealing suites and the POS certificate check — lives in package
// phonecode, which imports no database so that the browser wallet runs it
// compiled to WebAssembly. These are its names as bioqr has always
// exported them.

// Sentinel errors. Every refusal wraps exactly one of them, so callers (the
// HTTP layer, the CLI, the demo) can tell the attacks apart.
var (
	ErrMalformed          = phonecode.ErrMalformed
	ErrDecrypt            = phonecode.ErrDecrypt
	ErrBadSignature       = phonecode.ErrBadSignature
	ErrIllegalPOS         = phonecode.ErrIllegalPOS
	ErrIllegalPhone       = phonecode.ErrIllegalPhone
	ErrIllegalServer      = phonecode.ErrIllegalServer
	ErrExpired            = phonecode.ErrExpired
	ErrRandCodeUnknown    = phonecode.ErrRandCodeUnknown
	ErrRandCodeUsed       = phonecode.ErrRandCodeUsed
	ErrWrongPOS           = phonecode.ErrWrongPOS
	ErrMismatch           = phonecode.ErrMismatch
	ErrNoFingerprint      = phonecode.ErrNoFingerprint
	ErrFingerprint        = phonecode.ErrFingerprint
	ErrLocked             = phonecode.ErrLocked
	ErrAccountNotEnrolled = phonecode.ErrAccountNotEnrolled
	ErrInsufficientFunds  = phonecode.ErrInsufficientFunds
	ErrWrongKey           = phonecode.ErrWrongKey
	ErrNotCertified       = phonecode.ErrNotCertified
	ErrExists             = phonecode.ErrExists
	ErrNotFound           = phonecode.ErrNotFound
	ErrNoEncryptionKey    = phonecode.ErrNoEncryptionKey
)

type (
	// DeviceKind is the role a credential certifies.
	DeviceKind = phonecode.DeviceKind
	// Credential is the compact CA-signed certification information.
	Credential = phonecode.Credential
	// Merchant is what a POS prints in its consumption QR besides the amount.
	Merchant = phonecode.Merchant
	// Consumption is a decoded consumption QR.
	Consumption = phonecode.Consumption
	// Currency is an ISO 4217 currency.
	Currency = phonecode.Currency
	// PaymentMessage is the consumption authentication information InforPay.
	PaymentMessage = phonecode.PaymentMessage
	// PaymentQR is a decoded payment QR.
	PaymentQR = phonecode.PaymentQR
	// Envelope is PubS_InforPay of step 12.
	Envelope = phonecode.Envelope
	// CertRequest is a device's certification request.
	CertRequest = phonecode.CertRequest
	// Suite identifies the public-key encryption of a ciphertext.
	Suite = phonecode.Suite
)

const (
	KindPhone      = phonecode.KindPhone
	KindPOS        = phonecode.KindPOS
	KindSettlement = phonecode.KindSettlement

	SuiteHPKEP256 = phonecode.SuiteHPKEP256
	SuiteSM2SM4   = phonecode.SuiteSM2SM4

	ProbeFromPhone = phonecode.ProbeFromPhone
	ProbeFromPOS   = phonecode.ProbeFromPOS

	// GUI is qshield's identifier in the EMVCo payload.
	GUI = phonecode.GUI
	// AttrEncryptionKey is the certificate attribute registering a device's encryption key.
	AttrEncryptionKey = phonecode.AttrEncryptionKey
	// AttrMerchantAccount is the POS certificate attribute naming its merchant account.
	AttrMerchantAccount = phonecode.AttrMerchantAccount

	sigECDSAP256      = phonecode.SigECDSAP256
	sigSM2            = phonecode.SigSM2
	credContext       = phonecode.CredContext
	paymentInfo       = phonecode.PaymentInfo
	envelopeInfo      = phonecode.EnvelopeInfo
	templateInfo      = phonecode.TemplateInfo
	maxProbe          = phonecode.MaxProbe
	maxConsumptionTTL = phonecode.MaxConsumptionTTL
)

// ParseDeviceKind is the inverse of DeviceKind.String.
func ParseDeviceKind(s string) (DeviceKind, error) { return phonecode.ParseDeviceKind(s) }

// ParseCredential decodes a credential without verifying it (see Credential.Verify).
func ParseCredential(data []byte) (*Credential, error) { return phonecode.ParseCredential(data) }

// LookupCurrency finds a currency by numeric or alphabetic code.
func LookupCurrency(code string) (Currency, error) { return phonecode.LookupCurrency(code) }

// ParseConsumption decodes a consumption QR payload without verifying the
// POS (that is Phone.ReadConsumption).
func ParseConsumption(payload string) (*Consumption, error) {
	return phonecode.ParseConsumption(payload)
}

// ParsePaymentMessage decodes a payment message without verifying it.
func ParsePaymentMessage(data []byte) (*PaymentMessage, error) {
	return phonecode.ParsePaymentMessage(data)
}

// EncodePaymentQR returns the QR text of a payment code.
func EncodePaymentQR(p *PaymentQR) string { return phonecode.EncodePaymentQR(p) }

// ParsePaymentQR decodes the QR text of a payment code.
func ParsePaymentQR(text string) (*PaymentQR, error) { return phonecode.ParsePaymentQR(text) }

// ParseEnvelope decodes a decrypted envelope.
func ParseEnvelope(data []byte) (*Envelope, error) { return phonecode.ParseEnvelope(data) }

// CertificateEncryptionKey returns the encryption key a bioqr device
// certificate registers (never its signing key).
func CertificateEncryptionKey(cert *x509.Certificate) (*ecdsa.PublicKey, error) {
	return phonecode.CertificateEncryptionKey(cert)
}

// SealTemplate seals an owner template to the settlement server's
// credential, bound to the phone's public key, and returns the sealed
// template and the commitment that goes into the phone's credential.
func SealTemplate(settlement *Credential, phone *ecdsa.PublicKey, template []byte) (sealed []byte, commitment []byte, err error) {
	return phonecode.SealTemplate(settlement, phone, template)
}

func sm2Curve() elliptic.Curve { return sm2.P256() }

func seal(pub *ecdsa.PublicKey, info, aad, plaintext []byte) ([]byte, error) {
	return phonecode.Seal(pub, info, aad, plaintext)
}

func open(priv any, info, aad, ct []byte) ([]byte, error) { return phonecode.Open(priv, info, aad, ct) }

func verifySig(pub *ecdsa.PublicKey, msg, sig []byte) bool { return phonecode.VerifySig(pub, msg, sig) }

func sigToRaw(der []byte) ([]byte, error) { return phonecode.SigToRaw(der) }

func keyID(pub *ecdsa.PublicKey) [8]byte { return phonecode.KeyID(pub) }

func checkText(what, s string, min, max int) error { return phonecode.CheckText(what, s, min, max) }
