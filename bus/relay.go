package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/stage"
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
	RelayOptions

	lastOK atomic.Int64 // unix nanos of the last round that reached both the database and NATS
}

// RelayOptions configure a relay.
type RelayOptions struct {
	DB        *gorm.DB
	JS        jetstream.JetStream
	Interval  time.Duration
	BatchSize int
	Log       *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// Gate: each round first lets the console's requests in flight go first (stage.Gate); nil:
	// never waits.
	Gate *stage.Gate
}

// NewRelay makes a relay (a stage: Run, Ready, Close).
func NewRelay(o RelayOptions) *Relay {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	return &Relay{RelayOptions: o}
}

// Run relays until ctx is cancelled: a round at once, then every Interval, each publishing until
// nothing due is left. Errors (NATS or database down) are logged and retried; Run returns nil.
func (r *Relay) Run(ctx context.Context) error {
	drain := func(ctx context.Context) error {
		for {
			r.Gate.Yield(ctx)
			if n, err := r.Once(ctx); err != nil || n == 0 {
				return err
			}
		}
	}
	logErr := func(err error) { r.Log.Warn("outbox relay", "err", err) }
	if err := drain(ctx); err != nil && ctx.Err() == nil {
		logErr(err)
	}
	stage.Every(ctx, r.Interval, drain, logErr)
	return nil
}

// Ready reports the last successful round; a relay is never what makes a process unready (the
// database and NATS checks say why a round fails).
func (r *Relay) Ready(context.Context) stage.Check {
	last := r.LastSuccess()
	c := stage.OK("relay", map[string]any{"last_success": last})
	if last.IsZero() {
		c.Status = "no successful round yet"
	}
	return c
}

// Close has nothing to release: the relay uses the database and bus its owner opened.
func (r *Relay) Close() error { return nil }

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
	rows = capNotices(rows, maxRoundNotices)
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

	acked, firstErr := r.publish(ctx, rows)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if len(acked) > 0 {
		if err := r.DB.WithContext(ctx).Model(&store.Outbox{}).Where("id IN ?", acked).
			Update("published_at", r.now()).Error; err != nil {
			relayErrors.Inc()
			return 0, fmt.Errorf("mark outbox published: %w", err)
		}
		outboxPublished.Add(float64(noticesOf(rows, acked)))
	}
	if firstErr != nil {
		relayErrors.Inc()
	} else {
		r.lastOK.Store(time.Now().UnixNano())
	}
	return len(acked), firstErr
}

// publishWindow is how many messages may wait for their PubAck at once: below the client's own
// limit of stalled asynchronous publishes.
const publishWindow = 2000

// maxRoundNotices bounds the messages of one round, so that batch rows of a large match do not
// make a round outlast roundTimeout; the rest waits for the next round, which follows at once.
const maxRoundNotices = 20000

// capNotices keeps the first rows whose messages add up to at most max (always the first row).
func capNotices(rows []store.Outbox, max int) []store.Outbox {
	n := 0
	for i, row := range rows {
		n += max1(row.Notices)
		if n > max && i > 0 {
			return rows[:i]
		}
	}
	return rows
}

func max1(n int) int { return max(n, 1) }

// noticesOf counts the messages of the acknowledged rows.
func noticesOf(rows []store.Outbox, acked []uint64) int {
	ok := make(map[uint64]bool, len(acked))
	for _, id := range acked {
		ok[id] = true
	}
	n := 0
	for _, row := range rows {
		if ok[row.ID] {
			n += max1(row.Notices)
		}
	}
	return n
}

// relayMsg is one message of an outbox row.
type relayMsg struct {
	row int // index in the round's rows
	msg *nats.Msg
	id  string
}

// messages expands the round's rows: a row is one message, a NoticeBatch row one per match.
func messages(rows []store.Outbox) ([]relayMsg, error) {
	out := make([]relayMsg, 0, len(rows))
	for i, row := range rows {
		if row.Notices <= 1 {
			m := nats.NewMsg(row.Subject)
			m.Data = row.Payload
			out = append(out, relayMsg{row: i, msg: m, id: strconv.FormatUint(row.ID, 10)})
			continue
		}
		jobs, err := BatchJobs(row)
		if err != nil {
			return nil, err
		}
		prefix := strconv.FormatUint(row.ID, 10) + "."
		for _, j := range jobs {
			m := nats.NewMsg(row.Subject)
			m.Data, _ = json.Marshal(j)
			out = append(out, relayMsg{row: i, msg: m, id: prefix + strconv.FormatUint(j.MatchID, 10)})
		}
	}
	return out, nil
}

// BatchJobs returns the notices of a NoticeBatch row, one per match.
func BatchJobs(row store.Outbox) ([]NoticeJob, error) {
	var b NoticeBatch
	if err := json.Unmarshal(row.Payload, &b); err != nil {
		return nil, fmt.Errorf("outbox %d: not a notice batch: %w", row.ID, err)
	}
	jobs := make([]NoticeJob, len(b.MatchIDs))
	for i, id := range b.MatchIDs {
		jobs[i] = NoticeJob{MatchID: id, Channel: b.Channel}
	}
	return jobs, nil
}

// publish sends the rows' messages, at most publishWindow awaiting their PubAck at a time, and
// returns the ids of the rows every message of which was acknowledged.
func (r *Relay) publish(ctx context.Context, rows []store.Outbox) ([]uint64, error) {
	msgs, err := messages(rows)
	if err != nil {
		return nil, err
	}
	missing := make([]int, len(rows)) // messages of each row not yet acknowledged
	for _, m := range msgs {
		missing[m.row]++
	}
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	for lo := 0; lo < len(msgs) && firstErr == nil; lo += publishWindow {
		window := msgs[lo:min(lo+publishWindow, len(msgs))]
		futures := make([]jetstream.PubAckFuture, 0, len(window))
		for _, m := range window {
			f, err := r.JS.PublishMsgAsync(m.msg, jetstream.WithMsgID(m.id))
			if err != nil {
				fail(fmt.Errorf("publish outbox %d: %w", rows[m.row].ID, err))
				break
			}
			futures = append(futures, f)
		}
		timeout := time.NewTimer(pubAckTimeout)
	wait:
		for i, f := range futures {
			select {
			case <-f.Ok():
				missing[window[i].row]--
			case err := <-f.Err():
				fail(fmt.Errorf("publish outbox %d: %w", rows[window[i].row].ID, err))
			case <-timeout.C:
				fail(fmt.Errorf("publish outbox: no PubAck within %s", pubAckTimeout))
				break wait
			case <-ctx.Done():
				timeout.Stop()
				return nil, ctx.Err()
			}
		}
		timeout.Stop()
	}
	acked := make([]uint64, 0, len(rows))
	for i, row := range rows {
		if missing[i] == 0 {
			acked = append(acked, row.ID)
		}
	}
	return acked, firstErr
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

// Pending counts the messages of outbox rows not yet published, including those scheduled for later.
func Pending(ctx context.Context, db *gorm.DB) (int64, error) {
	p, err := store.PendingOutbox(ctx, db)
	return p.Notices, err
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
