package decoy

import (
	"errors"
	"math"
	"testing"
)

// TestGLLPReference checks the asymptotic rate against the reference figures
// for the GYS parameters (f = 1.22, μ = 0.48).
func TestGLLPReference(t *testing.T) {
	l := GYS()
	for _, c := range []struct{ km, want float64 }{
		{0, 2.55e-3}, {25, 7.5e-4}, {50, 2.2e-4}, {100, 1.7e-5}, {140, 2.5e-7},
	} {
		got := l.GLLP(c.km, 0.48, 1.22)
		if math.Abs(got-c.want)/c.want > 0.10 {
			t.Errorf("R(%g km) = %.3g, want %.3g ± 10%%", c.km, got, c.want)
		}
	}
	// Cut-off near 142 km.
	cut := 0.0
	for km := 100.0; km < 200; km += 0.1 {
		if l.GLLP(km, 0.48, 1.22) == 0 {
			cut = km
			break
		}
	}
	if math.Abs(cut-142) > 2 {
		t.Errorf("rate reaches zero at %.1f km, want about 142 km", cut)
	}
}

// TestBoundsApproachTruth: with the model's expected gains, the vacuum + weak
// decoy bounds are valid (Y1L ≤ Y1, e1U ≥ e1) and tight for small ν.
func TestBoundsApproachTruth(t *testing.T) {
	l := GYS()
	for _, km := range []float64{0, 50, 100} {
		eta := l.Eta(km)
		y1 := l.Y0 + eta
		e1 := (l.Y0/2 + l.Ed*eta) / y1
		for _, nu := range []float64{0.2, 0.1, 0.05, 0.01} {
			est, err := Bounds(l.Expected(km, 0.48, nu))
			if err != nil {
				t.Fatal(err)
			}
			if est.Y1L > y1*(1+1e-9) || est.E1U < e1*(1-1e-9) {
				t.Errorf("%g km, ν=%g: bounds Y1 ≥ %.4g (true %.4g), e1 ≤ %.4g (true %.4g) are invalid", km, nu, est.Y1L, y1, est.E1U, e1)
			}
			if nu <= 0.05 && (est.Y1L < 0.97*y1 || est.E1U > 1.08*e1) {
				t.Errorf("%g km, ν=%g: bounds Y1 ≥ %.4g (true %.4g), e1 ≤ %.4g (true %.4g) are loose", km, nu, est.Y1L, y1, est.E1U, e1)
			}
		}
	}
}

func TestInvalid(t *testing.T) {
	if _, err := Bounds(Observation{Mu: 0.1, Nu: 0.2, Qmu: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ν > μ accepted: %v", err)
	}
	if _, err := Observe(Counts{Mu: 0.5, Nu: 0.1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty counts accepted: %v", err)
	}
	for _, in := range []FiniteInput{
		{Intensities: [3]float64{0.1, 0.2, 0}, Probabilities: [3]float64{0.5, 0.3, 0.2}, EpsSec: 1e-10},
		{Intensities: [3]float64{0.5, 0.1, 0}, Probabilities: [3]float64{0.5, 0.3, 0.3}, EpsSec: 1e-10},
		{Intensities: [3]float64{0.5, 0.1, 0}, Probabilities: [3]float64{0.5, 0.3, 0.2}, EpsSec: 0},
		{Intensities: [3]float64{0.5, 0.1, 0}, Probabilities: [3]float64{0.5, 0.3, 0.2}, EpsSec: 1e-10, NZ: [3]float64{1, 1, 1}, MZ: [3]float64{2, 0, 0}},
		{Intensities: [3]float64{0.5, 0.1, 0}, Probabilities: [3]float64{0.5, 0.3, 0.2}, EpsSec: 1e-10, NX: [3]float64{math.NaN(), 0, 0}},
	} {
		if _, err := Finite(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Finite(%+v) accepted: %v", in, err)
		}
	}
	// No counts: no key, never a panic.
	b, err := Finite(FiniteInput{Intensities: [3]float64{0.5, 0.1, 0}, Probabilities: [3]float64{0.5, 0.3, 0.2}, EpsSec: 1e-10})
	if err != nil || b.KeyLength(0) != 0 || b.PhiX != 0.5 {
		t.Errorf("empty block: %+v, %v", b, err)
	}
}

func TestH(t *testing.T) {
	if H(0.5) != 1 || H(0) != 0 || math.Abs(H(0.11)-0.4999) > 1e-3 {
		t.Errorf("H: %g %g %g", H(0.5), H(0), H(0.11))
	}
}
