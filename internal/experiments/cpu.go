package experiments

import (
	"strconv"
	"strings"
)

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
