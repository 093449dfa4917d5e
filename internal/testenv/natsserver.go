package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// NATSServer is a private nats-server process of the machine's binary, with JetStream on a file
// store in the test's temporary directory, that a test may stop and start again on the same port
// and store (the embedded server cannot be restarted on its store the way a crashed one is).
type NATSServer struct {
	URL      string
	StoreDir string // the -sd directory: JetStream keeps its files under StoreDir/jetstream
	Log      string

	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// LookBinary finds the first of names on PATH or in the usual system directories (sbin is often
// not on a test's PATH); "" when there is none.
func LookBinary(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
			p := filepath.Join(d, n)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
	}
	return ""
}

// StartNATSServer starts a private nats-server, stopped (killed) at cleanup. Without a binary the
// test is skipped, or fails when POLICYPUSH_TEST_REQUIRE_SERVICES=1.
func StartNATSServer(t testing.TB) *NATSServer {
	t.Helper()
	bin := LookBinary("nats-server")
	if bin == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s=1 but there is no nats-server binary (apt-get install nats-server)", EnvRequire)
		}
		t.Skip("no nats-server binary")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	s := &NATSServer{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), StoreDir: filepath.Join(dir, "store"),
		Log: filepath.Join(dir, "nats.log"), bin: bin, port: port}
	s.Start(t)
	t.Cleanup(func() { s.signal(syscall.SIGKILL) })
	return s
}

// Start runs the server (again) and waits until it listens.
func (s *NATSServer) Start(t testing.TB) {
	t.Helper()
	out, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.StoreDir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(s.Log)
			t.Fatalf("nats-server exited at start:\n%s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("nats-server did not listen on %d within 30s", s.port)
}

// Stop shuts the server down cleanly (SIGTERM: it writes its stores) and waits for it.
func (s *NATSServer) Stop(t testing.TB) {
	t.Helper()
	if !s.signal(syscall.SIGTERM) {
		t.Fatal("nats-server did not stop within 30s")
	}
}

// RestartLosingAcks makes the state an unclean nats-server restart can leave: it takes n messages
// from the pull consumer cons (named consumer on stream), keeps a copy of the consumer's state
// file, acknowledges them (the work-queue stream drops them), runs closeConns (the test's
// connections), stops the server, puts the copy back and starts the server again, as if the acks
// had not reached the consumer's state on disk before a crash. The consumer then lists as
// delivered and unacknowledged n messages the stream no longer holds.
func (s *NATSServer) RestartLosingAcks(t testing.TB, cons jetstream.Consumer, stream, consumer string, n int, closeConns func()) {
	t.Helper()
	ctx := context.Background()
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d", len(msgs), n)
	}
	time.Sleep(time.Second) // the server writes a consumer's state at most ten times a second
	files, _ := filepath.Glob(filepath.Join(s.StoreDir, "jetstream", "*", "streams", stream, "obs", consumer, "o.dat"))
	if len(files) != 1 {
		t.Fatalf("found %d state files of consumer %s (want 1): %v", len(files), consumer, files)
	}
	stale, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	closeConns()
	s.Stop(t)
	if err := os.WriteFile(files[0], stale, 0o644); err != nil {
		t.Fatal(err)
	}
	s.Start(t)
}

// signal sends sig and waits up to 30 s for the process to end; false if it did not.
func (s *NATSServer) signal(sig syscall.Signal) bool {
	if s.cmd == nil {
		return true
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
		s.cmd = nil
		return true
	case <-time.After(30 * time.Second):
		return false
	}
}
