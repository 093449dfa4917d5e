//go:build !unix

package matcher

import "time"

// cpuTime is not measured on this system; the benchmark reports zero.
func cpuTime() time.Duration { return 0 }
