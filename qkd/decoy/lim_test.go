package decoy

import (
	"encoding/json"
	"math"
	"os"
	"sort"
	"strings"
	"testing"
)

// limSystem is the fibre system model of Lim et al. (2014), Sec. IV
// (dedicated fibre): μ3 = 2·10^-4, η_Bob = 10%, p_dc = 6·10^-7, p_ap = 4·10^-2,
// 0.2 dB/km, e_mis = 5·10^-3, f_EC = 1.16, ε_cor = 10^-15, ε_sec = κ·ℓ with
// κ = 10^-15.
type limSystem struct {
	mu3, etaBob, pdc, pap, alpha, emis, fEC, epsCor, kappa float64
	// errEtaSys uses η_sys instead of η_ch in the misalignment error term.
	errEtaSys bool
}

func limPaper() limSystem {
	return limSystem{mu3: 2e-4, etaBob: 0.10, pdc: 6e-7, pap: 4e-2, alpha: 0.2, emis: 5e-3, fEC: 1.16, epsCor: 1e-15, kappa: 1e-15}
}

// limParams are the free parameters the paper optimises.
type limParams struct{ mu1, mu2, p1, p2, qx float64 }

// rate returns the secret key rate ℓ/N per pulse for block size nX at L km
// (expected counts), and ℓ.
func (s limSystem) rate(L, nX float64, v limParams) (float64, float64) {
	mu := [3]float64{v.mu1, v.mu2, s.mu3}
	p := [3]float64{v.p1, v.p2, 1 - v.p1 - v.p2}
	if !(p[2] > 0 && v.p1 > 0 && v.p2 > 0 && v.qx > 0 && v.qx < 1 && mu[0] > mu[1]+mu[2] && mu[1] > mu[2]) {
		return 0, 0
	}
	etaCh := math.Pow(10, -s.alpha*L/10)
	etaSys := etaCh * s.etaBob
	var R, E [3]float64
	var rTot float64
	for k := range mu {
		d := 1 - (1-2*s.pdc)*math.Exp(-etaSys*mu[k])
		R[k] = d * (1 + s.pap)
		eta := etaCh
		if s.errEtaSys {
			eta = etaSys
		}
		E[k] = s.pdc + s.emis*(1-math.Exp(-eta*mu[k])) + s.pap*d/2
		rTot += p[k] * R[k]
	}
	N := nX / (v.qx * v.qx * rTot)
	in := FiniteInput{Intensities: mu, Probabilities: p}
	var mX, nXs float64
	for k := range mu {
		in.NX[k] = N * v.qx * v.qx * p[k] * R[k]
		in.NZ[k] = N * (1 - v.qx) * (1 - v.qx) * p[k] * R[k]
		in.MZ[k] = N * (1 - v.qx) * (1 - v.qx) * p[k] * E[k]
		mX += N * v.qx * v.qx * p[k] * E[k]
		nXs += in.NX[k]
	}
	eObs := mX / nXs
	leak := s.fEC*nXs*H(eObs) + math.Log2(2/s.epsCor)
	// ε_sec = κ·ℓ: iterate ℓ → ε_sec → ℓ (ℓ depends on ε_sec logarithmically).
	l := nX
	for i := 0; i < 30; i++ {
		in.EpsSec = math.Min(s.kappa*math.Max(l, 1), 0.5)
		b, err := Finite(in)
		if err != nil {
			return 0, 0
		}
		nl := float64(b.KeyLength(leak))
		if nl <= 0 {
			return 0, 0
		}
		if math.Abs(nl-l) < 0.5 {
			l = nl
			break
		}
		l = nl
	}
	return l / N, l
}

