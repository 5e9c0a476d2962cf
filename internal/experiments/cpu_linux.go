//go:build linux

package experiments

import (
	"os"
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

// postgresCPU is the CPU time (user + system) of every process on this
// machine named postgres (a PostgreSQL server's postmaster, backends and
// background workers), from /proc in USER_HZ ticks (100 a second on
// Linux): 10 ms resolution, so compare it over seconds. A backend that
// exits takes its time with it; the ledger's pooled connections live as
// long as a cell. ok is false when no such process is visible.
func postgresCPU() (time.Duration, bool) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	var ticks int64
	found := false
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		t, ok := procStatCPU(b, "postgres")
		if ok {
			ticks += t
			found = true
		}
	}
	return time.Duration(ticks) * (time.Second / 100), found
}
