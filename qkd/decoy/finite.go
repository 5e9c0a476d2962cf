package decoy

import (
	"fmt"
	"math"
)

// Finite-size key length of Lim, Curty, Walenta, Xu and Zbinden, "Concise
// security bounds for practical decoy-state quantum key distribution",
// Phys. Rev. A 89, 022307 (2014), main text Eqs. (1)–(5), for the protocol
// they analyse: asymmetric BB84, bases X (key) and Z (test) chosen by Alice
// and Bob with probabilities q_x and 1 − q_x, three intensities
// μ1 > μ2 + μ3, μ2 > μ3 ≥ 0; the key is made of every sifted X detection of
// every intensity, and every sifted Z detection is disclosed to count errors.
//
// With n_X = Σ_k n_X,k sifted X detections (n_X,k of intensity k), m_Z,k
// errors among the n_Z,k sifted Z detections, ε = ε_sec/21 and
// τ_n = Σ_k p_k e^(−k) k^n / n!:
//
//	n±_X,k = e^k/p_k · [n_X,k ± √(n_X/2 · ln(21/ε_sec))]            (Hoeffding on the TOTAL n_X)
//	m±_Z,k = e^k/p_k · [m_Z,k ± √(m_Z/2 · ln(21/ε_sec))]
//	s_X,0 ≥ τ0 (μ2 n−_X,μ3 − μ3 n+_X,μ2)/(μ2 − μ3)                              (2)
//	s_X,1 ≥ τ1 μ1 [n−_X,μ2 − n+_X,μ3 − (μ2²−μ3²)/μ1² (n+_X,μ1 − s_X,0/τ0)]
//	        / [μ1(μ2 − μ3) − μ2² + μ3²]                                          (3)
//	v_Z,1 ≤ τ1 (m+_Z,μ2 − m−_Z,μ3)/(μ2 − μ3)                                   (4)
//	φ_X   ≤ v_Z,1/s_Z,1 + γ(ε_sec, v_Z,1/s_Z,1, s_Z,1, s_X,1)                  (5)
//	γ(a,b,c,d) = √[ (c+d)(1−b)b/(c·d·ln 2) · log2( (c+d)/(c·d·(1−b)b) · 21²/a² ) ]
//	ℓ = ⌊ s_X,0 + s_X,1 (1 − h(φ_X)) − λ_EC − 6 log2(21/ε_sec) − log2(2/ε_cor) ⌋  (1)
//
// s_Z,0 and s_Z,1 are Eqs. (2) and (3) on the Z statistics. The key is then
// ε_sec-secret and ε_cor-correct (Lim et al., Appendix B: every one of the 21
// error terms is ε_sec/21). λ_EC + log2(2/ε_cor) is the information published
// by error correction and verification; a real link passes the bits it
// actually disclosed (KeyLength), never an estimate.
//
// Two conservative choices where the paper's formula is degenerate: γ is
// evaluated at b = max(v_Z,1/s_Z,1, 1/s_Z,1) (the bound b + γ(b) grows with b,
// and γ(0) = 0 would claim a zero phase error from a finite sample), and φ_X
// is capped at 1/2 (h(φ) = 1: no single-photon key).

// Intensity classes are indexed Signal (μ1), Decoy (μ2), Vacuum (μ3) as in
// Counts.

// FiniteInput is what the finite-key bound is computed from: the protocol's
// intensities and their probabilities, the sifted counts of one block per
// basis and intensity, and the secrecy parameter.
type FiniteInput struct {
	Intensities   [3]float64 // μ1 > μ2 + μ3, μ2 > μ3 ≥ 0
	Probabilities [3]float64 // p_μ1, p_μ2, p_μ3, positive, summing to 1
	// Counts are whole numbers in a protocol run; planning and the published
	// curves use expected (fractional) counts.
	NX     [3]float64 // sifted X (key basis) detections per intensity
	NZ     [3]float64 // sifted Z (test basis) detections per intensity
	MZ     [3]float64 // bit errors among them (all Z bits are compared)
	EpsSec float64    // ε_sec of the block, 0 < ε_sec < 1
}

