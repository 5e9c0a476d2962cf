package fingerprint

import (
	"math"
	"math/rand/v2"
	"testing"
)

// mergeTestSet returns synthetic fingers, three impressions each, with
// heavier noise, missed and spurious minutiae and cropping than Synthetic,
// every impression but the first bent by the plastic model
// (DefaultPlasticRange).
func mergeTestSet(fingers int) [][]*Template {
	out := make([][]*Template, fingers)
	for f := range fingers {
		master := SyntheticMaster(31, f)
		for i := range 3 {
			rng := rand.New(rand.NewPCG(31, uint64(f*100+i)))
			t := Distort(master, Distortion{
				Rotate: (rng.Float64()*2 - 1) * 20 * math.Pi / 180, DX: (rng.Float64()*2 - 1) * 30, DY: (rng.Float64()*2 - 1) * 30,
				Elastic: 4 + rng.Float64()*6, PosNoise: 2, AngleNoise: 6 * math.Pi / 180,
				Drop: 0.18, Spurious: 0.18, TypeFlip: 0.1, CropW: 0.8, CropH: 0.8, ScrambleSeed: rng.Uint64(),
			})
			if i > 0 {
				t = RandomPlastic(t, DefaultPlasticRange(), uint64(f*100+i)).Apply(t)
			}
			out[f] = append(out[f], t)
		}
	}
	return out
}

func mergeParams() Params {
	p := DefaultParams()
	p.MergeMinPairs, p.MergeStrain = 4, 0.25
	return p
}

// TestMergeGraphsUnderPlasticDistortion checks what graph merging
// (Params.MergeMinPairs) is for: under plastic distortion one pairing graph
// cannot grow across the stretched band around the contact region, and
// merging the consistent graph from the other side raises genuine graph
// scores far more than impostor ones.
func TestMergeGraphsUnderPlasticDistortion(t *testing.T) {
	set := mergeTestSet(16)
	plain := NewMatcher()
	merge := NewMatcher(WithParams(mergeParams()))
	var genGain, impGain float64
	var nGen, nImp, raised int
	for f, row := range set {
		a := plain.Prepare(row[0])
		for g := f; g < len(set); g++ {
			for i := 1; i < 3; i++ {
				if g != f && i > 1 {
					continue
				}
				b := plain.Prepare(set[g][i])
				s0, s1 := plain.GraphScore(a, b), merge.GraphScore(a, b)
				if g == f {
					genGain += s1 - s0
					nGen++
					if s1 > s0 {
						raised++
					}
				} else {
					impGain += s1 - s0
					nImp++
				}
			}
		}
	}
	genGain /= float64(nGen)
	impGain /= float64(nImp)
	t.Logf("mean graph-score gain: genuine %.4f (%d of %d raised), impostor %.4f", genGain, raised, nGen, impGain)
	if raised < 3 {
		t.Errorf("merging raised only %d of %d distorted genuine graph scores", raised, nGen)
	}
	if genGain < 5*max(impGain, 0.001) {
		t.Errorf("mean genuine gain %.4f not well above impostor gain %.4f", genGain, impGain)
	}
}

// TestMergeGraphsPairsOnce checks that merged graphs never pair a minutia
// twice and that the pair count is the number of merged pairs, and that the
// score stays symmetric and deterministic (TestMergeMatcherDoesNotAllocate
// checks allocations).
func TestMergeGraphsPairsOnce(t *testing.T) {
	set := mergeTestSet(6)
	m := NewMatcher(WithParams(mergeParams()))
	var ps []*Prepared
	for _, row := range set {
		for _, tp := range row {
			ps = append(ps, m.Prepare(tp))
		}
	}
	s := new(scratch)
	merged := 0
	for i, a := range ps {
		for j, b := range ps {
			if i == j {
				continue
			}
			x, y := a, b
			if x.n > y.n || x.n == y.n && x.key > y.key {
				x, y = y, x
			}
			r := m.match(x, y, s)
			if r.pairs != len(s.bestA) || len(s.bestA) != len(s.bestB) {
				t.Fatalf("%d/%d: %d pairs counted, %d/%d listed", i, j, r.pairs, len(s.bestA), len(s.bestB))
			}
			seenA, seenB := map[uint8]bool{}, map[uint8]bool{}
			for k := range s.bestA {
				if seenA[s.bestA[k]] || seenB[s.bestB[k]] {
					t.Fatalf("%d/%d: minutia paired twice", i, j)
				}
				seenA[s.bestA[k]], seenB[s.bestB[k]] = true, true
			}
			if len(s.graphs) > 1 && r.pairs > s.graphs[0].pairs {
				merged++
			}
			ab, ba := m.Score(a, b), m.Score(b, a)
			if ab != ba || m.Score(a, b) != ab {
				t.Errorf("%d/%d: score not symmetric or not deterministic: %v %v", i, j, ab, ba)
			}
		}
	}
	if merged == 0 {
		t.Error("no comparison merged two graphs: the test does not exercise merging")
	}
}
