package bus

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// A failing connection to the embedded server is reported, named, and the server is stopped
// (issue 13: the error was shadowed and Open went on with no connection).
func TestOpenReportsEmbeddedConnectError(t *testing.T) {
	refused := errors.New("in-process connection refused")
	var started *server.Server
	dial := dialEmbedded
	dialEmbedded = func(ns *server.Server) (*nats.Conn, error) {
		started = ns
		return nil, refused
	}
	t.Cleanup(func() { dialEmbedded = dial })
	b, err := Open(context.Background(), Options{StoreDir: t.TempDir(), Stream: "T", SubjectPrefix: "t"})
	if b != nil || !errors.Is(err, refused) || !strings.Contains(err.Error(), "(embedded)") {
		t.Fatalf("Open = %v, %v; want the connect error naming the embedded server", b, err)
	}
	if started == nil || started.Running() {
		t.Fatal("the embedded server was left running after the failed connect")
	}
}
