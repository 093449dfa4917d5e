// Package notify owns getting a notice to a firm: durable JetStream consumers per channel, the
// delivery items that tie every match to exactly one message per channel, digests, quiet hours,
// throttles, the WeChat and SMS senders behind one Sender interface, error classification, retries,
// provider failover, fallback from WeChat to SMS, dead letters and resend, receipts, metrics, and
// the sandbox providers used by the embedded default and tests. It never decides who qualifies,
// and it never renders console pages.
//
// How a notice travels (docs/delivery.md has the reasons):
//
//	match notice (outbox → JetStream) ──intake──▶ DeliveryItem ──▶ Delivery (digest, due at)
//	Delivery due (at once, or outbox row published at its time) ──dispatch──▶ claim ▶ provider ▶ record
//
// A delivery is claimed (state sending, a lease) before its provider call and recorded after it,
// so a crash anywhere leaves either nothing done, or a delivery in doubt that is settled with the
// provider (it dedupes, or it is asked) before anything is sent again.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/store"
)

// In-doubt policies (Options.InDoubt).
const (
	// InDoubtLookup asks a provider that does not dedupe whether it accepted the message before
	// sending it again; providers that dedupe (WeChat, the sandbox) are simply sent to again.
	InDoubtLookup = "lookup"
	// InDoubtResend sends again at once: only right when every provider dedupes on the delivery id.
	InDoubtResend = "resend"
)

// Options configure the notifiers.
type Options struct {
	Workers      int // concurrent provider calls per channel
	BatchSize    int // notice messages handled per database round
	Lanes        int // batches a channel works on at once (default 8)
	Consumer     bus.ConsumerOptions
	Backoff      []time.Duration // delay before retry n after a transient failure; the last repeats
	MaxAttempts  int             // provider attempts per delivery before it is dead
	SendTimeout  time.Duration
	DigestWindow time.Duration // matches of one firm arriving within it go out as one message; 0 off
	QuietHours   QuietHours
	Throttle     Throttle
	QuotaPause   time.Duration // how long a provider out of quota rests before it is tried again
	Failover     Failover
	InDoubt      string        // InDoubtLookup or InDoubtResend
	InDoubtGrace time.Duration // how long a provider may take to list an accepted message
	// NoticeURL builds the link of a notice (the firm's page for the first policy it announces).
	// Nil: PublicURL + "/p/" + policy id.
	NoticeURL     func(creditCode, policyID string) string
	PublicURL     string
	SubjectPrefix string
	Log           *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// Bus is where the notice jobs come from and retries go (required).
	Bus *bus.Bus
	// Senders maps a channel (wechat, sms) to its providers in priority order; a channel
	// without senders is not consumed.
	Senders map[string][]Sender
	// Gate: each batch first lets the console's requests in flight go first (stage.Gate); nil:
	// never waits.
	Gate *stage.Gate
}

// defaultLanes is how many batches a channel works on at once, so that one batch's provider calls
// and database round trips overlap another's: a batch is a chain of round trips (read, write the
// items, claim, record), so a channel's rate is lanes × batch size / the time of one batch.
const defaultLanes = 8

// batchLinger is how long a lane waits for more messages after the first before it starts: a
// batch of one costs as many round trips as a batch of a hundred.
const batchLinger = 20 * time.Millisecond

// Notifier consumes notice jobs and sends them.
type Notifier struct {
	db     *gorm.DB
	bus    *bus.Bus
	opts   Options
	routes map[string]*route
	texts  textCache

	consuming atomic.Int32 // channels whose consumer is currently bound

	slotsMu   sync.Mutex
	sendSlots map[string]chan struct{} // per channel: its provider calls in flight (slots)
}

