package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TopologyAPI is the part of jetstream.JetStream that EnsureStream and EnsureConsumer use (a
// jetstream.JetStream is one; tests wrap it to count calls and inject failures).
type TopologyAPI interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error)
	CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
	UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
}

// Retry of EnsureStream and EnsureConsumer: about half a minute, long enough for a nats-server to
// restart or a cluster to elect a leader. Variables so that tests need not wait.
var (
	ensureAttempts = 30
	ensureDelay    = time.Second
)

// ErrTopologyDrift is wrapped by the error of an ensure that found a stream or consumer whose
// settings differ in a way JetStream cannot change in place.
var ErrTopologyDrift = errors.New("differs in a setting JetStream cannot update")

// difference is one setting that differs between the server and the wanted configuration.
type difference struct {
	field      string
	have, want any
	fixed      bool // JetStream refuses to change it on an existing stream or consumer
}

func (d difference) String() string { return fmt.Sprintf("%s is %v, want %v", d.field, d.have, d.want) }

// differ collects differences; only the fields the wanted configuration sets are compared (a zero
// duration or limit leaves the server's value alone).
type differ []difference

func (ds *differ) add(field string, have, want any, fixed bool) {
	if fmt.Sprint(have) != fmt.Sprint(want) {
		*ds = append(*ds, difference{field: field, have: have, want: want, fixed: fixed})
	}
}

func (ds differ) fixed() []string {
	var out []string
	for _, d := range ds {
		if d.fixed {
			out = append(out, d.String())
		}
	}
	return out
}

func (ds differ) String() string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, "; ")
}

// streamDiff compares the settings policypush declares (topology.go) with the server's.
func streamDiff(have, want jetstream.StreamConfig) differ {
	var ds differ
	sortedSubjects := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	ds.add("subjects", sortedSubjects(have.Subjects), sortedSubjects(want.Subjects), false)
	ds.add("description", have.Description, want.Description, false)
	// Limits ↔ interest may change; nothing may change to or from a work queue.
	ds.add("retention", have.Retention, want.Retention,
		have.Retention == jetstream.WorkQueuePolicy || want.Retention == jetstream.WorkQueuePolicy)
	ds.add("storage", have.Storage, want.Storage, true)
	ds.add("replicas", max(1, have.Replicas), max(1, want.Replicas), false)
	if want.Duplicates > 0 {
		ds.add("duplicate window", have.Duplicates, want.Duplicates, false)
	}
	ds.add("max age", have.MaxAge, want.MaxAge, false)
	ds.add("discard", have.Discard, want.Discard, false)
	return ds
}

// consumerDiff compares the settings policypush declares with the server's.
func consumerDiff(have, want jetstream.ConsumerConfig) differ {
	var ds differ
	ds.add("filter subject", have.FilterSubject, want.FilterSubject, false)
	ds.add("ack policy", have.AckPolicy, want.AckPolicy, true)
	ds.add("deliver policy", have.DeliverPolicy, want.DeliverPolicy, true)
	if want.AckWait > 0 {
		ds.add("ack wait", have.AckWait, want.AckWait, false)
	}
	maxDeliver := func(n int) int { // the server stores "unlimited" as -1
		if n <= 0 {
			return -1
		}
		return n
	}
	ds.add("max deliver", maxDeliver(have.MaxDeliver), maxDeliver(want.MaxDeliver), false)
	if want.MaxAckPending > 0 {
		ds.add("max ack pending", have.MaxAckPending, want.MaxAckPending, false)
	}
	return ds
}

// EnsureStream makes sure a stream exists with cfg: it creates it when missing, leaves it alone when
// its settings are those of cfg (no update request, so processes starting together do not update
// one stream concurrently — a clustered JetStream may take longer than the request timeout to
// settle that), updates it when a setting JetStream can change differs, and fails at once, naming
// every difference, when one it cannot change does. Any other failure (NATS away, no leader yet) is
// retried for about half a minute.
func EnsureStream(ctx context.Context, js TopologyAPI, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return ensure(ctx, "stream "+cfg.Name, "nats stream rm "+cfg.Name,
		func() (jetstream.Stream, differ, error) {
			s, err := js.Stream(ctx, cfg.Name)
			if err != nil {
				return nil, nil, err
			}
			return s, streamDiff(s.CachedInfo().Config, cfg), nil
		},
		jetstream.ErrStreamNotFound,
		func() (jetstream.Stream, error) { return js.CreateStream(ctx, cfg) },
		func() (jetstream.Stream, error) { return js.UpdateStream(ctx, cfg) })
}

// EnsureConsumer makes sure a durable consumer of a stream exists with cfg, like EnsureStream.
func EnsureConsumer(ctx context.Context, js TopologyAPI, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return ensure(ctx, "consumer "+cfg.Durable+" of stream "+stream, "nats consumer rm "+stream+" "+cfg.Durable,
		func() (jetstream.Consumer, differ, error) {
			c, err := js.Consumer(ctx, stream, cfg.Durable)
			if err != nil {
				return nil, nil, err
			}
			return c, consumerDiff(c.CachedInfo().Config, cfg), nil
		},
		jetstream.ErrConsumerNotFound,
		func() (jetstream.Consumer, error) { return js.CreateConsumer(ctx, stream, cfg) },
		func() (jetstream.Consumer, error) { return js.UpdateConsumer(ctx, stream, cfg) })
}

// ensure is the compare-then-update loop shared by streams and consumers.
func ensure[T any](ctx context.Context, what, remove string, get func() (T, differ, error), notFound error,
	create, update func() (T, error)) (T, error) {
	var zero T
	var lastErr error
	for attempt := range ensureAttempts {
		if attempt > 0 {
			t := time.NewTimer(ensureDelay)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			if lastErr != nil {
				return zero, fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), lastErr)
			}
			return zero, fmt.Errorf("%s: %w", what, ctx.Err())
		}
		have, diff, err := get()
		switch {
		case err == nil && len(diff) == 0:
			return have, nil
		case err == nil:
			if fixed := diff.fixed(); len(fixed) > 0 {
				return zero, fmt.Errorf("%s %w: %s (once nothing in it is needed any more, remove it — `%s` — and start again to recreate it)",
					what, ErrTopologyDrift, strings.Join(fixed, "; "), remove)
			}
			if have, err = update(); err == nil {
				return have, nil
			}
			err = fmt.Errorf("update (%s): %w", diff, err)
		case errors.Is(err, notFound):
			// Another process may create it at the same moment: the next attempt finds it.
			if have, err = create(); err == nil {
				return have, nil
			}
			err = fmt.Errorf("create: %w", err)
		}
		lastErr = err
	}
	return zero, fmt.Errorf("%s: %w", what, lastErr)
}
