//go:build !linux

package fingerprint

func threadCPUNanos() (int64, bool) { return 0, false }