// New builds a notifier (a stage: Run, Ready, Close) on db, like the other components:
// everything else it needs is in o (o.Bus, o.Senders).
func New(db *gorm.DB, o Options) *Notifier {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	o.Workers = max(o.Workers, 1)
	if o.Lanes < 1 {
		o.Lanes = defaultLanes
	}
	if o.BatchSize < 1 {
		o.BatchSize = 100
	}
	if o.MaxAttempts < 1 {
		o.MaxAttempts = 12
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 10 * time.Second
	}
	if o.QuotaPause <= 0 {
		o.QuotaPause = 10 * time.Minute
	}
	if o.InDoubt == "" {
		o.InDoubt = InDoubtLookup
	}
	if o.NoticeURL == nil {
		base := strings.TrimRight(o.PublicURL, "/")
		o.NoticeURL = func(_, policyID string) string { return base + "/p/" + policyID }
	}
	n := &Notifier{db: db, bus: o.Bus, opts: o, routes: map[string]*route{}}
	for ch, ss := range o.Senders {
		if len(ss) == 0 {
			continue
		}
		r := &route{channel: ch}
		for _, s := range ss {
			r.providers = append(r.providers, &provider{sender: s})
		}
		n.routes[ch] = r
	}
	return n
}

func (n *Notifier) now() time.Time {
	if n.opts.Now != nil {
		return n.opts.Now().UTC()
	}
	return time.Now().UTC()
}

// Run consumes every channel that has senders until ctx is cancelled, then finishes the batches in
// hand (their provider calls are bounded by SendTimeout) and returns.
func (n *Notifier) Run(ctx context.Context) error {
	if n.bus == nil {
		return errors.New("notifier: no bus")
	}
	stopAdvisories, err := n.watchDeadLetters(ctx)
	if err != nil {
		return err
	}
	defer stopAdvisories()
	var wg sync.WaitGroup
	for _, rt := range n.routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.consume(ctx, rt)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		stage.Every(ctx, drainEvery, n.drainDeliveries, func(err error) {
			n.opts.Log.Warn("count the deliveries that changed and how far their notices got; will retry", "err", err)
		})
	}()
	wg.Wait()
	// the lanes have stopped: what they queued last is counted before the notifier goes
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := store.DrainDeliveries(final, n.db); err != nil {
		n.opts.Log.Warn("count the deliveries that changed and how far their notices got; the next notifier will", "err", err)
	}
	return nil
}

// drainEvery is how often the notifier counts the deliveries that changed and refreshes the reach
// of their matches (store.DrainDeliveries: the status's delivery counts and the console's funnel
// and notify column follow the deliveries this far behind).
const drainEvery = 200 * time.Millisecond

// drainDeliveries lets the console's requests go first, then drains the delivery queue.
func (n *Notifier) drainDeliveries(ctx context.Context) error {
	n.opts.Gate.Yield(ctx)
	_, err := store.DrainDeliveries(ctx, n.db)
	return err
}

// consume pulls a channel's messages into a feed that its lanes take batches from, and watches
// that the channel's consumer keeps delivering.
func (n *Notifier) consume(ctx context.Context, rt *route) {
	feed := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range n.opts.Lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.lane(ctx, rt, feed)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.watch(ctx, rt)
	}()
	n.pull(ctx, rt, feed)
	close(feed)
	wg.Wait()
}

