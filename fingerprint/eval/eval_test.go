package eval

import (
	"errors"
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

// Hand-computed example. Operating points (threshold: FMR, FNMR):
//
//	0.05: 1, 0   0.1: .8, 0   0.2: .6, 0   0.3: .6, .25   0.5: .4, .25
//	0.7: .2, .25   0.75: .2, .5   0.8: 0, .5   0.9: 0, .75   +Inf: 0, 1
//
// FMR−FNMR changes sign between 0.5 (+.15) and 0.7 (−.05): a = .15/.2 = .75,
// EER = .4 + .75·(.2 − .4) = .25.
var (
	exGenuine  = []float64{0.9, 0.8, 0.7, 0.2}
	exImpostor = []float64{0.1, 0.3, 0.5, 0.75, 0.05}
)

func TestCurveKnownAnswer(t *testing.T) {
	pts, err := Curve(exGenuine, exImpostor)
	if err != nil {
		t.Fatal(err)
	}
	want := []Point{
		{0.05, 1, 0}, {0.1, .8, 0}, {0.2, .6, 0}, {0.3, .6, .25}, {0.5, .4, .25},
		{0.7, .2, .25}, {0.75, .2, .5}, {0.8, 0, .5}, {0.9, 0, .75}, {math.Inf(1), 0, 1},
	}
	if len(pts) != len(want) {
		t.Fatalf("got %d points, want %d: %+v", len(pts), len(want), pts)
	}
	for i := range want {
		if pts[i].Threshold != want[i].Threshold || !near(pts[i].FMR, want[i].FMR) || !near(pts[i].FNMR, want[i].FNMR) {
			t.Errorf("point %d = %+v, want %+v", i, pts[i], want[i])
		}
	}
}

func TestEvaluateKnownAnswers(t *testing.T) {
	cases := []struct {
		name                              string
		gen, imp                          []float64
		eer, fmr100, fmr1000, zeroFMR, et float64
	}{
		{"worked example", exGenuine, exImpostor, 0.25, 0.5, 0.5, 0.5, 0.5},
		{"separated", []float64{2, 3}, []float64{0, 1}, 0, 0, 0, 0, 1},
		{"all equal", []float64{1, 1}, []float64{1, 1}, 0.5, 1, 1, 1, 1},
		{
			// 200 impostors: 197 at 0, then 0.45, 0.5, 0.9. FMR(0.4) = 1.5%;
			// FMR(0.5) = 1% with FNMR 1/4; FMR = 0 needs t > 0.9: FNMR 2/4.
			"fmr100 differs from zerofmr",
			[]float64{0.4, 0.6, 0.95, 1.0},
			append(make([]float64, 197), 0.45, 0.5, 0.9),
			// t=0.4: FMR .015, FNMR 0 → t=0.45: FMR .015, FNMR .25: d goes
			// from .015 to −.235: a = .015/.25 = .06, EER = .015 + .06·0.
			0.015, 0.25, 0.5, 0.5, 0.4,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Evaluate(c.gen, c.imp)
			if err != nil {
				t.Fatal(err)
			}
			if !near(r.EER, c.eer) || !near(r.FMR100, c.fmr100) || !near(r.FMR1000, c.fmr1000) || !near(r.ZeroFMR, c.zeroFMR) {
				t.Fatalf("got EER %v FMR100 %v FMR1000 %v ZeroFMR %v, want %v %v %v %v",
					r.EER, r.FMR100, r.FMR1000, r.ZeroFMR, c.eer, c.fmr100, c.fmr1000, c.zeroFMR)
			}
			if r.EERThreshold != c.et {
				t.Errorf("EER threshold %v, want %v", r.EERThreshold, c.et)
			}
			if r.Genuine != len(c.gen) || r.Impostor != len(c.imp) {
				t.Errorf("counts %d/%d", r.Genuine, r.Impostor)
			}
		})
	}
}

func TestThresholdForFMR(t *testing.T) {
	p, err := ThresholdForFMR(exGenuine, exImpostor, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Threshold != 0.7 || !near(p.FMR, 0.2) || !near(p.FNMR, 0.25) {
		t.Fatalf("got %+v, want {0.7 0.2 0.25}", p)
	}
	p, _ = ThresholdForFMR(exGenuine, exImpostor, 0)
	if p.Threshold != 0.8 || p.FMR != 0 || !near(p.FNMR, 0.5) {
		t.Fatalf("got %+v, want {0.8 0 0.5}", p)
	}
	if got := At(exGenuine, exImpostor, 0.7); !near(got.FMR, 0.2) || !near(got.FNMR, 0.25) {
		t.Fatalf("At(0.7) = %+v", got)
	}
}

func TestDETAndROC(t *testing.T) {
	pts, _ := Curve(exGenuine, exImpostor)
	x, y := DET(pts)
	rx, ry := ROC(pts)
	if len(x) != len(pts) || len(rx) != len(pts) {
		t.Fatal("length mismatch")
	}
	for i := 1; i < len(x); i++ {
		if x[i] < x[i-1] || y[i] > y[i-1] {
			t.Fatalf("DET not monotone at %d: %v %v", i, x, y)
		}
	}
	if x[0] != 0 || y[0] != 1 || x[len(x)-1] != 1 || y[len(y)-1] != 0 {
		t.Fatalf("DET ends: %v %v", x, y)
	}
	for i := range rx {
		if !near(ry[i], 1-y[i]) || rx[i] != x[i] {
			t.Fatalf("ROC point %d", i)
		}
	}
}

func TestErrors(t *testing.T) {
	if _, err := Evaluate(nil, []float64{1}); !errors.Is(err, ErrNoScores) {
		t.Fatalf("empty genuine: %v", err)
	}
	if _, err := Evaluate([]float64{1}, nil); !errors.Is(err, ErrNoScores) {
		t.Fatalf("empty impostor: %v", err)
	}
	if _, err := Evaluate([]float64{math.NaN()}, []float64{1}); !errors.Is(err, ErrNaN) {
		t.Fatalf("NaN: %v", err)
	}
	// Infinite scores are legal.
	r, err := Evaluate([]float64{math.Inf(1)}, []float64{math.Inf(-1)})
	if err != nil || r.EER != 0 || r.ZeroFMR != 0 {
		t.Fatalf("infinite scores: %+v %v", r, err)
	}
}
