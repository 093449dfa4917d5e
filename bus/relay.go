package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Relay publishes committed outbox rows to JetStream with Nats-Msg-Id = outbox id and marks a row
// published only after its PubAck. A crash between the two republishes the row; JetStream's
// duplicate window drops the repeat, and the notifier's unique delivery row catches anything older.
type Relay struct {
	DB        *gorm.DB
	JS        jetstream.JetStream
	Interval  time.Duration
	BatchSize int
	Log       *slog.Logger
}

// Run relays until ctx is cancelled. Errors (NATS or database down) are logged and retried.
func (r *Relay) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		n, err := r.Once(ctx)
		if err != nil && ctx.Err() == nil {
			r.Log.Warn("outbox relay", "err", err)
		}
		if n == r.BatchSize && err == nil {
			continue // more waiting: don't sleep
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once publishes up to BatchSize pending rows, oldest first, and returns how many it marked.
func (r *Relay) Once(ctx context.Context) (int, error) {
	var rows []store.Outbox
	if err := r.DB.WithContext(ctx).Where("published_at IS NULL").Order("id").Limit(r.BatchSize).Find(&rows).Error; err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	futures := make([]jetstream.PubAckFuture, len(rows))
	for i, row := range rows {
		m := nats.NewMsg(row.Subject)
		m.Data = row.Payload
		f, err := r.JS.PublishMsgAsync(m, jetstream.WithMsgID(strconv.FormatUint(row.ID, 10)))
		if err != nil {
			rows = rows[:i]
			futures = futures[:i]
			break
		}
		futures[i] = f
	}
	acked := make([]uint64, 0, len(rows))
	var firstErr error
	timeout := time.After(30 * time.Second)
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, rows[i].ID)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish outbox %d: %w", rows[i].ID, err)
			}
		case <-timeout:
			if firstErr == nil {
				firstErr = fmt.Errorf("publish outbox: no PubAck within 30s")
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if len(acked) > 0 {
		now := time.Now().UTC()
		if err := r.DB.WithContext(ctx).Model(&store.Outbox{}).Where("id IN ?", acked).Update("published_at", now).Error; err != nil {
			return 0, fmt.Errorf("mark outbox published: %w", err)
		}
	}
	return len(acked), firstErr
}

// Pending counts outbox rows not yet published.
func Pending(ctx context.Context, db *gorm.DB) (int64, error) {
	var n int64
	err := db.WithContext(ctx).Model(&store.Outbox{}).Where("published_at IS NULL").Count(&n).Error
	return n, err
}
