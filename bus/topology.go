package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The whole JetStream topology of policypush: every stream, the subjects it holds and the durable
// consumers bound to it, with their settings. Nothing else in the tree declares a stream or a
// consumer; stages ask for theirs here and get them through EnsureStream / EnsureConsumer (ensure.go),
// which create what is missing and update what drifted. The reasons for the notice settings are in
// docs/delivery.md §3, those of the matcher's in docs/matcher.md.
//
//	stream                  subjects                          consumers (durable, pull)
//	<nats.stream>           <prefix>.notify.<channel>         notify-<channel>   notifier lanes
//	<nats.stream>_REGISTRY  <prefix>.<matcher.change_subject> matcher-registry   matcher engines
//	<nats.stream>_MATCH     <prefix>.match.shard              matcher-shards     matcher workers

// Topology names the deployment's streams and subjects (config nats.*).
type Topology struct {
	Stream          string // nats.stream: the notice stream; the others are named after it
	SubjectPrefix   string // nats.subject_prefix
	Replicas        int    // nats.replicas (0 is 1)
	DuplicateWindow time.Duration
}

func (t Topology) replicas() int { return max(1, t.Replicas) }

// NotifySubject is the subject of notices for one channel under a prefix.
func NotifySubject(prefix, channel string) string { return prefix + ".notify." + channel }

// ChangeSubject is the subject of registry change events (subject is matcher.change_subject).
func ChangeSubject(prefix, subject string) string { return prefix + "." + subject }

// ShardSubject is the subject of the shard jobs of distributed matches.
func ShardSubject(prefix string) string { return prefix + ".match.shard" }

// NoticeStream holds the notices waiting for a notifier. Work-queue retention: a notice is removed
// once a notifier acks it, so the stream's size is the backlog. The duplicate window absorbs the
// relay's republish after a crash between PubAck and marking the outbox row. No MaxAge and discard
// new: a notice that nobody has handled yet must never age out; the publisher is told (an error)
// instead when limits are hit.
func (t Topology) NoticeStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        t.Stream,
		Description: "policypush notices waiting for a notifier",
		Subjects:    []string{t.SubjectPrefix + ".notify.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
		Duplicates:  t.DuplicateWindow,
		Discard:     jetstream.DiscardNew,
	}
}

// ConsumerOptions are the delivery settings of a channel's durable consumer.
type ConsumerOptions struct {
	// AckWait is how long a handed-out notice may stay unacknowledged before JetStream gives it to
	// another notifier: it bounds how long a crashed notifier's work waits.
	AckWait time.Duration
	// MaxDeliver is a backstop against a message that crashes or stalls every notifier; provider
	// retries are counted in the delivery row, not here.
	MaxDeliver    int
	MaxAckPending int
}

// ConsumerName is the durable name of a channel's consumer.
func ConsumerName(channel string) string { return "notify-" + channel }

// NoticeConsumer is a channel's durable pull consumer on the notice stream. Several notifier
// processes bound to the same durable share its messages.
func (t Topology) NoticeConsumer(channel string, o ConsumerOptions) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(channel),
		FilterSubject: NotifySubject(t.SubjectPrefix, channel),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: o.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// MaxDeliveriesSubject is the advisory JetStream publishes when a channel's consumer gives up on a
// message.
func (t Topology) MaxDeliveriesSubject(channel string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + t.Stream + "." + ConsumerName(channel)
}

// ChangeStream keeps registry change events (on subject, a full subject from ChangeSubject) until a
// matcher acknowledges them, so events published while no matcher runs are applied when one starts.
func (t Topology) ChangeStream(subject string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        t.Stream + "_REGISTRY",
		Description: "registry changes from the data-sharing platform, waiting for a matcher",
		Subjects:    []string{subject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
		MaxAge:      30 * 24 * time.Hour,
	}
}

// ChangeConsumer is the durable every matcher engine binds: each event is applied once, by whichever
// engine takes it, and tried at most maxDeliver times.
func ChangeConsumer(subject, durable string, maxDeliver int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       2 * time.Minute,
		MaxDeliver:    maxDeliver,
		MaxAckPending: 64,
	}
}

// ShardStream holds the shard jobs of distributed matches until a matcher worker has done them.
func (t Topology) ShardStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        t.Stream + "_MATCH",
		Description: "shard jobs of distributed matches, waiting for a matcher worker",
		Subjects:    []string{ShardSubject(t.SubjectPrefix)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
		Duplicates:  time.Hour,
		MaxAge:      7 * 24 * time.Hour,
	}
}

// ShardConsumer is the matcher workers' shared durable. A worker keeps a job alive with progress
// acks; after ackWait without one the job goes to another worker. A shard is retried until done
// (no MaxDeliver): the coordinator's timeout bounds the wait.
func (t Topology) ShardConsumer(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       "matcher-shards",
		FilterSubject: ShardSubject(t.SubjectPrefix),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

// Ensure makes sure a stream and one of its durable consumers exist with these settings and returns
// the consumer (EnsureStream, then EnsureConsumer).
func Ensure(ctx context.Context, js TopologyAPI, stream jetstream.StreamConfig, consumer jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if _, err := EnsureStream(ctx, js, stream); err != nil {
		return nil, err
	}
	c, err := EnsureConsumer(ctx, js, stream.Name, consumer)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stream.Name, err)
	}
	return c, nil
}

// Bus methods for the notice stream of this bus.

// Topology is the bus's naming of streams and subjects.
func (b *Bus) Topology() Topology {
	return Topology{Stream: b.opts.Stream, SubjectPrefix: b.opts.SubjectPrefix, Replicas: b.opts.Replicas,
		DuplicateWindow: b.opts.DuplicateWindow}
}

// NotifySubject is the subject of notices for one channel.
func (b *Bus) NotifySubject(channel string) string {
	return NotifySubject(b.opts.SubjectPrefix, channel)
}

// Consumer returns the durable pull consumer of a channel, created or brought up to date.
func (b *Bus) Consumer(ctx context.Context, channel string, o ConsumerOptions) (jetstream.Consumer, error) {
	c, err := EnsureConsumer(ctx, b.JS, b.opts.Stream, b.Topology().NoticeConsumer(channel, o))
	if err != nil {
		return nil, fmt.Errorf("consumer for %s: %w", channel, err)
	}
	return c, nil
}

// MaxDeliveriesSubject is the advisory JetStream publishes when a channel's consumer gives up on a
// message.
func (b *Bus) MaxDeliveriesSubject(channel string) string {
	return b.Topology().MaxDeliveriesSubject(channel)
}