// pull binds the channel's durable consumer and feeds its messages until ctx ends. A lost consumer
// (NATS restarted without its state, the stream recreated) is bound again.
func (n *Notifier) pull(ctx context.Context, rt *route, feed chan<- jetstream.Msg) {
	for ctx.Err() == nil {
		cons, err := n.bus.Consumer(ctx, rt.channel, n.opts.Consumer)
		if err != nil {
			n.opts.Log.Warn("bind consumer; retrying", "channel", rt.channel, "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(n.opts.BatchSize * n.opts.Lanes))
		if err != nil {
			n.opts.Log.Warn("consume; retrying", "channel", rt.channel, "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		n.consuming.Add(1)
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			msg, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					break
				}
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					n.opts.Log.Warn("consumer lost; binding again", "channel", rt.channel, "err", err)
					it.Stop()
					break
				}
				if errors.Is(err, nats.ErrConnectionClosed) {
					it.Stop()
					stop()
					n.consuming.Add(-1)
					return
				}
				// Missed heartbeats and the like while NATS restarts: the iterator recovers by itself.
				n.opts.Log.Debug("consume", "channel", rt.channel, "err", err)
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			select {
			case feed <- msg:
			case <-ctx.Done():
				_ = msg.Nak() // let another notifier have it now rather than after AckWait
			}
		}
		stop()
		n.consuming.Add(-1)
	}
}

// lane takes whatever the feed holds, up to BatchSize, and handles it as one batch. A batch in hand
// is finished even when ctx ends, so that a clean stop leaves nothing in doubt.
func (n *Notifier) lane(ctx context.Context, rt *route, feed <-chan jetstream.Msg) {
	work := context.WithoutCancel(ctx)
	linger := time.NewTimer(batchLinger)
	defer linger.Stop()
	for msg := range feed {
		batch := []jetstream.Msg{msg}
		linger.Reset(batchLinger)
	fill:
		for len(batch) < n.opts.BatchSize {
			select {
			case m, ok := <-feed:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			case <-linger.C:
				break fill
			}
		}
		n.opts.Gate.Yield(ctx)
		begin := time.Now()
		// A database that stops answering must not hold a lane forever: past the deadline the
		// batch's messages are naked or come back after AckWait.
		bctx, cancel := context.WithTimeout(work, n.batchTimeout())
		n.process(bctx, rt, batch)
		cancel()
		batchSeconds.WithLabelValues(rt.channel).Observe(time.Since(begin).Seconds())
	}
}

// batchTimeout bounds one batch: its database work and its provider calls.
func (n *Notifier) batchTimeout() time.Duration {
	return max(n.opts.Consumer.AckWait, 30*time.Second) + 2*n.opts.SendTimeout
}

// envelope is one message of a batch and what to answer JetStream.
type envelope struct {
	msg       jetstream.Msg
	job       bus.NoticeJob
	seq       uint64
	delivered int
	delay     time.Duration // answer: Nak with this delay; 0 means Ack
}

// process handles a batch: take in the match notices, attempt the deliveries that are due, answer
// every message. It never leaves a message unanswered; database trouble naks it with a backoff.
func (n *Notifier) process(ctx context.Context, rt *route, msgs []jetstream.Msg) {
	var intake []*envelope
	due := map[uint64][]*envelope{}
	var all []*envelope
	for _, msg := range msgs {
		e := &envelope{msg: msg, delivered: 1}
		if md, err := msg.Metadata(); err == nil {
			e.seq, e.delivered = md.Sequence.Stream, int(md.NumDelivered)
		}
		if err := json.Unmarshal(msg.Data(), &e.job); err != nil || (e.job.MatchID == 0 && e.job.DeliveryID == 0) {
			n.opts.Log.Error("malformed notice job", "subject", msg.Subject(), "seq", e.seq, "err", err)
			n.recordDeadLetter(ctx, e, "malformed payload")
			_ = msg.TermWithReason("malformed payload")
			continue
		}
		all = append(all, e)
		if e.job.DeliveryID != 0 {
			due[e.job.DeliveryID] = append(due[e.job.DeliveryID], e)
		} else {
			intake = append(intake, e)
		}
	}
	var hints map[uint64]*hint
	if len(intake) > 0 {
		var now map[*envelope]uint64
		var err error
		begin := time.Now()
		now, hints, err = n.takeIn(ctx, rt, intake)
		timePhase(rt.channel, "intake", begin)
		if err != nil {
			n.opts.Log.Warn("take in notices; will retry", "channel", rt.channel, "n", len(intake), "err", err)
			for _, e := range intake {
				e.delay = nakDelay(e.delivered)
			}
		}
		for e, id := range now {
			due[id] = append(due[id], e)
		}
	}
	if len(due) > 0 {
		ids := make([]uint64, 0, len(due))
		for id := range due {
			ids = append(ids, id)
		}
		answers, err := n.dispatch(ctx, rt, ids, hints)
		if err != nil {
			n.opts.Log.Warn("dispatch; will retry", "channel", rt.channel, "n", len(ids), "err", err)
		}
		for id, es := range due {
			d, ok := answers[id]
			if !ok && err != nil {
				d = nakDelay(es[0].delivered)
			}
			for _, e := range es {
				e.delay = max(e.delay, d)
			}
		}
	}
	for _, e := range all {
		if e.delay > 0 {
			_ = e.msg.NakWithDelay(e.delay)
		} else {
			_ = e.msg.Ack()
		}
	}
}

// recordDeadLetter keeps a message the notifier cannot use, so that an operator sees it.
func (n *Notifier) recordDeadLetter(ctx context.Context, e *envelope, reason string) {
	dl := store.DeadLetter{Stream: n.bus.Stream(), Seq: e.seq, Subject: e.msg.Subject(), Payload: e.msg.Data(),
		Reason: reason, Deliveries: e.delivered, At: n.now()}
	if err := n.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&dl).Error; err != nil {
		n.opts.Log.Error("record dead letter", "seq", e.seq, "err", err)
	}
	deadLetters.WithLabelValues(channelOfSubject(e.msg.Subject()), "message").Inc()
}

