package bioqr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"github.com/qshield/qshield/bioqr/phonecode"
	"time"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/paypage"
	"github.com/qshield/qshield/pki"
)

// What the external tests (package bioqr_test) reach into; compiled only
// into the test binary.

// PaymentInfo is the HPKE info of the payment QR's ciphertext.
const PaymentInfo = paymentInfo

// PaymentAAD is paymentAAD: the payment QR ciphertext's additional data.
func PaymentAAD(keyID [8]byte) []byte { return phonecode.PaymentAAD(keyID) }

// Seal is seal: the suite-dependent sealing of plaintext to pub.
func Seal(pub *ecdsa.PublicKey, info, aad, plaintext []byte) ([]byte, error) {
	return seal(pub, info, aad, plaintext)
}

// VerifySig is verifySig.
func VerifySig(pub *ecdsa.PublicKey, msg, sig []byte) bool { return verifySig(pub, msg, sig) }

// SigToRaw is sigToRaw.
func SigToRaw(der []byte) ([]byte, error) { return sigToRaw(der) }

// RawToSig is rawToSig.
func RawToSig(raw []byte) []byte { return phonecode.RawToSig(raw) }

// SigSM2 is the credential's signature algorithm code for SM2-SM3.
const SigSM2 = sigSM2

// SM2Curve is the SM2 curve.
func SM2Curve() elliptic.Curve { return sm2Curve() }

// SetIdentity puts a credential, certificate and CA root into u without the
// checks of Install (the tests forge units with copied identities).
func (u *SecureUnit) SetIdentity(cred *Credential, cert, root *x509.Certificate) {
	u.cred, u.cert, u.root = cred, cert, root
}

// SetAudit replaces the settlement server's audit recorder.
func (s *Settlement) SetAudit(a audit.Recorder) { s.cfg.Audit = a }

// Publish is s.publish: shows req on the page of the POS p.
func (s *Settlement) Publish(ctx context.Context, p *pki.Principal, posCert *x509.Certificate, req *DisplayRequest) error {
	return s.publish(ctx, p, posCert, req)
}

// Displayed is what a POS page shows.
type Displayed = displayed

// Display is a displayed with the given payload, message and update time.
func Display(payload, message string, updated time.Time) Displayed {
	return displayed{payload: payload, message: message, updated: updated}
}

// MsgExpired is the page's message for an expired QR.
const MsgExpired = msgExpired

// CustomerStatus is customerStatus.
func CustomerStatus(d Displayed) paypage.Status { return customerStatus(d) }

// Version is version: the page's version string of d.
func Version(d Displayed) string { return version(d) }

// POSStatusURL is posStatusURL.
func POSStatusURL(id string, d Displayed) string { return posStatusURL(id, d) }

// Codes is the package's error-code registry.
func Codes() *httpx.Registry { return codes }
