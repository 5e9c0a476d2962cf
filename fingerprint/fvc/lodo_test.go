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

// TestLeaveOneOutRobustWeighsDistortion: candidate 0 is perfect on the
// undistorted databases and a little worse than candidate 1 on the distorted
// copies of A, B and D; candidate 1 fails on C's distorted copy only. Plain
// selection picks 0 everywhere. Robust selection: folds A, B and D see C's
// copy and keep 0; fold C must pick 1, which it would not if it looked at
// its own held-out copy.
func TestLeaveOneOutRobustWeighsDistortion(t *testing.T) {
	perfect := scores(seq(10, 0.01, 100), seq(0, 0.001, 1000))
	slight := scores(append(seq(10, 0.01, 99), 0.5), seq(0, 0.001, 1000))            // EER ≈ 1%
	slight3 := scores(append(seq(10, 0.01, 97), 0.5, 0.5, 0.5), seq(0, 0.001, 1000)) // EER ≈ 3%
	bad := scores(seq(0, 0.01, 100), seq(0, 0.001, 1000))
	names := []string{"A", "B", "C", "D"}
	table := [][]fvc.Scores{
		{perfect, perfect, perfect, perfect}, // candidate 0
		{slight, slight, slight, slight},     // candidate 1
	}
	dist := [][]fvc.Scores{
		{slight3, slight3, perfect, slight3},
		{slight, slight, bad, slight},
	}
	plain, err := fvc.LeaveOneOut(table, names, 0.001)
	if err != nil {
		t.Fatal(err)
	}
	robust, err := fvc.LeaveOneOutRobust(table, dist, names, 0.001)
	if err != nil {
		t.Fatal(err)
	}
	for d := range names {
		if plain[d].Chosen != 0 {
			t.Errorf("plain fold %s chose %d, want 0", names[d], plain[d].Chosen)
		}
		want := 0
		if names[d] == "C" {
			want = 1
		}
		if robust[d].Chosen != want {
			t.Errorf("robust fold %s chose %d, want %d", names[d], robust[d].Chosen, want)
		}
	}
	if e := robust[2].TuneMeanEERDistorted; e > 0.02 {
		t.Errorf("fold C tuning distorted EER %v, want candidate 1's on A, B, D (≈ 1%%)", e)
	}
	// The threshold still comes from the undistorted scores.
	if robust[2].Threshold > 1 {
		t.Errorf("fold C threshold %v, want from undistorted impostors (< 1)", robust[2].Threshold)
	}
	if _, err := fvc.LeaveOneOutRobust(table, dist[:1], names, 0.001); !errors.Is(err, fvc.ErrShape) {
		t.Errorf("ragged distorted table: %v", err)
	}
	if _, err := fvc.LeaveOneOutRobust(table, nil, names, 0.001); !errors.Is(err, fvc.ErrShape) {
		t.Errorf("no distorted table: %v", err)
	}
}
