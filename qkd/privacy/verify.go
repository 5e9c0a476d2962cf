package privacy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// MulGF64 multiplies a and b in GF(2^64) = GF(2)[t]/(t^64 + t^4 + t^3 + t + 1),
// the field of the verification hash (exported for the link's transcript MAC).
func MulGF64(a, b uint64) uint64 { return gfMul(a, b) }

// gfMul multiplies in GF(2^64) = GF(2)[t]/(t^64 + t^4 + t^3 + t + 1).
func gfMul(a, b uint64) uint64 {
	var hi, lo uint64
	if hasCLMULFast() {
		var z [2]uint64
		x, y := [1]uint64{a}, [1]uint64{b}
		mulBase(z[:], x[:], y[:])
		lo, hi = z[0], z[1]
	} else {
		hi, lo = clmul64(a, b)
	}
	return reduce(hi, lo)
}

// reduce returns (hi·t^64 + lo) mod t^64 + t^4 + t^3 + t + 1.
func reduce(hi, lo uint64) uint64 {
	// t^64 ≡ t^4 + t^3 + t + 1: fold hi twice (the second fold has ≤ 4 bits).
	f := func(h uint64) (uint64, uint64) {
		l := h ^ h<<1 ^ h<<3 ^ h<<4
		c := h>>63 ^ h>>61 ^ h>>60
		return c, l
	}
	c, l := f(hi)
	lo ^= l
	_, l2 := f(c)
	return lo ^ l2
}

// TagPoint is the random evaluation point of the verification hash.
type TagPoint uint64

// NewTagPoint draws a random evaluation point from crypto/rand.
func NewTagPoint() (TagPoint, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("privacy: drawing tag point: %w", err)
	}
	return TagPoint(binary.LittleEndian.Uint64(b[:])), nil
}

// Tag returns the GF(2^64) polynomial hash of the first n bits of key at r,
// with the bit length mixed in so that keys of different lengths differ.
func Tag(key []uint64, n int, r TagPoint) (uint64, error) {
	if n < 0 || len(key)*64 < n {
		return 0, fmt.Errorf("%w: key of %d words for %d bits", ErrParams, len(key), n)
	}
	full := n >> 6
	var acc uint64
	for _, w := range key[:full] {
		acc = gfMul(acc^w, uint64(r))
	}
	if rem := uint(n) & 63; rem != 0 {
		acc = gfMul(acc^(key[full]&(1<<rem-1)), uint64(r))
	}
	acc = gfMul(acc^uint64(n), uint64(r))
	return acc, nil
}

// TagCollision bounds the probability that two different n-bit keys get the
// same Tag at a uniformly random point: their difference is a nonzero
// polynomial of degree at most ⌈n/64⌉ + 1 (one coefficient per word, one for
// the length), with at most that many roots among the 2^64 points. Summed
// over the frames of a block it is the block's ε_cor.
func TagCollision(n int) float64 {
	return float64((n+63)/64+1) / 0x1p64
}
