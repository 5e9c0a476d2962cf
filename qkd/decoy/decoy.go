// Package decoy holds the key-length theory of decoy-state BB84 with weak
// coherent pulses.
//
// Delivered keys are sized by one function only: Finite and
// FiniteBound.KeyLength, the finite-key bounds of Lim, Curty, Walenta, Xu and
// Zbinden, Phys. Rev. A 89, 022307 (2014) (see finite.go): Hoeffding
// deviations on total counts, the random-sampling term γ for the phase error,
// ε_sec split into the paper's 21 terms, ε_cor from error verification.
//
// The asymptotic formulas below — the GLLP rate with the infinite-decoy limit
// of Lo, Ma and Chen (2005), and the vacuum + weak decoy bounds of Ma, Qi,
// Zhao and Lo (2005) on observed frequencies — are reference curves: they say
// what infinitely long blocks would give, and they validate the simulator.
// Nothing may size a key with them.
//
// Model (the one the reference figures use):
//
//	η        = η_Bob · 10^(−α·L/10)
//	Q_μ      = Y0 + 1 − e^(−ημ)               (gain of intensity μ)
//	E_μ·Q_μ  = Y0/2 + e_d·(1 − e^(−ημ))       (erroneous gain)
//	R        ≥ q·{ −Q_μ·f·h(E_μ) + Q_1·[1 − h(e_1)] },  q = 1/2
package decoy

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalid reports observations or parameters a bound cannot be computed from.
var ErrInvalid = errors.New("decoy: invalid parameters")

// H is the binary entropy function in bits; H(0) = H(1) = 0, and it is 1 for
// x ≥ 0.5 (the conservative value for error rates).
func H(x float64) float64 {
	if x <= 0 {
		return 0
	}
	if x >= 0.5 {
		return 1
	}
	return -x*math.Log2(x) - (1-x)*math.Log2(1-x)
}

// Link holds the physical parameters of a fibre link.
type Link struct {
	AlphaDBPerKm float64 // fibre attenuation (dB/km)
	EtaBob       float64 // Bob's detection efficiency including his optics
	Ed           float64 // misalignment error probability e_d
	Y0           float64 // background (dark count) yield per pulse, both detectors
}

// GYS returns the GYS experiment's parameters (Gobby, Yuan and Shields 2004), the
// usual reference for decoy-state rate curves.
func GYS() Link {
	return Link{AlphaDBPerKm: 0.21, EtaBob: 0.045, Ed: 0.033, Y0: 1.7e-6}
}

// Eta is the overall transmittance η at distance km.
func (l Link) Eta(km float64) float64 {
	return l.EtaBob * math.Pow(10, -l.AlphaDBPerKm*km/10)
}

// Gain is Q for mean photon number mu at transmittance eta.
func (l Link) Gain(mu, eta float64) float64 { return l.Y0 + 1 - math.Exp(-eta*mu) }

// ErrorRate is E for mean photon number mu at transmittance eta.
func (l Link) ErrorRate(mu, eta float64) float64 {
	q := l.Gain(mu, eta)
	if q == 0 {
		return 0
	}
	return (l.Y0/2 + l.Ed*(1-math.Exp(-eta*mu))) / q
}

// GLLP returns the asymptotic key rate per signal pulse with infinitely many
// decoy intensities (Y1 and e1 known exactly), sifting factor q = 1/2,
// reconciliation efficiency f and signal intensity mu. It is never negative.
func (l Link) GLLP(km, mu, f float64) float64 {
	eta := l.Eta(km)
	qmu := l.Gain(mu, eta)
	emu := l.ErrorRate(mu, eta)
	y1 := l.Y0 + eta
	e1 := (l.Y0/2 + l.Ed*eta) / y1
	q1 := y1 * mu * math.Exp(-mu)
	r := 0.5 * (-qmu*f*H(emu) + q1*(1-H(e1)))
	return math.Max(r, 0)
}

// Observation is what the parameter estimation measured, or expects, for the
// signal (μ), weak decoy (ν) and vacuum intensities: gains Q (detections per
// pulse) and error rates E (errors per sifted detection).
type Observation struct {
	Mu, Nu   float64
	Qmu, Emu float64
	Qnu, Enu float64
	Q0, E0   float64
}

// Expected returns the observation the model predicts at distance km.
func (l Link) Expected(km, mu, nu float64) Observation {
	eta := l.Eta(km)
	e0 := 0.5
	return Observation{Mu: mu, Nu: nu,
		Qmu: l.Gain(mu, eta), Emu: l.ErrorRate(mu, eta),
		Qnu: l.Gain(nu, eta), Enu: l.ErrorRate(nu, eta),
		Q0: l.Y0, E0: e0}
}

