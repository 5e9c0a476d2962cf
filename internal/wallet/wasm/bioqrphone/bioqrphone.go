// Package bioqrphone is the browser wallet's bioqr phone (seed 004): the
// steps of the CLI phone (bioqr.Phone, `qshield phone bioqr`) over package
// bioqr/phonecode, with the secure unit's signing done outside — by the
// wallet's non-extractable WebCrypto key — between a Prepare and a Finish.
// It imports no database and no network, so it runs compiled to
// WebAssembly in the wallet (internal/wallet/wasm) and natively in its
// tests.
//
// Enrolment (steps A–E): PrepareEnrolment checks the settlement server's
// credential against the CA root, seals the owner template to it (bound to
// the phone's signing key) and returns the certification request's bytes
// to sign; Finish adds the proof of possession and gives the body of POST
// /v1/wallet/bioqr/enrol; Install checks what the CA returned (its root is
// the pinned one, the credential is a phone's, signed by it, for this
// phone's signing key).
//
// Payment (steps 4–7): ReadConsumption parses the code (which POS
// certificate to look up); VerifyConsumption checks that certificate
// against the root, its revocation status, the POS's signature and the
// expiry, as bioqr.Phone.ReadConsumption does; NewPayment builds the
// payment message and returns the bytes to sign; Finish seals the signed
// message to the POS's encryption key and gives the payment QR's text.
// No probe is ever added: the payer's finger is on the POS's sensor.
package bioqrphone

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/qshield/qshield/bioqr/phonecode"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki/certinfo"
)

// Sentences the wallet shows for each refusal; nothing else reaches the payer.
const (
	MsgNotCode       = "This is not the code of a fingerprint payment terminal."
	MsgIllegalPOS    = "This terminal is not certified for payments. Do not pay here."
	MsgForged        = "This code was not made by the terminal it names. Do not pay here."
	MsgExpired       = "This code has expired. Ask the cashier for a new one."
	MsgNotEnrolled   = "Set up fingerprint payments on this phone first."
	MsgServer        = "The payment service could not be verified. Do not enrol here."
	MsgBadTemplate   = "The fingerprint file could not be read."
	MsgSetupFailed   = "Setting up fingerprint payments did not work. Please try again."
	MsgPrepareFailed = "The payment code could not be prepared. Please try again."
)

// Sentence is the payer's sentence for an error of this package.
func Sentence(err error) string {
	switch {
	case errors.Is(err, phonecode.ErrIllegalServer):
		return MsgServer
	case errors.Is(err, phonecode.ErrIllegalPOS):
		return MsgIllegalPOS
	case errors.Is(err, phonecode.ErrBadSignature):
		return MsgForged
	case errors.Is(err, phonecode.ErrExpired):
		return MsgExpired
	case errors.Is(err, phonecode.ErrNotCertified):
		return MsgNotEnrolled
	case errors.Is(err, phonecode.ErrMalformed):
		return MsgNotCode
	}
	return MsgPrepareFailed
}

// PublicKey decodes an uncompressed P-256 point (WebCrypto's "raw" export).
func PublicKey(raw []byte) (*ecdsa.PublicKey, error) {
	if len(raw) != 65 || raw[0] != 4 {
		return nil, fmt.Errorf("%w: want a 65-byte uncompressed P-256 point", phonecode.ErrMalformed)
	}
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a point on P-256", phonecode.ErrMalformed)
	}
	return k, nil
}

// compressed is pub's SEC 1 compressed encoding (what a certification
// request carries).
func compressed(pub *ecdsa.PublicKey) ([]byte, error) {
	b, err := pub.Bytes()
	if err != nil || len(b) != 65 {
		return nil, fmt.Errorf("%w: not a P-256 public key", phonecode.ErrMalformed)
	}
	out := make([]byte, 33)
	out[0] = 2 | b[64]&1
	copy(out[1:], b[1:33])
	return out, nil
}

// Enrolment is a certification request waiting for its proof of possession.
type Enrolment struct {
	req    *phonecode.CertRequest
	sealed []byte
	pub    *ecdsa.PublicKey
}

