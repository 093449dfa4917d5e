package main

import (
	"bufio"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// batchGC sets the Go collector for a batch command whose live heap is small against the
// allocation it does (match: the snapshot, a group's decisions, the rows of the transactions in
// flight): at the default GOGC=100 a full match of 200,000 firms collected every few megabytes,
// and on MySQL, where the server needs both cores for the inserts, the collector's marking (a
// fifth of the process's CPU) was taken from the server. GOGC=400 lets the heap grow to five
// times the live data between collections; a soft memory limit of half the machine's memory (or
// of the cgroup's limit, when lower) makes the collector run sooner rather than let a large
// registry's heap grow past that. GOGC or GOMEMLIMIT set in the environment win (docs/matcher.md,
// fourteenth session: 200,000 firms × 140 policies on MariaDB, the process's CPU 6.4–7.1 s →
// 4.6–4.8 s).
func batchGC() {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	mem := physicalMemory()
	if mem <= 0 {
		return
	}
	debug.SetMemoryLimit(mem / 2)
	debug.SetGCPercent(400)
}

// physicalMemory is the machine's memory (MemTotal) or the process's cgroup limit when lower;
// 0 when neither can be read.
func physicalMemory() int64 {
	var total int64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if f := strings.Fields(s.Text()); len(f) >= 2 && f[0] == "MemTotal:" { // "MemTotal: 24578048 kB"
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					total = kb * 1024
				}
				break
			}
		}
		f.Close()
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			total = n
		}
	}
	return total
}
