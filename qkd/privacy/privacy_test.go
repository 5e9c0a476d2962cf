package privacy

import (
	"math/rand/v2"
	"testing"
)

func randVec(rng *rand.Rand, nbits int) []uint64 {
	v := make([]uint64, (nbits+63)/64)
	for i := range v {
		v[i] = rng.Uint64()
	}
	maskTail(v, nbits)
	return v
}

func bit(v []uint64, i int) uint64 { return v[i>>6] >> (uint(i) & 63) & 1 }

// matrixHash builds the Toeplitz matrix T[i][j] = s[i−j+n−1] explicitly and
// multiplies: the definition, independent of both implementations.
func matrixHash(key []uint64, n int, seed []uint64, m int) []uint64 {
	out := make([]uint64, (m+63)/64)
	for i := 0; i < m; i++ {
		var acc uint64
		for j := 0; j < n; j++ {
			acc ^= bit(seed, i-j+n-1) & bit(key, j)
		}
		out[i>>6] |= acc << (uint(i) & 63)
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestToeplitzKnownAnswer: a 3×4 example worked by hand. Seed s0..s5 =
// 1,0,1,1,0,0; T[i][j] = s[i−j+3]:
//
//	row 0: s3 s2 s1 s0 = 1 1 0 1
//	row 1: s4 s3 s2 s1 = 0 1 1 0
//	row 2: s5 s4 s3 s2 = 0 0 1 1
//
// x = (x0..x3) = 1,1,1,0 → y = (1⊕1⊕0, 0⊕1⊕1, 0⊕0⊕1) = (0, 0, 1).
func TestToeplitzKnownAnswer(t *testing.T) {
	seed := []uint64{0b001101} // s0=1 s1=0 s2=1 s3=1 s4=0 s5=0
	key := []uint64{0b0111}    // x0=1 x1=1 x2=1 x3=0
	want := []uint64{0b100}
	for name, f := range map[string]func([]uint64, int, []uint64, int) ([]uint64, error){"fast": Hash, "direct": HashDirect} {
		got, err := f(key, 4, seed, 3)
		if err != nil {
			t.Fatal(err)
		}
		if !equal(got, want) {
			t.Errorf("%s: got %b, want %b", name, got, want)
		}
	}
	if got := matrixHash(key, 4, seed, 3); !equal(got, want) {
		t.Errorf("matrix: got %b, want %b", got, want)
	}
}

func TestToeplitzFastMatchesDirect(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	sizes := [][2]int{{1, 1}, {5, 3}, {64, 64}, {65, 1}, {127, 64}, {200, 129}, {1000, 333}, {4096, 2048}, {10007, 5003}, {70000, 20001}}
	for _, sz := range sizes {
		n, m := sz[0], sz[1]
		key := randVec(rng, n)
		seed := randVec(rng, SeedBits(n, m))
		fast, err := Hash(key, n, seed, m)
		if err != nil {
			t.Fatal(err)
		}
		direct, err := HashDirect(key, n, seed, m)
		if err != nil {
			t.Fatal(err)
		}
		if !equal(fast, direct) {
			t.Fatalf("n=%d m=%d: fast and direct differ", n, m)
		}
		if n <= 1000 {
			if mat := matrixHash(key, n, seed, m); !equal(mat, direct) {
				t.Fatalf("n=%d m=%d: direct differs from the explicit matrix", n, m)
			}
		}
	}
}

func TestPolyMulMatchesSchoolbook(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, sz := range [][2]int{{1, 1}, {3, 7}, {24, 24}, {25, 25}, {50, 49}, {100, 37}, {513, 700}} {
		x := randVec(rng, 64*sz[0])
		y := randVec(rng, 64*sz[1])
		want := make([]uint64, len(x)+len(y))
		mulBaseGeneric(want, x, y)
		if got := polyMul(x, y); !equal(got, want) {
			t.Fatalf("%v: Karatsuba/assembly product differs from the portable schoolbook", sz)
		}
		for _, kr := range [][2]int{{0, len(want)}, {1, 3}, {len(x) - 1, len(want) - 1}, {len(want) - 1, len(want)}} {
			if kr[0] < 0 || kr[0] >= kr[1] || kr[1] > len(want) {
				continue
			}
			part := make([]uint64, kr[1]-kr[0])
			mulRange(part, x, y, kr[0], kr[1])
			if !equal(part, want[kr[0]:kr[1]]) {
				t.Fatalf("%v: mulRange%v differs", sz, kr)
			}
		}
		got2 := make([]uint64, len(x)+len(y))
		mulBase(got2, x, y)
		if !equal(got2, want) {
			t.Fatalf("%v: base product differs from the portable schoolbook", sz)
		}
	}
}

func TestClmul64(t *testing.T) {
	// (t^63 + 1)·(t + 1) = t^64 + t^63 + t + 1.
	hi, lo := clmul64(1<<63|1, 3)
	if hi != 1 || lo != 1<<63|3 {
		t.Fatalf("clmul64 = %x:%x", hi, lo)
	}
}

func TestGFMul(t *testing.T) {
	// t^63 · t = t^64 ≡ t^4 + t^3 + t + 1 = 0x1b.
	if got := gfMul(1<<63, 2); got != 0x1b {
		t.Fatalf("t^63·t = %#x, want 0x1b", got)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 1000; i++ {
		a, b, c := rng.Uint64(), rng.Uint64(), rng.Uint64()
		if gfMul(gfMul(a, b), c) != gfMul(a, gfMul(b, c)) {
			t.Fatal("multiplication not associative")
		}
		if gfMul(a, b^c) != gfMul(a, b)^gfMul(a, c) {
			t.Fatal("multiplication not distributive")
		}
		if gfMul(a, 1) != a {
			t.Fatal("1 is not the identity")
		}
	}
}

func TestTagDetectsDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(20000)
		a := randVec(rng, n)
		b := append([]uint64(nil), a...)
		// Flip 1 to 3 bits: a residual Cascade error pattern.
		for k := 0; k <= rng.IntN(3); k++ {
			i := rng.IntN(n)
			b[i>>6] ^= 1 << (uint(i) & 63)
		}
		r, err := NewTagPoint()
		if err != nil {
			t.Fatal(err)
		}
		ta, _ := Tag(a, n, r)
		tb, _ := Tag(b, n, r)
		same := equal(a, b)
		if (ta == tb) != same {
			t.Fatalf("n=%d: tags equal=%v but keys equal=%v", n, ta == tb, same)
		}
		// Bits past n do not matter.
		c := append([]uint64(nil), a...)
		if n&63 != 0 {
			c[len(c)-1] ^= ^uint64(0) << (uint(n) & 63)
		}
		tc, _ := Tag(c, n, r)
		if tc != ta {
			t.Fatal("tag depends on bits past the length")
		}
	}
}

func TestBadParameters(t *testing.T) {
	key := make([]uint64, 2)
	seed := make([]uint64, 4)
	for _, c := range [][2]int{{0, 1}, {100, 0}, {100, 101}, {129, 10}, {128, 200}} {
		if _, err := Hash(key, c[0], seed, c[1]); err == nil {
			t.Errorf("Hash(n=%d, m=%d) accepted", c[0], c[1])
		}
	}
	if _, err := Tag(key, 129, 1); err == nil {
		t.Error("Tag accepted a too-short key")
	}
}

func BenchmarkToeplitz(b *testing.B) {
	for _, ratio := range []float64{0.125, 0.25, 0.5} {
		n := 1_000_000
		m := int(float64(n) * ratio)
		b.Run("n=1e6/m="+itoa(m), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			key := randVec(rng, n)
			seed := randVec(rng, SeedBits(n, m))
			b.SetBytes(int64(n / 8))
			b.ResetTimer()
			c0 := cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := Hash(key, n, seed, m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mbit/s")
			if c := cpuTime() - c0; c > 0 {
				b.ReportMetric(float64(n)*float64(b.N)/c.Seconds()/1e6, "Mbit/cpu-s")
			}
		})
	}
}

func BenchmarkTag(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	n := 10000
	key := randVec(rng, n)
	b.SetBytes(int64(n / 8))
	for i := 0; i < b.N; i++ {
		_, _ = Tag(key, n, 12345)
	}
}

func itoa(x int) string {
	if x == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for x > 0 {
		i--
		buf[i] = byte('0' + x%10)
		x /= 10
	}
	return string(buf[i:])
}
