package cascade

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// frame returns Alice's random n-bit key and Bob's copy with each bit flipped
// with probability qber, plus the number of errors.
func frame(rng *rand.Rand, n int, qber float64) (a, b []uint64, errs int) {
	w := (n + 63) / 64
	a = make([]uint64, w)
	b = make([]uint64, w)
	for i := range a {
		a[i] = rng.Uint64()
	}
	if r := uint(n) & 63; r != 0 {
		a[w-1] &= 1<<r - 1
	}
	copy(b, a)
	for i := 0; i < n; i++ {
		if rng.Float64() < qber {
			b[i>>6] ^= 1 << (uint(i) & 63)
			errs++
		}
	}
	return a, b, errs
}

func h(x float64) float64 { return -x*math.Log2(x) - (1-x)*math.Log2(1-x) }

func equal(a, b []uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCorrectsAll checks that Cascade corrects every error on random frames
// across QBER 0.5–11% (with a residual-error rate small enough that none
// appears in this many frames) and that its efficiency is as designed.
func TestCorrectsAll(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	frames := 40
	if testing.Short() {
		frames = 10
	}
	for _, q := range []float64{0.005, 0.01, 0.02, 0.05, 0.08, 0.10, 0.11} {
		var disclosed, bitsH float64
		residual := 0
		for f := 0; f < frames; f++ {
			n := 10000
			a, b, errs := frame(rng, n, q)
			var seed [32]byte
			seed[0] = byte(f)
			plan, err := NewPlan(n, q, 0, seed)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Local(context.Background(), plan, a, b)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(a, b) {
				residual++
			}
			if res.Corrected < errs-4 { // parity-hidden error pairs may survive, but rarely
				t.Errorf("q=%g: corrected %d of %d errors", q, res.Corrected, errs)
			}
			disclosed += float64(res.Disclosed)
			bitsH += float64(n) * h(q)
		}
		fEff := disclosed / bitsH
		t.Logf("QBER %.3f: f = %.4f, residual frames %d/%d", q, fEff, residual, frames)
		if residual > 0 {
			t.Errorf("QBER %g: %d of %d frames left with errors", q, residual, frames)
		}
		if fEff > 1.2 || fEff < 1.0 {
			t.Errorf("QBER %g: efficiency %.3f outside [1.0, 1.2]", q, fEff)
		}
	}
}

func TestAliceRejectsBadRequests(t *testing.T) {
	plan, err := NewPlan(1000, 0.05, 0, [32]byte{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAlice(plan, make([]uint64, 16))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Range{{Pass: 14, Lo: 0, Hi: 1}, {Pass: 0, Lo: 5, Hi: 5}, {Pass: 0, Lo: 0, Hi: 1001}, {Pass: 0, Lo: 9, Hi: 3}} {
		if _, err := a.Answer([]Range{{Pass: 0, Lo: 0, Hi: 10}, r}); !errors.Is(err, ErrRequest) {
			t.Errorf("range %+v: err = %v, want ErrRequest", r, err)
		}
	}
	if a.Disclosed != 0 {
		t.Errorf("rejected requests disclosed %d bits", a.Disclosed)
	}
}

func TestShortReplyIsError(t *testing.T) {
	plan, _ := NewPlan(1000, 0.05, 0, [32]byte{})
	_, err := Reconcile(context.Background(), plan, make([]uint64, 16), func(context.Context, []Range) ([]uint64, error) {
		return nil, nil
	})
	if !errors.Is(err, ErrReply) {
		t.Fatalf("err = %v, want ErrReply", err)
	}
}

func TestRangeParity(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	v := make([]uint64, 8)
	for i := range v {
		v[i] = rng.Uint64()
	}
	for trial := 0; trial < 2000; trial++ {
		lo := rng.IntN(512)
		hi := lo + rng.IntN(512-lo+1)
		var want uint64
		for i := lo; i < hi; i++ {
			want ^= v[i>>6] >> (uint(i) & 63) & 1
		}
		if got := rangeParity(v, lo, hi); got != want {
			t.Fatalf("parity [%d,%d) = %d, want %d", lo, hi, got, want)
		}
	}
}

func BenchmarkCascade(b *testing.B) {
	for _, q := range []float64{0.01, 0.02, 0.05, 0.10} {
		b.Run(pct(q), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(5, 6))
			n := 10000
			plan, _ := NewPlan(n, q, 0, [32]byte{1})
			const nf = 32
			as := make([][]uint64, nf)
			bs := make([][]uint64, nf)
			for i := range as {
				as[i], bs[i], _ = frame(rng, n, q)
			}
			work := make([]uint64, len(bs[0]))
			alice, _ := NewAlice(plan, as[0])
			bob := NewBob(plan)
			ask := func(_ context.Context, req []Range) ([]uint64, error) { return alice.Answer(req) }
			var disclosed int64
			var rts int
			b.SetBytes(int64(n / 8))
			b.ResetTimer()
			c0 := cpuTime()
			for i := 0; i < b.N; i++ {
				copy(work, bs[i%nf])
				_ = alice.Reset(as[i%nf])
				res, err := bob.Reconcile(context.Background(), work, ask)
				if err != nil {
					b.Fatal(err)
				}
				disclosed += res.Disclosed
				rts += res.RoundTrips
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mbit/s")
			if c := cpuTime() - c0; c > 0 {
				b.ReportMetric(float64(n)*float64(b.N)/c.Seconds()/1e6, "Mbit/cpu-s")
			}
			b.ReportMetric(float64(disclosed)/float64(b.N)/(float64(n)*h(q)), "f")
			b.ReportMetric(float64(rts)/float64(b.N), "roundtrips")
		})
	}
}

func pct(q float64) string {
	return "qber=" + string(rune('0'+int(q*100+0.5)/10)) + string(rune('0'+int(q*100+0.5)%10)) + "%"
}

// TestCorruptedParitiesTerminate: a wrong parity from Alice (tampering or a
// bug) must not make Bob loop; he stops, flags the frame, and it fails
// verification later.
func TestCorruptedParitiesTerminate(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	flagged := 0
	for trial := 0; trial < 40; trial++ {
		a, b, _ := frame(rng, 4096, 0.05)
		plan, _ := NewPlanOptions(4096, 0.05, [32]byte{byte(trial)}, Options{LowLatency: trial >= 20, Overlap: trial % 3})
		alice, _ := NewAlice(plan, a)
		calls := 0
		res, err := Reconcile(context.Background(), plan, b, func(_ context.Context, req []Range) ([]uint64, error) {
			rep, err := alice.Answer(req)
			calls++
			if calls%7 == 0 {
				rep[0] ^= 1
			}
			return rep, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Inconsistent {
			flagged++
		}
		if res.RoundTrips > 5000 {
			t.Fatalf("%d round trips: runaway search", res.RoundTrips)
		}
	}
	t.Logf("%d of 40 corrupted frames flagged inconsistent", flagged)
}

// TestLowLatencyCorrects: the low-latency schedule corrects every error, with
// fewer round trips than the default schedule on the same frames, and every
// parity it discloses is counted.
func TestLowLatencyCorrects(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, q := range []float64{0.01, 0.05, 0.10} {
		for _, overlap := range []int{1, 3} {
			var rtLow, rtSeq int
			for f := 0; f < 20; f++ {
				n := 10000
				a, b, errs := frame(rng, n, q)
				b2 := append([]uint64(nil), b...)
				var seed [32]byte
				seed[0], seed[1] = byte(f), byte(overlap)
				low, err := NewPlanOptions(n, q, seed, Options{LowLatency: true, Overlap: overlap})
				if err != nil {
					t.Fatal(err)
				}
				alice, _ := NewAlice(low, a)
				res, err := Reconcile(context.Background(), low, b, func(_ context.Context, req []Range) ([]uint64, error) { return alice.Answer(req) })
				if err != nil {
					t.Fatal(err)
				}
				if !equal(a, b) || res.Corrected != errs || res.Inconsistent {
					t.Fatalf("q %g overlap %d frame %d: %d of %d errors corrected, inconsistent %v", q, overlap, f, res.Corrected, errs, res.Inconsistent)
				}
				if res.Disclosed != alice.Disclosed {
					t.Fatalf("Bob counts %d disclosed parities, Alice answered %d", res.Disclosed, alice.Disclosed)
				}
				seq, _ := NewPlan(n, q, 0, seed)
				r2, err := Local(context.Background(), seq, a, b2)
				if err != nil {
					t.Fatal(err)
				}
				rtLow += res.RoundTrips
				rtSeq += r2.RoundTrips
			}
			if rtLow >= rtSeq*2/3 {
				t.Errorf("q %g overlap %d: %d round trips, default schedule %d", q, overlap, rtLow, rtSeq)
			}
		}
	}
}
