package fingerprint_test

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/qshield/qshield/fingerprint"
	"github.com/qshield/qshield/fingerprint/fvc"
)

// lightNoise is the sensor noise every test impression gets on top of the
// transformation under test.
func lightNoise(seed uint64) fingerprint.Distortion {
	return fingerprint.Distortion{
		PosNoise: 1, AngleNoise: 3 * math.Pi / 180, Drop: 0.05, Spurious: 0.05,
		TypeFlip: 0.05, CropW: 1, CropH: 1, ScrambleSeed: seed,
	}
}

func TestMatcherInvariances(t *testing.T) {
	m := fingerprint.NewMatcher()
	deg := math.Pi / 180
	cases := []struct {
		name string
		set  func(*fingerprint.Distortion)
	}{
		{"identity", func(d *fingerprint.Distortion) {}},
		{"rotation 20°", func(d *fingerprint.Distortion) { d.Rotate = 20 * deg }},
		{"rotation -45°", func(d *fingerprint.Distortion) { d.Rotate = -45 * deg }},
		{"rotation 90°", func(d *fingerprint.Distortion) { d.Rotate = 90 * deg }},
		{"rotation 180°", func(d *fingerprint.Distortion) { d.Rotate = 180 * deg }},
		{"translation", func(d *fingerprint.Distortion) { d.DX, d.DY = 50, -60 }},
		{"partial overlap 60%x60%", func(d *fingerprint.Distortion) { d.CropW, d.CropH = 0.6, 0.6 }},
		{"elastic 10px", func(d *fingerprint.Distortion) { d.Elastic = 10 }},
		{"missing and spurious", func(d *fingerprint.Distortion) { d.Drop, d.Spurious = 0.25, 0.2 }},
		{"everything", func(d *fingerprint.Distortion) {
			d.Rotate, d.DX, d.DY, d.Elastic, d.CropW, d.CropH, d.Drop, d.Spurious = 35*deg, -25, 30, 7, 0.8, 0.8, 0.15, 0.1
		}},
	}
	const fingers = 8
	var masters [fingers]*fingerprint.Prepared
	var raw [fingers]*fingerprint.Template
	for f := range fingers {
		raw[f] = fingerprint.SyntheticMaster(42, f)
		masters[f] = m.Prepare(raw[f])
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			worstGenuine, bestImpostor := math.Inf(1), 0.0
			for f := range fingers {
				d := lightNoise(uint64(ci*100 + f))
				c.set(&d)
				imp := m.Prepare(fingerprint.Distort(raw[f], d))
				ok, s := m.Verify(masters[f], imp)
				worstGenuine = min(worstGenuine, s)
				if !ok {
					t.Errorf("finger %d: genuine score %.3f below threshold %.3f", f, s, fingerprint.DefaultThreshold)
				}
				other := masters[(f+1)%fingers]
				ok, s = m.Verify(other, imp)
				bestImpostor = max(bestImpostor, s)
				if ok {
					t.Errorf("finger %d vs %d: impostor score %.3f above threshold", f, (f+1)%fingers, s)
				}
			}
			t.Logf("worst genuine %.3f, best impostor %.3f", worstGenuine, bestImpostor)
		})
	}
}

func TestSyntheticDeterministic(t *testing.T) {
	a, _ := fingerprint.Synthetic(5, 3, 2).MarshalISO()
	b, _ := fingerprint.Synthetic(5, 3, 2).MarshalISO()
	c, _ := fingerprint.Synthetic(5, 3, 3).MarshalISO()
	if string(a) != string(b) {
		t.Fatal("same arguments gave different impressions")
	}
	if string(a) == string(c) {
		t.Fatal("different impressions are identical")
	}
}

func TestSyntheticGenuineVsImpostor(t *testing.T) {
	m := fingerprint.NewMatcher()
	const fingers, imps = 10, 4
	var p [fingers][imps]*fingerprint.Prepared
	for f := range fingers {
		for i := range imps {
			p[f][i] = m.Prepare(fingerprint.Synthetic(9, f, i+1))
		}
	}
	fnm, fm := 0, 0
	for f := range fingers {
		for i := range imps {
			for g := f; g < fingers; g++ {
				for j := range imps {
					if g == f && j <= i {
						continue
					}
					ok, _ := m.Verify(p[f][i], p[g][j])
					if g == f && !ok {
						fnm++
					}
					if g != f && ok {
						fm++
					}
				}
			}
		}
	}
	// 60 genuine, 720 impostor comparisons of synthetic impressions.
	if fnm > 1 || fm > 0 {
		t.Fatalf("%d false non-matches, %d false matches", fnm, fm)
	}
}

func TestScoreSymmetricAndDeterministic(t *testing.T) {
	m := fingerprint.NewMatcher()
	var ps []*fingerprint.Prepared
	for f := range 4 {
		for i := range 3 {
			ps = append(ps, m.Prepare(fingerprint.Synthetic(2, f, i+1)))
		}
	}
	for i, a := range ps {
		for j, b := range ps {
			ab, ba := m.Score(a, b), m.Score(b, a)
			if ab != ba {
				t.Errorf("%d/%d: not symmetric: %v vs %v", i, j, ab, ba)
			}
			if again := m.Score(a, b); again != ab {
				t.Errorf("%d/%d: score changed %.6f → %.6f", i, j, ab, again)
			}
		}
	}
}