// optimal maximises the rate over {μ1, μ2, p_μ1, p_μ2, q_x} with Nelder–Mead
// from a few starting points, as the paper does numerically.
func (s limSystem) optimal(L, nX float64) (float64, limParams) {
	decode := func(x []float64) limParams {
		sig := func(t float64) float64 { return 1 / (1 + math.Exp(-t)) }
		mu1 := 1.5 * sig(x[0])
		mu2 := mu1 * sig(x[1])
		p1 := sig(x[2])
		p2 := (1 - p1) * sig(x[3])
		qx := sig(x[4])
		return limParams{mu1, mu2, p1, p2, qx}
	}
	f := func(x []float64) float64 { r, _ := s.rate(L, nX, decode(x)); return -r }
	logit := func(y float64) float64 { return math.Log(y / (1 - y)) }
	// Coarse grid first (the rate is zero on most of the space for small
	// blocks, where Nelder–Mead alone cannot move), then Nelder–Mead from the
	// three best grid points.
	type cand struct {
		p limParams
		r float64
	}
	var grid []cand
	for _, mu1 := range []float64{0.3, 0.45, 0.6, 0.8} {
		for _, fr := range []float64{0.2, 0.35, 0.5} {
			for _, p1 := range []float64{0.05, 0.1, 0.2, 0.4, 0.6, 0.8} {
				for _, f2 := range []float64{0.3, 0.5, 0.7} {
					for _, qx := range []float64{0.4, 0.5, 0.6, 0.7, 0.85, 0.95} {
						v := limParams{mu1, mu1 * fr, p1, (1 - p1) * f2, qx}
						if r, _ := s.rate(L, nX, v); r > 0 {
							grid = append(grid, cand{v, r})
						}
					}
				}
			}
		}
	}
	sort.Slice(grid, func(i, j int) bool { return grid[i].r > grid[j].r })
	starts := []limParams{{0.5, 0.1, 0.7, 0.2, 0.9}}
	for i := 0; i < len(grid) && i < 3; i++ {
		starts = append(starts, grid[i].p)
	}
	best, bestX := 0.0, []float64(nil)
	for _, st := range starts {
		x0 := []float64{logit(st.mu1 / 1.5), logit(st.mu2 / st.mu1), logit(st.p1), logit(st.p2 / (1 - st.p1)), logit(st.qx)}
		x, v := nelderMead(f, x0, 4000)
		if -v > best {
			best, bestX = -v, x
		}
	}
	if bestX == nil {
		return 0, limParams{}
	}
	return best, decode(bestX)
}

// nelderMead minimises f from x0 (standard coefficients, restarts once).
func nelderMead(f func([]float64) float64, x0 []float64, maxEval int) ([]float64, float64) {
	n := len(x0)
	type pt struct {
		x []float64
		v float64
	}
	x := append([]float64(nil), x0...)
	var best pt
	evals := 0
	for restart := 0; restart < 3; restart++ {
		simplex := make([]pt, n+1)
		for i := range simplex {
			y := append([]float64(nil), x...)
			if i > 0 {
				y[i-1] += 0.5
			}
			simplex[i] = pt{y, f(y)}
			evals++
		}
		for evals < maxEval*(restart+1) {
			sort.Slice(simplex, func(i, j int) bool { return simplex[i].v < simplex[j].v })
			if math.Abs(simplex[n].v-simplex[0].v) <= 1e-12*math.Abs(simplex[0].v)+1e-300 && simplex[0].v != 0 {
				break
			}
			c := make([]float64, n)
			for _, s := range simplex[:n] {
				for j := range c {
					c[j] += s.x[j] / float64(n)
				}
			}
			at := func(t float64) pt {
				y := make([]float64, n)
				for j := range y {
					y[j] = c[j] + t*(simplex[n].x[j]-c[j])
				}
				evals++
				return pt{y, f(y)}
			}
			r := at(-1)
			switch {
			case r.v < simplex[0].v:
				if e := at(-2); e.v < r.v {
					simplex[n] = e
				} else {
					simplex[n] = r
				}
			case r.v < simplex[n-1].v:
				simplex[n] = r
			default:
				if k := at(0.5); k.v < simplex[n].v {
					simplex[n] = k
				} else {
					for i := 1; i <= n; i++ {
						for j := range simplex[i].x {
							simplex[i].x[j] = simplex[0].x[j] + 0.5*(simplex[i].x[j]-simplex[0].x[j])
						}
						simplex[i].v = f(simplex[i].x)
						evals++
					}
				}
			}
		}
		sort.Slice(simplex, func(i, j int) bool { return simplex[i].v < simplex[j].v })
		best = simplex[0]
		x = best.x
	}
	return best.x, best.v
}

