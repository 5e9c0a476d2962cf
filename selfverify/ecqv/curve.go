package ecqv

import (
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"

	"filippo.io/bigmod"
	gmecdh "github.com/emmansun/gmsm/ecdh"
	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
)

// Errors returned by this package; test with errors.Is.
var (
	ErrUnknownCurve    = errors.New("ecqv: unknown curve")
	ErrInvalidPoint    = errors.New("ecqv: invalid point encoding or point not on the curve")
	ErrInvalidScalar   = errors.New("ecqv: invalid scalar")
	ErrInvalidID       = errors.New("ecqv: invalid identity")
	ErrInvalidResponse = errors.New("ecqv: issuer response does not reconstruct the private key (forged or corrupted)")
	ErrCurveMismatch   = errors.New("ecqv: keys on different curves")
)

// Curve is one supported elliptic curve with its hash function: P-256 with
// SHA-256 (signatures are ECDSA) or the SM2 curve with SM3 (signatures are
// SM2). Values are immutable and safe for concurrent use.
type Curve struct {
	name    string
	ec      elliptic.Curve
	n       *big.Int
	newHash func() hash.Hash
	size    int // byte length of scalars and field elements
	ecdhP   ecdh.Curve
	ecdhSM  gmecdh.Curve
}

// P256 returns NIST P-256 with SHA-256 and ECDSA.
func P256() *Curve {
	return &Curve{name: "P-256", ec: elliptic.P256(), n: elliptic.P256().Params().N,
		newHash: sha256.New, size: 32, ecdhP: ecdh.P256()}
}

// SM2 returns the SM2 curve (GB/T 32918) with SM3 and SM2 signatures.
func SM2() *Curve {
	c := sm2.P256()
	return &Curve{name: "SM2", ec: c, n: c.Params().N, newHash: sm3.New, size: 32, ecdhSM: gmecdh.P256()}
}

// CurveByName returns the curve called "P-256" or "SM2".
func CurveByName(name string) (*Curve, error) {
	switch name {
	case "P-256", "p256", "P256", "":
		return P256(), nil
	case "SM2", "sm2":
		return SM2(), nil
	}
	return nil, fmt.Errorf("%w: %q (want P-256 or SM2)", ErrUnknownCurve, name)
}

// Name is the curve's canonical name ("P-256" or "SM2").
func (c *Curve) Name() string { return c.name }

// Hash returns a new instance of the curve's hash (SHA-256 or SM3).
func (c *Curve) Hash() hash.Hash { return c.newHash() }

// HashFunc returns the constructor of the curve's hash.
func (c *Curve) HashFunc() func() hash.Hash { return c.newHash }

// Order is a copy of the group order n.
func (c *Curve) Order() *big.Int { return new(big.Int).Set(c.n) }

// ScalarSize is the byte length of an encoded scalar (32).
func (c *Curve) ScalarSize() int { return c.size }

// PointSize is the byte length of an encoded (compressed) point (33).
func (c *Curve) PointSize() int { return 1 + c.size }

func (c *Curve) same(o *Curve) bool { return c != nil && o != nil && c.name == o.name }

// Point is a validated point of the curve other than the point at infinity.
type Point struct {
	c    *Curve
	x, y *big.Int
}

// ParsePoint decodes a compressed (33-byte) or uncompressed (65-byte) SEC 1
// point and checks that it lies on the curve. The point at infinity is refused.
func (c *Curve) ParsePoint(b []byte) (*Point, error) {
	var x, y *big.Int
	switch {
	case len(b) == 1+c.size && (b[0] == 2 || b[0] == 3):
		x, y = elliptic.UnmarshalCompressed(c.ec, b)
	case len(b) == 1+2*c.size && b[0] == 4:
		x, y = elliptic.Unmarshal(c.ec, b) //nolint:staticcheck // validated decoding of a public point
	}
	if x == nil {
		return nil, fmt.Errorf("%w (%s, %d bytes)", ErrInvalidPoint, c.name, len(b))
	}
	return &Point{c: c, x: x, y: y}, nil
}

// Bytes is the compressed SEC 1 encoding (33 bytes).
func (p *Point) Bytes() []byte { return elliptic.MarshalCompressed(p.c.ec, p.x, p.y) }

// Uncompressed is the uncompressed SEC 1 encoding (65 bytes).
func (p *Point) Uncompressed() []byte {
	return elliptic.Marshal(p.c.ec, p.x, p.y) //nolint:staticcheck // encoding only
}

// Curve returns the point's curve.
func (p *Point) Curve() *Curve { return p.c }

// Equal reports whether p and q are the same point of the same curve.
func (p *Point) Equal(q *Point) bool {
	return p != nil && q != nil && p.c.same(q.c) && p.x.Cmp(q.x) == 0 && p.y.Cmp(q.y) == 0
}

