package fvc_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qshield/qshield/fingerprint/fvc"
)

func scores(genuine, impostor []float64) fvc.Scores {
	return fvc.Scores{Genuine: genuine, Impostor: impostor}
}

func seq(lo, step float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = lo + step*float64(i)
	}
	return out
}

// TestLeaveOneOutNeverLooksAtTheHeldOutDatabase builds a table where
// candidate 1 is perfect on database C and poor elsewhere, candidate 0 good
// everywhere but C: the fold holding C out must still choose candidate 0,
// and the threshold must come from the other databases only.
func TestLeaveOneOutNeverLooksAtTheHeldOutDatabase(t *testing.T) {
	good := scores(seq(10, 0.01, 100), seq(0, 0.001, 1000))    // separated: EER 0
	bad := scores(seq(0, 0.01, 100), seq(0, 0.001, 1000))      // overlapping
	highImp := scores(seq(10, 0.01, 100), seq(5, 0.001, 1000)) // separated, impostors higher
	table := [][]fvc.Scores{
		{good, good, bad, good},  // candidate 0
		{bad, bad, highImp, bad}, // candidate 1: only good on C
	}
	names := []string{"A", "B", "C", "D"}
	folds, err := fvc.LeaveOneOut(table, names, 0.001)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range folds {
		if f.Chosen != 0 {
			t.Errorf("fold %s chose candidate %d", f.Left, f.Chosen)
		}
	}
	c := folds[2]
	if c.Left != "C" || c.Report.EER < 0.1 {
		t.Fatalf("fold C: %+v (the held-out database must be measured with the frozen choice)", c)
	}
	// Threshold from A, B, D (impostors 0..0.999): FMR ≤ 0.1% of 3000 allows
	// 3 scores ≥ t, so t is the 4th-highest impostor score's successor.
	if c.Threshold > 1 || c.Threshold < 0.99 {
		t.Errorf("fold C threshold %v, want from the tuning databases (≈ 0.998)", c.Threshold)
	}
	if _, err := fvc.LeaveOneOut([][]fvc.Scores{{good}}, names, 0.001); !errors.Is(err, fvc.ErrShape) {
		t.Errorf("ragged table: %v", err)
	}
}

func TestThresholdEachHoldsOnEverySet(t *testing.T) {
	low := scores(seq(10, 0.01, 100), seq(0, 0.001, 1000))
	high := scores(seq(10, 0.01, 100), seq(5, 0.001, 1000))
	th, err := fvc.ThresholdEach([]fvc.Scores{low, high}, 0.001)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []fvc.Scores{low, high} {
		n := 0
		for _, v := range s.Impostor {
			if v >= th {
				n++
			}
		}
		if n > 1 {
			t.Errorf("threshold %v lets %d of 1000 impostors through", th, n)
		}
	}
	if _, err := fvc.ThresholdEach(nil, 0.001); err == nil {
		t.Error("no score sets accepted")
	}
}

func TestDigestNamesTheData(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"DB1_B", "DB2_B", "DB3_B", "DB4_B"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
		writeSynthetic(t, filepath.Join(root, d), 2, 2)
	}
	d1, err := fvc.Digest(root)
	if err != nil {
		t.Fatal(err)
	}
	if d1 == fvc.FVC2002SetBDigest {
		t.Fatal("synthetic data has the FVC2002 digest")
	}
	p := filepath.Join(root, "DB3_B", "101_1.iso")
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o644)
	if d2, err := fvc.Digest(root); err != nil || d2 == d1 {
		t.Fatalf("one changed byte left the digest unchanged (%v)", err)
	}
	if _, err := fvc.Digest(t.TempDir()); !errors.Is(err, fvc.ErrNoData) {
		t.Fatalf("empty root: %v", err)
	}
}
