package link

import (
	"fmt"
	"math"

	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/decoy"
)

// ExpectedFinite returns the finite-key analysis of a block of pulses sent
// over the link p, on its expected counts (sifted X and Z detections per
// intensity, Z errors), with secrecy parameter eps.
func ExpectedFinite(p bb84.Params, pulses float64, eps float64) (decoy.FiniteBound, float64, error) {
	gain, errRate, err := p.Expected()
	if err != nil {
		return decoy.FiniteBound{}, 0, err
	}
	in := decoy.FiniteInput{Intensities: p.Intensities(), Probabilities: p.Probabilities(), EpsSec: eps}
	probs := p.Probabilities()
	var nX, mX float64
	for k := 0; k < 3; k++ {
		det := pulses * probs[k] * gain[k]
		in.NX[k] = det * p.PX * p.PX
		in.NZ[k] = det * (1 - p.PX) * (1 - p.PX)
		in.MZ[k] = in.NZ[k] * errRate[k]
		nX += in.NX[k]
		mX += in.NX[k] * errRate[k]
	}
	fb, err := decoy.Finite(in)
	var eX float64
	if nX > 0 {
		eX = mX / nX
	}
	return fb, eX, err
}

// ExpectedKeyLength is the finite-key length a block of pulses is expected to
// yield when reconciliation discloses f·h(E_X) bits per key bit plus one
// 64-bit tag per frame of frameBits bits.
func ExpectedKeyLength(p bb84.Params, pulses, eps, f float64, frameBits int) (int64, error) {
	fb, eX, err := ExpectedFinite(p, pulses, eps)
	if err != nil {
		return 0, err
	}
	leak := f*decoy.H(eX)*fb.NX + 64*math.Ceil(fb.NX/float64(frameBits))
	return fb.KeyLength(leak), nil
}

// MinPulses returns the smallest block (pulses, to 1%) whose expected
// finite-key length is positive on link p with secrecy eps and reconciliation
// efficiency f (16384-bit frames). It fails when even the largest block a
// session accepts (about 2^27 detections) yields no key.
func MinPulses(p bb84.Params, eps, f float64) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	gain, _, _ := p.Expected()
	var pdet float64
	for k, pk := range p.Probabilities() {
		pdet += pk * gain[k]
	}
	hi := float64(maxDetections/2) / pdet
	pos := func(n float64) bool {
		l, err := ExpectedKeyLength(p, n, eps, f, 16384)
		return err == nil && l > 0
	}
	if !pos(hi) {
		return 0, fmt.Errorf("%w: no positive finite key at %g km even with %.3g pulses per block (the session limit)", ErrConfig, p.DistanceKm, hi)
	}
	lo := 1e4
	if pos(lo) {
		return int64(lo), nil
	}
	for hi/lo > 1.01 {
		m := math.Sqrt(lo * hi)
		if pos(m) {
			hi = m
		} else {
			lo = m
		}
	}
	return int64(math.Ceil(hi)), nil
}

// PlanPulses chooses the block size a link uses by default: twice the
// minimum block (so that statistical fluctuations rarely abort a block),
// rounded up to a whole number of 10^7-pulse source frames (a quarter
// second of the 40 MHz source), and not beyond the session limit.
func PlanPulses(p bb84.Params, eps, f float64) (int64, error) {
	n, err := MinPulses(p, eps, f)
	if err != nil {
		return 0, err
	}
	const frame = 1e7
	plan := math.Ceil(2*float64(n)/frame) * frame
	gain, _, _ := p.Expected()
	var pdet float64
	for k, pk := range p.Probabilities() {
		pdet += pk * gain[k]
	}
	if limit := math.Floor(float64(maxDetections/2) / pdet / frame * frame); plan > limit {
		plan = math.Max(limit, float64(n))
	}
	return int64(plan), nil
}
