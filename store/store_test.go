package store

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// An unreachable MySQL is reported within seconds, naming host and port, never the password.
func TestOpenNamesAnUnreachableMySQL(t *testing.T) {
	t.Parallel()
	// A server that accepts connections and never answers (a stalled MySQL, a wrong port behind a
	// firewall that accepts): the handshake must not wait for the operating system.
	stalled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stalled.Close() })
	go func() {
		for {
			// The client gives up and closes its side; this side is left to the listener's end.
			if _, err := stalled.Accept(); err != nil {
				return
			}
		}
	}()
	for _, tc := range []struct{ name, dsn, addr string }{
		{"refused", "policypush:s3cret-pw@tcp(127.0.0.1:1)/pp", "127.0.0.1:1"},
		{"stalled", "policypush:s3cret-pw@tcp(" + stalled.Addr().String() + ")/pp?timeout=30s", stalled.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Open(ctx, Options{Driver: "mysql", DSN: tc.dsn})
			took := time.Since(start)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.addr) || strings.Contains(msg, "s3cret-pw") || took > 4*time.Second {
				t.Fatalf("after %s: %q; want %s named, the password masked, within the deadline", took, msg, tc.addr)
			}
		})
	}
	if _, err := Open(context.Background(), Options{Driver: "mysql", DSN: "policypush:s3cret-pw@127.0.0.1:3306/pp"}); err == nil ||
		strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("a malformed DSN: %v", err)
	}
}
