// Package bb84 simulates the quantum part of a decoy-state BB84 link with weak
// coherent pulses: Alice's source (random intensity class, basis and bit per
// pulse), the fibre, Bob's detectors with a passive 50/50 basis choice, and an
// optional eavesdropper.
//
// # Event-level simulation
//
// A link at 100 km detects about one pulse in 10^5, so looping over pulses (or,
// worse, photons) wastes almost all the work. The simulator instead draws the
// detection events directly: in a sequence of independent pulses, each detected
// with probability P_det = Σ_k p_k·Q_k (p_k the probability of intensity class k,
// Q_k its gain), the gaps between detections are geometric, so the slot of the
// next detection is drawn with one logarithm. Each detected slot then gets its
// class with probability p_k·Q_k / P_det, Alice's basis and bit, Bob's basis, and
// an error with the class's error probability E_k when the bases agree (a random
// outcome otherwise). This reproduces exactly the joint distribution of the
// per-pulse model (binomial detection counts per class, binomial errors) at a
// cost proportional to the detections, so a block of 10^9 pulses at 50 km costs
// a few milliseconds.
//
// # Eavesdroppers
//
// InterceptResend: on a fraction p of the pulses Eve measures in a random basis
// and re-prepares what she saw at the same intensity; detection statistics are
// unchanged, a sifted bit is wrong with probability 1/2 when Eve's basis was
// wrong, so the QBER rises by about p/4. Eve learns the bit when her basis was
// right. Vacuum pulses carry nothing and are left alone.
//
// PNS (photon-number splitting): on a fraction p of the pulses Eve replaces the
// fibre by a lossless one, keeps one photon of every multi-photon pulse
// (learning its bit once bases are announced) and forwards the rest, and blocks
// single photons with the probability that keeps Bob's signal gain at its honest
// value. The errors do not rise, but the decoy gains no longer fit a single
// channel, and the decoy bounds on Y1 collapse: the attack is exposed by the
// decoy analysis (package decoy), not by the QBER.
//
// Randomness comes from a ChaCha8 generator (math/rand/v2) seeded from
// crypto/rand unless a seed is given for reproducible runs; ChaCha8 is a
// cryptographically secure generator standing in for Alice's QRNG.
package bb84

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/qshield/qshield/qkd/decoy"
)

// ErrParams reports invalid simulation parameters.
var ErrParams = errors.New("bb84: invalid parameters")

// EveMode selects the eavesdropping attack.
type EveMode int

const (
	EveNone EveMode = iota
	EveInterceptResend
	EvePNS
)

// String names the mode.
func (m EveMode) String() string {
	switch m {
	case EveNone:
		return "none"
	case EveInterceptResend:
		return "intercept-resend"
	case EvePNS:
		return "pns"
	}
	return fmt.Sprintf("EveMode(%d)", int(m))
}

// ParseEveMode parses "none", "intercept-resend" (or "ir") and "pns".
func ParseEveMode(s string) (EveMode, error) {
	switch s {
	case "", "none":
		return EveNone, nil
	case "intercept-resend", "ir":
		return EveInterceptResend, nil
	case "pns":
		return EvePNS, nil
	}
	return 0, fmt.Errorf("%w: unknown eavesdropper mode %q", ErrParams, s)
}

// Params describe the link. Intensities are mean photon numbers per pulse.
type Params struct {
	Link       decoy.Link
	DistanceKm float64
	// Intensity and probability of the signal, weak decoy and vacuum classes.
	Mu, Nu, Vacuum    float64
	PMu, PNu, PVacuum float64
	// PX is the probability with which Alice and Bob each choose the key
	// basis (basis bit 0, "X" in Lim et al. 2014); the test basis (bit 1,
	// "Z") gets 1 − PX. Bob's choice is passive (a biased beam splitter).
	PX float64
	// Eve attacks a fraction EveFraction of the pulses in mode Eve.
	Eve         EveMode
	EveFraction float64
}

// DefaultParams returns the GYS link at distance km with source settings
// chosen for finite blocks under the protocol of Lim et al. (2014): μ = 0.4,
// ν = 0.2, vacuum 0, sent with probabilities 0.3 / 0.5 / 0.2, key basis
// chosen with probability 0.8 (a grid search maximising the expected
// finite key of a 10^9-pulse block at 25 km, ε_sec = 10^-10, f = 1.10).
func DefaultParams(km float64) Params {
	return Params{Link: decoy.GYS(), DistanceKm: km, Mu: 0.4, Nu: 0.2, Vacuum: 0,
		PMu: 0.3, PNu: 0.5, PVacuum: 0.2, PX: 0.8}
}

