//go:build !linux

package experiments

import "time"

func threadCPU() (time.Duration, bool)   { return 0, false }
func processCPU() (time.Duration, bool)  { return 0, false }
func postgresCPU() (map[int]int64, bool) { return nil, false }
