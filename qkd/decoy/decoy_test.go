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

func TestFiniteSizeIsConservative(t *testing.T) {
	c := Counts{Mu: 0.48, Nu: 0.05,
		Pulses:     [3]int64{8e7, 1e7, 1e7},
		Detections: [3]int64{500000, 7000, 17},
		Sifted:     [3]int64{250000, 3500, 9},
		Errors:     [3]int64{400, 130, 4},
		Compared:   [3]int64{12000, 3500, 9},
	}
	a, err := Observe(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Observe(c, 1e-10)
	if err != nil {
		t.Fatal(err)
	}
	ea, _ := Bounds(a)
	ef, _ := Bounds(f)
	if !(ef.Y1L < ea.Y1L && ef.E1U > ea.E1U) {
		t.Errorf("finite-size bounds (Y1 ≥ %g, e1 ≤ %g) are not more conservative than asymptotic ones (%g, %g)", ef.Y1L, ef.E1U, ea.Y1L, ea.E1U)
	}
	if SecretLength(240000, ef, 50000, 1e-10, true, 3000) >= SecretLength(240000, ea, 50000, 1e-10, false, 3000) {
		t.Error("finite-size key is not shorter")
	}
}

func TestInvalid(t *testing.T) {
	if _, err := Bounds(Observation{Mu: 0.1, Nu: 0.2, Qmu: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ν > μ accepted: %v", err)
	}
	if _, err := Observe(Counts{Mu: 0.5, Nu: 0.1}, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty counts accepted: %v", err)
	}
	if got := SecretLength(1000, Estimate{SingleFraction: 0.5, E1U: 0.5}, 0, 1e-10, false, 0); got != 0 {
		t.Errorf("e1 = 0.5 gives %d secret bits", got)
	}
}

func TestH(t *testing.T) {
	if H(0.5) != 1 || H(0) != 0 || math.Abs(H(0.11)-0.4999) > 1e-3 {
		t.Errorf("H: %g %g %g", H(0.5), H(0), H(0.11))
	}
}