// FiniteBound is the outcome of the finite-key analysis of one block.
type FiniteBound struct {
	SX0, SX1 float64 // lower bounds on vacuum and single-photon events in the key
	SZ0, SZ1 float64 // the same in the Z basis
	VZ1      float64 // upper bound on single-photon bit errors in Z
	PhiX     float64 // upper bound on the single-photon phase error rate of the key (≤ 1/2)
	Gamma    float64 // the sampling term γ included in PhiX
	DeltaX   float64 // Hoeffding deviation √(n_X/2 ln(21/ε_sec)) on the X counts
	DeltaZ   float64 // the same on the Z counts (n_Z)
	DeltaMZ  float64 // the same on the Z errors (m_Z)
	EpsSec   float64 // secrecy parameter of the block (sum of 21 terms of ε_sec/21)
	NX       float64 // key bits (all sifted X detections)
}

// Finite computes the bounds of Lim et al. (2014), Eqs. (2)–(5).
func Finite(in FiniteInput) (FiniteBound, error) {
	mu := in.Intensities
	p := in.Probabilities
	if !(mu[Signal] > mu[Decoy]+mu[Vacuum] && mu[Decoy] > mu[Vacuum] && mu[Vacuum] >= 0) || math.IsInf(mu[Signal], 0) {
		return FiniteBound{}, fmt.Errorf("%w: intensities must satisfy μ1 > μ2 + μ3, μ2 > μ3 ≥ 0 (got %v)", ErrInvalid, mu)
	}
	if !(p[0] > 0 && p[1] > 0 && p[2] > 0) || math.Abs(p[0]+p[1]+p[2]-1) > 1e-9 {
		return FiniteBound{}, fmt.Errorf("%w: intensity probabilities must be positive and sum to 1 (got %v)", ErrInvalid, p)
	}
	if !(in.EpsSec > 0 && in.EpsSec < 1) {
		return FiniteBound{}, fmt.Errorf("%w: ε_sec = %g", ErrInvalid, in.EpsSec)
	}
	var nX, nZ, mZ float64
	for k := 0; k < 3; k++ {
		if !(in.NX[k] >= 0 && in.NZ[k] >= 0 && in.MZ[k] >= 0 && in.MZ[k] <= in.NZ[k]) || math.IsInf(in.NX[k]+in.NZ[k], 0) {
			return FiniteBound{}, fmt.Errorf("%w: inconsistent counts for intensity %d (X %g, Z %g, Z errors %g)", ErrInvalid, k, in.NX[k], in.NZ[k], in.MZ[k])
		}
		nX += in.NX[k]
		nZ += in.NZ[k]
		mZ += in.MZ[k]
	}
	lnTerm := math.Log(21 / in.EpsSec)
	tau := func(n int) float64 {
		var t float64
		fact := 1.0
		for i := 2; i <= n; i++ {
			fact *= float64(i)
		}
		for k := 0; k < 3; k++ {
			t += p[k] * math.Exp(-mu[k]) * math.Pow(mu[k], float64(n)) / fact
		}
		return t
	}
	tau0, tau1 := tau(0), tau(1)
	// bound returns e^k/p_k·(x ± δ).
	bound := func(k int, x, delta, sign float64) float64 {
		return math.Exp(mu[k]) / p[k] * (x + sign*delta)
	}
	m1, m2, m3 := mu[Signal], mu[Decoy], mu[Vacuum]
	// s0s1 evaluates Eqs. (2) and (3). Both are lower bounds on counts of
	// events among the n = Σ n_k detections, so each is also clamped to what
	// n leaves (still a valid lower bound; it matters only for counts no
	// honest channel produces).
	s0s1 := func(n [3]float64, delta float64) (s0, s1 float64) {
		total := n[0] + n[1] + n[2]
		defer func() {
			s0 = math.Min(s0, total)
			s1 = math.Min(s1, total-s0)
		}()
		s0 = tau0 * (m2*bound(Vacuum, n[Vacuum], delta, -1) - m3*bound(Decoy, n[Decoy], delta, +1)) / (m2 - m3)
		s0 = math.Max(s0, 0)
		num := bound(Decoy, n[Decoy], delta, -1) - bound(Vacuum, n[Vacuum], delta, +1) -
			(m2*m2-m3*m3)/(m1*m1)*(bound(Signal, n[Signal], delta, +1)-s0/tau0)
		s1 = tau1 * m1 * num / (m1*(m2-m3) - m2*m2 + m3*m3)
		return s0, math.Max(s1, 0)
	}
	b := FiniteBound{EpsSec: in.EpsSec, NX: nX}
	b.DeltaX = math.Sqrt(nX / 2 * lnTerm)
	b.DeltaZ = math.Sqrt(nZ / 2 * lnTerm)
	b.DeltaMZ = math.Sqrt(mZ / 2 * lnTerm)
	b.SX0, b.SX1 = s0s1(in.NX, b.DeltaX)
	b.SZ0, b.SZ1 = s0s1(in.NZ, b.DeltaZ)
	b.VZ1 = math.Max(tau1*(bound(Decoy, in.MZ[Decoy], b.DeltaMZ, +1)-bound(Vacuum, in.MZ[Vacuum], b.DeltaMZ, -1))/(m2-m3), 0)
	b.PhiX = 0.5
	if b.SZ1 >= 1 && b.SX1 >= 1 {
		e := b.VZ1 / b.SZ1
		if e < 0.5 {
			b.Gamma = Gamma(in.EpsSec, math.Max(e, 1/b.SZ1), b.SZ1, b.SX1)
			b.PhiX = math.Min(e+b.Gamma, 0.5)
		}
	}
	return b, nil
}