// Validate checks the parameters.
func (p Params) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrParams}, a...)...)
	}
	l := p.Link
	switch {
	case !(l.AlphaDBPerKm >= 0 && l.AlphaDBPerKm < 10):
		return bad("attenuation %g dB/km", l.AlphaDBPerKm)
	case !(l.EtaBob > 0 && l.EtaBob <= 1):
		return bad("detector efficiency %g", l.EtaBob)
	case !(l.Ed >= 0 && l.Ed <= 0.5):
		return bad("misalignment error %g", l.Ed)
	case !(l.Y0 >= 0 && l.Y0 < 0.1):
		return bad("dark count yield %g", l.Y0)
	case p.Eve == EveNone && p.EveFraction != 0:
		return bad("eavesdropper fraction %g with no eavesdropper mode (set Eve)", p.EveFraction)
	case !(p.DistanceKm >= 0 && p.DistanceKm <= 1000):
		return bad("distance %g km", p.DistanceKm)
	case !(p.Mu > 0 && p.Mu < 10 && p.Nu > 0 && p.Nu < p.Mu && p.Vacuum >= 0 && p.Vacuum < p.Nu):
		return bad("intensities must satisfy 0 ≤ vacuum < ν < μ (got %g, %g, %g)", p.Vacuum, p.Nu, p.Mu)
	case !(p.PMu > 0 && p.PNu > 0 && p.PVacuum > 0) || math.Abs(p.PMu+p.PNu+p.PVacuum-1) > 1e-9:
		return bad("class probabilities must be positive and sum to 1 (got %g, %g, %g)", p.PMu, p.PNu, p.PVacuum)
	case !(p.EveFraction >= 0 && p.EveFraction <= 1):
		return bad("eavesdropping fraction %g", p.EveFraction)
	case !(p.PX > 0 && p.PX < 1):
		return bad("key-basis probability %g (want 0 < PX < 1)", p.PX)
	case p.Eve < EveNone || p.Eve > EvePNS:
		return bad("eavesdropper mode %d", p.Eve)
	}
	return nil
}

// Intensities returns μ, ν and the vacuum intensity indexed by class.
func (p Params) Intensities() [3]float64 { return [3]float64{p.Mu, p.Nu, p.Vacuum} }

// Probabilities returns the class probabilities indexed by class.
func (p Params) Probabilities() [3]float64 { return [3]float64{p.PMu, p.PNu, p.PVacuum} }

// Record is one side's view of the detection events of a block, in slot order.
// Bits are packed 64 per word, least significant bit first.
type Record struct {
	N     int      // number of detection events
	Slots []uint64 // pulse index of each event, strictly increasing
	Basis []uint64 // basis per event (0 = key basis X, 1 = test basis Z)
	Value []uint64 // bit value per event
}

// AliceRecord is Alice's view: her basis, bit and intensity class for every
// detected slot (she knows them for every pulse; the others are never needed).
type AliceRecord struct {
	Record
	Class []uint8 // intensity class per event (decoy.Signal, decoy.Decoy, decoy.Vacuum)
	// EveKnows marks events whose bit Eve learned (for analysis and tests only;
	// never sent on any channel).
	EveKnows []uint64
}

// Block is the outcome of one simulated block.
type Block struct {
	Pulses int64
	// PulsesPerClass are the numbers of pulses Alice sent in each class.
	PulsesPerClass [3]int64
	Alice          AliceRecord
	Bob            Record
}

// Bit returns bit i of a packed vector.
func Bit(v []uint64, i int) uint64 { return v[i>>6] >> (uint(i) & 63) & 1 }

// SetBit sets bit i of a packed vector to b (0 or 1).
func SetBit(v []uint64, i int, b uint64) {
	w, s := i>>6, uint(i)&63
	v[w] = v[w]&^(1<<s) | (b&1)<<s
}

// Words returns the number of 64-bit words holding n bits.
func Words(n int) int { return (n + 63) >> 6 }

// classModel is the per-class detection model: gain and error probability of an
// honest pulse, and of a pulse under attack.
type classModel struct {
	q, e         float64 // honest gain and error probability
	qEve, eEve   float64 // gain and error probability of attacked pulses
	eveKnowsFrac float64 // probability Eve learns the bit of an attacked, detected pulse
	pEve         float64 // P(attacked | detected in this class)
	weight       float64 // p_k · Q_k (overall)
}

