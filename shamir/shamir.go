// Package shamir implements (t, n) threshold secret sharing (Shamir, 1979) over
// GF(2^8), byte by byte.
//
// A secret of L bytes is shared by drawing, for every byte position, a random
// polynomial of degree t-1 over GF(2^8) whose constant term is the secret byte;
// share i (i = 1..n) holds the polynomial values at x = i. Any t shares determine
// the polynomials by Lagrange interpolation at x = 0; any t-1 shares are
// independent of the secret (information-theoretic secrecy).
//
// Field: GF(2^8) with the AES reduction polynomial x^8+x^4+x^3+x+1 (0x11B).
//
// Design notes:
//
//   - Multiplication and inversion are computed bitwise with masks instead of
//     with log/exp tables. Table look-ups index memory with secret bytes and leak
//     them through the cache; the bitwise form runs in time independent of the
//     operands (the standard fix, also adopted by HashiCorp Vault's shamir). The
//     log/exp tables are still built in the tests to cross-check every product.
//   - Combine cannot tell a correct reconstruction from garbage: with fewer than
//     t shares, or with one corrupted share, it returns a wrong secret and no
//     error. Callers must protect each share with its own checksum and check the
//     result against an authority (qshield's watermark package does both).
//   - A share index of 0 would reveal the secret, so indices are 1..255 and
//     Combine rejects index 0 and duplicate indices.
package shamir

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// Share is one share of a secret: its x coordinate (1..255) and the values of
// the byte polynomials at that point.
type Share struct {
	Index byte
	Value []byte
}

// Sentinel errors.
var (
	ErrParams       = errors.New("shamir: invalid parameters")
	ErrNoShares     = errors.New("shamir: no shares")
	ErrBadIndex     = errors.New("shamir: share index 0")
	ErrDuplicate    = errors.New("shamir: duplicate share index")
	ErrLengthDiffer = errors.New("shamir: shares differ in length")
)

// MaxShares is the largest n: indices are the non-zero elements of GF(2^8).
const MaxShares = 255

// Split shares secret into n shares, any t of which recover it. Randomness comes
// from r (crypto/rand.Reader when r is nil). 2 <= t <= n <= 255; the secret must
// not be empty.
func Split(secret []byte, t, n int, r io.Reader) ([]Share, error) {
	if t < 2 || n < t || n > MaxShares {
		return nil, fmt.Errorf("%w: t=%d n=%d (need 2 <= t <= n <= %d)", ErrParams, t, n, MaxShares)
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w: empty secret", ErrParams)
	}
	if r == nil {
		r = rand.Reader
	}
	// coeffs[j][k] is the coefficient of x^(k+1) for byte j.
	coeffs := make([]byte, len(secret)*(t-1))
	if _, err := io.ReadFull(r, coeffs); err != nil {
		return nil, fmt.Errorf("shamir: reading randomness: %w", err)
	}
	defer clear(coeffs)
	shares := make([]Share, n)
	for i := range shares {
		x := byte(i + 1)
		v := make([]byte, len(secret))
		for j, s := range secret {
			c := coeffs[j*(t-1) : (j+1)*(t-1)]
			// Horner: ((c_{t-1} x + c_{t-2}) x + ... + c_1) x + s
			var acc byte
			for k := len(c) - 1; k >= 0; k-- {
				acc = mul(acc, x) ^ c[k]
			}
			v[j] = mul(acc, x) ^ s
		}
		shares[i] = Share{Index: x, Value: v}
	}
	return shares, nil
}

// Combine interpolates the shares at x = 0 and returns the secret. It uses every
// share given; with fewer than the threshold it returns a wrong value without
// error (see the package doc).
func Combine(shares []Share) ([]byte, error) {
	if len(shares) == 0 {
		return nil, ErrNoShares
	}
	l := len(shares[0].Value)
	if l == 0 {
		return nil, fmt.Errorf("%w: empty share", ErrParams)
	}
	seen := [256]bool{}
	for _, s := range shares {
		if s.Index == 0 {
			return nil, ErrBadIndex
		}
		if seen[s.Index] {
			return nil, fmt.Errorf("%w: %d", ErrDuplicate, s.Index)
		}
		seen[s.Index] = true
		if len(s.Value) != l {
			return nil, fmt.Errorf("%w: %d and %d bytes", ErrLengthDiffer, l, len(s.Value))
		}
	}
	// Lagrange basis at 0: b_i = prod_{j != i} x_j / (x_j - x_i); in GF(2^8)
	// subtraction is XOR.
	basis := make([]byte, len(shares))
	for i, si := range shares {
		num, den := byte(1), byte(1)
		for j, sj := range shares {
			if i == j {
				continue
			}
			num = mul(num, sj.Index)
			den = mul(den, sj.Index^si.Index)
		}
		basis[i] = mul(num, inv(den))
	}
	out := make([]byte, l)
	for i, s := range shares {
		for k, v := range s.Value {
			out[k] ^= mul(basis[i], v)
		}
	}
	return out, nil
}

// mul multiplies in GF(2^8) mod 0x11B in constant time.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		hi := -(a >> 7)
		a = (a << 1) ^ (0x1B & hi)
		b >>= 1
	}
	return p
}

// inv returns a^-1 (a^254) in constant time; inv(0) = 0.
func inv(a byte) byte {
	// a^254 = a^(2+4+8+16+32+64+128)
	r := byte(1)
	sq := a
	for range 7 {
		sq = mul(sq, sq)
		r = mul(r, sq)
	}
	return r
}
