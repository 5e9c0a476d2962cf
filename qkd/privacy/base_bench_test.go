package privacy

import (
	"math/rand/v2"
	"testing"
)

func BenchmarkMulBase32(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	x, y := randVec(rng, 64*32), randVec(rng, 64*32)
	z := make([]uint64, 64)
	for i := 0; i < b.N; i++ {
		mulBase(z, x, y)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1024, "ns/clmul")
}