func (p Params) models() ([3]classModel, error) {
	l := p.Link
	eta := l.Eta(p.DistanceKm)
	var m [3]classModel
	mus, ps := p.Intensities(), p.Probabilities()
	// PNS: choose the single-photon blocking probability b (and multi-photon
	// forwarding factor c) that keep the signal gain at its honest value.
	var pnsB, pnsC float64
	if p.Eve == EvePNS {
		pnsB, pnsC = pnsControl(l, p.Mu, l.Gain(p.Mu, eta))
	}
	for k := 0; k < 3; k++ {
		mu := mus[k]
		c := &m[k]
		c.q = l.Gain(mu, eta)
		c.e = l.ErrorRate(mu, eta)
		c.qEve, c.eEve = c.q, c.e
		switch p.Eve {
		case EveInterceptResend:
			if mu > 0 {
				// Wrong basis (1/2): Bob's sifted bit is random.
				c.eEve = 0.5*c.e + 0.25
				c.eveKnowsFrac = 0.5
			}
		case EvePNS:
			q1, qm, know := pnsGain(l, mu, pnsB, pnsC)
			c.qEve = l.Y0 + q1 + qm
			c.eEve = (l.Y0/2 + l.Ed*(q1+qm)) / c.qEve
			if c.qEve > 0 {
				c.eveKnowsFrac = know / c.qEve
			}
		}
		f := p.EveFraction
		if p.Eve == EveNone {
			f = 0
		}
		qTot := (1-f)*c.q + f*c.qEve
		if qTot > 0 {
			c.pEve = f * c.qEve / qTot
		}
		c.weight = ps[k] * qTot
	}
	return m, nil
}

// pnsGain returns, for intensity mu under PNS with single-photon blocking b and
// multi-photon forwarding c, the gain from single photons, the gain from
// multi-photon pulses, and the part of the gain whose bit Eve knows.
func pnsGain(l decoy.Link, mu, b, c float64) (q1, qm, know float64) {
	if mu == 0 {
		return 0, 0, 0
	}
	pn := math.Exp(-mu) // P(0)
	for n := 1; n < 60; n++ {
		pn *= mu / float64(n)
		if n == 1 {
			q1 = pn * (1 - b) * l.EtaBob
			continue
		}
		det := c * (1 - math.Pow(1-l.EtaBob, float64(n-1)))
		qm += pn * det
	}
	return q1, qm, qm
}

func pnsControl(l decoy.Link, mu, target float64) (b, c float64) {
	target -= l.Y0
	_, qm, _ := pnsGain(l, mu, 1, 1)
	if qm >= target {
		return 1, math.Max(target, 0) / qm
	}
	q1, _, _ := pnsGain(l, mu, 0, 1)
	b = 1 - (target-qm)/q1
	return math.Min(math.Max(b, 0), 1), 1
}

// Expected returns the expected gain and error probability of each class under
// the parameters (including the eavesdropper), for tests and planning.
func (p Params) Expected() (gain, errRate [3]float64, err error) {
	if err := p.Validate(); err != nil {
		return gain, errRate, err
	}
	m, _ := p.models()
	ps := p.Probabilities()
	for k := range m {
		gain[k] = m[k].weight / ps[k]
		f := m[k].pEve
		errRate[k] = (1-f)*m[k].e + f*m[k].eEve
	}
	return gain, errRate, nil
}

