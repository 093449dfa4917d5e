package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
)

// countingJS counts the calls ensure makes and fails the first failLookups lookups, as a NATS that
// is restarting would.
type countingJS struct {
	jetstream.JetStream
	failLookups                                atomic.Int32
	lookups, creates, updates, consumerCreates atomic.Int32
	consumerUpdates                            atomic.Int32
}

var errUnavailable = errors.New("nats: no responders available for request")

func (c *countingJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	c.lookups.Add(1)
	if c.failLookups.Add(-1) >= 0 {
		return nil, errUnavailable
	}
	return c.JetStream.Stream(ctx, name)
}

func (c *countingJS) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.creates.Add(1)
	return c.JetStream.CreateStream(ctx, cfg)
}

func (c *countingJS) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.updates.Add(1)
	return c.JetStream.UpdateStream(ctx, cfg)
}

func (c *countingJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c.lookups.Add(1)
	if c.failLookups.Add(-1) >= 0 {
		return nil, errUnavailable
	}
	return c.JetStream.Consumer(ctx, stream, name)
}

func (c *countingJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c.consumerCreates.Add(1)
	return c.JetStream.CreateConsumer(ctx, stream, cfg)
}

func (c *countingJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c.consumerUpdates.Add(1)
	return c.JetStream.UpdateConsumer(ctx, stream, cfg)
}

func (c *countingJS) counts() [4]int32 {
	return [4]int32{c.creates.Load(), c.updates.Load(), c.consumerCreates.Load(), c.consumerUpdates.Load()}
}

// EnsureStream and EnsureConsumer against the test's NATS (embedded, or POLICYPUSH_TEST_NATS_URL):
// created when missing, left alone when identical, updated when an updatable setting drifted,
// refused with every difference named when one JetStream cannot change did, retried when NATS fails.
func TestEnsureComparesThenUpdates(t *testing.T) {
	defer bus.SetEnsureRetry(5, 10*time.Millisecond)()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := testenv.OpenBus(t)
	js := &countingJS{JetStream: b.JS}
	topo := bus.Topology{Stream: b.Stream() + "X", SubjectPrefix: b.SubjectPrefix(), Replicas: 1}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.JS.DeleteStream(ctx, topo.ShardStream().Name)
	})
	stream, consumer := topo.ShardStream(), topo.ShardConsumer(30*time.Second)
	ensure := func() error { _, err := bus.Ensure(ctx, js, stream, consumer); return err }
	want := func(step string, c [4]int32) {
		t.Helper()
		if got := js.counts(); got != c {
			t.Fatalf("%s: stream creates, updates, consumer creates, updates = %v, want %v", step, got, c)
		}
	}

	t.Run("fresh", func(t *testing.T) {
		if err := ensure(); err != nil {
			t.Fatal(err)
		}
		want("fresh", [4]int32{1, 0, 1, 0})
	})
	t.Run("identical", func(t *testing.T) {
		if err := ensure(); err != nil {
			t.Fatal(err)
		}
		want("already present", [4]int32{1, 0, 1, 0}) // no update request
	})
	t.Run("drifted", func(t *testing.T) {
		stream.MaxAge, stream.Description = 48*time.Hour, "changed"
		consumer.AckWait, consumer.MaxAckPending = 45*time.Second, 512
		if err := ensure(); err != nil {
			t.Fatal(err)
		}
		want("drifted", [4]int32{1, 1, 1, 1})
		s, err := b.JS.Stream(ctx, stream.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config; got.MaxAge != 48*time.Hour || got.Description != "changed" {
			t.Fatalf("stream not updated: max age %s, description %q", got.MaxAge, got.Description)
		}
		c, err := b.JS.Consumer(ctx, stream.Name, consumer.Durable)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.CachedInfo().Config; got.AckWait != 45*time.Second || got.MaxAckPending != 512 {
			t.Fatalf("consumer not updated: ack wait %s, max ack pending %d", got.AckWait, got.MaxAckPending)
		}
		if err := ensure(); err != nil {
			t.Fatal(err)
		}
		want("after the update", [4]int32{1, 1, 1, 1})
	})
	t.Run("not updatable", func(t *testing.T) {
		fixed := stream
		fixed.Storage, fixed.Retention = jetstream.MemoryStorage, jetstream.LimitsPolicy
		_, err := bus.EnsureStream(ctx, js, fixed)
		if !errors.Is(err, bus.ErrTopologyDrift) || !strings.Contains(err.Error(), "storage is File, want Memory") ||
			!strings.Contains(err.Error(), "retention is WorkQueue, want Limits") || !strings.Contains(err.Error(), stream.Name) {
			t.Fatalf("err = %v, want a drift error naming the stream, its storage and retention", err)
		}
		c := consumer
		c.AckPolicy = jetstream.AckAllPolicy
		_, err = bus.EnsureConsumer(ctx, js, stream.Name, c)
		if !errors.Is(err, bus.ErrTopologyDrift) || !strings.Contains(err.Error(), "ack policy is AckExplicit, want AckAll") {
			t.Fatalf("err = %v, want a drift error naming the ack policy", err)
		}
		want("refused", [4]int32{1, 1, 1, 1}) // no update attempted
	})
	t.Run("transient failure", func(t *testing.T) {
		before := js.lookups.Load()
		js.failLookups.Store(3)
		if err := ensure(); err != nil {
			t.Fatalf("not retried: %v", err)
		}
		if n := js.lookups.Load() - before; n != 5 { // 3 failed lookups + stream + consumer
			t.Fatalf("%d lookups, want 5", n)
		}
		js.failLookups.Store(100)
		_, err := bus.EnsureStream(ctx, js, stream)
		if !errors.Is(err, errUnavailable) {
			t.Fatalf("err = %v, want the last error after the attempts ran out", err)
		}
		js.failLookups.Store(0)
		want("retried", [4]int32{1, 1, 1, 1})
	})
}

// Every stream and consumer the topology declares reads back from the server as declared: a second
// ensure of each makes no request but the lookup (a server default that the comparison missed would
// update them at every start).
func TestTopologyReadsBackAsDeclared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := testenv.OpenBus(t)
	topo := b.Topology()
	change := bus.ChangeSubject(topo.SubjectPrefix, "registry.changed")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.JS.DeleteStream(ctx, topo.ChangeStream(change).Name)
		_ = b.JS.DeleteStream(ctx, topo.ShardStream().Name)
	})
	all := []struct {
		stream   jetstream.StreamConfig
		consumer jetstream.ConsumerConfig
	}{
		{topo.NoticeStream(), topo.NoticeConsumer("wechat", bus.ConsumerOptions{AckWait: 30 * time.Second, MaxDeliver: 100, MaxAckPending: 1000})},
		{topo.NoticeStream(), topo.NoticeConsumer("sms", bus.ConsumerOptions{AckWait: 30 * time.Second})},
		{topo.ChangeStream(change), bus.ChangeConsumer(change, "matcher-registry", 20)},
		{topo.ShardStream(), topo.ShardConsumer(time.Minute)},
	}
	for _, x := range all {
		t.Run(x.stream.Name+"/"+x.consumer.Durable, func(t *testing.T) {
			if _, err := bus.Ensure(ctx, b.JS, x.stream, x.consumer); err != nil {
				t.Fatal(err)
			}
			js := &countingJS{JetStream: b.JS}
			if _, err := bus.Ensure(ctx, js, x.stream, x.consumer); err != nil {
				t.Fatal(err)
			}
			if got := js.counts(); got != [4]int32{} {
				t.Fatalf("second ensure made requests (stream creates, updates, consumer creates, updates) %v", got)
			}
		})
	}
}
