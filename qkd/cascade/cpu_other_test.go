//go:build !unix

package cascade

import "time"

func cpuTime() time.Duration { return 0 }
