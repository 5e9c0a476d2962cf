package fvc

import (
	"errors"
	"fmt"

	"github.com/qshield/qshield/fingerprint/eval"
)

// Scores are the genuine and impostor scores of one parameter setting on one
// database.
type Scores struct {
	Genuine, Impostor []float64
}

// Fold is one round of leave-one-database-out: parameters and threshold
// chosen on every database but Left, then frozen and measured on Left.
type Fold struct {
	Left string // the held-out database
	// Chosen is the index of the candidate with the lowest mean EER over the
	// tuning databases (ties: the earlier candidate); with LeaveOneOutRobust
	// the lowest mean of (EER + EER on the distorted copy) / 2.
	Chosen      int
	TuneMeanEER float64
	// TuneMeanEERDistorted is the chosen candidate's mean EER over the
	// distorted copies of the tuning databases (LeaveOneOutRobust only).
	TuneMeanEERDistorted float64 `json:",omitempty"`
	// Threshold is the lowest score whose pooled FMR over the tuning
	// databases is ≤ the target, TuneFMR and TuneFNMR its pooled rates there.
	Threshold          float64
	TuneFMR, TuneFNMR  float64
	TuneImpostors      int
	Report             eval.Report // Chosen on Left (never seen in tuning)
	LeftFMR, LeftFNMR  float64     // at Threshold on Left
	LeftImpostorsAbove int         // impostor scores ≥ Threshold on Left
	// EachThreshold is the stricter rule: the lowest threshold with FMR ≤
	// the target on every tuning database separately (ThresholdEach);
	// EachLeftFMR and EachLeftFNMR are its rates on Left.
	EachThreshold             float64
	EachLeftFMR, EachLeftFNMR float64
}

// ThresholdEach returns the lowest threshold whose FMR is ≤ maxFMR on every
// score set separately (the largest of their ThresholdForFMR thresholds): one
// threshold that holds the bound on each sensor it was chosen on, not only on
// their pool.
func ThresholdEach(sets []Scores, maxFMR float64) (float64, error) {
	if len(sets) == 0 {
		return 0, eval.ErrNoScores
	}
	var t float64
	for k, s := range sets {
		pt, err := eval.ThresholdForFMR(s.Genuine, s.Impostor, maxFMR)
		if err != nil {
			return 0, err
		}
		if k == 0 || pt.Threshold > t {
			t = pt.Threshold
		}
	}
	return t, nil
}

// ErrShape is returned when a score table is not candidates × databases.
var ErrShape = errors.New("fvc: score table is not candidates × databases")

// LeaveOneOut runs leave-one-database-out selection over scores[c][d]
// (candidate c on database d, names[d]): for each database, the candidate
// with the lowest mean EER over the other databases is chosen, the threshold
// is set for pooled FMR ≤ maxFMR on those databases, and both are then
// measured on the held-out one. Nothing of the held-out database enters its
// own fold's choices.
func LeaveOneOut(scores [][]Scores, names []string, maxFMR float64) ([]Fold, error) {
	return leaveOneOut(scores, nil, names, maxFMR)
}

// LeaveOneOutRobust is LeaveOneOut with a selection that also asks for
// robustness: distorted[c][d] are candidate c's scores on a distorted copy
// of database d (made from d's own templates), and each fold chooses the
// candidate with the lowest mean over the tuning databases of
// (EER + EER on the distorted copy) / 2. The threshold and every held-out
// figure still come from the undistorted scores; the held-out database's
// distorted copy, like the database itself, enters no choice of its own
// fold. The distorted copies used here should not be the distortion test
// set: draw them with other seeds.
func LeaveOneOutRobust(scores, distorted [][]Scores, names []string, maxFMR float64) ([]Fold, error) {
	if distorted == nil {
		return nil, fmt.Errorf("%w: no distorted scores", ErrShape)
	}
	return leaveOneOut(scores, distorted, names, maxFMR)
}

// eerTable returns the EER of every candidate on every database.
func eerTable(scores [][]Scores, names []string) ([][]float64, error) {
	nd := len(names)
	if len(scores) == 0 || nd < 2 {
		return nil, fmt.Errorf("%w: %d candidates, %d databases", ErrShape, len(scores), nd)
	}
	eers := make([][]float64, len(scores))
	for c, row := range scores {
		if len(row) != nd {
			return nil, fmt.Errorf("%w: candidate %d has %d databases, want %d", ErrShape, c, len(row), nd)
		}
		eers[c] = make([]float64, nd)
		for d, s := range row {
			r, err := eval.Evaluate(s.Genuine, s.Impostor)
			if err != nil {
				return nil, fmt.Errorf("fvc: candidate %d, %s: %w", c, names[d], err)
			}
			eers[c][d] = r.EER
		}
	}
	return eers, nil
}

func leaveOneOut(scores, distorted [][]Scores, names []string, maxFMR float64) ([]Fold, error) {
	nd := len(names)
	eers, err := eerTable(scores, names)
	if err != nil {
		return nil, err
	}
	var deers [][]float64
	if distorted != nil {
		if len(distorted) != len(scores) {
			return nil, fmt.Errorf("%w: %d candidates distorted, %d undistorted", ErrShape, len(distorted), len(scores))
		}
		if deers, err = eerTable(distorted, names); err != nil {
			return nil, fmt.Errorf("fvc: distorted: %w", err)
		}
	}
	folds := make([]Fold, nd)
	for left := 0; left < nd; left++ {
		f := Fold{Left: names[left], Chosen: -1}
		best := 0.0
		for c := range scores {
			var sum, dsum float64
			for d := 0; d < nd; d++ {
				if d != left {
					sum += eers[c][d]
					if deers != nil {
						dsum += deers[c][d]
					}
				}
			}
			mean, dmean := sum/float64(nd-1), dsum/float64(nd-1)
			crit := mean
			if deers != nil {
				crit = (mean + dmean) / 2
			}
			if f.Chosen < 0 || crit < best {
				f.Chosen, f.TuneMeanEER, best = c, mean, crit
				if deers != nil {
					f.TuneMeanEERDistorted = dmean
				}
			}
		}
		var g, im []float64
		var tune []Scores
		for d := 0; d < nd; d++ {
			if d != left {
				g = append(g, scores[f.Chosen][d].Genuine...)
				im = append(im, scores[f.Chosen][d].Impostor...)
				tune = append(tune, scores[f.Chosen][d])
			}
		}
		pt, err := eval.ThresholdForFMR(g, im, maxFMR)
		if err != nil {
			return nil, fmt.Errorf("fvc: fold %s: %w", names[left], err)
		}
		f.Threshold, f.TuneFMR, f.TuneFNMR, f.TuneImpostors = pt.Threshold, pt.FMR, pt.FNMR, len(im)
		s := scores[f.Chosen][left]
		if f.Report, err = eval.Evaluate(s.Genuine, s.Impostor); err != nil {
			return nil, fmt.Errorf("fvc: fold %s: %w", names[left], err)
		}
		op := eval.At(s.Genuine, s.Impostor, f.Threshold)
		f.LeftFMR, f.LeftFNMR = op.FMR, op.FNMR
		for _, v := range s.Impostor {
			if v >= f.Threshold {
				f.LeftImpostorsAbove++
			}
		}
		if f.EachThreshold, err = ThresholdEach(tune, maxFMR); err != nil {
			return nil, fmt.Errorf("fvc: fold %s: %w", names[left], err)
		}
		op = eval.At(s.Genuine, s.Impostor, f.EachThreshold)
		f.EachLeftFMR, f.EachLeftFNMR = op.FMR, op.FNMR
		folds[left] = f
	}
	return folds, nil
}