// Estimate is the outcome of the decoy analysis.
type Estimate struct {
	Y1L float64 // lower bound on the single-photon yield
	E1U float64 // upper bound on the single-photon error rate (≤ 0.5)
	Q1L float64 // lower bound on the single-photon gain of the signal, μ e^(−μ) Y1L
	// SingleFraction is Q1L/Qμ: the lower bound on the fraction of signal
	// detections caused by single-photon pulses.
	SingleFraction float64
}

// Bounds applies the vacuum + weak decoy bounds of Ma et al. (2005), eqs. (34)
// and (37): for 0 < ν < μ, ν + μ... with the vacuum gain Y0 = Q0:
//
//	Y1 ≥ μ/(μν − ν²) · (Q_ν e^ν − Q_μ e^μ ν²/μ² − (μ² − ν²)/μ² · Y0)
//	e1 ≤ (E_ν Q_ν e^ν − E0·Y0) / (Y1 ν)
func Bounds(o Observation) (Estimate, error) {
	if !(o.Mu > 0 && o.Nu > 0 && o.Nu < o.Mu) || o.Qmu <= 0 || o.Qnu < 0 || o.Q0 < 0 {
		return Estimate{}, fmt.Errorf("%w: need 0 < ν < μ and positive gains (μ=%g ν=%g Qμ=%g)", ErrInvalid, o.Mu, o.Nu, o.Qmu)
	}
	mu, nu := o.Mu, o.Nu
	y0 := o.Q0
	y1 := mu / (mu*nu - nu*nu) * (o.Qnu*math.Exp(nu) - o.Qmu*math.Exp(mu)*nu*nu/(mu*mu) - (mu*mu-nu*nu)/(mu*mu)*y0)
	if y1 <= 0 {
		return Estimate{Y1L: 0, E1U: 0.5}, nil
	}
	e1 := (o.Enu*o.Qnu*math.Exp(nu) - o.E0*y0) / (y1 * nu)
	e1 = math.Min(math.Max(e1, 0), 0.5)
	q1 := mu * math.Exp(-mu) * y1
	return Estimate{Y1L: y1, E1U: e1, Q1L: q1, SingleFraction: math.Min(q1/o.Qmu, 1)}, nil
}

// Rate is the asymptotic secret key rate per signal pulse from an observation,
// with reconciliation efficiency f and sifting factor 1/2: q·{−Qμ f h(Eμ) +
// Q1L·[1 − h(e1U)]}, clamped at zero.
func Rate(o Observation, f float64) (float64, Estimate, error) {
	est, err := Bounds(o)
	if err != nil {
		return 0, est, err
	}
	r := 0.5 * (-o.Qmu*f*H(o.Emu) + est.Q1L*(1-H(est.E1U)))
	return math.Max(r, 0), est, nil
}

// Counts are the raw tallies of one block, per intensity class, from which the
// finite-size observation is built.
type Counts struct {
	Mu, Nu     float64
	Pulses     [3]int64 // pulses sent per class: signal, decoy, vacuum
	Detections [3]int64 // detections per class (any basis)
	Sifted     [3]int64 // sifted detections per class
	Errors     [3]int64 // errors among the sifted detections whose bits were compared
	Compared   [3]int64 // sifted detections whose bits were compared
}

// Class indices in Counts.
const (
	Signal = 0
	Decoy  = 1
	Vacuum = 2
)

// Observe turns counts into the asymptotic Observation: the observed
// frequencies as they are (for reference curves only; a key is sized by
// Finite).
func Observe(c Counts) (Observation, error) {
	for k := 0; k < 3; k++ {
		if c.Pulses[k] <= 0 {
			return Observation{}, fmt.Errorf("%w: no pulses in intensity class %d", ErrInvalid, k)
		}
		if c.Detections[k] < 0 || c.Detections[k] > c.Pulses[k] || c.Errors[k] < 0 || c.Errors[k] > c.Compared[k] {
			return Observation{}, fmt.Errorf("%w: inconsistent counts in class %d", ErrInvalid, k)
		}
	}
	rate := func(e, n int64, none float64) float64 {
		if n == 0 {
			return none
		}
		return float64(e) / float64(n)
	}
	o := Observation{Mu: c.Mu, Nu: c.Nu}
	o.Qmu = float64(c.Detections[Signal]) / float64(c.Pulses[Signal])
	o.Qnu = float64(c.Detections[Decoy]) / float64(c.Pulses[Decoy])
	o.Q0 = float64(c.Detections[Vacuum]) / float64(c.Pulses[Vacuum])
	o.Emu = rate(c.Errors[Signal], c.Compared[Signal], 0.5)
	o.Enu = rate(c.Errors[Decoy], c.Compared[Decoy], 0.5)
	o.E0 = rate(c.Errors[Vacuum], c.Compared[Vacuum], 0)
	return o, nil
}
