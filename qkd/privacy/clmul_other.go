//go:build !amd64 || purego

package privacy

// mulBase sets z[:len(x)+len(y)] = x·y by schoolbook multiplication.
func mulBase(z, x, y []uint64) { mulBaseGeneric(z, x, y) }

func hasCLMULFast() bool { return false }

// mulRange sets z[:k1−k0] to words k0 … k1−1 of x·y.
func mulRange(z, x, y []uint64, k0, k1 int) { mulRangeGeneric(z, x, y, k0, k1) }
