package bb84

import (
	"errors"
	"math"
	"testing"
)

func seeded(b byte) *[32]byte { s := [32]byte{b}; return &s }

// within checks |got − want| ≤ k·σ for a binomial proportion over n trials.
func within(t *testing.T, what string, got, want float64, n int64, k float64) {
	t.Helper()
	sigma := math.Sqrt(want * (1 - want) / float64(n))
	if math.Abs(got-want) > k*sigma+1e-12 {
		t.Errorf("%s = %.6g, want %.6g ± %.2g (%g σ over %d)", what, got, want, k*sigma, k, n)
	}
}

type tally struct {
	det, sifted, errs [3]int64
	eveKnows          int64
}

func count(b *Block) tally {
	var c tally
	a, bob := &b.Alice, &b.Bob
	for i := 0; i < a.N; i++ {
		k := a.Class[i]
		c.det[k]++
		if Bit(a.Basis, i) != Bit(bob.Basis, i) {
			continue
		}
		c.sifted[k]++
		if Bit(a.Value, i) != Bit(bob.Value, i) {
			c.errs[k]++
		}
		c.eveKnows += int64(Bit(a.EveKnows, i))
	}
	return c
}

// TestStatisticsMatchTheory: gains per class, sifting rate and error rate per
// class agree with the model within 5σ, with and without an eavesdropper.
func TestStatisticsMatchTheory(t *testing.T) {
	for _, tc := range []struct {
		name string
		km   float64
		eve  EveMode
		frac float64
	}{
		{"honest-0km", 0, EveNone, 0},
		{"honest-50km", 50, EveNone, 0},
		{"ir-0.5", 25, EveInterceptResend, 0.5},
		{"ir-1", 25, EveInterceptResend, 1},
		{"pns-1", 50, EvePNS, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams(tc.km)
			p.Eve, p.EveFraction = tc.eve, tc.frac
			const pulses = 2e8
			b, err := Simulate(p, pulses, NewRand(seeded(1)))
			if err != nil {
				t.Fatal(err)
			}
			gain, errRate, err := p.Expected()
			if err != nil {
				t.Fatal(err)
			}
			c := count(b)
			var sifted, det int64
			for k := 0; k < 3; k++ {
				n := b.PulsesPerClass[k]
				within(t, "pulse share", float64(n)/pulses, p.Probabilities()[k], pulses, 5)
				within(t, "gain", float64(c.det[k])/float64(n), gain[k], n, 5)
				if c.sifted[k] > 1000 {
					within(t, "error rate", float64(c.errs[k])/float64(c.sifted[k]), errRate[k], c.sifted[k], 5)
				}
				sifted += c.sifted[k]
				det += c.det[k]
			}
			within(t, "sifting rate", float64(sifted)/float64(det), p.PX*p.PX+(1-p.PX)*(1-p.PX), det, 5)
			if tc.eve == EveInterceptResend {
				// QBER rises by about p/4 on the signal class.
				base := p.Link.ErrorRate(p.Mu, p.Link.Eta(p.DistanceKm))
				want := base + tc.frac*(0.25-base/2)
				within(t, "signal QBER under intercept-resend", float64(c.errs[0])/float64(c.sifted[0]), want, c.sifted[0], 5)
			}
			if tc.eve == EveNone && c.eveKnows != 0 {
				t.Errorf("Eve knows %d bits without attacking", c.eveKnows)
			}
			if tc.eve != EveNone && c.eveKnows == 0 {
				t.Error("Eve learned nothing")
			}
		})
	}
}

// TestPNSKeepsSignalGain: the PNS attacker keeps Bob's signal gain at its
// honest value while the decoy gain moves.
func TestPNSKeepsSignalGain(t *testing.T) {
	p := DefaultParams(50)
	honest, _, _ := p.Expected()
	p.Eve, p.EveFraction = EvePNS, 1
	pns, _, _ := p.Expected()
	if math.Abs(pns[0]-honest[0])/honest[0] > 1e-6 {
		t.Errorf("signal gain %g under PNS, honest %g", pns[0], honest[0])
	}
	if math.Abs(pns[1]-honest[1])/honest[1] < 0.1 {
		t.Errorf("decoy gain %g under PNS barely differs from honest %g", pns[1], honest[1])
	}
}

func TestSlotsIncreasing(t *testing.T) {
	b, err := Simulate(DefaultParams(10), 1e7, NewRand(seeded(2)))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(b.Bob.Slots); i++ {
		if b.Bob.Slots[i] <= b.Bob.Slots[i-1] || b.Bob.Slots[i] != b.Alice.Slots[i] {
			t.Fatalf("slot %d: %d after %d", i, b.Bob.Slots[i], b.Bob.Slots[i-1])
		}
	}
	if n := len(b.Bob.Slots); n == 0 || b.Bob.Slots[n-1] >= 1e7 {
		t.Fatal("slots out of range")
	}
}

func TestReproducible(t *testing.T) {
	a, _ := Simulate(DefaultParams(10), 1e6, NewRand(seeded(3)))
	b, _ := Simulate(DefaultParams(10), 1e6, NewRand(seeded(3)))
	if a.Alice.N != b.Alice.N || a.Bob.Value[0] != b.Bob.Value[0] {
		t.Fatal("same seed, different blocks")
	}
}

func TestValidate(t *testing.T) {
	bad := []func(*Params){
		func(p *Params) { p.Nu = p.Mu },
		func(p *Params) { p.PMu = 0.5 },
		func(p *Params) { p.EveFraction = 2 },
		func(p *Params) { p.DistanceKm = -1 },
		func(p *Params) { p.Link.EtaBob = 0 },
		func(p *Params) { p.Eve = 7 },
	}
	for i, f := range bad {
		p := DefaultParams(10)
		f(&p)
		if _, err := Simulate(p, 1000, nil); !errors.Is(err, ErrParams) {
			t.Errorf("case %d: err = %v", i, err)
		}
	}
	if _, err := Simulate(DefaultParams(10), 0, nil); !errors.Is(err, ErrParams) {
		t.Error("zero pulses accepted")
	}
	if _, err := ParseEveMode("bogus"); err == nil {
		t.Error("bogus mode parsed")
	}
}

func BenchmarkSimulate(b *testing.B) {
	for _, km := range []float64{0, 50} {
		b.Run("km="+string(rune('0'+int(km)/10))+"0", func(b *testing.B) {
			p := DefaultParams(km)
			rng := NewRand(seeded(4))
			const pulses = 1e8
			for i := 0; i < b.N; i++ {
				if _, err := Simulate(p, pulses, rng); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(pulses*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpulses/s")
		})
	}
}
