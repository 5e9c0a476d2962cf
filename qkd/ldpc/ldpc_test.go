package ldpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/qshield/qshield/qkd/cascade"
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

func equal(a, b []uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func randPad(rng *rand.Rand, p int) []uint64 {
	pad := make([]uint64, (p+63)/64)
	for i := range pad {
		pad[i] = rng.Uint64()
	}
	return pad
}

// transcript wraps Alice and counts, from the requests alone, what the
// leakage must be: m − p once the syndrome is asked, plus one per punctured
// bit revealed.
type transcript struct {
	a          *Alice
	syndrome   int
	punctured  int
	roundTrips int
}

func (t *transcript) ask(_ context.Context, req []cascade.Range) ([]uint64, error) {
	t.roundTrips++
	for _, r := range req {
		switch r.Pass {
		case PassSyndrome:
			t.syndrome++
		case PassPunctured:
			t.punctured++
		}
	}
	return t.a.Answer(req)
}

func (t *transcript) leak() int64 {
	pl := t.a.plan
	if t.syndrome == 0 {
		return 0
	}
	return int64(t.syndrome-pl.p) + int64(t.punctured)
}

// TestCorrectsAcrossQBER reconciles 10^4-bit frames at 1–5% QBER with fixed
// seeds: a frame either decodes to Alice's key with every error corrected or
// is reported failed with Bob's key untouched (at most one per QBER here), and
// the disclosure Bob reports, Alice's own count and the count from the
// transcript agree on every frame, failed ones included.
func TestCorrectsAcrossQBER(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	frames := 4
	n := 10000
	if testing.Short() {
		frames = 2
	}
	for _, q := range []float64{0.01, 0.02, 0.03, 0.05} {
		var seed [32]byte
		seed[0] = byte(100 * q)
		pl, err := NewPlan(n, q, seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		bob := NewBob(pl)
		failed := 0
		for f := 0; f < frames; f++ {
			a, b, errs := frame(rng, n, q)
			orig := append([]uint64(nil), b...)
			alice, err := NewAlice(pl, a, randPad(rng, pl.p))
			if err != nil {
				t.Fatal(err)
			}
			tr := &transcript{a: alice}
			res, err := bob.Reconcile(context.Background(), b, tr.ask)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case res.Failed:
				failed++
				if !equal(b, orig) || res.Corrected != 0 || res.Revealed != pl.p {
					t.Fatalf("q=%g frame %d: failed after revealing %d of %d, but Bob's key changed (%d corrected)", q, f, res.Revealed, pl.p, res.Corrected)
				}
			case !equal(a, b) || res.Corrected != errs:
				t.Fatalf("q=%g frame %d: corrected %d of %d errors, equal %v", q, f, res.Corrected, errs, equal(a, b))
			}
			if res.Disclosed != alice.Disclosed || res.Disclosed != tr.leak() || res.RoundTrips != tr.roundTrips ||
				res.Disclosed != pl.InitialLeak()+int64(res.Revealed) {
				t.Fatalf("q=%g: Bob counts %d bits in %d round trips, Alice %d, transcript %d in %d", q, res.Disclosed, res.RoundTrips, alice.Disclosed, tr.leak(), tr.roundTrips)
			}
			if res.RoundTrips > pl.maxRT {
				t.Fatalf("q=%g: %d round trips, at most %d expected", q, res.RoundTrips, pl.maxRT)
			}
			if fe := float64(res.Disclosed) / (float64(n) * h2(q)); fe < 0.9 || fe > 1.75 {
				t.Errorf("q=%g: f = %.3f", q, fe)
			}
		}
		if failed > 1 {
			t.Errorf("q=%g: %d of %d frames failed", q, failed, frames)
		}
	}
}

// TestLeakageBound computes, for a small code, the exact mutual information
// between a uniform key and everything Alice discloses (the syndrome and the
// revealed punctured bits), by enumerating every key and pad, and checks the
// count charged is never below it.
func TestLeakageBound(t *testing.T) {
	var seed [32]byte
	pl, err := NewPlan(12, 0.1, seed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pl.p < 2 || pl.m > 16 {
		t.Fatalf("test code: m = %d, p = %d", pl.m, pl.p)
	}
	for _, reveal := range []int{0, 1, pl.p} {
		// joint[(view)] over all keys; cond[key][view] over pads.
		joint := map[uint64]int{}
		hCond := 0.0
		for k := uint64(0); k < 1<<pl.n; k++ {
			cond := map[uint64]int{}
			for pad := uint64(0); pad < 1<<pl.p; pad++ {
				a, err := NewAlice(pl, []uint64{k}, []uint64{pad})
				if err != nil {
					t.Fatal(err)
				}
				view := a.synd[0] // m ≤ 16 bits
				view |= (pad & (1<<reveal - 1)) << 16
				cond[view]++
				joint[view]++
			}
			hCond += entropy(cond, 1<<pl.p)
		}
		hCond /= float64(uint64(1) << pl.n)
		info := entropy(joint, 1<<(pl.n+pl.p)) - hCond
		charged := float64(pl.InitialLeak()) + float64(reveal)
		t.Logf("m=%d p=%d revealed %d: I(K; view) = %.4f bits, charged %g", pl.m, pl.p, reveal, info, charged)
		if info > charged+1e-9 {
			t.Fatalf("revealed %d: %.4f bits leak, only %g charged", reveal, info, charged)
		}
	}
}

func entropy(c map[uint64]int, total int) float64 {
	h := 0.0
	for _, x := range c {
		p := float64(x) / float64(total)
		h -= p * math.Log2(p)
	}
	return h
}

// TestPuncturedFullRank: the punctured columns of H are linearly independent
// (the m − p charge relies on it) and the plan is a function of its seed.
func TestPuncturedFullRank(t *testing.T) {
	for _, q := range []float64{0.01, 0.05, 0.1} {
		seed := [32]byte{9}
		pl, err := NewPlan(10000, q, seed, Options{})
		if err != nil {
			t.Fatal(err)
		}
		cols := make([][]uint64, pl.p)
		for j := range cols {
			cols[j] = make([]uint64, (pl.m+63)/64)
		}
		for c := 0; c < pl.m; c++ {
			for _, v := range pl.chkVar[pl.chkOff[c]:pl.chkOff[c+1]] {
				if int(v) >= pl.n {
					cols[int(v)-pl.n][c>>6] |= 1 << (uint(c) & 63)
				}
			}
		}
		if r := rank(cols); r != pl.p {
			t.Fatalf("q=%g: punctured columns have rank %d of %d", q, r, pl.p)
		}
		again, _ := NewPlan(10000, q, seed, Options{})
		if len(again.chkVar) != len(pl.chkVar) {
			t.Fatal("plan differs for the same seed")
		}
		for i := range pl.chkVar {
			if again.chkVar[i] != pl.chkVar[i] {
				t.Fatal("plan differs for the same seed")
			}
		}
	}
}

func rank(cols [][]uint64) int {
	r := 0
	var pivots [][]uint64
	var pivBit []int
	for _, c := range cols {
		v := append([]uint64(nil), c...)
		for i, p := range pivots {
			b := pivBit[i]
			if v[b>>6]>>(uint(b)&63)&1 == 1 {
				for w := range v {
					v[w] ^= p[w]
				}
			}
		}
		for w, x := range v {
			if x != 0 {
				pivots = append(pivots, v)
				pivBit = append(pivBit, w*64+int(trailing(x)))
				r++
				break
			}
		}
	}
	return r
}

func trailing(x uint64) int {
	n := 0
	for x&1 == 0 {
		x >>= 1
		n++
	}
	return n
}

// TestBadRequests: Alice refuses malformed requests and then has disclosed
// nothing more.
func TestBadRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pl, err := NewPlan(2000, 0.03, [32]byte{1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a0, _, _ := frame(rng, 2000, 0.03)
	alice, err := NewAlice(pl, a0, randPad(rng, pl.p))
	if err != nil {
		t.Fatal(err)
	}
	syn := make([]cascade.Range, pl.m)
	for i := range syn {
		syn[i] = cascade.Range{Pass: PassSyndrome, Lo: uint32(i), Hi: uint32(i) + 1}
	}
	p := func(j uint32) cascade.Range { return cascade.Range{Pass: PassPunctured, Lo: j, Hi: j + 1} }
	for _, bad := range [][]cascade.Range{
		nil, syn[:pl.m-1], {p(0)}, append(append([]cascade.Range{}, syn[1:]...), syn[0]),
	} {
		if _, err := alice.Answer(bad); !errors.Is(err, ErrRequest) || alice.Disclosed != 0 {
			t.Fatalf("first request of %d ranges: %v, disclosed %d", len(bad), err, alice.Disclosed)
		}
	}
	if _, err := alice.Answer(syn); err != nil {
		t.Fatal(err)
	}
	base := alice.Disclosed
	if base != int64(pl.m-pl.p) {
		t.Fatalf("syndrome charged %d, want %d", base, pl.m-pl.p)
	}
	if _, err := alice.Answer([]cascade.Range{p(3)}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]cascade.Range{
		nil, syn[:1], {p(3)}, {p(4), p(4)}, {p(uint32(pl.p))}, {{Pass: PassPunctured, Lo: 5, Hi: 7}}, {{Pass: 2, Lo: 5, Hi: 6}},
	} {
		if _, err := alice.Answer(bad); !errors.Is(err, ErrRequest) || alice.Disclosed != base+1 {
			t.Fatalf("request %v: %v, disclosed %d", bad, err, alice.Disclosed)
		}
	}
}

// TestDegree2Forest: the degree-2 variables, key and punctured, seen as
// edges between their two checks, form no cycle (a cycle is a low-weight
// solution of the syndrome, which the decoder settled on near the threshold),
// every punctured variable has at least two checks (one of degree 1 would
// make its check say nothing), and the key variables keep the profile's
// degree-2 share wherever the checks leave room for it.
func TestDegree2Forest(t *testing.T) {
	for _, c := range []struct {
		q   float64
		opt Options
	}{{0.01, Options{}}, {0.02, Options{}}, {0.05, Options{}}, {0.1, Options{}},
		{0.03, Options{FStart: 1.2, FMax: 1.6}}, {0.02, Options{FStart: 0.5, FMax: 2}}} {
		pl, err := NewPlan(10000, c.q, [32]byte{7, byte(c.q * 100)}, c.opt)
		if err != nil {
			t.Fatal(err)
		}
		deg := make([]int, pl.n+pl.p)
		where := make([][]int, pl.n+pl.p)
		for ch := 0; ch < pl.m; ch++ {
			for _, v := range pl.chkVar[pl.chkOff[ch]:pl.chkOff[ch+1]] {
				deg[v]++
				where[v] = append(where[v], ch)
			}
		}
		parent := make([]int, pl.m)
		for i := range parent {
			parent[i] = i
		}
		find := func(x int) int {
			for parent[x] != x {
				parent[x] = parent[parent[x]]
				x = parent[x]
			}
			return x
		}
		key2 := 0
		for v, d := range deg {
			if v >= pl.n && d < 2 {
				t.Fatalf("q=%g %+v: punctured variable %d has %d checks", c.q, c.opt, v, d)
			}
			if d != 2 {
				continue
			}
			if v < pl.n {
				key2++
			}
			a, b := find(where[v][0]), find(where[v][1])
			if a == b {
				t.Fatalf("q=%g %+v: degree-2 variable %d closes a cycle", c.q, c.opt, v)
			}
			parent[a] = b
		}
		want := min(2000, pl.m-1-pl.p)
		if key2 != want {
			t.Errorf("q=%g %+v: %d key variables of degree 2, want %d (m = %d, p = %d)", c.q, c.opt, key2, want, pl.m, pl.p)
		}
	}
}

// TestRoundTripBudget: a frame that cannot decode (far more errors than the
// plan was made for) still ends within MaxRoundTrips, with every punctured
// bit revealed, reported failed and Bob's key untouched, even with a step of
// one bit.
func TestRoundTripBudget(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, opt := range []Options{{Step: 1}, {Step: 1, MaxRoundTrips: 12}, {}} {
		pl, err := NewPlan(2000, 0.02, [32]byte{3}, opt)
		if err != nil {
			t.Fatal(err)
		}
		a, b, _ := frame(rng, 2000, 0.15)
		orig := append([]uint64(nil), b...)
		alice, err := NewAlice(pl, a, randPad(rng, pl.p))
		if err != nil {
			t.Fatal(err)
		}
		tr := &transcript{a: alice}
		res, err := NewBob(pl).Reconcile(context.Background(), b, tr.ask)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Failed || !equal(b, orig) || res.Revealed != pl.p || res.RoundTrips != tr.roundTrips || res.RoundTrips > pl.maxRT {
			t.Fatalf("%+v: failed %v, key kept %v, revealed %d of %d in %d round trips (budget %d)",
				opt, res.Failed, equal(b, orig), res.Revealed, pl.p, res.RoundTrips, pl.maxRT)
		}
	}
}

// TestBadParams: invalid plans and keys are refused.
func TestBadParams(t *testing.T) {
	for _, c := range []struct {
		n   int
		q   float64
		opt Options
	}{{4, 0.01, Options{}}, {1000, -1, Options{}}, {1000, 0.5, Options{}}, {1000, 0.3, Options{}},
		{1000, 0.01, Options{FStart: 2, FMax: 1.5}}, {1000, 0.01, Options{Iterations: -1}}, {1000, 0.01, Options{Stall: -1}},
		{1000, 0.01, Options{MaxRoundTrips: 1}}, {1000, 0.01, Options{FJump: -1}}} {
		if _, err := NewPlan(c.n, c.q, [32]byte{}, c.opt); !errors.Is(err, ErrParams) {
			t.Errorf("NewPlan(%d, %g, %+v): %v", c.n, c.q, c.opt, err)
		}
	}
	pl, _ := NewPlan(1000, 0.02, [32]byte{}, Options{})
	if _, err := NewAlice(pl, make([]uint64, 2), make([]uint64, 10)); !errors.Is(err, ErrParams) {
		t.Error(err)
	}
	if _, err := NewBob(pl).Reconcile(context.Background(), make([]uint64, 2), nil); !errors.Is(err, ErrParams) {
		t.Error(err)
	}
}

// FuzzAnswer feeds Alice arbitrary request sequences. Invariants: a refused
// request changes nothing; Disclosed is always m − p (once the syndrome is
// out) plus the number of distinct punctured bits answered, and never above m.
func FuzzAnswer(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 1, 1, 3, 0, 0, 0})
	pl, err := NewPlan(200, 0.05, [32]byte{2}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		alice, err := NewAlice(pl, make([]uint64, 4), make([]uint64, (pl.p+63)/64))
		if err != nil {
			t.Fatal(err)
		}
		revealed := map[uint32]bool{}
		sent := false
		// Each request: a mode byte (0: the whole syndrome, 1: ranges from
		// the data), then for mode 1 a count and 5-byte ranges.
		for len(data) > 0 {
			mode := data[0]
			data = data[1:]
			var req []cascade.Range
			if mode%2 == 0 {
				for i := 0; i < pl.m; i++ {
					req = append(req, cascade.Range{Pass: PassSyndrome, Lo: uint32(i), Hi: uint32(i) + 1})
				}
			} else {
				if len(data) == 0 {
					break
				}
				k := int(data[0] % 8)
				data = data[1:]
				for ; k > 0 && len(data) >= 5; k-- {
					lo := uint32(binary.LittleEndian.Uint16(data[1:]))
					req = append(req, cascade.Range{Pass: data[0] % 3, Lo: lo, Hi: lo + uint32(data[3]%3)})
					data = data[5:]
				}
			}
			before := alice.Disclosed
			bits, err := alice.Answer(req)
			if err != nil {
				if alice.Disclosed != before {
					t.Fatalf("refused request changed Disclosed %d → %d", before, alice.Disclosed)
				}
				continue
			}
			if len(bits)*64 < len(req) {
				t.Fatalf("%d words for %d ranges", len(bits), len(req))
			}
			for _, r := range req {
				if r.Pass == PassPunctured {
					revealed[r.Lo] = true
				}
			}
			sent = true
		}
		want := int64(len(revealed))
		if sent {
			want += pl.InitialLeak()
		}
		if alice.Disclosed != want || alice.Disclosed > int64(pl.m) {
			t.Fatalf("Disclosed %d, want %d (m = %d)", alice.Disclosed, want, pl.m)
		}
	})
}

