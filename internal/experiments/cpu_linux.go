//go:build linux

package experiments

import (
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time consumed by the calling OS thread (the caller
// locks its goroutine to the thread), so measurements are not inflated by
// other processes on a shared machine.
func threadCPU() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// processCPU is the CPU time (user + system) of the whole process.
func processCPU() (time.Duration, bool) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// postgresCPU samples the CPU time (user + system) of every process on
// this machine named postgres (a PostgreSQL server's postmaster, backends
// and background workers) by PID, from /proc in USER_HZ ticks (100 a second
// on Linux): 10 ms resolution, so compare samples seconds apart, with
// serverCPUSince. ok is false when no such process is visible.
func postgresCPU() (map[int]int64, bool) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	out := map[int]int64{}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		if t, ok := procStatCPU(b, "postgres"); ok {
			out[pid] = t
		}
	}
	return out, len(out) > 0
}
