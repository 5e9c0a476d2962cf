//go:build amd64 && !purego

package privacy

import "golang.org/x/sys/cpu"

//go:noescape
func mulBaseAsm(z, x, y []uint64)

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