func TestScoreConcurrent(t *testing.T) {
	m := fingerprint.NewMatcher()
	var ps []*fingerprint.Prepared
	for f := range 6 {
		ps = append(ps, m.Prepare(fingerprint.Synthetic(4, f, 1)), m.Prepare(fingerprint.Synthetic(4, f, 2)))
	}
	want := make([]float64, len(ps)*len(ps))
	for i := range ps {
		for j := range ps {
			want[i*len(ps)+j] = m.Score(ps[i], ps[j])
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range want {
				i, j := (k+w*7)%len(want)/len(ps), (k+w*7)%len(want)%len(ps)
				if s := m.Score(ps[i], ps[j]); s != want[i*len(ps)+j] {
					errs <- fmt.Sprintf("worker %d: %d/%d scored %v, want %v", w, i, j, s, want[i*len(ps)+j])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestDegenerateTemplates(t *testing.T) {
	m := fingerprint.NewMatcher()
	full := m.Prepare(fingerprint.Synthetic(1, 1, 1))
	dup := &fingerprint.Template{}
	for range 20 {
		dup.Minutiae = append(dup.Minutiae, fingerprint.Minutia{X: 10, Y: 10, Angle: 1})
	}
	huge := &fingerprint.Template{}
	for i := range 400 {
		huge.Minutiae = append(huge.Minutiae, fingerprint.Minutia{X: i % 20 * 15, Y: i / 20 * 15, Angle: float64(i)})
	}
	weird := &fingerprint.Template{View: fingerprint.View{Minutiae: []fingerprint.Minutia{
		{X: 0, Y: 0, Angle: math.NaN()}, {X: 5, Y: 5, Angle: math.Inf(1)}, {X: 100, Y: 7, Angle: -7},
	}}}
	for name, tp := range map[string]*fingerprint.Template{
		"nil": nil, "empty": {}, "one": {View: fingerprint.View{Minutiae: []fingerprint.Minutia{{X: 1, Y: 2}}}},
		"duplicates": dup, "over 255": huge, "non-finite angles": weird,
	} {
		p := m.Prepare(tp)
		for _, s := range []float64{m.Score(p, full), m.Score(full, p), m.Score(p, p)} {
			if math.IsNaN(s) || s < 0 {
				t.Errorf("%s: score %v", name, s)
			}
		}
		if ok, s := m.Verify(p, full); ok {
			t.Errorf("%s: matched a real finger (score %v)", name, s)
		}
	}
	if m.Score(nil, full) != 0 || m.Score(full, nil) != 0 {
		t.Error("nil Prepared must score 0")
	}
}

func BenchmarkScore(b *testing.B) {
	m := fingerprint.NewMatcher()
	var ps []*fingerprint.Prepared
	if dir, err := fvc.DataDir(); err == nil {
		dbs, err := fvc.LoadFVC2002(dir)
		if err != nil {
			b.Fatal(err)
		}
		for _, db := range dbs {
			for _, row := range db.Templates {
				ps = append(ps, m.Prepare(row[0]), m.Prepare(row[1]))
			}
		}
	} else {
		b.Logf("FVC2002 data absent (%v): benchmarking synthetic templates", err)
		for f := range 40 {
			ps = append(ps, m.Prepare(fingerprint.Synthetic(1, f, 1)), m.Prepare(fingerprint.Synthetic(1, f, 2)))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m.Score(ps[i%len(ps)], ps[(i*7+3)%len(ps)])
	}
}

func BenchmarkPrepare(b *testing.B) {
	m := fingerprint.NewMatcher()
	t := fingerprint.Synthetic(1, 1, 1)
	b.ReportAllocs()
	for b.Loop() {
		m.Prepare(t)
	}
}

// TestOptimalAssignmentMatcher runs the matcher with the Hungarian
// assignment (Params.OptimalAssignment): scores stay symmetric and
// deterministic, Score does not allocate once warm, and synthetic genuine
// pairs score above impostor pairs.
func TestOptimalAssignmentMatcher(t *testing.T) {
	p := fingerprint.DefaultParams()
	p.OptimalAssignment = true
	m := fingerprint.NewMatcher(fingerprint.WithParams(p))
	var ps []*fingerprint.Prepared
	for f := range 4 {
		for i := range 3 {
			ps = append(ps, m.Prepare(fingerprint.Synthetic(5, f, i+1)))
		}
	}
	minGen, maxImp := math.Inf(1), 0.0
	for i, a := range ps {
		for j, b := range ps {
			if i == j {
				continue
			}
			ab, ba := m.Score(a, b), m.Score(b, a)
			if ab != ba {
				t.Errorf("%d/%d: not symmetric: %v vs %v", i, j, ab, ba)
			}
			if again := m.Score(a, b); again != ab {
				t.Errorf("%d/%d: score changed %.6f → %.6f", i, j, ab, again)
			}
			if i/3 == j/3 {
				minGen = min(minGen, ab)
			} else {
				maxImp = max(maxImp, ab)
			}
		}
	}
	if minGen <= maxImp {
		t.Errorf("lowest genuine score %.4f not above highest impostor score %.4f", minGen, maxImp)
	}
	if !testing.Short() && !raceEnabled {
		if n := testing.AllocsPerRun(50, func() { m.Score(ps[0], ps[1]) }); n > 0 {
			t.Errorf("Score allocates %.1f times per call", n)
		}
	}
}

// TestMergeMatcherDoesNotAllocate: graph merging (Params.MergeMinPairs)
// keeps its graphs in the pooled scratch memory.
func TestMergeMatcherDoesNotAllocate(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts need a full run without the race detector")
	}
	p := fingerprint.DefaultParams()
	p.MergeMinPairs, p.MergeStrain = 4, 0.25
	m := fingerprint.NewMatcher(fingerprint.WithParams(p))
	a, b := m.Prepare(fingerprint.Synthetic(6, 1, 1)), m.Prepare(fingerprint.Synthetic(6, 1, 2))
	if n := testing.AllocsPerRun(50, func() { m.Score(a, b) }); n > 0 {
		t.Errorf("Score allocates %.1f times per call", n)
	}
}
