package notify

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/store"
)

// A due delivery has exactly one thing that brings it back to a dispatch: a JetStream message (the
// notice that created it, or the job its outbox row was published as), or an outbox row not yet
// published. The watch below keeps an eye on both ends: that the channel's consumer delivers what
// it holds, and that no open delivery is left without any such message.

// stallLimits are how long the channel's consumer may deliver nothing while it holds messages
// and a pull waits for them (bus.StallWatch): below max_ack_pending the server delivers at once,
// so two AckWaits are plenty; at max_ack_pending the messages in hand come back after AckWait or
// after a nak's delay (at most maxNakDelay, or a lease: SendTimeout + leaseMargin + 1 s).
func (n *Notifier) stallLimits() (quiet, quietFull time.Duration) {
	ackWait := max(n.opts.Consumer.AckWait, time.Second)
	longestNak := max(maxNakDelay, n.leaseWait())
	return max(2*ackWait, 5*time.Second), 2*ackWait + longestNak
}

// sweepEvery is the least time between two looks for stranded deliveries of a channel.
const sweepEvery = 30 * time.Second

// sweepLimit bounds the deliveries one look brings back.
const sweepLimit = 500

// watch reads the channel's consumer info every quarter of the quiet limit. When the consumer has
// stalled (bus.StallWatch: it holds messages that nobody was given although pulls wait for them —
// a nats-server 2.9 consumer restored after a crash can do that for hours) it creates it afresh;
// every notifier watches, and the reset checks that the consumer is still the stalled one. When
// the consumer is idle it looks for stranded deliveries (sweep), at most every sweepEvery.
func (n *Notifier) watch(ctx context.Context, rt *route) {
	quiet, quietFull := n.stallLimits()
	w := bus.StallWatch{Quiet: quiet, QuietFull: quietFull}
	var lastSweep time.Time
	stage.Every(ctx, quiet/4, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := n.bus.JS.Consumer(rctx, n.bus.Stream(), bus.ConsumerName(rt.channel))
		if err != nil {
			return nil // not bound yet, or NATS away: pull says so
		}
		ci := c.CachedInfo()
		if w.Observe(ci, time.Now()) {
			n.opts.Log.Warn("consumer stalled: it holds messages for waiting pulls and delivered none; creating it afresh",
				"channel", rt.channel, "since", w.Since().Format(time.RFC3339), "pending", ci.NumPending,
				"ack_pending", ci.NumAckPending, "redelivered", ci.NumRedelivered, "waiting", ci.NumWaiting)
			reset, err := n.bus.ResetConsumer(rctx, rt.channel, ci.Created, n.opts.Consumer)
			if reset {
				consumerResets.WithLabelValues(rt.channel).Inc()
			}
			return err
		}
		if idle(ci) && time.Since(lastSweep) >= sweepEvery {
			lastSweep = time.Now()
			return n.sweep(rctx, rt, quiet)
		}
		return nil
	}, func(err error) { n.opts.Log.Warn("watch consumer", "channel", rt.channel, "err", err) })
}

// idle reports a consumer with no message waiting to be handed out and none handed out unanswered.
func idle(ci *jetstream.ConsumerInfo) bool { return ci.NumPending == 0 && ci.NumAckPending == 0 }

// sweep brings back the channel's stranded deliveries: open ones (queued or failed and due, or
// sending past their lease) for longer than grace, while nothing can bring them back — the
// channel's consumer holds no message (the caller saw it idle) and no outbox row is due. Each gets
// an outbox row for its job, as a retry would. The order matters: the consumer was seen idle
// before the rows are read, so a message published after that look comes from a row that was due
// before it, and then the outbox check finds a row and the sweep waits. A delivery brought back
// by mistake costs a spare message, which finds its delivery claimed or settled (claims are
// guarded; see dispatch). Stranded deliveries mean a message was lost (a nats-server that lost
// its disk state, a stream removed by hand) or a defect: each sweep that finds some says so.
func (n *Notifier) sweep(ctx context.Context, rt *route, grace time.Duration) error {
	now := n.now()
	db := n.db.WithContext(ctx)
	var due []uint64 // two range scans of ix_outbox_due, as the relay reads it
	if err := db.Model(&store.Outbox{}).Where("published_at IS NULL AND available_at IS NULL").Limit(1).Pluck("id", &due).Error; err != nil {
		return fmt.Errorf("look for stranded deliveries: %w", err)
	}
	if len(due) == 0 {
		if err := db.Model(&store.Outbox{}).Where("published_at IS NULL AND available_at <= ?", now).Limit(1).Pluck("id", &due).Error; err != nil {
			return fmt.Errorf("look for stranded deliveries: %w", err)
		}
	}
	if len(due) > 0 {
		return nil // the relay has rows to publish: their messages may be what these wait for
	}
	cutoff := now.Add(-grace)
	var ids []uint64
	if err := db.Model(&store.Delivery{}).
		Where("channel = ? AND ((state IN ? AND due_at <= ?) OR (state = ? AND lease_until <= ?))",
			rt.channel, []string{store.DeliveryQueued, store.DeliveryFailed}, cutoff, store.DeliverySending, cutoff).
		Order("id").Limit(sweepLimit).Pluck("id", &ids).Error; err != nil {
		return fmt.Errorf("look for stranded deliveries: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	rows := make([]store.Outbox, len(ids))
	for i, id := range ids {
		rows[i] = n.outboxJob(bus.NoticeJob{Channel: rt.channel, DeliveryID: id}, nil, now)
	}
	if err := n.retryStmt(ctx, func(db *gorm.DB) error { return db.CreateInBatches(rows, n.chunk(5)).Error }); err != nil {
		return fmt.Errorf("bring back stranded deliveries: %w", err)
	}
	strandedDeliveries.WithLabelValues(rt.channel).Add(float64(len(ids)))
	n.opts.Log.Warn("stranded deliveries: open, with no message or outbox row to bring them back; queued their jobs again",
		"channel", rt.channel, "n", len(ids), "first", ids[0])
	return nil
}
