//go:build unix

package matcher

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) the process has used: the benchmark reports it beside
// wall time, which other work on the machine inflates more.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
