// Package limfig reproduces the published finite-key curves of Lim, Curty,
// Walenta, Xu and Zbinden, "Concise security bounds for practical decoy-state
// quantum key distribution", Phys. Rev. A 89, 022307 (2014), Fig. 1 (dedicated
// fibre): the secret key rate per pulse against fibre length for a fixed
// post-processing block of n_X sifted key-basis detections, with the five free
// parameters {μ1, μ2, p_μ1, p_μ2, q_x} optimised at every point.
//
// It is a known-answer model for tests and the qkd-rate experiment, not a
// delivery path: delivered keys are sized by decoy.Finite on observed counts.
// The bound itself is decoy.Finite; this package only supplies the paper's
// channel model, its ε_sec = κ·ℓ convention and a derivative-free optimiser
// (random multi-start + Nelder–Mead).
package limfig

import (
	"math"
	"sort"

	"github.com/qshield/qshield/qkd/decoy"
)

// System is the fibre system model of Lim et al. (2014), Evaluation section:
//
//	η_ch = 10^(−αL/10), η_sys = η_ch·η_Bob
//	D_k = 1 − (1 − 2p_dc)·e^(−η_sys k), R_k = D_k(1 + p_ap)
//	e_k = p_dc + e_mis[1 − e^(−η k)] + p_ap D_k/2   (errors per pulse)
//	n_X,k = N p_k q_x² R_k, n_Z,k = N p_k (1−q_x)² R_k, m_Z,k = N p_k (1−q_x)² e_k
//	λ_EC = f_EC n_X h(e_X), N = n_X / (q_x² Σ_k p_k R_k)
//
// The paper prints η_ch in the misalignment term; EtaSysInError reads it as
// η_sys (misalignment of detected photons, 0.5% QBER), the only reading under
// which the paper's own 1.75 ratio is reproduced; with η_ch the misalignment
// QBER is e_mis/η_Bob = 5% and n_X = 10^4 gives no key at all.
type System struct {
	Mu3, EtaBob, Pdc, Pap, AlphaDB, Emis, FEC, EpsCor float64
	// Kappa > 0: ε_sec = κ·ℓ (the paper's convention, κ = 10^-15); else
	// EpsSec is used.
	Kappa, EpsSec float64
	EtaSysInError bool
}

// Paper returns the paper's parameters: μ3 = 2·10^-4, η_Bob = 10%,
// p_dc = 6·10^-7, p_ap = 4%, α = 0.2 dB/km, e_mis = 0.5%, f_EC = 1.16,
// ε_cor = 10^-15, ε_sec = κ·ℓ with κ = 10^-15, misalignment read with η_sys.
func Paper() System {
	return System{Mu3: 2e-4, EtaBob: 0.10, Pdc: 6e-7, Pap: 4e-2, AlphaDB: 0.2, Emis: 5e-3, FEC: 1.16, EpsCor: 1e-15, Kappa: 1e-15, EtaSysInError: true}
}

// Params are the free parameters the paper optimises.
type Params struct{ Mu1, Mu2, P1, P2, QX float64 }

