//go:build !linux

package trial

import "time"

var start = time.Now()

// ThreadCPU falls back to wall time where per-thread CPU time is unavailable.
func ThreadCPU() time.Duration { return time.Since(start) }

// CPUClock reports whether ThreadCPU measures CPU time (else wall time).
const CPUClock = false
