// Package ecqv implements Elliptic Curve Qu-Vanstone implicit certificates
// (SEC 4 v1.0) — the standard, analysed form of the self-certified
// ("self-verified") public keys of Girault that the seed's scheme is built on —
// over NIST P-256 (SHA-256, ECDSA) and the SM2 curve (SM3, SM2 signatures).
//
// Registration of entity X with the operator N (d_N, Q_N = d_N·G):
//
//  1. X picks k_X and sends ID_X and R_X = k_X·G        ([NewRequest])
//  2. N picks k, computes P_X = R_X + k·G,
//     e = H_n(Cert(ID_X, P_X)), r = e·k + d_N mod n       ([Issuer.Issue])
//  3. X computes d_X = e·k_X + r mod n and checks
//     d_X·G = e·P_X + Q_N                                 ([Complete])
//  4. anyone computes Q_X = e·P_X + Q_N                   ([Reconstruct])
//
// Cert(ID, P) is the canonical byte string
//
//	"qshield-ecqv-v1" ‖ 0x00 ‖ curve name ‖ 0x00 ‖ u16be(len ID) ‖ ID ‖ compressed P
//
// and H_n is the curve's hash truncated to the bit length of n and reduced mod
// n (SEC 1 §4.1.3 step 5). Because e depends on P_X, nobody but the holder of
// d_X can know the discrete logarithm of e·P_X + Q_N unless N cooperated: a
// forged P_X gives a public key whose private key nobody knows, so every later
// signature or key agreement by the forger fails. That is what "self-verified"
// means — no certificate is stored or transmitted, only (ID_X, P_X).
//
// Point arithmetic on public values (R_X + k·G, e·P_X + Q_N) goes through
// crypto/elliptic's Curve methods, which for P-256 and SM2 dispatch to the
// constant-time nistec / gmsm implementations. The modular scalar arithmetic
// on secrets in steps 2 and 3 (e·k + d_N, e·k_X + r mod n) uses
// filippo.io/bigmod — the constant-time Montgomery arithmetic of Go's own
// crypto/internal/bigmod, published as a module — never math/big, whose
// multiplication and reduction take time that depends on the values.
// Scalars are still carried in *big.Int between operations and encoded with
// FillBytes at a fixed width. Signing and ECDH with the derived keys use
// crypto/ecdsa, crypto/ecdh and gmsm, which are constant time.
package ecqv

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"unicode/utf8"
)

// MaxIDLen is the longest identity accepted (bytes).
const MaxIDLen = 128

// ValidateID checks an identity: 1–128 bytes of printable UTF-8 without
// control characters.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen || !utf8.ValidString(id) {
		return fmt.Errorf("%w: %q must be 1–%d bytes of UTF-8", ErrInvalidID, id, MaxIDLen)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character in %q", ErrInvalidID, id)
		}
	}
	return nil
}

