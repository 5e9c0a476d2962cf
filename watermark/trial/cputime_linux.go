//go:build linux

package trial

import (
	"time"

	"golang.org/x/sys/unix"
)

// ThreadCPU returns the CPU time consumed by the calling OS thread
// (CLOCK_THREAD_CPUTIME_ID). Callers lock the goroutine to its thread
// (runtime.LockOSThread), so per-frame processing is measured in CPU time and
// does not depend on what else the machine runs.
func ThreadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// CPUClock reports whether ThreadCPU measures CPU time (else wall time).
const CPUClock = true