// Rate returns the secret key rate ℓ/N per pulse and ℓ for a block of nX
// key-basis detections at L km with parameters v (expected counts). It is 0
// where the block yields no key or v is outside the protocol's domain.
func (s System) Rate(L, nX float64, v Params) (rate, ell float64) {
	mu := [3]float64{v.Mu1, v.Mu2, s.Mu3}
	p := [3]float64{v.P1, v.P2, 1 - v.P1 - v.P2}
	if !(p[2] > 0 && v.P1 > 0 && v.P2 > 0 && v.QX > 0 && v.QX < 1 && mu[0] > mu[1]+mu[2] && mu[1] > mu[2] && mu[0] < 5) {
		return 0, 0
	}
	etaCh := math.Pow(10, -s.AlphaDB*L/10)
	etaSys := etaCh * s.EtaBob
	var R, E [3]float64
	var rTot float64
	for k := range mu {
		d := 1 - (1-2*s.Pdc)*math.Exp(-etaSys*mu[k])
		R[k] = d * (1 + s.Pap)
		eta := etaCh
		if s.EtaSysInError {
			eta = etaSys
		}
		E[k] = s.Pdc + s.Emis*(1-math.Exp(-eta*mu[k])) + s.Pap*d/2
		rTot += p[k] * R[k]
	}
	qx2, qz2 := v.QX*v.QX, (1-v.QX)*(1-v.QX)
	N := nX / (qx2 * rTot)
	in := decoy.FiniteInput{Intensities: mu, Probabilities: p}
	var mX float64
	for k := range mu {
		in.NX[k] = N * qx2 * p[k] * R[k]
		in.NZ[k] = N * qz2 * p[k] * R[k]
		in.MZ[k] = math.Min(N*qz2*p[k]*E[k], in.NZ[k])
		mX += N * qx2 * p[k] * E[k]
	}
	leak := s.FEC*nX*decoy.H(mX/nX) + math.Log2(2/s.EpsCor)
	// ε_sec = κ·ℓ: iterate ℓ → ε_sec → ℓ from ℓ = n_X; the map is
	// increasing, so this converges down to its largest fixed point.
	l := nX
	for i := 0; i < 40; i++ {
		in.EpsSec = s.EpsSec
		if s.Kappa > 0 {
			in.EpsSec = math.Min(s.Kappa*math.Max(l, 1), 0.5)
		}
		b, err := decoy.Finite(in)
		if err != nil {
			return 0, 0
		}
		nl := float64(b.KeyLength(leak))
		if nl <= 0 {
			return 0, 0
		}
		if s.Kappa <= 0 || math.Abs(nl-l) < 0.5 {
			l = nl
			break
		}
		l = nl
	}
	return l / N, l
}

// Optimal maximises Rate over the five free parameters: a deterministic
// random search over the whole domain (the rate is exactly zero on most of
// it for small blocks, and at long distance the optimum has q_x ≈ 0.1–0.3 —
// the TEST basis is the frequent one — and p_μ2 ≈ 0.5, which a coarse grid
// easily misses), then Nelder–Mead from the three best samples.
func (s System) Optimal(L, nX float64) (float64, Params) {
	type cand struct {
		p Params
		r float64
	}
	var top []cand
	rng := uint64(0x9E3779B97F4A7C15)
	rnd := func() float64 { // xorshift64: reproducible, not for secrets
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return float64(rng>>11) / (1 << 53)
	}
	const samples = 20000
	for i := 0; i < samples; i++ {
		mu1 := 0.05 + 1.2*rnd()
		v := Params{Mu1: mu1, Mu2: mu1 * rnd(), P1: rnd(), QX: 0.02 + 0.96*rnd()}
		v.P2 = (1 - v.P1) * rnd()
		if r, _ := s.Rate(L, nX, v); r > 0 {
			top = append(top, cand{v, r})
			if len(top) > 64 {
				sort.Slice(top, func(i, j int) bool { return top[i].r > top[j].r })
				top = top[:3]
			}
		}
	}
	sort.Slice(top, func(i, j int) bool { return top[i].r > top[j].r })
	if len(top) == 0 {
		return 0, Params{}
	}
	sig := func(t float64) float64 { return 1 / (1 + math.Exp(-t)) }
	logit := func(y float64) float64 { return math.Log(y / (1 - y)) }
	decode := func(x []float64) Params {
		mu1 := 1.5 * sig(x[0])
		p1 := sig(x[2])
		return Params{mu1, mu1 * sig(x[1]), p1, (1 - p1) * sig(x[3]), sig(x[4])}
	}
	f := func(x []float64) float64 { r, _ := s.Rate(L, nX, decode(x)); return -r }
	best, bestP := top[0].r, top[0].p
	for i := 0; i < len(top) && i < 3; i++ {
		st := top[i].p
		x0 := []float64{logit(st.Mu1 / 1.5), logit(st.Mu2 / st.Mu1), logit(st.P1), logit(st.P2 / (1 - st.P1)), logit(st.QX)}
		if x, v := nelderMead(f, x0, 3000); -v > best {
			best, bestP = -v, decode(x)
		}
	}
	return best, bestP
}

// Cutoff is the largest fibre length (to within tol km, searched in
// [lo, hi]) at which the optimised n_X-block yields key. It assumes the
// optimised rate is positive at lo.
func (s System) Cutoff(nX, lo, hi, tol float64) float64 {
	for hi-lo > tol {
		m := (lo + hi) / 2
		if r, _ := s.Optimal(m, nX); r > 0 {
			lo = m
		} else {
			hi = m
		}
	}
	return lo
}

// nelderMead minimises f from x0 (standard coefficients, two restarts).
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