// CertEncoding is Cert(ID, P), the byte string hashed into e.
func CertEncoding(c *Curve, id string, p *Point) []byte {
	b := make([]byte, 0, 32+len(id)+c.PointSize())
	b = append(b, "qshield-ecqv-v1"...)
	b = append(b, 0)
	b = append(b, c.name...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	return append(b, p.Bytes()...)
}

// CertHash is e = H_n(Cert(ID, P)).
func CertHash(c *Curve, id string, p *Point) *big.Int {
	h := c.newHash()
	h.Write(CertEncoding(c, id, p))
	return c.HashToScalar(h.Sum(nil))
}

// Request is X's registration request (ID_X, R_X).
type Request struct {
	ID string
	R  *Point
}

// RequestSecret is k_X, kept by X until the response arrives.
type RequestSecret struct {
	c  *Curve
	id string
	k  *big.Int
	r  *Point
}

// NewRequest draws k_X and returns the request to send and the secret to keep.
func NewRequest(c *Curve, rand io.Reader, id string) (*Request, *RequestSecret, error) {
	if err := ValidateID(id); err != nil {
		return nil, nil, err
	}
	k, err := c.RandomScalar(rand)
	if err != nil {
		return nil, nil, err
	}
	r, err := c.BaseMul(k)
	if err != nil {
		return nil, nil, err
	}
	return &Request{ID: id, R: r}, &RequestSecret{c: c, id: id, k: k, r: r}, nil
}

// Response is N's answer: the public reconstruction point P_X and the
// private-key reconstruction value r.
type Response struct {
	P *Point
	R *big.Int
}

// Issuer is the operator N's side of registration.
type Issuer struct {
	key *PrivateKey
}

// NewIssuer returns an issuer signing with N's long-term key d_N.
func NewIssuer(key *PrivateKey) *Issuer { return &Issuer{key: key} }

// Public is Q_N.
func (is *Issuer) Public() *PublicKey { return is.key.pub }

// Issue answers a registration request with fresh randomness from rand.
func (is *Issuer) Issue(rand io.Reader, req *Request) (*Response, error) {
	c := is.key.c
	if err := ValidateID(req.ID); err != nil {
		return nil, err
	}
	if req.R == nil || !c.same(req.R.c) {
		return nil, fmt.Errorf("%w: R_X missing or on another curve", ErrInvalidPoint)
	}
	for tries := 0; tries < 8; tries++ {
		k, err := c.RandomScalar(rand)
		if err != nil {
			return nil, err
		}
		kg, err := c.BaseMul(k)
		if err != nil {
			return nil, err
		}
		p, err := req.R.Add(kg)
		if err != nil {
			continue // R_X = −k·G: draw another k
		}
		e := CertHash(c, req.ID, p)
		if e.Sign() == 0 {
			continue
		}
		r, err := c.mulAddMod(e, k, is.key.d) // e·k + d_N: constant time
		if err != nil {
			return nil, err
		}
		if r.Sign() == 0 {
			continue
		}
		return &Response{P: p, R: r}, nil
	}
	return nil, fmt.Errorf("ecqv: could not issue for %q (degenerate request)", req.ID)
}

// Complete turns N's response into X's private key d_X = e·k_X + r and checks
// d_X·G = e·P_X + Q_N; a forged or corrupted response fails with
// ErrInvalidResponse.
func Complete(sec *RequestSecret, resp *Response, qN *PublicKey) (*PrivateKey, error) {
	c := sec.c
	if resp == nil || resp.P == nil || !c.same(resp.P.c) || !c.same(qN.c) {
		return nil, fmt.Errorf("%w: incomplete response", ErrInvalidResponse)
	}
	if !c.validScalar(resp.R) {
		return nil, fmt.Errorf("%w: r out of range", ErrInvalidResponse)
	}
	e := CertHash(c, sec.id, resp.P)
	d, err := c.mulAddMod(e, sec.k, resp.R) // e·k_X + r: constant time
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidResponse, err)
	}
	key, err := c.privateKey(d)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidResponse, err)
	}
	want, err := Reconstruct(c, sec.id, resp.P, qN)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidResponse, err)
	}
	if !want.Equal(key.pub) {
		return nil, ErrInvalidResponse
	}
	return key, nil
}

// Reconstruct computes X's public key Q_X = e·P_X + Q_N from public data.
func Reconstruct(c *Curve, id string, p *Point, qN *PublicKey) (*PublicKey, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if p == nil || !c.same(p.c) || !c.same(qN.c) {
		return nil, ErrCurveMismatch
	}
	e := CertHash(c, id, p)
	if e.Sign() == 0 {
		return nil, fmt.Errorf("%w: e = 0", ErrInvalidPoint)
	}
	ep, err := p.Mul(e)
	if err != nil {
		return nil, err
	}
	q, err := ep.Add(qN.q)
	if err != nil {
		return nil, err
	}
	return c.publicKey(q)
}

// ParseResponse decodes (P_X, r) as sent on the wire.
func ParseResponse(c *Curve, p, r []byte) (*Response, error) {
	pt, err := c.ParsePoint(p)
	if err != nil {
		return nil, err
	}
	k, err := c.ParseScalar(r)
	if err != nil {
		return nil, err
	}
	return &Response{P: pt, R: k}, nil
}

// ID returns the identity the secret was created for.
func (s *RequestSecret) ID() string { return s.id }

// Curve returns the request's curve.
func (s *RequestSecret) Curve() *Curve { return s.c }
