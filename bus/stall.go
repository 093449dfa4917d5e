package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A durable consumer can stop delivering while it holds messages and pull requests wait for them.
// Seen with nats-server 2.9 (Debian 12's package) after the server was killed (SIGKILL, OOM, power
// loss): its restored state can list as delivered-and-unacknowledged messages that the stream no
// longer has (their removal reached the disk, the consumer's ack did not), and the stream can keep
// messages the consumer had acknowledged, which pins the stream's first sequence below those
// entries, so the server never drops them. Every AckWait the server queues those entries for
// redelivery; each failed lookup ("error looking up message for consumer: deleted message") ends a
// pass of its delivery loop, which then waits for the next signal, and new messages are only
// looked at once the redelivery queue is empty. While publishes keep coming (each one a signal)
// that queue drains; once they stop, nothing new is delivered until every such entry has failed
// MaxDeliver times — minutes to hours. Newer servers drop such an entry on the failed lookup.
//
// StallWatch notices such a consumer from its info alone, and ResetConsumer gives it fresh state.

// StallWatch follows one consumer's info over time and reports when it has delivered nothing for
// too long although it could: it has messages no one was given yet (num_pending), a pull request
// is waiting (num_waiting), and it is not paused. It is not safe for concurrent use.
type StallWatch struct {
	// Quiet is how long such a consumer may deliver nothing while it is below max_ack_pending
	// (then the server delivers at once: any quiet is a stall).
	Quiet time.Duration
	// QuietFull is how long it may deliver nothing at max_ack_pending: the messages in hand come
	// back only after AckWait or a nak's delay.
	QuietFull time.Duration

	created   time.Time
	delivered uint64
	since     time.Time // when delivered last moved, or the consumer last had nothing it could deliver
	last      time.Time // the last observation
}

// Observe takes the consumer's info at now and reports whether it has been stalled for longer
// than allowed. A consumer that delivered (its delivery sequence moved), that has nothing to
// deliver, that no one is pulling from, that is paused, or that is a new consumer (created at
// another time) starts the count again; so does a gap longer than Quiet since the last
// observation (NATS was away, or restarting: the watch cannot vouch for that time).
func (w *StallWatch) Observe(ci *jetstream.ConsumerInfo, now time.Time) bool {
	gap := now.Sub(w.last) > w.Quiet
	w.last = now
	if gap || !ci.Created.Equal(w.created) || ci.Delivered.Consumer != w.delivered ||
		ci.NumPending == 0 || ci.NumWaiting == 0 || ci.Paused {
		w.created, w.delivered, w.since = ci.Created, ci.Delivered.Consumer, now
		return false
	}
	quiet := w.Quiet
	if limit := ci.Config.MaxAckPending; limit > 0 && ci.NumAckPending >= limit {
		quiet = w.QuietFull
	}
	return now.Sub(w.since) >= quiet
}

// Since is when the watched consumer last delivered (or last had nothing it could deliver).
func (w *StallWatch) Since() time.Time { return w.since }

// ResetConsumer deletes a stalled channel consumer, if it is still the one created at created
// (another notifier may have reset it already: then it does nothing and reports false), and
// creates it again with o. The new consumer starts from the stream's first message: on a
// work-queue stream those are exactly the messages not yet acknowledged, so nothing is lost;
// messages a notifier holds at that moment come again and find their work done (the notifier's
// deliveries are idempotent). The notifiers' pulls on the old consumer end with
// ErrConsumerDeleted and bind the new one.
func (b *Bus) ResetConsumer(ctx context.Context, channel string, created time.Time, o ConsumerOptions) (bool, error) {
	name := ConsumerName(channel)
	c, err := b.JS.Consumer(ctx, b.opts.Stream, name)
	if err != nil {
		return false, fmt.Errorf("reset consumer %s: %w", name, err)
	}
	if !c.CachedInfo().Created.Equal(created) {
		return false, nil
	}
	if err := b.JS.DeleteConsumer(ctx, b.opts.Stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, fmt.Errorf("reset consumer %s: delete: %w", name, err)
	}
	if _, err := b.Consumer(ctx, channel, o); err != nil {
		return true, fmt.Errorf("reset consumer %s: %w", name, err)
	}
	return true, nil
}
