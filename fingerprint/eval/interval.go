package eval

import (
	"fmt"
	"math"
)

// ClopperPearson returns the exact (Clopper–Pearson) two-sided confidence
// interval, at confidence level conf (e.g. 0.95), for a rate observed as k
// events in n independent trials: lo is the p with P(X ≥ k | p) = (1−conf)/2
// (0 when k = 0) and hi the p with P(X ≤ k | p) = (1−conf)/2 (1 when k = n).
//
// Impostor comparisons of one database are not independent — every
// impression of a finger is compared with every impression of another — so
// for FMR the interval over comparisons is too narrow; the interval over
// finger pairs (k pairs of fingers with any false match out of all pairs)
// is the conservative companion. Both are reported by the fingerprint
// experiment.
func ClopperPearson(k, n int, conf float64) (lo, hi float64, err error) {
	if n <= 0 || k < 0 || k > n || !(conf > 0 && conf < 1) {
		return 0, 0, fmt.Errorf("eval: Clopper–Pearson needs 0 ≤ k ≤ n, n > 0, 0 < conf < 1 (k=%d n=%d conf=%v)", k, n, conf)
	}
	a := (1 - conf) / 2
	lo, hi = 0, 1
	if k > 0 {
		// P(X ≥ k | p) grows with p.
		lo = bisect(func(p float64) float64 { return 1 - binomCDF(k-1, n, p) - a })
	}
	if k < n {
		// P(X ≤ k | p) falls with p.
		hi = bisect(func(p float64) float64 { return a - binomCDF(k, n, p) })
	}
	return lo, hi, nil
}

// bisect finds the root in [0, 1] of an increasing function f.
func bisect(f func(float64) float64) float64 {
	lo, hi := 0.0, 1.0
	for range 200 {
		mid := (lo + hi) / 2
		if f(mid) < 0 {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo < 1e-14 {
			break
		}
	}
	return (lo + hi) / 2
}

// binomCDF returns P(X ≤ k) for X ~ Binomial(n, p), summing the terms in log
// space.
func binomCDF(k, n int, p float64) float64 {
	if k < 0 {
		return 0
	}
	if k >= n || p <= 0 {
		return 1
	}
	if p >= 1 {
		return 0
	}
	lgN, _ := math.Lgamma(float64(n + 1))
	lp, lq := math.Log(p), math.Log1p(-p)
	var sum float64
	for i := 0; i <= k; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgNI, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lgN - lgI - lgNI + float64(i)*lp + float64(n-i)*lq)
	}
	return math.Min(sum, 1)
}
