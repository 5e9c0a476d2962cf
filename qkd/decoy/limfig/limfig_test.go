package limfig

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

type anchors struct {
	Paper struct {
		Cutoff   float64 `json:"cutoff_km_nX_1e4"`
		Ratio    float64 `json:"ratio_R1e9_over_R1e7_at_100km"`
		Rate0Max float64 `json:"rate_0km_nX_1e9_below"`
	} `json:"paper"`
	Reproduced struct {
		CutoffKappa float64 `json:"cutoff_km_nX_1e4_kappa"`
		CutoffEps   float64 `json:"cutoff_km_nX_1e4_eps_1e-10"`
		Ratio       float64 `json:"ratio_R1e9_over_R1e7_at_100km"`
		Rate0       float64 `json:"rate_0km_nX_1e9"`
	} `json:"reproduced"`
	Tolerance struct {
		CutoffPaper float64 `json:"cutoff_km_vs_paper"`
		CutoffRepro float64 `json:"cutoff_km_vs_reproduced"`
		Ratio       float64 `json:"ratio"`
	} `json:"tolerance"`
}

func loadAnchors(t *testing.T) anchors {
	t.Helper()
	raw, err := os.ReadFile("testdata/lim2014_fig1.json")
	if err != nil {
		t.Fatal(err)
	}
	var a anchors
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	if a.Paper.Cutoff == 0 || a.Paper.Ratio == 0 || a.Tolerance.CutoffPaper == 0 {
		t.Fatalf("incomplete anchors: %+v", a)
	}
	return a
}

// TestLimFig1Anchors is the known-answer test against Lim et al. (2014),
// Fig. 1 (the paper publishes curves, not tables; its text gives the two
// numbers checked here): "even if we use a block size of 10^4, cryptographic
// keys can still be distributed over a fiber length of 135 km", and "at a
// fiber length of 100 km, the secret key rate obtained with n_X = 10^9 is
// about 1.75 times the one based on n_X = 10^7". The reproduced values are
// pinned too, so a change to decoy.Finite that moves the curves fails here.
func TestLimFig1Anchors(t *testing.T) {
	if testing.Short() {
		t.Skip("optimisation over five parameters per point")
	}
	a := loadAnchors(t)
	s := Paper()
	c := s.Cutoff(1e4, 100, 160, 0.5)
	t.Logf("n_X = 10^4 cut-off, ε_sec = κℓ: %.1f km (paper %.0f km)", c, a.Paper.Cutoff)
	if math.Abs(c-a.Paper.Cutoff) > a.Tolerance.CutoffPaper || math.Abs(c-a.Reproduced.CutoffKappa) > a.Tolerance.CutoffRepro {
		t.Errorf("n_X = 10^4 cut-off %.1f km: paper %.0f ± %.0f, reproduced %.1f ± %.0f", c, a.Paper.Cutoff, a.Tolerance.CutoffPaper, a.Reproduced.CutoffKappa, a.Tolerance.CutoffRepro)
	}
	e := s
	e.Kappa, e.EpsSec = 0, 1e-10
	ce := e.Cutoff(1e4, 100, 160, 0.5)
	t.Logf("n_X = 10^4 cut-off, ε_sec = 10^-10: %.1f km", ce)
	if math.Abs(ce-a.Paper.Cutoff) > a.Tolerance.CutoffPaper || math.Abs(ce-a.Reproduced.CutoffEps) > a.Tolerance.CutoffRepro {
		t.Errorf("n_X = 10^4 cut-off (ε_sec 10^-10) %.1f km, reproduced %.1f", ce, a.Reproduced.CutoffEps)
	}
	r7, _ := s.Optimal(100, 1e7)
	r9, _ := s.Optimal(100, 1e9)
	t.Logf("R(10^9)/R(10^7) at 100 km = %.3f (paper %.2f)", r9/r7, a.Paper.Ratio)
	if r7 <= 0 || math.Abs(r9/r7-a.Paper.Ratio) > a.Tolerance.Ratio {
		t.Errorf("R(10^9)/R(10^7) at 100 km = %.3f (R = %.3g, %.3g), paper %.2f", r9/r7, r9, r7, a.Paper.Ratio)
	}
	if r, _ := s.Optimal(0, 1e9); !(r > a.Paper.Rate0Max/2 && r < a.Paper.Rate0Max) || math.Abs(r/a.Reproduced.Rate0-1) > 0.05 {
		t.Errorf("R(0 km, n_X = 10^9) = %.3g: Fig. 1 tops out just below %g; reproduced %.3g", r, a.Paper.Rate0Max, a.Reproduced.Rate0)
	}
	// The curves are ordered by block size at every distance.
	for _, L := range []float64{0, 50, 100} {
		prev := 0.0
		for _, nX := range []float64{1e4, 1e5, 1e6, 1e7, 1e8, 1e9} {
			r, _ := s.Optimal(L, nX)
			if r <= prev {
				t.Errorf("L = %g km: R(n_X = %.0e) = %.3g not above the smaller block's %.3g", L, nX, r, prev)
			}
			prev = r
		}
	}
}

// TestLiteralMisalignmentGivesNoKey pins the other reading of the paper's
// e_k (η_ch in the misalignment term, 5% QBER): no key at n_X = 10^4 at any
// length, so it cannot be the reading behind Fig. 1.
func TestLiteralMisalignmentGivesNoKey(t *testing.T) {
	if testing.Short() {
		t.Skip("optimisation")
	}
	s := Paper()
	s.EtaSysInError = false
	for _, L := range []float64{0, 100} {
		if r, p := s.Optimal(L, 1e4); r != 0 {
			t.Errorf("L = %g: literal η_ch reading gives R = %.3g (%+v), expected none", L, r, p)
		}
	}
}

// TestRateDomain: outside the protocol's domain the model returns 0, never
// a key.
func TestRateDomain(t *testing.T) {
	s := Paper()
	for _, v := range []Params{{0.1, 0.2, 0.3, 0.3, 0.5}, {0.5, 0.1, 0.6, 0.5, 0.5}, {0.5, 0.1, 0.3, 0.3, 1}, {0.5, 0.1, 0, 0.3, 0.5}, {math.NaN(), 0.1, 0.3, 0.3, 0.5}} {
		if r, l := s.Rate(10, 1e6, v); r != 0 || l != 0 {
			t.Errorf("%+v: rate %g, ℓ %g", v, r, l)
		}
	}
	if r, _ := s.Rate(10, 1e6, Params{0.5, 0.1, 0.5, 0.3, 0.7}); !(r > 0) {
		t.Errorf("a valid point gives no key at 10 km")
	}
}
