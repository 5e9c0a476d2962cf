package privacy

// Polynomials over GF(2) are bit vectors packed little-endian in uint64 words:
// bit i of word w is the coefficient of t^(64w+i).

// clmul64 is the carry-less product of a and b (128 bits), in portable Go: a
// 4-bit window table of multiples of a.
func clmul64(a, b uint64) (hi, lo uint64) {
	var tl, th [16]uint64
	tl[1] = a
	for i := 2; i < 16; i += 2 {
		tl[i] = tl[i/2] << 1
		th[i] = th[i/2]<<1 | tl[i/2]>>63
		tl[i+1] = tl[i] ^ a
		th[i+1] = th[i]
	}
	for s := 60; s >= 0; s -= 4 {
		hi = hi<<4 | lo>>60
		lo <<= 4
		n := b >> uint(s) & 15
		lo ^= tl[n]
		hi ^= th[n]
	}
	return hi, lo
}

// mulBaseGeneric is the portable schoolbook product.
func mulBaseGeneric(z, x, y []uint64) {
	clear(z[:len(x)+len(y)])
	for i, a := range x {
		if a == 0 {
			continue
		}
		for j, b := range y {
			hi, lo := clmul64(a, b)
			z[i+j] ^= lo
			z[i+j+1] ^= hi
		}
	}
}

// mulRangeGeneric is the portable mulRange: the full product, then a copy.
func mulRangeGeneric(z, x, y []uint64, k0, k1 int) {
	full := make([]uint64, len(x)+len(y))
	mulBaseGeneric(full, x, y)
	copy(z[:k1-k0], full[k0:k1])
}

// karatsubaThreshold is the operand length (words) below which the schoolbook
// product is used.
const karatsubaThreshold = 48

// mulScratch returns the scratch length needed by karatsuba for n-word operands.
func mulScratch(n int) int {
	s := 0
	for n > karatsubaThreshold {
		h := n - n/2
		s += 4 * h
		n = h
	}
	return s + 8
}

// karatsuba sets z[:2n] = x·y for len(x) = len(y) = n, using scratch.
func karatsuba(z, x, y, scratch []uint64) {
	n := len(x)
	if n <= karatsubaThreshold {
		mulBase(z, x, y)
		return
	}
	l := n / 2 // low half length
	h := n - l // high half length (≥ l)
	x0, x1 := x[:l], x[l:]
	y0, y1 := y[:l], y[l:]
	sx, sy := scratch[:h], scratch[h:2*h]
	mid := scratch[2*h : 4*h]
	rest := scratch[4*h:]
	copy(sx, x1)
	copy(sy, y1)
	for i := 0; i < l; i++ {
		sx[i] ^= x0[i]
		sy[i] ^= y0[i]
	}
	karatsuba(mid, sx, sy, rest)
	karatsuba(z[:2*l], x0, y0, rest)
	karatsuba(z[2*l:2*n], x1, y1, rest)
	// mid ^= z0 ^ z2, then z[l:] ^= mid.
	z0, z2 := z[:2*l], z[2*l:2*n]
	for i := range z0 {
		mid[i] ^= z0[i]
	}
	for i := range z2 {
		mid[i] ^= z2[i]
	}
	zz := z[l:]
	for i := range mid {
		zz[i] ^= mid[i]
	}
}

// polyMul returns x·y (len(x)+len(y) words).
func polyMul(x, y []uint64) []uint64 {
	z := make([]uint64, len(x)+len(y))
	polyMulInto(z, x, y, nil)
	return z
}

// polyMulInto sets z[:len(x)+len(y)] = x·y. Unequal lengths are handled by
// cutting the longer operand into pieces of the shorter one's length; the last,
// shorter piece recurses (so no work is spent on padding).
func polyMulInto(z, x, y, scratch []uint64) {
	if len(x) < len(y) {
		x, y = y, x
	}
	n := len(y)
	clear(z[:len(x)+n])
	if n == 0 {
		return
	}
	if n <= karatsubaThreshold {
		mulBase(z, x, y)
		return
	}
	if need := mulScratch(n) + 2*n; len(scratch) < need {
		scratch = make([]uint64, need)
	}
	prod := scratch[:2*n]
	ks := scratch[2*n:]
	for off := 0; off < len(x); off += n {
		piece := x[off:min(off+n, len(x))]
		if len(piece) == n {
			karatsuba(prod, piece, y, ks)
		} else {
			polyMulInto(prod, piece, y, ks)
		}
		dst := z[off:]
		for i, w := range prod[:len(piece)+n] {
			dst[i] ^= w
		}
	}
}
