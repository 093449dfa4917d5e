package bus_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/bus"
)

// DropStreams deletes the streams whose names begin with the prefix (a benchmark's, left by a run
// that was killed) and no other, so that a new stream on the same subjects can be made.
func TestDropStreamsDeletesOnlyThePrefixed(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("test nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []struct{ name, subject string }{{"BENCH_1", "a.>"}, {"BENCH_2", "b.>"}, {"KEEP", "c.>"}} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: s.name, Subjects: []string{s.subject}}); err != nil {
			t.Fatal(err)
		}
	}
	dropped, err := bus.DropStreams(ctx, ns.ClientURL(), "BENCH_")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(dropped)
	if !slices.Equal(dropped, []string{"BENCH_1", "BENCH_2"}) {
		t.Fatalf("dropped %v", dropped)
	}
	var left []string
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		left = append(left, n)
	}
	if !slices.Equal(left, []string{"KEEP"}) {
		t.Fatalf("streams left: %v", left)
	}
	// the subjects are free again
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_3", Subjects: []string{"a.>"}}); err != nil {
		t.Fatal(err)
	}
}