func channelOfSubject(s string) string {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// chunk is how many rows of a table with cols columns go into one INSERT. The SQLite driver binds
// parameters in time quadratic in their number (it looks each one up by a linear scan), so SQLite
// gets statements of about 250 parameters; MySQL takes 200 rows.
func (n *Notifier) chunk(cols int) int {
	if n.db.Dialector.Name() == "sqlite" {
		return max(1, 250/cols)
	}
	return 200
}

// insertRows writes rows in INSERTs of n.chunk(cols) rows, cols being the table's columns; no rows,
// no statement. what names the write in the error.
func insertRows[T any](n *Notifier, tx *gorm.DB, rows []T, cols int, what string) error {
	if len(rows) == 0 {
		return nil
	}
	if err := tx.CreateInBatches(rows, n.chunk(cols)).Error; err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// retryTx runs fn in a transaction, again after a deadlock, a lock timeout, a busy SQLite file or a
// dropped connection (the database restarting). A unique-key race is returned: the caller has to
// look again at what the other notifier wrote.
func (n *Notifier) retryTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	var err error
	for i := range 6 {
		err = n.db.WithContext(ctx).Transaction(fn)
		if err == nil || store.IsUniqueViolation(err) || !retryable(err) || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, time.Duration(25<<i)*time.Millisecond)
	}
	return err
}

// retryStmt runs fn, which writes with a single statement, outside a transaction, again after the
// errors retryTx retries.
func (n *Notifier) retryStmt(ctx context.Context, fn func(db *gorm.DB) error) error {
	var err error
	for i := range 6 {
		err = fn(n.db.WithContext(ctx))
		if err == nil || store.IsUniqueViolation(err) || !retryable(err) || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, time.Duration(25<<i)*time.Millisecond)
	}
	return err
}

// retryable reports errors that a second try may not meet.
func retryable(err error) bool {
	if store.IsUniqueViolation(err) {
		return true
	}
	s := err.Error()
	for _, m := range []string{"Error 1213", "Error 1205", "database is locked", "SQLITE_BUSY", "bad connection",
		"invalid connection", "connection refused", "broken pipe", "connection reset", "driver: bad connection", "EOF"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// outboxJob is a notice job to publish through the outbox at (nil: at once).
func (n *Notifier) outboxJob(job bus.NoticeJob, at *time.Time, now time.Time) store.Outbox {
	return newOutboxJob(n.opts.SubjectPrefix, job, at, now)
}

func newOutboxJob(prefix string, job bus.NoticeJob, at *time.Time, now time.Time) store.Outbox {
	payload, _ := json.Marshal(job) // a struct of plain fields always encodes
	return store.Outbox{Subject: bus.NotifySubject(prefix, job.Channel), Payload: payload, CreatedAt: now, AvailableAt: at}
}

// Health is what the notifier can say about itself for readiness checks.
type Health struct {
	Channels  []string         `json:"channels"`
	Consuming int              `json:"consuming"` // channels whose consumer is bound right now
	Providers []ProviderHealth `json:"providers"`
}

// Health reports the consumers and each provider's breaker and pause.
func (n *Notifier) Health() Health {
	now := n.now()
	h := Health{Consuming: int(n.consuming.Load())}
	for ch, rt := range n.routes {
		h.Channels = append(h.Channels, ch)
		for _, p := range rt.providers {
			h.Providers = append(h.Providers, p.health(ch, now))
		}
	}
	return h
}

// Ready is the notifier's check of the process health: down unless every channel is being
// consumed; its detail is Health (consumers, each provider's breaker and pause).
func (n *Notifier) Ready(context.Context) stage.Check {
	if got, want := int(n.consuming.Load()), len(n.routes); got < want {
		return stage.Down("notifier", fmt.Errorf("%d of %d channel consumers bound", got, want), n.Health())
	}
	return stage.OK("notifier", n.Health())
}

// Close has nothing to release: the notifier uses the database and bus its owner opened, and Run
// has finished its batches when it returns.
func (n *Notifier) Close() error { return nil }