// TestFiniteVectors checks Finite and KeyLength against test vectors computed
// by an independent Python evaluation of the paper's Eqs. (1)–(5)
// (testdata/lim2014_vectors.py). The paper publishes curves, not tables, so
// these are derived vectors, not published numbers.
func TestFiniteVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/lim2014_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []struct {
			Mu1, Mu2, P1, P2, EpsSec     float64
			NX, NZ, MZ                   [3]float64
			Leak                         float64
			SX0, SX1, SZ0, SZ1, VZ1, Phi float64
			Ell                          float64
		}
	}
	// Field names in the JSON are the Python ones.
	dec := strings.NewReplacer(`"mu1"`, `"Mu1"`, `"mu2"`, `"Mu2"`, `"p1"`, `"P1"`, `"p2"`, `"P2"`, `"eps_sec"`, `"EpsSec"`,
		`"leak"`, `"Leak"`, `"sX0"`, `"SX0"`, `"sX1"`, `"SX1"`, `"sZ0"`, `"SZ0"`, `"sZ1"`, `"SZ1"`, `"vZ1"`, `"VZ1"`, `"phiX"`, `"Phi"`, `"ell"`, `"Ell"`)
	if err := json.Unmarshal([]byte(dec.Replace(string(raw))), &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) < 5 {
		t.Fatalf("%d vectors", len(file.Vectors))
	}
	close := func(got, want float64) bool { return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want)) }
	for i, v := range file.Vectors {
		b, err := Finite(FiniteInput{Intensities: [3]float64{v.Mu1, v.Mu2, 2e-4}, Probabilities: [3]float64{v.P1, v.P2, 1 - v.P1 - v.P2},
			NX: v.NX, NZ: v.NZ, MZ: v.MZ, EpsSec: v.EpsSec})
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"s_X,0", b.SX0, v.SX0}, {"s_X,1", b.SX1, v.SX1}, {"s_Z,0", b.SZ0, v.SZ0}, {"s_Z,1", b.SZ1, v.SZ1}, {"v_Z,1", b.VZ1, v.VZ1}, {"φ_X", b.PhiX, v.Phi}} {
			if !close(c.got, c.want) {
				t.Errorf("vector %d: %s = %.10g, want %.10g", i, c.name, c.got, c.want)
			}
		}
		if l := b.KeyLength(v.Leak); math.Abs(float64(l)-v.Ell) > 1 {
			t.Errorf("vector %d: ℓ = %d, want %.0f", i, l, v.Ell)
		}
	}
}

