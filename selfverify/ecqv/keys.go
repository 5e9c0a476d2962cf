package ecqv

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"
	"sync"

	gmecdh "github.com/emmansun/gmsm/ecdh"
	"github.com/emmansun/gmsm/sm2"
)

// PrivateKey is a private scalar d with its public key. For P-256 it signs
// with ECDSA over SHA-256; for SM2 with the SM2 signature (SM3, default UID).
type PrivateKey struct {
	c        *Curve
	d        *big.Int
	pub      *PublicKey
	ecdsaKey func() (*ecdsa.PrivateKey, error) // P-256, built on first signature
	sm2      *sm2.PrivateKey                   // SM2
	dhP      *ecdh.PrivateKey
	dhSM     *gmecdh.PrivateKey
}

// PublicKey is a public point usable for signature verification and ECDH.
type PublicKey struct {
	c     *Curve
	q     *Point
	ecdsa *ecdsa.PublicKey
	dhP   *ecdh.PublicKey
	dhSM  *gmecdh.PublicKey
}

// GenerateKey returns a fresh key pair (rand: crypto/rand.Reader).
func (c *Curve) GenerateKey(rand io.Reader) (*PrivateKey, error) {
	for {
		d, err := c.RandomScalar(rand)
		if err != nil {
			return nil, err
		}
		k, err := c.privateKey(d)
		if errors.Is(err, ErrInvalidScalar) {
			continue // SM2's excluded d = n−1; probability 2^-256
		}
		return k, err
	}
}

// NewPrivateKey decodes a 32-byte scalar.
func (c *Curve) NewPrivateKey(b []byte) (*PrivateKey, error) {
	d, err := c.ParseScalar(b)
	if err != nil {
		return nil, err
	}
	return c.privateKey(d)
}

func (c *Curve) privateKey(d *big.Int) (*PrivateKey, error) {
	if !c.validScalar(d) {
		return nil, ErrInvalidScalar
	}
	raw := c.scalarBytes(d)
	k := &PrivateKey{c: c, d: new(big.Int).Set(d)}
	var q *Point
	if c.ecdhP != nil {
		dh, err := c.ecdhP.NewPrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidScalar, err)
		}
		p, err := c.ParsePoint(dh.PublicKey().Bytes())
		if err != nil {
			return nil, err
		}
		k.dhP, q = dh, p
		// The ECDSA key costs another base-point multiplication: build it
		// only when the key signs (ephemeral ECDH keys never do).
		k.ecdsaKey = sync.OnceValues(func() (*ecdsa.PrivateKey, error) {
			return ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
		})
	} else {
		if d.Cmp(new(big.Int).Sub(c.n, big.NewInt(1))) == 0 {
			return nil, fmt.Errorf("%w: n−1 is not an SM2 signing key", ErrInvalidScalar)
		}
		dh, err := c.ecdhSM.NewPrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidScalar, err)
		}
		p, err := c.ParsePoint(dh.PublicKey().Bytes())
		if err != nil {
			return nil, err
		}
		k.dhSM, q = dh, p
		k.sm2 = &sm2.PrivateKey{PrivateKey: ecdsa.PrivateKey{
			PublicKey: ecdsa.PublicKey{Curve: c.ec, X: p.x, Y: p.y}, D: k.d}}
	}
	pub, err := c.publicKey(q)
	if err != nil {
		return nil, err
	}
	k.pub = pub
	return k, nil
}

// NewPublicKey wraps a validated point as a public key.
func (c *Curve) NewPublicKey(p *Point) (*PublicKey, error) {
	if p == nil || !c.same(p.c) {
		return nil, ErrCurveMismatch
	}
	return c.publicKey(p)
}

// ParsePublicKey decodes a SEC 1 point as a public key.
func (c *Curve) ParsePublicKey(b []byte) (*PublicKey, error) {
	p, err := c.ParsePoint(b)
	if err != nil {
		return nil, err
	}
	return c.publicKey(p)
}

