// Package privacy implements the two hashing steps that follow information
// reconciliation in QKD post-processing: verification of the reconciled keys by
// a universal hash, and privacy amplification by Toeplitz hashing.
//
// # Toeplitz hashing in O(n log n)-class time
//
// An m×n Toeplitz matrix T is fixed by n+m−1 seed bits s: T[i][j] = s[i−j+n−1].
// Its product with the key x is a band of the polynomial product s(t)·x(t) over
// GF(2): y_i = Σ_j s_{i−j+n−1}·x_j = (s·x)_{i+n−1}. Hash computes that band
// directly, as a sum of square Toeplitz matrix-vector products each done by the
// Toeplitz form of Karatsuba (O(n^1.585) word operations, with
// a product-scanning schoolbook base case that uses the PCLMULQDQ carry-less
// multiply instruction on amd64 and a portable 4-bit-window multiply elsewhere),
// then extracts the band. HashDirect is the O(n·m) definition, for tests.
//
// Karatsuba rather than an NTT: over GF(2) an NTT must work on one bit per
// coefficient (coefficients of the integer product reach n, so no bit packing
// is possible), which costs more at n = 10^6 than Karatsuba on 64-bit words with
// a hardware carry-less multiply; the asymptotic gap only shows far beyond the
// block sizes QKD uses.
//
// # Verification
//
// Tag is a polynomial evaluation hash over GF(2^64): the key, cut into 64-bit
// words k_1..k_L, is hashed as Σ k_i·r^(L−i+1) for a random point r chosen by
// Alice after reconciliation. Two different keys of L words collide with
// probability at most L/2^64 over r (an ε-almost-universal family), so a frame
// with residual errors passes with probability below 2^−50 for any realistic
// frame. The 64 tag bits are public and are charged to the leakage.
package privacy

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/bits"
)

// ErrParams reports invalid hashing parameters.
var ErrParams = errors.New("privacy: invalid parameters")

// SeedBits returns the seed length n+m−1 of an m×n Toeplitz matrix.
func SeedBits(n, m int) int { return n + m - 1 }

// NewSeed returns a fresh random seed for an m×n Toeplitz matrix.
func NewSeed(n, m int) ([]uint64, error) {
	if n < 1 || m < 1 {
		return nil, fmt.Errorf("%w: %d×%d matrix", ErrParams, m, n)
	}
	nb := SeedBits(n, m)
	s := make([]uint64, (nb+63)/64)
	buf := make([]byte, 8*len(s))
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("privacy: drawing seed: %w", err)
	}
	for i := range s {
		for j := 0; j < 8; j++ {
			s[i] |= uint64(buf[8*i+j]) << (8 * j)
		}
	}
	maskTail(s, nb)
	return s, nil
}

func maskTail(v []uint64, n int) {
	if r := uint(n) & 63; r != 0 && len(v) > 0 {
		v[(n-1)>>6] &= 1<<r - 1
	}
	for i := (n + 63) / 64; i < len(v); i++ {
		v[i] = 0
	}
}

func check(key []uint64, n int, seed []uint64, m int) error {
	if n < 1 || m < 1 || m > n {
		return fmt.Errorf("%w: output %d bits from %d input bits", ErrParams, m, n)
	}
	if len(key)*64 < n {
		return fmt.Errorf("%w: key of %d words for %d bits", ErrParams, len(key), n)
	}
	if len(seed)*64 < SeedBits(n, m) {
		return fmt.Errorf("%w: seed of %d words for %d bits", ErrParams, len(seed), SeedBits(n, m))
	}
	return nil
}

// Hash returns the m-bit Toeplitz hash of the first n bits of key under seed
// (SeedBits(n, m) bits), packed in (m+63)/64 words, by fast polynomial
// multiplication.
func Hash(key []uint64, n int, seed []uint64, m int) ([]uint64, error) {
	if err := check(key, n, seed, m); err != nil {
		return nil, err
	}
	// Pad the output length to M = 64·2^k ≥ m bits: the first m rows of the
	// M×n matrix whose seed is s extended with zeros are the m×n matrix. Cut x
	// into pieces of M bits; piece p meets only the seed bits
	// [n − (p+1)M, n − (p+1)M + 2M − 1), and its contribution to y is an M×M
	// Toeplitz matrix-vector product, computed by the Toeplitz form of
	// Karatsuba (three half-size products per level, tmvp): (n/M)·K(M) word
	// operations in all, about a third of the full product s·x.
	mw := (m + 63) / 64
	w := 1
	for w < mw {
		w <<= 1
	}
	bigM := 64 * w
	y := make([]uint64, w)
	xp := make([]uint64, w)
	sp := make([]uint64, 2*w)
	part := make([]uint64, w)
	scratch := make([]uint64, tmvpScratch(w))
	// Seed bits past n+m−1 read as zeros (the extension above).
	nb := SeedBits(n, m)
	sv := make([]uint64, (nb+63)/64)
	copy(sv, seed)
	maskTail(sv, nb)
	for p := 0; p*bigM < n; p++ {
		lo := p * bigM
		hi := min(lo+bigM, n)
		extractSigned(xp, key, lo, hi-lo)
		extractSigned(sp, sv, n-(p+1)*bigM, 2*bigM-1)
		tmvp(part, sp, xp, scratch)
		for i := range y {
			y[i] ^= part[i]
		}
	}
	out := y[:mw]
	maskTail(out, m)
	return out, nil
}

