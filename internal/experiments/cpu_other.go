//go:build !linux

package experiments

import "time"

func threadCPU() (time.Duration, bool)   { return 0, false }
func processCPU() (time.Duration, bool)  { return 0, false }
func postgresCPU() (time.Duration, bool) { return 0, false }
