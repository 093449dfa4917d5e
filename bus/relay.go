package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// pubAckTimeout bounds the wait for a batch's PubAcks; rows without one stay unpublished and are
// retried on the next round. PubAcks take milliseconds; a server that does not answer within
// seconds has restarted or lost its leader, and the next round publishes again (deduplicated).
const pubAckTimeout = 5 * time.Second

// roundTimeout bounds a whole relay round, so that a database that stopped answering (without
// closing the connection) cannot hang the relay.
const roundTimeout = time.Minute

// Relay publishes committed outbox rows to JetStream with Nats-Msg-Id = outbox id and marks a row
// published only after its PubAck. A crash between the two republishes the row; JetStream's
// duplicate window drops the repeat, and the notifier's unique delivery item catches anything older.
// Rows with an AvailableAt in the future wait until then: that is how digests, retries and quiet
// hours are scheduled without holding messages unacknowledged in JetStream.
type Relay struct {
	DB        *gorm.DB
	JS        jetstream.JetStream
	Interval  time.Duration
	BatchSize int
	Log       *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time

	lastOK atomic.Int64 // unix nanos of the last round that reached both the database and NATS
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
		if n >= r.BatchSize && err == nil {
			continue // more waiting: don't sleep
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// LastSuccess is when a round last completed without error (zero before the first).
func (r *Relay) LastSuccess() time.Time {
	if n := r.lastOK.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (r *Relay) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

// Once publishes up to BatchSize rows that are due (immediate rows oldest first, then scheduled
// rows whose time has come) and returns how many it marked.
func (r *Relay) Once(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	now := r.now()
	rows, err := r.due(ctx, now)
	if err != nil {
		relayErrors.Inc()
		return 0, err
	}
	if len(rows) == 0 {
		outboxLag.Set(0)
		r.lastOK.Store(time.Now().UnixNano())
		return 0, nil
	}
	oldest := now
	for _, row := range rows {
		since := row.CreatedAt
		if row.AvailableAt != nil {
			since = *row.AvailableAt
		}
		if since.Before(oldest) {
			oldest = since
		}
	}
	outboxLag.Set(now.Sub(oldest).Seconds())

	futures := make([]jetstream.PubAckFuture, 0, len(rows))
	var firstErr error
	for _, row := range rows {
		m := nats.NewMsg(row.Subject)
		m.Data = row.Payload
		f, err := r.JS.PublishMsgAsync(m, jetstream.WithMsgID(strconv.FormatUint(row.ID, 10)))
		if err != nil {
			firstErr = fmt.Errorf("publish outbox %d: %w", row.ID, err)
			break
		}
		futures = append(futures, f)
	}
	acked := make([]uint64, 0, len(futures))
	timeout := time.NewTimer(pubAckTimeout)
	defer timeout.Stop()
wait:
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, rows[i].ID)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish outbox %d: %w", rows[i].ID, err)
			}
		case <-timeout.C:
			if firstErr == nil {
				firstErr = fmt.Errorf("publish outbox: no PubAck within %s", pubAckTimeout)
			}
			break wait
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if len(acked) > 0 {
		if err := r.DB.WithContext(ctx).Model(&store.Outbox{}).Where("id IN ?", acked).
			Update("published_at", r.now()).Error; err != nil {
			relayErrors.Inc()
			return 0, fmt.Errorf("mark outbox published: %w", err)
		}
		outboxPublished.Add(float64(len(acked)))
	}
	if firstErr != nil {
		relayErrors.Inc()
	} else {
		r.lastOK.Store(time.Now().UnixNano())
	}
	return len(acked), firstErr
}

// due reads the rows to publish now. Two index range scans on (published_at, available_at) rather
// than one OR, so that a night's worth of SMS waiting for the end of quiet hours costs nothing
// until it is due.
func (r *Relay) due(ctx context.Context, now time.Time) ([]store.Outbox, error) {
	var rows []store.Outbox
	db := r.DB.WithContext(ctx)
	if err := db.Where("published_at IS NULL AND available_at IS NULL").Order("id").Limit(r.BatchSize).
		Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	if room := r.BatchSize - len(rows); room > 0 {
		var scheduled []store.Outbox
		if err := db.Where("published_at IS NULL AND available_at <= ?", now).Order("available_at, id").Limit(room).
			Find(&scheduled).Error; err != nil {
			return nil, fmt.Errorf("read scheduled outbox: %w", err)
		}
		rows = append(rows, scheduled...)
	}
	return rows, nil
}

// Pending counts outbox rows not yet published, including those scheduled for later.
func Pending(ctx context.Context, db *gorm.DB) (int64, error) {
	var n int64
	err := db.WithContext(ctx).Model(&store.Outbox{}).Where("published_at IS NULL").Count(&n).Error
	return n, err
}

// NextDue is the earliest AvailableAt of the rows scheduled for later, or nil when none is.
func NextDue(ctx context.Context, db *gorm.DB) (*time.Time, error) {
	var row store.Outbox
	err := db.WithContext(ctx).Where("published_at IS NULL AND available_at IS NOT NULL").
		Order("available_at").Limit(1).Find(&row).Error
	if err != nil || row.ID == 0 {
		return nil, err
	}
	return row.AvailableAt, nil
}
