package fingerprint

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bruteAssign returns the largest total weight of a one-to-one assignment of
// the n×m matrix w, by trying every injective map of the smaller side.
func bruteAssign(w []float32, n, m int) float64 {
	best := 0.0
	usedCol := make([]bool, m)
	usedRow := make([]bool, n)
	var rec func(i int, sum float64)
	if n <= m {
		rec = func(i int, sum float64) {
			if i == n {
				best = math.Max(best, sum)
				return
			}
			for j := 0; j < m; j++ {
				if !usedCol[j] {
					usedCol[j] = true
					rec(i+1, sum+float64(w[i*m+j]))
					usedCol[j] = false
				}
			}
		}
	} else {
		rec = func(j int, sum float64) {
			if j == m {
				best = math.Max(best, sum)
				return
			}
			for i := 0; i < n; i++ {
				if !usedRow[i] {
					usedRow[i] = true
					rec(j+1, sum+float64(w[i*m+j]))
					usedRow[i] = false
				}
			}
		}
	}
	rec(0, 0)
	return best
}

// checkAssign verifies that rowTo is a valid assignment of the n×m matrix
// (every column used at most once, min(n, m) rows assigned) and returns its
// total weight.
func checkAssign(t *testing.T, w []float32, n, m int, rowTo []int32) float64 {
	t.Helper()
	if len(rowTo) != n {
		t.Fatalf("assignment has %d rows, want %d", len(rowTo), n)
	}
	seen := make([]bool, m)
	assigned := 0
	var sum float64
	for i, j := range rowTo {
		if j < 0 {
			continue
		}
		if int(j) >= m {
			t.Fatalf("row %d assigned to column %d of %d", i, j, m)
		}
		if seen[j] {
			t.Fatalf("column %d assigned twice: %v", j, rowTo)
		}
		seen[j] = true
		assigned++
		sum += float64(w[i*m+int(j)])
	}
	if assigned != min(n, m) {
		t.Fatalf("%d rows assigned, want %d: %v", assigned, min(n, m), rowTo)
	}
	return sum
}

// greedyAssign is the greedy one-to-one assignment the matcher used before
// (best weight first); the optimum can never be below it.
func greedyAssign(w []float32, n, m int) float64 {
	usedR, usedC := make([]bool, n), make([]bool, m)
	var sum float64
	for {
		bi, bj := -1, -1
		for i := 0; i < n; i++ {
			for j := 0; j < m; j++ {
				if !usedR[i] && !usedC[j] && (bi < 0 || w[i*m+j] > w[bi*m+bj]) {
					bi, bj = i, j
				}
			}
		}
		if bi < 0 {
			return sum
		}
		usedR[bi], usedC[bj] = true, true
		sum += float64(w[bi*m+bj])
	}
}

func TestMaxAssignMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 1))
	var s assignScratch
	for trial := 0; trial < 3000; trial++ {
		n, m := 1+rng.IntN(7), 1+rng.IntN(7)
		w := make([]float32, n*m)
		for k := range w {
			switch trial % 3 {
			case 0: // continuous weights in [0, 1)
				w[k] = rng.Float32()
			case 1: // few distinct values: many ties
				w[k] = float32(rng.IntN(3)) / 2
			default: // sparse, like the matcher's similarity matrix
				if rng.IntN(3) == 0 {
					w[k] = rng.Float32()
				}
			}
		}
		got := checkAssign(t, w, n, m, maxAssign(w, n, m, &s))
		want := bruteAssign(w, n, m)
		if math.Abs(got-want) > 1e-5 {
			t.Fatalf("trial %d, %d×%d %v: total %g, optimum %g", trial, n, m, w, got, want)
		}
		if g := greedyAssign(w, n, m); got < g-1e-5 {
			t.Fatalf("trial %d: optimal %g below greedy %g", trial, got, g)
		}
	}
}

// TestMaxAssignBeatsGreedy is the case greedy gets wrong: taking the single
// best pair (0.9) forces two poor ones, the optimum pairs crosswise.
func TestMaxAssignBeatsGreedy(t *testing.T) {
	w := []float32{
		0.9, 0.8,
		0.8, 0.0,
	}
	var s assignScratch
	rowTo := maxAssign(w, 2, 2, &s)
	if rowTo[0] != 1 || rowTo[1] != 0 {
		t.Fatalf("assignment %v, want [1 0]", rowTo)
	}
	if g := greedyAssign(w, 2, 2); g != float64(float32(0.9)) {
		t.Fatalf("greedy total %g, want 0.9", g)
	}
}

func TestMaxAssignEmpty(t *testing.T) {
	var s assignScratch
	if r := maxAssign(nil, 0, 5, &s); len(r) != 0 {
		t.Fatalf("0×5: %v", r)
	}
	if r := maxAssign(nil, 3, 0, &s); len(r) != 3 || r[0] != -1 || r[1] != -1 || r[2] != -1 {
		t.Fatalf("3×0: %v", r)
	}
}

// FuzzMaxAssign decodes a matrix from the input (first two bytes: shape up
// to 6×6, then one byte per weight) and asserts that the assignment is valid,
// never below greedy, and equal to the brute-force optimum.
func FuzzMaxAssign(f *testing.F) {
	f.Add([]byte{2, 2, 230, 204, 204, 0})
	f.Add([]byte{3, 5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{6, 1, 9, 9, 9, 9, 9, 9})
	f.Add([]byte{0, 4})
	var s assignScratch
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		n, m := int(data[0])%7, int(data[1])%7
		w := make([]float32, n*m)
		for k := range w {
			if 2+k < len(data) {
				w[k] = float32(data[2+k]) / 255
			}
		}
		rowTo := maxAssign(w, n, m, &s)
		got := checkAssign(t, w, n, m, rowTo)
		if want := bruteAssign(w, n, m); math.Abs(got-want) > 1e-5 {
			t.Fatalf("%d×%d %v: total %g, optimum %g", n, m, w, got, want)
		}
		if g := greedyAssign(w, n, m); got < g-1e-5 {
			t.Fatalf("optimal %g below greedy %g", got, g)
		}
	})
}