// TestPhiTable: the interpolated phi stays within 1e-4 (relative) of the
// exact function over the table's range.
func TestPhiTable(t *testing.T) {
	worst := 0.0
	for x := 0.25; x < phiHi; x += 0.000731 {
		r := phi(x)/phiExact(x) - 1
		worst = max(worst, r, -r)
	}
	t.Logf("worst relative error %g", worst)
	if worst > 1e-4 {
		t.Fatal(worst)
	}
}

// TestPhiSmall checks the series below 1/4 against −ln tanh(x/2) computed
// without cancellation (ln(1 + e^−x) − ln(−expm1(−x))), from 1e-12 up.
func TestPhiSmall(t *testing.T) {
	worst := 0.0
	for x := 1e-12; x < 0.25; x *= 1.01 {
		e := math.Exp(-x)
		ref := math.Log1p(e) - math.Log(-math.Expm1(-x))
		r := phiSmall(x)/ref - 1
		worst = max(worst, r, -r)
	}
	for x := 0.2; x < 0.25; x += 1e-5 {
		e := math.Exp(-x)
		ref := math.Log1p(e) - math.Log(-math.Expm1(-x))
		r := phiSmall(x)/ref - 1
		worst = max(worst, r, -r)
	}
	t.Logf("worst relative error %g", worst)
	if worst > 1e-9 {
		t.Fatal(worst)
	}
	if got, want := phi(0.1), phiSmall(0.1); got != want {
		t.Fatalf("phi(0.1) = %g, want the series' %g", got, want)
	}
}