// PrepareEnrolment checks the settlement server's credential against root
// (ErrIllegalServer), seals template to it for the phone's signing key
// signPub and builds the certification request (kind phone, subject, the
// encryption key encPub, the template commitment). It returns the bytes the
// signing key signs (ECDSA P-256 with SHA-256).
func PrepareEnrolment(root *x509.Certificate, settlementCred []byte, signPub, encPub *ecdsa.PublicKey, template []byte, subject string, now time.Time) (*Enrolment, []byte, error) {
	cred, err := phonecode.ParseCredential(settlementCred)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", phonecode.ErrIllegalServer, err)
	}
	if err := cred.Verify(root, phonecode.KindSettlement, now); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", phonecode.ErrIllegalServer, err)
	}
	if len(template) == 0 || len(template) > phonecode.MaxProbe {
		return nil, nil, fmt.Errorf("%w: owner template of %d bytes", phonecode.ErrMalformed, len(template))
	}
	sealed, commit, err := phonecode.SealTemplate(cred, signPub, template)
	if err != nil {
		return nil, nil, err
	}
	signC, err := compressed(signPub)
	if err != nil {
		return nil, nil, err
	}
	encC, err := compressed(encPub)
	if err != nil {
		return nil, nil, err
	}
	req := &phonecode.CertRequest{Kind: phonecode.KindPhone, Subject: subject, Model: "qshield wallet", Curve: "P-256",
		PublicKey: signC, EncryptionKey: encC, Extra: commit}
	if err := req.Validate(); err != nil {
		return nil, nil, err
	}
	if signPub.Equal(encPub) {
		return nil, nil, fmt.Errorf("%w: the encryption key must differ from the signing key", phonecode.ErrMalformed)
	}
	tbs := req.SignedBytes()
	if tbs == nil {
		return nil, nil, fmt.Errorf("%w: certification request", phonecode.ErrMalformed)
	}
	return &Enrolment{req: req, sealed: sealed, pub: signPub}, tbs, nil
}

// Finish adds the signature (WebCrypto's 64-byte r ‖ s over the bytes
// PrepareEnrolment returned) and returns the JSON body of POST
// /v1/wallet/bioqr/enrol with the enrolment code.
func (e *Enrolment) Finish(rawSig []byte, code string) ([]byte, error) {
	der := phonecode.RawToSig(rawSig)
	if der == nil || !phonecode.VerifySig(e.pub, e.req.SignedBytes(), der) {
		return nil, fmt.Errorf("%w: the proof of possession does not verify", phonecode.ErrBadSignature)
	}
	e.req.ProofOfPossession = der
	return json.Marshal(map[string]any{"request": e.req, "sealed_template": e.sealed, "code": code})
}

// Certified is what the CA returned (bioqr.Certified).
type Certified struct {
	CertDER    []byte `json:"cert"`
	Credential []byte `json:"credential"`
	CARoot     []byte `json:"ca_root"`
}

// Install checks what the CA returned, as bioqr.Certified.Install does: the
// root is the pinned one, the credential parses, is a phone's, signed by
// it, valid now and certifies signPub. It returns the credential.
func Install(root *x509.Certificate, c *Certified, signPub *ecdsa.PublicKey, now time.Time) (*phonecode.Credential, error) {
	got, err := certinfo.ParseCertDER(c.CARoot)
	if err != nil || !got.Equal(root) {
		return nil, fmt.Errorf("%w: the CA root differs from the trusted one", phonecode.ErrBadSignature)
	}
	cred, err := phonecode.ParseCredential(c.Credential)
	if err != nil {
		return nil, err
	}
	if err := cred.Verify(root, phonecode.KindPhone, now); err != nil {
		return nil, err
	}
	if !cred.PublicKey.Equal(signPub) {
		return nil, fmt.Errorf("%w: the credential certifies another key", phonecode.ErrBadSignature)
	}
	return cred, nil
}

// Offer is what the wallet shows before paying.
type Offer struct {
	Merchant   string    `json:"merchant"`
	City       string    `json:"city"`
	AmountText string    `json:"amountText"`
	POSSerial  string    `json:"posSerial"` // hex: the certificate to look up
	Expires    time.Time `json:"expires"`
}

