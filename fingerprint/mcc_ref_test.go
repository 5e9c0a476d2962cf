package fingerprint

import (
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

// This file keeps the straightforward cylinder comparison (three popcounts
// per word: na, nb and the XOR) as a reference: localSimilarities, which
// takes na and nb from bit-sliced per-cell counts, must give exactly the same
// similarities, and BenchmarkLocalSimilarities compares the two in one run.

func (m *Matcher) localSimilaritiesRef(a, b *Prepared, s *scratch) {
	lay := m.mcc.lay
	w, sw, nd := lay.words, lay.sw, lay.nd
	// Validity is per spatial cell, the same in every angular slice.
	minCommon := int(math.Ceil(m.p.MinMatchableCells * float64(m.mcc.cellsInR)))
	dTheta := int32(math.Round(m.p.MaxRotation * 256 / twoPi))
	s.sims = s.sims[:0]
	var v [maxSliceWords]uint64
	sq := m.mcc.sqrt
	for _, i := range a.cylIdx {
		ba := a.cylBits[int(i)*w : int(i+1)*w]
		ma := a.cylMask[int(i)*sw : int(i+1)*sw]
		ta := a.theta8[i]
		for _, j := range b.cylIdx {
			if angDiff8(ta, b.theta8[j]) > dTheta {
				continue
			}
			mb := b.cylMask[int(j)*sw : int(j+1)*sw]
			nab := 0
			for k := 0; k < sw; k++ {
				v[k] = ma[k] & mb[k]
				nab += bits.OnesCount64(v[k])
			}
			if nab < minCommon {
				continue
			}
			bb := b.cylBits[int(j)*w : int(j+1)*w]
			var na, nb, nx int
			if sw == 4 {
				// NS 13–16 (the default): the mask in registers, four words
				// per angular slice.
				v0, v1, v2, v3 := v[0], v[1], v[2], v[3]
				for a0 := 0; a0+4 <= len(ba) && a0+4 <= len(bb); a0 += 4 {
					x, y := ba[a0:a0+4:a0+4], bb[a0:a0+4:a0+4]
					c0, d0 := x[0]&v0, y[0]&v0
					c1, d1 := x[1]&v1, y[1]&v1
					c2, d2 := x[2]&v2, y[2]&v2
					c3, d3 := x[3]&v3, y[3]&v3
					na += bits.OnesCount64(c0) + bits.OnesCount64(c1) + bits.OnesCount64(c2) + bits.OnesCount64(c3)
					nb += bits.OnesCount64(d0) + bits.OnesCount64(d1) + bits.OnesCount64(d2) + bits.OnesCount64(d3)
					nx += bits.OnesCount64(c0^d0) + bits.OnesCount64(c1^d1) + bits.OnesCount64(c2^d2) + bits.OnesCount64(c3^d3)
				}
			} else {
				for a0 := 0; a0 < nd*sw; a0 += sw {
					for k := 0; k < sw; k++ {
						ca, cb := ba[a0+k]&v[k], bb[a0+k]&v[k]
						na += bits.OnesCount64(ca)
						nb += bits.OnesCount64(cb)
						nx += bits.OnesCount64(ca ^ cb)
					}
				}
			}
			if na+nb == 0 {
				continue
			}
			sim := 1 - sq[nx]/(sq[na]+sq[nb])
			if sim > 0 {
				s.sims = append(s.sims, mccPair{sim, i, j})
			}
		}
	}
}

// refTemplates returns synthetic templates and, when $QSHIELD_FINGERPRINT_DATA
// holds FVC-style databases (not with -short), the first impression of every
// finger.
func refTemplates(t testing.TB) []*Template {
	var ts []*Template
	for f := range 12 {
		for i := range 3 {
			ts = append(ts, Synthetic(3, f, i+1))
		}
	}
	dir := os.Getenv("QSHIELD_FINGERPRINT_DATA")
	if dir == "" || testing.Short() {
		return ts
	}
	files, err := filepath.Glob(filepath.Join(dir, "DB*_B", "*_1.iso"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := ParseISO(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ts = append(ts, tp)
	}
	return ts
}

func TestLocalSimilaritiesMatchReference(t *testing.T) {
	// NS 16 (the default, unrolled path) on every pair; NS 8 and 12 (the
	// general path, 1 and 3 words per slice) on every third pair.
	for _, ns := range []int{16, 8, 12} {
		p := DefaultParams()
		p.CylinderCells = ns
		m := NewMatcher(WithParams(p))
		var ps []*Prepared
		for _, tp := range refTemplates(t) {
			ps = append(ps, m.Prepare(tp))
		}
		var s, r scratch
		pairs := 0
		for i, a := range ps {
			for j, b := range ps[i:] {
				if ns != 16 && (i+j)%3 != 0 {
					continue
				}
				m.localSimilarities(a, b, &s)
				m.localSimilaritiesRef(a, b, &r)
				if !slices.Equal(s.sims, r.sims) {
					t.Fatalf("NS=%d: %d similarities, reference %d, or values differ", ns, len(s.sims), len(r.sims))
				}
				pairs += len(s.sims)
			}
		}
		if pairs == 0 {
			t.Fatalf("NS=%d: no cylinder pairs compared", ns)
		}
	}
}

// BenchmarkLocalSimilarities is the A/B of the cylinder comparison: the
// reference (three popcounts per word) and the bit-sliced counts, on the same
// template pairs in the same run, alternating in rounds of 1000 pairs. Besides
// wall time it reports cpu-ns/op, the thread's CPU time (Linux), which does
// not count waiting for a core on a busy machine.
func BenchmarkLocalSimilarities(b *testing.B) {
	m := NewMatcher()
	var ps []*Prepared
	for _, tp := range refTemplates(b) {
		ps = append(ps, m.Prepare(tp))
	}
	var s scratch
	impl := map[string]func(a, c *Prepared){
		"reference": func(a, c *Prepared) { m.localSimilaritiesRef(a, c, &s) },
		"bitsliced": func(a, c *Prepared) { m.localSimilarities(a, c, &s) },
	}
	for _, name := range []string{"reference", "bitsliced"} {
		f := impl[name]
		b.Run(name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			c0, ok0 := threadCPUNanos()
			for i := 0; b.Loop(); i++ {
				f(ps[i%len(ps)], ps[(i*7+3)%len(ps)])
			}
			if c1, ok1 := threadCPUNanos(); ok0 && ok1 {
				b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