// BenchmarkReconcile10k: one 10^4-bit frame at 1, 2, 3 and 5% QBER (a fresh
// frame and pad each iteration, one plan per QBER), with the efficiency f,
// the round trips and the share of frames left different from Alice's
// (failed, or decoded to another word with the same syndrome: the link's
// verification discards those) as metrics.
func BenchmarkReconcile10k(b *testing.B) {
	for _, q := range []float64{0.01, 0.02, 0.03, 0.05} {
		b.Run(fmt.Sprintf("qber=%g%%", 100*q), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(8, uint64(100*q)))
			pl, err := NewPlan(10000, q, [32]byte{3, byte(100 * q)}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			bob := NewBob(pl)
			var iters, rts, frames, disc, different float64
			for b.Loop() {
				a, k, _ := frame(rng, 10000, q)
				alice, _ := NewAlice(pl, a, randPad(rng, pl.p))
				res, err := bob.Reconcile(context.Background(), k, func(_ context.Context, req []cascade.Range) ([]uint64, error) { return alice.Answer(req) })
				if err != nil {
					b.Fatal(err)
				}
				iters += float64(res.Iterations)
				rts += float64(res.RoundTrips)
				disc += float64(res.Disclosed)
				frames++
				if !equal(a, k) { // failed, or decoded to another word
					different++
				}
			}
			b.ReportMetric(iters/frames, "iterations/frame")
			b.ReportMetric(rts/frames, "roundtrips/frame")
			b.ReportMetric(disc/frames/(10000*h2(q)), "f")
			b.ReportMetric(different/frames, "different/frame")
		})
	}
}
