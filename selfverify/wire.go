package selfverify

import (
	"encoding/json"
	"fmt"

	"github.com/qshield/qshield/selfverify/ecqv"
)

// The stateless message layer of a payment. [User.Pay], [Vendor.OpenPayment]
// and [Vendor.NextPayment] add the state (wallet, sessions, online
// reservation, catalogue, clock); the functions below are the cryptography
// alone, for another implementation of either side, for tests that build or
// forge messages, and for measuring the scheme's per-payment cost. The user's
// side of building messages is [FirstPaymentMessage] and [NextPaymentMessage].

// SigningBytes returns the canonical bytes that N's signature on the token
// covers (domain-separated, length-prefixed fields).
func (t *Token) SigningBytes() []byte { return t.signingBytes() }

// SigningBytes returns the canonical bytes that the user's signature Sig
// covers.
func (m *WithdrawRequest) SigningBytes() []byte { return m.signingBytes() }

// SigningBytes returns the canonical bytes that the vendor's signature Sig
// covers.
func (m *DepositRequest) SigningBytes() []byte { return m.signingBytes() }

// OpenFirstPayment is V's cryptography on a first payment (seed step 1.2)
// without any state: K_UV from d_V·A, decrypt, check that the payment names
// vendor, verify N's signature on the token with qN and the holder's
// signature with the token key. It returns the payload, K_UV (the key of the
// receipt, see [SealReceipt]) and the session ID. It checks neither price,
// expiry, freshness nor limit: those need V's catalogue, clock and state.
func OpenFirstPayment(dV *ecqv.PrivateKey, qN *ecqv.PublicKey, vendor string, m OpenPayment) (*FirstPayload, []byte, string, error) {
	if err := m.validate(); err != nil {
		return nil, nil, "", err
	}
	curve := dV.Curve()
	a, err := curve.ParsePublicKey(m.A)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: a: %v", ErrInvalidMessage, err)
	}
	z, err := dV.ECDH(a)
	if err != nil {
		return nil, nil, "", err
	}
	k1, err := deriveKUV(curve, z, a.Bytes(), vendor)
	if err != nil {
		return nil, nil, "", err
	}
	session := sessionID(curve, a.Bytes())
	pt, err := openOnce(curve, k1, nonceRequest, m.Ciphertext, payAAD(session, 1))
	if err != nil {
		return nil, nil, "", err
	}
	p, err := Parse[FirstPayload](pt)
	if err != nil {
		return nil, nil, "", err
	}
	if p.Vendor != vendor {
		return nil, nil, "", fmt.Errorf("%w: %s", ErrWrongVendor, p.Vendor)
	}
	if err := p.Token.Verify(qN); err != nil {
		return nil, nil, "", err
	}
	holder, err := curve.ParsePublicKey(p.Token.Token.Key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: token key: %v", ErrInvalidMessage, err)
	}
	if !holder.Verify(p.holderBytes(a.Bytes()), p.HolderSig) {
		return nil, nil, "", fmt.Errorf("%w: payment not signed by the token's holder", ErrBadSignature)
	}
	return p, k1, session, nil
}

// OpenNextPayment decrypts later payment m under k = K_seq (V's side of
// seed step J.2) and parses its payload.
func OpenNextPayment(c *ecqv.Curve, k []byte, m NextPayment) (*NextPayload, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	pt, err := openOnce(c, k, nonceRequest, m.Ciphertext, payAAD(m.Session, m.Seq))
	if err != nil {
		return nil, err
	}
	return Parse[NextPayload](pt)
}

// SealReceipt seals V's receipt rc under k = K_seq of its session and
// sequence number (the response nonce: each key seals one request and one
// response).
func SealReceipt(c *ecqv.Curve, k []byte, rc Receipt) (*PaymentResponse, error) {
	pt, err := json.Marshal(rc)
	if err != nil {
		return nil, fmt.Errorf("selfverify: receipt: %w", err)
	}
	ct, err := sealOnce(c, k, nonceResponse, pt, payAAD(rc.Session, rc.Seq))
	if err != nil {
		return nil, err
	}
	return &PaymentResponse{Session: rc.Session, Seq: rc.Seq, Ciphertext: ct}, nil
}

// OpenReceipt decrypts V's answer under k = K_seq (U's side) and parses the
// receipt.
func OpenReceipt(c *ecqv.Curve, k []byte, resp PaymentResponse) (*Receipt, error) {
	if err := resp.validate(); err != nil {
		return nil, err
	}
	pt, err := openOnce(c, k, nonceResponse, resp.Ciphertext, payAAD(resp.Session, resp.Seq))
	if err != nil {
		return nil, err
	}
	return Parse[Receipt](pt)
}
