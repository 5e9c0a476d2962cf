package eval

import (
	"math"
	"testing"
)

func TestClopperPearsonKnownAnswers(t *testing.T) {
	for _, c := range []struct {
		k, n   int
		lo, hi float64
	}{
		// k = 0: hi = 1 − (α/2)^(1/n) in closed form.
		{0, 2880, 0, 1 - math.Pow(0.025, 1.0/2880)},
		{0, 45, 0, 1 - math.Pow(0.025, 1.0/45)},
		// k = n: lo = (α/2)^(1/n).
		{10, 10, math.Pow(0.025, 0.1), 1},
		// Textbook values (5 of 100: 0.0164–0.1128; 1 of 10: 0.0025–0.4450).
		{5, 100, 0.016432, 0.112835},
		{1, 10, 0.002529, 0.445016},
	} {
		lo, hi, err := ClopperPearson(c.k, c.n, 0.95)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(lo-c.lo) > 5e-6 || math.Abs(hi-c.hi) > 5e-6 {
			t.Errorf("%d of %d: [%.6f, %.6f], want [%.6f, %.6f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

func TestClopperPearsonBadInput(t *testing.T) {
	for _, c := range []struct {
		k, n int
		conf float64
	}{{-1, 10, 0.95}, {11, 10, 0.95}, {0, 0, 0.95}, {1, 10, 1}, {1, 10, 0}, {1, 10, math.NaN()}} {
		if _, _, err := ClopperPearson(c.k, c.n, c.conf); err == nil {
			t.Errorf("k=%d n=%d conf=%v: no error", c.k, c.n, c.conf)
		}
	}
}
