//go:build !amd64 || purego

package privacy

// mulBase sets z[:len(x)+len(y)] = x·y by schoolbook multiplication.
func mulBase(z, x, y []uint64) { mulBaseGeneric(z, x, y) }

func hasCLMULFast() bool { return false }