// NewRand returns a ChaCha8 generator seeded from seed, or from crypto/rand when
// seed is nil.
func NewRand(seed *[32]byte) *rand.Rand {
	var s [32]byte
	if seed != nil {
		s = *seed
	} else {
		_, _ = crand.Read(s[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	}
	return rand.New(rand.NewChaCha8(s))
}

// Simulate runs one block of pulses through the link and returns both sides'
// records. It costs time proportional to the detections, not to the pulses.
func Simulate(p Params, pulses int64, rng *rand.Rand) (*Block, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if pulses <= 0 || pulses > 1<<50 {
		return nil, fmt.Errorf("%w: %d pulses", ErrParams, pulses)
	}
	if rng == nil {
		rng = NewRand(nil)
	}
	m, _ := p.models()
	var total float64
	for k := range m {
		total += m[k].weight
	}
	blk := &Block{Pulses: pulses}
	// Pulses per class: multinomial; the detected ones are drawn below, the
	// totals only matter for the gains, so draw them with a normal
	// approximation of the binomial (exact enough at ≥ 10^4 pulses), clamped.
	ps := p.Probabilities()
	rest := pulses
	remP := 1.0
	for k := 0; k < 2; k++ {
		blk.PulsesPerClass[k] = binomial(rng, rest, ps[k]/remP)
		rest -= blk.PulsesPerClass[k]
		remP -= ps[k]
	}
	blk.PulsesPerClass[2] = rest

	// Expected detections, to size the buffers.
	expect := int(float64(pulses)*total*1.01 + 6*math.Sqrt(float64(pulses)*total) + 16)
	a := &blk.Alice
	b := &blk.Bob
	a.Slots = make([]uint64, 0, expect)
	a.Class = make([]uint8, 0, expect)
	b.Slots = make([]uint64, 0, expect)

	// Conditional class thresholds.
	c0 := m[0].weight / total
	c1 := c0 + m[1].weight/total
	lg := math.Log1p(-total) // log(1 − P_det) < 0
	var aBasis, aBit, eve, bBasis, bBit []uint64
	slot := int64(-1)
	n := 0
	for {
		// Geometric gap: number of undetected pulses before the next detection.
		u := 1 - rng.Float64() // (0, 1]
		gap := math.Floor(math.Log(u) / lg)
		if gap >= float64(pulses) {
			break
		}
		slot += int64(gap) + 1
		if slot >= pulses {
			break
		}
		uc := rng.Float64()
		k := 2
		if uc < c0 {
			k = 0
		} else if uc < c1 {
			k = 1
		}
		r := rng.Uint64()
		av := r >> 1 & 1
		var ab, bb uint64
		if rng.Float64() >= p.PX {
			ab = 1
		}
		if rng.Float64() >= p.PX {
			bb = 1
		}
		cm := &m[k]
		errP := cm.e
		know := uint64(0)
		if cm.pEve > 0 && rng.Float64() < cm.pEve {
			errP = cm.eEve
			if rng.Float64() < cm.eveKnowsFrac {
				know = 1
			}
		}
		var bv uint64
		if ab == bb {
			bv = av
			if rng.Float64() < errP {
				bv ^= 1
			}
		} else {
			bv = r >> 3 & 1
		}
		if n&63 == 0 {
			aBasis = append(aBasis, 0)
			aBit = append(aBit, 0)
			eve = append(eve, 0)
			bBasis = append(bBasis, 0)
			bBit = append(bBit, 0)
		}
		w, s := n>>6, uint(n)&63
		aBasis[w] |= ab << s
		aBit[w] |= av << s
		eve[w] |= know << s
		bBasis[w] |= bb << s
		bBit[w] |= bv << s
		a.Slots = append(a.Slots, uint64(slot))
		a.Class = append(a.Class, uint8(k))
		b.Slots = append(b.Slots, uint64(slot))
		n++
	}
	a.N, b.N = n, n
	a.Basis, a.Value, a.EveKnows = aBasis, aBit, eve
	b.Basis, b.Value = bBasis, bBit
	return blk, nil
}

// binomial draws from Binomial(n, p): exact by Bernoulli trials for small n,
// by the normal approximation (rounded and clamped) for large n·p·(1−p).
func binomial(rng *rand.Rand, n int64, p float64) int64 {
	if p <= 0 || n <= 0 {
		return 0
	}
	if p >= 1 {
		return n
	}
	v := float64(n) * p * (1 - p)
	if n < 64 || v < 25 {
		if n > 1<<20 {
			// Poisson regime: count geometric gaps.
			var c int64
			lg := math.Log1p(-p)
			var pos float64 = -1
			for {
				pos += math.Floor(math.Log(1-rng.Float64())/lg) + 1
				if pos >= float64(n) {
					return c
				}
				c++
			}
		}
		var c int64
		for i := int64(0); i < n; i++ {
			if rng.Float64() < p {
				c++
			}
		}
		return c
	}
	x := math.Round(float64(n)*p + math.Sqrt(v)*rng.NormFloat64())
	return int64(math.Min(math.Max(x, 0), float64(n)))
}

// Popcount returns the number of set bits among the first n bits of v.
func Popcount(v []uint64, n int) int {
	c := 0
	full := n >> 6
	for _, w := range v[:full] {
		c += bits.OnesCount64(w)
	}
	if r := uint(n) & 63; r != 0 {
		c += bits.OnesCount64(v[full] & (1<<r - 1))
	}
	return c
}
