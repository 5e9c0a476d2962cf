package experiments

import (
	"strconv"
	"strings"
	"time"
)

// serverCPUSince is the CPU time the processes of sample now (PID → USER_HZ
// ticks, as postgresCPU takes them) used since sample before: a process in
// both counts its growth, one started since (or a reused PID) counts whole. A process that
// exited in between (a closed connection's backend, pgbench's) takes its
// time with it, so it is left out rather than subtracted: the result
// undercounts such a process's last moments and is never negative.
func serverCPUSince(before, now map[int]int64) time.Duration {
	var ticks int64
	for pid, t := range now {
		if t0, ok := before[pid]; ok && t >= t0 {
			ticks += t - t0
		} else {
			ticks += t // new, or a reused PID (less time than before)
		}
	}
	return time.Duration(ticks) * (time.Second / 100)
}

// procStatCPU returns utime + stime (fields 14 and 15) of a /proc/PID/stat
// line whose command (field 2, in parentheses, which may itself hold
// spaces and parentheses) is comm.
func procStatCPU(stat []byte, comm string) (int64, bool) {
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || s[open+1:end] != comm {
		return 0, false
	}
	f := strings.Fields(s[end+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || u < 0 || st < 0 {
		return 0, false
	}
	return u + st, true
}