func (c *Curve) publicKey(p *Point) (*PublicKey, error) {
	pk := &PublicKey{c: c, q: p}
	unc := p.Uncompressed()
	var err error
	if c.ecdhP != nil {
		if pk.ecdsa, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), unc); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPoint, err)
		}
		if pk.dhP, err = c.ecdhP.NewPublicKey(unc); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPoint, err)
		}
	} else {
		pk.ecdsa = &ecdsa.PublicKey{Curve: c.ec, X: p.x, Y: p.y}
		if pk.dhSM, err = c.ecdhSM.NewPublicKey(unc); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPoint, err)
		}
	}
	return pk, nil
}

// Curve returns the key's curve.
func (k *PrivateKey) Curve() *Curve { return k.c }

// Public returns the public key d·G.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// Bytes is the 32-byte scalar. Handle as a secret.
func (k *PrivateKey) Bytes() []byte { return k.c.scalarBytes(k.d) }

// Curve returns the key's curve.
func (p *PublicKey) Curve() *Curve { return p.c }

// Point returns the public point.
func (p *PublicKey) Point() *Point { return p.q }

// Bytes is the compressed encoding of the point.
func (p *PublicKey) Bytes() []byte { return p.q.Bytes() }

// Equal reports whether both keys are the same point.
func (p *PublicKey) Equal(o *PublicKey) bool { return p != nil && o != nil && p.q.Equal(o.q) }

// Sign signs msg: ECDSA-SHA-256 (ASN.1) on P-256, SM2-SM3 with the default
// UID on SM2. rand is crypto/rand.Reader.
func (k *PrivateKey) Sign(rand io.Reader, msg []byte) ([]byte, error) {
	if k.ecdsaKey != nil {
		ek, err := k.ecdsaKey()
		if err != nil {
			return nil, fmt.Errorf("ecqv: ecdsa key: %w", err)
		}
		h := k.c.newHash()
		h.Write(msg)
		sig, err := ecdsa.SignASN1(rand, ek, h.Sum(nil))
		if err != nil {
			return nil, fmt.Errorf("ecqv: ecdsa sign: %w", err)
		}
		return sig, nil
	}
	sig, err := k.sm2.SignWithSM2(rand, nil, msg)
	if err != nil {
		return nil, fmt.Errorf("ecqv: sm2 sign: %w", err)
	}
	return sig, nil
}

// Verify reports whether sig is a valid signature of msg under p.
func (p *PublicKey) Verify(msg, sig []byte) bool {
	if len(sig) == 0 || len(sig) > 80 {
		return false
	}
	if p.dhP != nil {
		h := p.c.newHash()
		h.Write(msg)
		return ecdsa.VerifyASN1(p.ecdsa, h.Sum(nil), sig)
	}
	return sm2.VerifyASN1WithSM2(p.ecdsa, nil, msg, sig)
}

// ECDH returns the x-coordinate of d·Q (SEC 1 ECDH primitive). The result
// must go through a KDF ([DeriveKey]) before use.
func (k *PrivateKey) ECDH(peer *PublicKey) ([]byte, error) {
	if !k.c.same(peer.c) {
		return nil, ErrCurveMismatch
	}
	var z []byte
	var err error
	if k.dhP != nil {
		z, err = k.dhP.ECDH(peer.dhP)
	} else {
		z, err = k.dhSM.ECDH(peer.dhSM)
	}
	if err != nil {
		return nil, fmt.Errorf("ecqv: ecdh: %w", err)
	}
	return z, nil
}

// DeriveKey is HKDF (RFC 5869) with the curve's hash over the shared secret.
func (c *Curve) DeriveKey(secret, salt []byte, info string, length int) ([]byte, error) {
	k, err := hkdf.Key[hash.Hash](c.newHash, secret, salt, info, length)
	if err != nil {
		return nil, fmt.Errorf("ecqv: hkdf: %w", err)
	}
	return k, nil
}
