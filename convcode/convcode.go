// Package convcode implements the constraint-length 7, rate 1/2 convolutional
// code with generator polynomials 171 and 133 (octal) — the "NASA standard"
// code of CCSDS 131.0-B and IEEE 802.11 — and a soft-decision Viterbi decoder.
//
// Conventions:
//
//   - Bits are bytes holding 0 or 1. The encoder shifts each input bit into a
//     7-bit register (newest bit in the most significant tap) and emits two
//     coded bits per input bit, first G1 = 171 then G2 = 133. It appends K-1 = 6
//     zero tail bits, so the trellis ends in state 0 and the last message bits
//     are protected as well as the first: n message bits give 2(n+6) coded bits.
//   - CCSDS inverts the G2 output; this package does not (as in 802.11). Callers
//     that need the CCSDS variant invert every second coded bit.
//   - Soft inputs are int8 in [-127, 127]: positive means "1 is more likely",
//     negative "0 is more likely", magnitude the confidence (a scaled
//     log-likelihood ratio), 0 an erasure. -128 is treated as -127.
//
// The decoder keeps all 64 path metrics as int32 and stores one 64-bit survivor
// word per trellis step, so memory is 8 bytes per message bit. Free distance is
// 10: with hard decisions any 4 errors within a few constraint lengths are
// corrected; soft decisions gain about 2 dB more.
package convcode

import (
	"errors"
	"fmt"
	"math/bits"
)

const (
	// K is the constraint length.
	K = 7
	// G1 and G2 are the generator polynomials (octal 171 and 133).
	G1 = 0o171
	G2 = 0o133
	// TailBits is the number of zero bits appended to terminate the trellis.
	TailBits  = K - 1
	numStates = 1 << (K - 1)
)

// ErrLength reports a coded input whose length is not 2(n+6) for some n >= 0.
var ErrLength = errors.New("convcode: invalid coded length")

// CodedLen returns the number of coded bits for n message bits.
func CodedLen(n int) int { return 2 * (n + TailBits) }

// MessageLen returns the number of message bits for c coded bits, or an error.
func MessageLen(c int) (int, error) {
	if c < 2*TailBits || c%2 != 0 {
		return 0, fmt.Errorf("%w: %d coded bits", ErrLength, c)
	}
	return c/2 - TailBits, nil
}

func parity(x uint32) byte { return byte(bits.OnesCount32(x) & 1) }

// Encode returns the coded bits (with tail) of msg, whose entries must be 0 or 1
// (any non-zero byte counts as 1).
func Encode(msg []byte) []byte {
	out := make([]byte, 0, CodedLen(len(msg)))
	var reg uint32
	push := func(b byte) {
		reg = (reg >> 1) | uint32(b)<<(K-1)
		// Tap i (0 = newest) of polynomial g is bit K-1-i of g, so with the
		// newest bit at position K-1 the register lines up with g directly.
		out = append(out, parity(reg&G1), parity(reg&G2))
	}
	for _, b := range msg {
		if b != 0 {
			b = 1
		}
		push(b)
	}
	for range TailBits {
		push(0)
	}
	return out
}

// outputs[s][b] is the pair (g1<<1 | g2) emitted when bit b enters state s,
// where the state is the 6 most recent bits (newest at bit 5).
var outputs = func() (t [numStates][2]uint8) {
	for s := range numStates {
		for b := range 2 {
			reg := uint32(b)<<(K-1) | uint32(s)
			t[s][b] = parity(reg&G1)<<1 | parity(reg&G2)
		}
	}
	return
}()

// Decoder is a reusable soft-decision Viterbi decoder. The zero value is ready
// to use; it is not safe for concurrent use.
type Decoder struct {
	surv []uint64
}

// Decode returns the most likely message for the soft coded values (see the
// package doc for their meaning) of a terminated code.
func (d *Decoder) Decode(soft []int8) ([]byte, error) {
	n, err := MessageLen(len(soft))
	if err != nil {
		return nil, err
	}
	steps := n + TailBits
	if cap(d.surv) < steps {
		d.surv = make([]uint64, steps)
	}
	surv := d.surv[:steps]
	const minInf = -1 << 30
	var pm, next [numStates]int32
	for i := range pm {
		pm[i] = minInf
	}
	pm[0] = 0
	for step := range steps {
		s1, s2 := clamp(soft[2*step]), clamp(soft[2*step+1])
		// Correlation metric for each output pair: +s for an expected 1, -s for a 0.
		var bm [4]int32
		bm[0] = -s1 - s2
		bm[1] = -s1 + s2
		bm[2] = s1 - s2
		bm[3] = s1 + s2
		var word uint64
		// New state ns = b<<5 | s>>1; its predecessors are s = (ns<<1)&63 | 0/1.
		for ns := range numStates {
			b := ns >> (K - 2)
			p0 := (ns << 1) & (numStates - 1)
			p1 := p0 | 1
			m0 := pm[p0] + bm[outputs[p0][b]]
			m1 := pm[p1] + bm[outputs[p1][b]]
			if m1 > m0 {
				next[ns] = m1
				word |= 1 << ns
			} else {
				next[ns] = m0
			}
		}
		pm = next
		surv[step] = word
	}
	// Terminated: trace back from state 0.
	msg := make([]byte, steps)
	state := 0
	for step := steps - 1; step >= 0; step-- {
		msg[step] = byte(state >> (K - 2))
		low := int(surv[step]>>state) & 1
		state = ((state << 1) & (numStates - 1)) | low
	}
	return msg[:n], nil
}

func clamp(v int8) int32 {
	if v == -128 {
		return -127
	}
	return int32(v)
}

// HardToSoft maps coded bits to maximally confident soft values (1 → +127,
// 0 → -127), for hard-decision decoding and tests.
func HardToSoft(coded []byte) []int8 {
	out := make([]int8, len(coded))
	for i, b := range coded {
		if b != 0 {
			out[i] = 127
		} else {
			out[i] = -127
		}
	}
	return out
}

// Decode is a convenience wrapper around a fresh Decoder.
func Decode(soft []int8) ([]byte, error) {
	var d Decoder
	return d.Decode(soft)
}
