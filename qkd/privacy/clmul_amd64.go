//go:build amd64 && !purego

package privacy

import "golang.org/x/sys/cpu"

//go:noescape
func mulBaseAsm(z, x, y []uint64)

//go:noescape
func mulRangeAsm(z, x, y []uint64, k0, k1 int)

// mulRange sets z[:k1−k0] to words k0 … k1−1 of x·y.
func mulRange(z, x, y []uint64, k0, k1 int) {
	if hasCLMUL {
		mulRangeAsm(z, x, y, k0, k1)
		return
	}
	mulRangeGeneric(z, x, y, k0, k1)
}

var hasCLMUL = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41

// mulBase sets z[:len(x)+len(y)] = x·y by schoolbook multiplication.
func mulBase(z, x, y []uint64) {
	if hasCLMUL {
		mulBaseAsm(z, x, y)
		return
	}
	mulBaseGeneric(z, x, y)
}

func hasCLMULFast() bool { return hasCLMUL }
