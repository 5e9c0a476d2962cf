package fingerprint

import "syscall"

// threadCPUNanos returns the CPU time of the calling OS thread (the caller
// locks it), so that A/B benchmarks on a busy machine do not count the time
// spent waiting for a core.
func threadCPUNanos() (int64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0, false
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), true
}