func offer(c *phonecode.Consumption) Offer {
	return Offer{Merchant: c.Name, City: c.City, AmountText: money.Format(c.Amount, c.Currency), POSSerial: c.POSSerial.Text(16), Expires: c.Expires}
}

// ReadConsumption parses a consumption QR (step 4) without verifying it.
func ReadConsumption(payload string) (Offer, error) {
	c, err := phonecode.ParseConsumption(payload)
	if err != nil {
		return Offer{}, err
	}
	return offer(c), nil
}

// POSStatus is what the platform answered about the POS certificate.
type POSStatus struct {
	Certificate []byte
	Known       bool
	Revoked     bool
}

// VerifyConsumption is step 5, as bioqr.Phone.ReadConsumption: the POS
// certificate the QR names must be signed by root, a POS device
// certificate for the QR's merchant account, valid, registering an
// encryption key (ErrIllegalPOS), known and not revoked (ErrIllegalPOS);
// the payload signed by it (ErrBadSignature) and unexpired (ErrExpired).
func VerifyConsumption(root *x509.Certificate, payload string, st POSStatus, now time.Time) (*phonecode.Consumption, error) {
	c, err := phonecode.ParseConsumption(payload)
	if err != nil {
		return nil, err
	}
	if root == nil {
		return nil, phonecode.ErrNotCertified
	}
	if !st.Known || len(st.Certificate) == 0 {
		return nil, fmt.Errorf("%w: the CA knows no certificate %s", phonecode.ErrIllegalPOS, c.POSSerial.Text(16))
	}
	cert, enc, err := phonecode.VerifyPOSCertificate(root, st.Certificate, c, now)
	if err != nil {
		return nil, err
	}
	if st.Revoked {
		return nil, fmt.Errorf("%w: certificate %s is revoked", phonecode.ErrIllegalPOS, c.POSSerial.Text(16))
	}
	if err := phonecode.AcceptConsumption(c, cert, enc, now, 0); err != nil {
		return nil, err
	}
	return c, nil
}

// OfferOf is the offer of a verified consumption.
func OfferOf(c *phonecode.Consumption) Offer { return offer(c) }

// Payment is a payment message waiting for the phone's signature.
type Payment struct {
	c    *phonecode.Consumption
	m    *phonecode.PaymentMessage
	cred *phonecode.Credential
	msg  []byte
}

// NewPayment builds the payment message for a verified consumption from
// account (step 6; no probe: the finger is on the POS's sensor) and returns
// the bytes the phone's signing key signs.
func NewPayment(c *phonecode.Consumption, account string, credential []byte, now time.Time) (*Payment, []byte, error) {
	if c == nil || c.POSCertificate == nil {
		return nil, nil, fmt.Errorf("%w: POS not verified", phonecode.ErrIllegalPOS)
	}
	cred, err := phonecode.ParseCredential(credential)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", phonecode.ErrNotCertified, err)
	}
	if err := phonecode.CheckText("account", account, 1, 64); err != nil {
		return nil, nil, err
	}
	m := phonecode.NewPayment(c, account, cred.Raw, nil, now)
	tbs, err := m.ComputeTBS()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", phonecode.ErrMalformed, err)
	}
	msg := append([]byte(phonecode.PaymentContext), tbs...)
	return &Payment{c: c, m: m, cred: cred, msg: msg}, msg, nil
}

// Finish signs the message with rawSig (WebCrypto's r ‖ s over the bytes
// NewPayment returned, checked against the credential's key) and seals it
// to the POS (step 7): the payment QR's text.
func (p *Payment) Finish(rawSig []byte) (string, error) {
	der := phonecode.RawToSig(rawSig)
	if der == nil || !phonecode.VerifySig(p.cred.PublicKey, p.msg, der) {
		return "", fmt.Errorf("%w: the payment signature does not verify with this phone's credential", phonecode.ErrBadSignature)
	}
	err := p.m.SignWith(func(msg []byte) ([]byte, error) {
		if string(msg) != string(p.msg) {
			return nil, fmt.Errorf("%w: the signed message changed", phonecode.ErrMalformed)
		}
		return der, nil
	})
	if err != nil {
		return "", err
	}
	return phonecode.SealPayment(p.c, p.m)
}
