package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// watchDeadLetters listens for JetStream's MAX_DELIVERIES advisories on the channels' consumers.
// Such a message was handed out MaxDeliver times without being answered (it crashed or stalled
// every notifier that took it): it is kept as a dead letter, its delivery (if it names one) is
// marked dead for an operator to resend, and it is removed from the work queue so that it does
// not count as waiting forever. One notifier of a queue group handles each advisory.
func (n *Notifier) watchDeadLetters(ctx context.Context) (func(), error) {
	var subs []*nats.Subscription
	for ch := range n.routes {
		sub, err := n.bus.NC.QueueSubscribe(n.bus.MaxDeliveriesSubject(ch), "policypush-dead-letters", func(m *nats.Msg) {
			var adv bus.MaxDeliveriesAdvisory
			if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
				n.opts.Log.Error("unreadable MAX_DELIVERIES advisory", "err", err)
				return
			}
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := n.deadLetter(hctx, ch, adv); err != nil {
				n.opts.Log.Error("record dead letter", "seq", adv.StreamSeq, "err", err)
			}
		})
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("subscribe to dead-letter advisories: %w", err)
		}
		subs = append(subs, sub)
	}
	return func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}, nil
}

// deadLetter records the message of an advisory and takes it out of the stream.
func (n *Notifier) deadLetter(ctx context.Context, channel string, adv bus.MaxDeliveriesAdvisory) error {
	stream, err := n.bus.JS.Stream(ctx, n.bus.Stream())
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil // already handled by another notifier, or acknowledged at the last moment
		}
		return fmt.Errorf("read message %d: %w", adv.StreamSeq, err)
	}
	var job bus.NoticeJob
	_ = json.Unmarshal(raw.Data, &job) // an unreadable payload is kept as it is
	now := n.now()
	reason := fmt.Sprintf("JetStream gave up after %d deliveries", adv.Deliveries)
	err = n.retryTx(ctx, func(tx *gorm.DB) error {
		dl := store.DeadLetter{Stream: n.bus.Stream(), Seq: adv.StreamSeq, Subject: raw.Subject, Payload: raw.Data,
			Reason: reason, Deliveries: adv.Deliveries, At: now}
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&dl).Error; err != nil {
			return err
		}
		if job.DeliveryID == 0 {
			return nil
		}
		t := tr(TrMaxDeliveries)
		rows, err := apply(tx, change{tr: t, ids: []uint64{job.DeliveryID}, vars: map[string]any{"last_error": reason}, channel: channel}, now)
		if err != nil || rows == 0 {
			return err
		}
		ev := t.event(job.DeliveryID, now, "", "max_deliveries", reason)
		return tx.Create(&ev).Error
	})
	if err != nil {
		return err
	}
	deadLetters.WithLabelValues(channel, "max_deliveries").Inc()
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove message %d: %w", adv.StreamSeq, err)
	}
	return nil
}