// TestLimPaperCurves reproduces what Lim et al. (2014) state in the text
// about their Fig. 1 (dedicated fibre, parameters optimised per point):
// "at a fiber length of 100 km, the secret key rate obtained with n_X = 10^9
// is about 1.75 times the one based on n_X = 10^7", and "even if we use a
// block size of 10^4, cryptographic keys can still be distributed over a
// fiber length of 135 km". The first is reproduced (1.79); the second is not:
// our optimiser finds the n_X = 10^4 curve ending near 115 km (see the note in
// BENCHMARKS.md); the test pins the reproduced ratio and the ordering of the
// curves, and bounds the 10^4 cut-off loosely.
func TestLimPaperCurves(t *testing.T) {
	if testing.Short() {
		t.Skip("optimisation over five parameters per point")
	}
	s := limPaper()
	// The paper prints e_k = p_dc + e_mis[1 − exp(−η_ch k)] + p_ap D_k/2. Taken
	// literally (η_ch, the fibre alone) the misalignment QBER is e_mis/η_Bob =
	// 5%, the rates come out about 7× below Fig. 1 and blocks up to 10^6 give
	// no key; with η_sys = η_ch·η_Bob (misalignment of detected photons) the
	// text's numbers are reproduced, so we read it as η_sys.
	s.errEtaSys = true
	r7, _ := s.optimal(100, 1e7)
	r9, _ := s.optimal(100, 1e9)
	if r7 <= 0 || math.Abs(r9/r7-1.75) > 0.1 {
		t.Errorf("R(n_X=1e9)/R(n_X=1e7) at 100 km = %.3f (R = %.3g, %.3g), paper: about 1.75", r9/r7, r9, r7)
	}
	// Rates grow with the block size at every distance.
	for _, L := range []float64{0, 50, 100} {
		prev := 0.0
		for _, nX := range []float64{1e5, 1e6, 1e7, 1e8, 1e9} {
			r, _ := s.optimal(L, nX)
			if r <= prev {
				t.Errorf("L = %g km: R(n_X=%.0e) = %.3g not above the smaller block's %.3g", L, nX, r, prev)
			}
			prev = r
		}
	}
	// Order of magnitude of the curves at 0 km (Fig. 1's upper end, 10^-2).
	if r, _ := s.optimal(0, 1e9); !(r > 5e-3 && r < 2e-2) {
		t.Errorf("R(0 km, n_X=1e9) = %.3g, Fig. 1 tops out just below 10^-2", r)
	}
	cut := func(nX float64) float64 {
		lo, hi := 0.0, 260.0
		for hi-lo > 1 {
			m := (lo + hi) / 2
			if r, _ := s.optimal(m, nX); r > 0 {
				lo = m
			} else {
				hi = m
			}
		}
		return lo
	}
	c4 := cut(1e4)
	t.Logf("n_X = 10^4 cut-off: %.0f km (paper: 135 km)", c4)
	if !(c4 > 100 && c4 < 140) {
		t.Errorf("n_X = 10^4 cut-off at %.0f km, paper 135 km", c4)
	}
}

// FuzzFinite: for any counts the bound is either an error or a key length
// between 0 and the number of key bits, with φ_X in [0, 1/2], and more
// disclosed bits never give a longer key.
func FuzzFinite(f *testing.F) {
	f.Add(0.4, 0.2, 0.3, 0.5, uint32(300000), uint32(500000), uint32(200), uint32(20000), uint32(30000), uint32(12), uint32(700), uint32(1000), uint32(6), uint8(10))
	f.Add(0.5, 0.1, 0.8, 0.1, uint32(0), uint32(1000000), uint32(0), uint32(0), uint32(100000), uint32(0), uint32(0), uint32(0), uint32(0), uint8(30))
	f.Fuzz(func(t *testing.T, mu1, mu2, p1, p2 float64, x0, x1, x2, z0, z1, z2, m0, m1, m2 uint32, e uint8) {
		in := FiniteInput{Intensities: [3]float64{mu1, mu2, 0}, Probabilities: [3]float64{p1, p2, 1 - p1 - p2},
			NX: [3]float64{float64(x0), float64(x1), float64(x2)}, NZ: [3]float64{float64(z0), float64(z1), float64(z2)},
			MZ: [3]float64{float64(m0), float64(m1), float64(m2)}, EpsSec: math.Pow(10, -float64(e%40))}
		b, err := Finite(in)
		if err != nil {
			return
		}
		nX := in.NX[0] + in.NX[1] + in.NX[2]
		if !(b.PhiX >= 0 && b.PhiX <= 0.5) || b.SX0 < 0 || b.SX1 < 0 || b.SX0+b.SX1 > nX+1e-6 {
			t.Fatalf("bounds out of range: %+v", b)
		}
		l0, l1 := b.KeyLength(0), b.KeyLength(1000)
		if l0 < 0 || float64(l0) > nX || l1 > l0 {
			t.Fatalf("key lengths %d, %d for %g key bits", l0, l1, nX)
		}
	})
}