// Gamma is the random-sampling term γ(a, b, c, d) of Lim et al. (2014), Eq. (5),
// with the 21²/a² of the main text (a = ε_sec): the deviation between the
// error rate b of c sampled single-photon events and that of d unsampled ones.
// It returns +Inf when the formula is undefined (b outside (0, 1), c or d < 1).
func Gamma(a, b, c, d float64) float64 {
	if !(b > 0 && b < 1 && c >= 1 && d >= 1 && a > 0) {
		return math.Inf(1)
	}
	arg := (c + d) / (c * d * (1 - b) * b) * 21 * 21 / (a * a)
	if arg <= 1 {
		return 0
	}
	return math.Sqrt((c + d) * (1 - b) * b / (c * d * math.Ln2) * math.Log2(arg))
}

// SecurityCost is the 6·log2(21/ε_sec) bits Eq. (1) charges for secrecy.
func SecurityCost(epsSec float64) float64 { return 6 * math.Log2(21/epsSec) }

// KeyLength is Eq. (1): the ε_sec-secret key length when disclosed bits of
// information were published by error correction and verification (λ_EC +
// the verification tags, which must publish at least log2(2/ε_cor) bits for
// ε_cor-correctness). A result ≤ 0 means the block yields no key; it returns 0
// then.
func (b FiniteBound) KeyLength(disclosed float64) int64 {
	l := b.SX0 + b.SX1*(1-H(b.PhiX)) - disclosed - SecurityCost(b.EpsSec)
	if !(l > 0) || math.IsNaN(l) {
		return 0
	}
	return int64(math.Floor(l))
}

// Margin is the key length before the disclosed bits are subtracted:
// s_X,0 + s_X,1(1 − h(φ_X)) − 6 log2(21/ε_sec). A block can yield key only if
// the bits disclosed by reconciliation and verification stay below it.
func (b FiniteBound) Margin() float64 {
	return b.SX0 + b.SX1*(1-H(b.PhiX)) - SecurityCost(b.EpsSec)
}