// Add returns p+q, or an error when the sum is the point at infinity.
func (p *Point) Add(q *Point) (*Point, error) {
	if !p.c.same(q.c) {
		return nil, ErrCurveMismatch
	}
	x, y := p.c.ec.Add(p.x, p.y, q.x, q.y) //nolint:staticcheck // public-point arithmetic
	return p.c.point(x, y)
}

// Mul returns k·p for a scalar k in [1, n−1].
func (p *Point) Mul(k *big.Int) (*Point, error) {
	if !p.c.validScalar(k) {
		return nil, ErrInvalidScalar
	}
	x, y := p.c.ec.ScalarMult(p.x, p.y, p.c.scalarBytes(k)) //nolint:staticcheck // see package doc
	return p.c.point(x, y)
}

// BaseMul returns k·G for a scalar k in [1, n−1].
func (c *Curve) BaseMul(k *big.Int) (*Point, error) {
	if !c.validScalar(k) {
		return nil, ErrInvalidScalar
	}
	x, y := c.ec.ScalarBaseMult(c.scalarBytes(k)) //nolint:staticcheck // see package doc
	return c.point(x, y)
}

func (c *Curve) point(x, y *big.Int) (*Point, error) {
	if x == nil || (x.Sign() == 0 && y.Sign() == 0) {
		return nil, fmt.Errorf("%w: point at infinity", ErrInvalidPoint)
	}
	return &Point{c: c, x: x, y: y}, nil
}

func (c *Curve) validScalar(k *big.Int) bool {
	return k != nil && k.Sign() > 0 && k.Cmp(c.n) < 0
}

func (c *Curve) scalarBytes(k *big.Int) []byte { return k.FillBytes(make([]byte, c.size)) }

// ParseScalar decodes a 32-byte big-endian scalar in [1, n−1].
func (c *Curve) ParseScalar(b []byte) (*big.Int, error) {
	if len(b) != c.size {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidScalar, len(b), c.size)
	}
	k := new(big.Int).SetBytes(b)
	if !c.validScalar(k) {
		return nil, fmt.Errorf("%w: out of range", ErrInvalidScalar)
	}
	return k, nil
}

// EncodeScalar is the fixed-length big-endian encoding of k.
func (c *Curve) EncodeScalar(k *big.Int) []byte { return c.scalarBytes(k) }

// RandomScalar draws a uniform scalar in [1, n−1] from rand (crypto/rand in
// production; a deterministic reader only for known-answer tests). It reads
// 16 bytes more than the order's length, so the modular bias is below 2^-128.
func (c *Curve) RandomScalar(rand io.Reader) (*big.Int, error) {
	buf := make([]byte, c.size+16)
	if _, err := io.ReadFull(rand, buf); err != nil {
		return nil, fmt.Errorf("ecqv: reading randomness: %w", err)
	}
	nm1 := new(big.Int).Sub(c.n, big.NewInt(1))
	k := new(big.Int).SetBytes(buf)
	k.Mod(k, nm1)
	return k.Add(k, big.NewInt(1)), nil
}

// HashToScalar is H_n of SEC 1 §4.1.3 step 5: the hash, truncated to the bit
// length of n, read as an integer and reduced mod n.
func (c *Curve) HashToScalar(digest []byte) *big.Int {
	bits := c.n.BitLen()
	if len(digest)*8 > bits {
		digest = digest[:(bits+7)/8]
	}
	e := new(big.Int).SetBytes(digest)
	if excess := len(digest)*8 - bits; excess > 0 {
		e.Rsh(e, uint(excess))
	}
	return e.Mod(e, c.n)
}

// mulAddMod returns a·b + d mod n with constant-time modular arithmetic
// (filippo.io/bigmod): the time taken does not depend on the values. a, b
// and d must be in [0, n).
func (c *Curve) mulAddMod(a, b, d *big.Int) (*big.Int, error) {
	m, err := bigmod.NewModulus(c.n.Bytes()) // n is public
	if err != nil {
		return nil, fmt.Errorf("ecqv: group order: %w", err)
	}
	nat := func(v *big.Int) (*bigmod.Nat, error) {
		if v == nil || v.Sign() < 0 || v.Cmp(c.n) >= 0 {
			return nil, fmt.Errorf("%w: not reduced mod n", ErrInvalidScalar)
		}
		x, err := bigmod.NewNat().SetBytes(c.scalarBytes(v), m)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidScalar, err)
		}
		return x, nil
	}
	x, err := nat(a)
	if err != nil {
		return nil, err
	}
	y, err := nat(b)
	if err != nil {
		return nil, err
	}
	z, err := nat(d)
	if err != nil {
		return nil, err
	}
	x.Mul(y, m).Add(z, m)
	return new(big.Int).SetBytes(x.Bytes(m)), nil
}
