// Package eval computes the accuracy figures of a biometric verification system
// from its genuine and impostor comparison scores, following the conventions of
// the Fingerprint Verification Competitions (FVC).
//
// Scores are "higher = more similar"; a comparison is accepted when its score is
// greater than or equal to the threshold t. Then
//
//	FMR(t)  = share of impostor scores ≥ t   (false match rate)
//	FNMR(t) = share of genuine scores  < t   (false non-match rate)
//
// The operating points are evaluated at every distinct score plus +∞ (accept
// nothing), which is enough: both rates are step functions that change only at
// observed scores.
//
//   - EER is the equal error rate, interpolated: the point where the DET
//     polyline (FMR, FNMR) crosses the line FMR = FNMR, found by linear
//     interpolation between the two neighbouring operating points.
//   - FMR100 (FMR1000) is the lowest FNMR at an operating point with FMR ≤ 1%
//     (≤ 0.1%); ZeroFMR is the lowest FNMR with FMR = 0.
//   - DET and ROC return the operating points as curves.
package eval

import (
	"errors"
	"math"
	"slices"
)

// ErrNoScores is returned when either score list is empty.
var ErrNoScores = errors.New("eval: need at least one genuine and one impostor score")

// ErrNaN is returned when a score is NaN.
var ErrNaN = errors.New("eval: score is NaN")

// Point is one operating point.
type Point struct {
	Threshold float64 // accept when score ≥ Threshold (+Inf: accept nothing)
	FMR       float64
	FNMR      float64
}

// Report holds the standard figures.
type Report struct {
	Genuine, Impostor int
	EER               float64
	// EERThreshold is a threshold at the EER crossing (the lower of the two
	// bracketing operating points).
	EERThreshold float64
	FMR100       float64
	FMR1000      float64
	ZeroFMR      float64
}

// Curve returns the operating points for every distinct score and +∞, in
// increasing threshold order (FMR falls, FNMR rises along the slice).
func Curve(genuine, impostor []float64) ([]Point, error) {
	if len(genuine) == 0 || len(impostor) == 0 {
		return nil, ErrNoScores
	}
	g := slices.Clone(genuine)
	im := slices.Clone(impostor)
	for _, s := range g {
		if math.IsNaN(s) {
			return nil, ErrNaN
		}
	}
	for _, s := range im {
		if math.IsNaN(s) {
			return nil, ErrNaN
		}
	}
	slices.Sort(g)
	slices.Sort(im)
	ts := make([]float64, 0, len(g)+len(im)+1)
	ts = append(ts, g...)
	ts = append(ts, im...)
	slices.Sort(ts)
	ts = slices.Compact(ts)
	pts := make([]Point, len(ts), len(ts)+1)
	gi, ii := 0, 0 // number of genuine / impostor scores < t
	for k, t := range ts {
		for gi < len(g) && g[gi] < t {
			gi++
		}
		for ii < len(im) && im[ii] < t {
			ii++
		}
		pts[k] = Point{
			Threshold: t,
			FMR:       float64(len(im)-ii) / float64(len(im)),
			FNMR:      float64(gi) / float64(len(g)),
		}
	}
	// End with the "accept nothing" point unless the last one already is.
	if last := pts[len(pts)-1]; last.FMR != 0 || last.FNMR != 1 {
		pts = append(pts, Point{Threshold: math.Inf(1), FMR: 0, FNMR: 1})
	}
	return pts, nil
}

// Evaluate computes the standard figures.
func Evaluate(genuine, impostor []float64) (Report, error) {
	pts, err := Curve(genuine, impostor)
	if err != nil {
		return Report{}, err
	}
	r := Report{Genuine: len(genuine), Impostor: len(impostor)}
	r.EER, r.EERThreshold = eer(pts)
	r.FMR100 = bestFNMR(pts, 0.01)
	r.FMR1000 = bestFNMR(pts, 0.001)
	r.ZeroFMR = bestFNMR(pts, 0)
	return r, nil
}

// eer interpolates the crossing of the DET polyline with FMR = FNMR.
func eer(pts []Point) (float64, float64) {
	for k := 0; k+1 < len(pts); k++ {
		d0 := pts[k].FMR - pts[k].FNMR
		d1 := pts[k+1].FMR - pts[k+1].FNMR
		if d0 == 0 {
			return pts[k].FMR, pts[k].Threshold
		}
		if d0 > 0 && d1 <= 0 {
			a := d0 / (d0 - d1)
			return pts[k].FMR + a*(pts[k+1].FMR-pts[k].FMR), pts[k].Threshold
		}
	}
	// Unreachable: the first point has FNMR = 0 ≤ FMR... unless FMR = 0 there
	// too, which d0 == 0 handles; the last has FMR = 0, FNMR = 1.
	return 0, pts[0].Threshold
}

// bestFNMR is the lowest FNMR over operating points with FMR ≤ maxFMR.
func bestFNMR(pts []Point, maxFMR float64) float64 {
	best := 1.0
	for _, p := range pts {
		if p.FMR <= maxFMR+1e-12 && p.FNMR < best {
			best = p.FNMR
		}
	}
	return best
}

// ThresholdForFMR returns the lowest threshold whose FMR is ≤ maxFMR, with its
// operating point. Lower thresholds accept more genuine comparisons, so this is
// the operating point with the lowest FNMR under the FMR bound.
func ThresholdForFMR(genuine, impostor []float64, maxFMR float64) (Point, error) {
	pts, err := Curve(genuine, impostor)
	if err != nil {
		return Point{}, err
	}
	for _, p := range pts {
		if p.FMR <= maxFMR+1e-12 {
			return p, nil
		}
	}
	return pts[len(pts)-1], nil
}

// At returns the operating point at threshold t.
func At(genuine, impostor []float64, t float64) Point {
	p := Point{Threshold: t}
	for _, s := range genuine {
		if s < t {
			p.FNMR++
		}
	}
	for _, s := range impostor {
		if s >= t {
			p.FMR++
		}
	}
	if len(genuine) > 0 {
		p.FNMR /= float64(len(genuine))
	}
	if len(impostor) > 0 {
		p.FMR /= float64(len(impostor))
	}
	return p
}

// DET returns the detection error trade-off curve: x = FMR, y = FNMR, one point
// per operating point, in increasing FMR order. Points with FMR = 0 are kept;
// a log-scale plot should drop them.
func DET(pts []Point) (x, y []float64) {
	for k := len(pts) - 1; k >= 0; k-- {
		x = append(x, pts[k].FMR)
		y = append(y, pts[k].FNMR)
	}
	return x, y
}

// ROC returns the receiver operating characteristic: x = FMR, y = 1 − FNMR
// (the genuine acceptance rate), in increasing FMR order.
func ROC(pts []Point) (x, y []float64) {
	for k := len(pts) - 1; k >= 0; k-- {
		x = append(x, pts[k].FMR)
		y = append(y, 1-pts[k].FNMR)
	}
	return x, y
}
