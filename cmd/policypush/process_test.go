package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The process side of the end-to-end tests, in one place: the policypush binary they start, and
// the environment every such process runs in. The tests drive the CLI contract exactly as an
// operator (or an outside checker) would, so they run the real binary, not functions of this
// package.

// binary is the policypush binary TestMain builds for the package's tests.
var binary string

// TestMain builds the real binary once.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "policypush-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "policypush")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build policypush:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// noConfig makes a process read no config file: every setting comes from POLICYPUSH_ variables.
const noConfig = "POLICYPUSH_CONFIG=/dev/null"

// processEnv is the environment of a policypush process a test starts: the test's own environment,
// no config file, the test's database (driver, DSN) and bus (natsURL, empty for the embedded server;
// the stream and subject prefix that keep tests apart), and notification pacing off — no quiet hours,
// no throttle — so that a run does not depend on the time of day. extra adds the caller's own
// settings (NAME=value).
func processEnv(driver, dsn, natsURL, stream, prefix string, extra ...string) []string {
	env := append(os.Environ(), noConfig,
		"POLICYPUSH_DATABASE_DRIVER="+driver, "POLICYPUSH_DATABASE_DSN="+dsn,
		"POLICYPUSH_NATS_STREAM="+stream, "POLICYPUSH_NATS_SUBJECT_PREFIX="+prefix,
		"POLICYPUSH_NOTIFY_QUIET_HOURS_CHANNELS=", "POLICYPUSH_NOTIFY_THROTTLE_MIN_INTERVAL=0s",
		"POLICYPUSH_NOTIFY_THROTTLE_PER_DAY=0")
	if natsURL != "" {
		env = append(env, "POLICYPUSH_NATS_URL="+natsURL)
	}
	return append(env, extra...)
}