// tmvpThreshold is the size (words) below which tmvp multiplies directly.
const tmvpThreshold = 16

func tmvpScratch(w int) int {
	s := 3*tmvpThreshold + 8
	for w > tmvpThreshold {
		s += 4 * w
		w /= 2
	}
	return s
}

// tmvp sets y[:w] to the product of the 64w×64w Toeplitz matrix defined by the
// seed bits s (2w words; bit 128w−1 unused) with x (w words, w a power of
// two): y_i = Σ_j s[i − j + 64w − 1]·x_j. With H = 32w bits and T_o the H×H
// Toeplitz matrix of the seed window starting at bit o,
//
//	y0 = T_H x0 + T_0 x1,   y1 = T_2H x0 + T_H x1,
//
// computed from three half-size products: P1 = T_H (x0+x1), P2 = (T_0+T_H) x1,
// P3 = (T_2H+T_H) x0; y0 = P1+P2, y1 = P1+P3.
func tmvp(y, s, x, scratch []uint64) {
	w := len(x)
	if w <= tmvpThreshold {
		// Only the middle words w−1 … 2w−1 of s·x are needed: about half
		// the carry-less products of the full product.
		mid := scratch[:w+1]
		mulRange(mid, s[:2*w], x, w-1, 2*w)
		extractInto(y[:w], mid, 63, 64*w)
		return
	}
	h := w / 2
	xs := scratch[:h]
	sa := scratch[h : 3*h]
	sb := scratch[3*h : 5*h]
	p1 := scratch[5*h : 6*h]
	p2 := scratch[6*h : 7*h]
	p3 := scratch[7*h : 8*h]
	rest := scratch[8*h:]
	for i := 0; i < h; i++ {
		xs[i] = x[i] ^ x[h+i]
	}
	for i := 0; i < 2*h; i++ {
		sa[i] = s[i] ^ s[h+i]
		sb[i] = s[2*h+i] ^ s[h+i]
	}
	tmvp(p1, s[h:3*h], xs, rest)
	tmvp(p2, sa, x[h:], rest)
	tmvp(p3, sb, x[:h], rest)
	for i := 0; i < h; i++ {
		y[i] = p1[i] ^ p2[i]
		y[h+i] = p1[i] ^ p3[i]
	}
}

// extractSigned writes bits [from, from+length) of v into dst (packed, zero
// filled), reading zeros before bit 0 and past the end of v.
func extractSigned(dst, v []uint64, from, length int) {
	clear(dst)
	for i := range dst {
		if 64*i >= length {
			break
		}
		p := from + 64*i
		var w uint64
		switch {
		case p >= 0:
			w = window(v, p)
		case p > -64:
			w = v[0] << uint(-p)
		}
		dst[i] = w
	}
	maskTail(dst, length)
}

// extractInto writes bits [from, from+m) of v into dst.
func extractInto(dst, v []uint64, from, m int) {
	for i := range dst {
		dst[i] = window(v, from+64*i)
	}
	maskTail(dst, m)
}

// HashDirect computes the same hash from the definition y_i = ⊕_j T[i][j]·x_j in
// O(n·m/64) word operations. It is the reference for tests.
func HashDirect(key []uint64, n int, seed []uint64, m int) ([]uint64, error) {
	if err := check(key, n, seed, m); err != nil {
		return nil, err
	}
	out := make([]uint64, (m+63)/64)
	// Row i uses seed bits s[i+n−1−j] for j = 0..n−1: reversed window. Build
	// the reversed key once: xr_j' = x_{n−1−j'}, then row i is the parity of
	// s[i : i+n] AND xr.
	xr := make([]uint64, (n+63)/64)
	for j := 0; j < n; j++ {
		if key[j>>6]>>(uint(j)&63)&1 == 1 {
			k := n - 1 - j
			xr[k>>6] |= 1 << (uint(k) & 63)
		}
	}
	for i := 0; i < m; i++ {
		var acc uint64
		for w := range xr {
			acc ^= window(seed, i+64*w) & xr[w]
		}
		out[i>>6] |= uint64(bits.OnesCount64(acc)&1) << (uint(i) & 63)
	}
	return out, nil
}

// window returns the 64 bits of v starting at bit position p (zeros past the end).
func window(v []uint64, p int) uint64 {
	w, s := p>>6, uint(p)&63
	var x uint64
	if w < len(v) {
		x = v[w] >> s
	}
	if s != 0 && w+1 < len(v) {
		x |= v[w+1] << (64 - s)
	}
	return x
}
