// Package notify owns getting a notice to a firm: durable JetStream consumers per channel, one
// delivery row per (match, channel, recipient), the WeChat and SMS senders behind one Sender
// interface, error classification, fallback from WeChat to SMS, and the sandbox providers used by
// the embedded default and tests. It never decides who qualifies.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Options configure the notifiers.
type Options struct {
	Workers       int // concurrent sends per channel
	Consumer      bus.ConsumerOptions
	Backoff       []time.Duration // redelivery delays after transient failures, by attempt
	SendTimeout   time.Duration
	PublicURL     string // base of the links in notices
	SubjectPrefix string
	Log           *slog.Logger
}

// Notifier consumes notice jobs and sends them.
type Notifier struct {
	db      *gorm.DB
	bus     *bus.Bus
	opts    Options
	senders map[string]Sender // channel → sender (SMS: the first provider in priority order)
}

// New builds a notifier. senders maps a channel (wechat, sms) to its sender; a channel without a
// sender is not consumed.
func New(db *gorm.DB, b *bus.Bus, senders map[string]Sender, o Options) *Notifier {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Workers < 1 {
		o.Workers = 1
	}
	return &Notifier{db: db, bus: b, opts: o, senders: senders}
}

// Run consumes every channel that has a sender until ctx is cancelled.
func (n *Notifier) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(n.senders))
	for ch := range n.senders {
		cons, err := n.bus.Consumer(ctx, ch, n.opts.Consumer)
		if err != nil {
			return err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(n.opts.Workers * 2))
		if err != nil {
			return fmt.Errorf("consume %s: %w", ch, err)
		}
		for i := 0; i < n.opts.Workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					msg, err := it.Next()
					if err != nil {
						if !errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() == nil {
							errs <- err
						}
						return
					}
					n.handle(ctx, msg)
				}
			}()
		}
		go func() { <-ctx.Done(); it.Stop() }()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// handle processes one message and always acks, naks or terms it.
func (n *Notifier) handle(ctx context.Context, msg jetstream.Msg) {
	var job bus.NoticeJob
	if err := json.Unmarshal(msg.Data(), &job); err != nil || job.MatchID == 0 {
		n.opts.Log.Error("malformed notice job dropped", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("malformed payload")
		return
	}
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	delay, err := n.Deliver(ctx, job, attempt)
	switch {
	case err != nil:
		// Database or bus trouble: let JetStream redeliver after a pause.
		n.opts.Log.Warn("notice not processed; will retry", "match", job.MatchID, "channel", job.Channel, "err", err)
		_ = msg.NakWithDelay(n.backoff(attempt))
	case delay > 0:
		_ = msg.NakWithDelay(delay)
	default:
		_ = msg.Ack()
	}
}

func (n *Notifier) backoff(attempt int) time.Duration {
	if len(n.opts.Backoff) == 0 {
		return 5 * time.Second
	}
	if attempt-1 < len(n.opts.Backoff) {
		return n.opts.Backoff[max(attempt-1, 0)]
	}
	return n.opts.Backoff[len(n.opts.Backoff)-1]
}

// Deliver performs one attempt for a job. It returns a delay when the job must be retried later,
// and an error when it could not even be processed (database down).
func (n *Notifier) Deliver(ctx context.Context, job bus.NoticeJob, attempt int) (time.Duration, error) {
	sender, ok := n.senders[job.Channel]
	if !ok {
		return 0, fmt.Errorf("no sender for channel %q", job.Channel)
	}
	var m store.Match
	if err := n.db.WithContext(ctx).Where("id = ?", job.MatchID).Take(&m).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			n.opts.Log.Error("notice for unknown match dropped", "match", job.MatchID)
			return 0, nil
		}
		return 0, fmt.Errorf("load match %d: %w", job.MatchID, err)
	}
	var firm store.Enterprise
	if err := n.db.WithContext(ctx).Where("credit_code = ?", m.CreditCode).Take(&firm).Error; err != nil {
		return 0, fmt.Errorf("load firm of match %d: %w", m.ID, err)
	}
	recipient := firm.ContactPhone
	if job.Channel == ChannelWeChat {
		recipient = firm.WechatOpenID
	}
	d, err := n.deliveryRow(ctx, &m, job.Channel, recipient)
	if err != nil {
		return 0, err
	}
	if d.State == store.DeliverySent || d.State == store.DeliveryDelivered || d.State == store.DeliverySkipped || d.State == store.DeliveryDead {
		return 0, nil // already done: a redelivered message never sends twice
	}
	// Invariant 5: a firm that is no longer active, or a match that no longer holds, gets nothing,
	// even if the notice was queued before the change.
	if firm.Status != store.StatusActive {
		return 0, n.finish(ctx, d, store.DeliverySkipped, "firm_"+firm.Status, "firm is "+firm.Status, nil)
	}
	if m.State == store.MatchRevoked {
		return 0, n.finish(ctx, d, store.DeliverySkipped, "match_revoked", "the firm no longer qualifies", nil)
	}
	notice, err := n.notice(ctx, d, &m, &firm)
	if err != nil {
		return 0, err
	}
	sctx, cancel := context.WithTimeout(ctx, n.opts.SendTimeout)
	res, sendErr := sender.Send(sctx, notice)
	cancel()
	if sendErr == nil {
		now := time.Now().UTC()
		return 0, n.db.WithContext(ctx).Model(&store.Delivery{}).Where("id = ?", d.ID).Updates(map[string]any{
			"state": store.DeliverySent, "provider": res.Provider, "provider_id": res.ProviderID,
			"attempts": gorm.Expr("attempts + 1"), "last_code": "", "last_error": "", "sent_at": now, "updated_at": now,
		}).Error
	}
	var se *SendError
	if !errors.As(sendErr, &se) {
		se = &SendError{Provider: sender.Name(), Code: "error", Message: sendErr.Error(), Class: Transient}
	}
	switch se.Class {
	case Fallback:
		return 0, n.fallback(ctx, d, &m, se)
	case Permanent:
		return 0, n.finish(ctx, d, store.DeliveryDead, se.Code, se.Message, nil)
	default: // Transient, Quota
		if attempt >= n.opts.Consumer.MaxDeliver {
			return 0, n.finish(ctx, d, store.DeliveryDead, se.Code, fmt.Sprintf("gave up after %d attempts: %s", attempt, se.Message), nil)
		}
		if err := n.finish(ctx, d, store.DeliveryFailed, se.Code, se.Message, nil); err != nil {
			return 0, err
		}
		return n.backoff(attempt), nil
	}
}

// deliveryRow gets or creates the unique delivery of (match, channel, recipient).
func (n *Notifier) deliveryRow(ctx context.Context, m *store.Match, channel, recipient string) (*store.Delivery, error) {
	d := store.Delivery{MatchID: m.ID, Channel: channel, Recipient: recipient, CreditCode: m.CreditCode,
		PolicyID: m.PolicyID, State: store.DeliveryQueued}
	if err := n.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&d).Error; err != nil {
		return nil, fmt.Errorf("create delivery: %w", err)
	}
	var got store.Delivery
	if err := n.db.WithContext(ctx).Where("match_id = ? AND channel = ? AND recipient = ?", m.ID, channel, recipient).
		Take(&got).Error; err != nil {
		return nil, fmt.Errorf("load delivery: %w", err)
	}
	return &got, nil
}

// finish records the outcome of an attempt; tx, when given, is used instead of the pool.
func (n *Notifier) finish(ctx context.Context, d *store.Delivery, state, code, msg string, tx *gorm.DB) error {
	if tx == nil {
		tx = n.db.WithContext(ctx)
	}
	if len(msg) > 480 {
		msg = msg[:480]
	}
	return tx.Model(&store.Delivery{}).Where("id = ?", d.ID).Updates(map[string]any{
		"state": state, "last_code": code, "last_error": msg, "attempts": gorm.Expr("attempts + 1"),
		"updated_at": time.Now().UTC(),
	}).Error
}

// fallback closes the WeChat delivery and queues the same match for SMS, in one transaction.
// If the policy already asked for SMS, the unique SMS delivery row makes the second job a no-op.
func (n *Notifier) fallback(ctx context.Context, d *store.Delivery, m *store.Match, se *SendError) error {
	if _, ok := n.senders[ChannelSMS]; !ok {
		return n.finish(ctx, d, store.DeliveryDead, se.Code, se.Message+" (no SMS channel to fall back to)", nil)
	}
	return n.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := n.finish(ctx, d, store.DeliverySkipped, se.Code, "fell back to SMS: "+se.Message, tx); err != nil {
			return err
		}
		payload, _ := json.Marshal(bus.NoticeJob{MatchID: m.ID, Channel: ChannelSMS, Fallback: true})
		return tx.Create(&store.Outbox{Subject: bus.NotifySubject(n.opts.SubjectPrefix, ChannelSMS), Payload: payload,
			CreatedAt: time.Now().UTC()}).Error
	})
}

// notice renders the content for a delivery from the policy version the match was made with.
func (n *Notifier) notice(ctx context.Context, d *store.Delivery, m *store.Match, firm *store.Enterprise) (Notice, error) {
	var v store.PolicyVersion
	if err := n.db.WithContext(ctx).Where("policy_id = ? AND version = ?", m.PolicyID, m.PolicyVersion).Take(&v).Error; err != nil {
		return Notice{}, fmt.Errorf("load policy %s v%d: %w", m.PolicyID, m.PolicyVersion, err)
	}
	def, err := rules.FromCanonical([]byte(v.Source))
	if err != nil {
		return Notice{}, err
	}
	return Notice{
		DeliveryID:  strconv.FormatUint(d.ID, 10),
		OpenID:      firm.WechatOpenID,
		Phone:       firm.ContactPhone,
		FirmName:    firm.Name,
		PolicyTitle: def.Title,
		Amount:      FormatAmount(m.Amount),
		Deadline:    def.Deadline,
		URL:         strings.TrimRight(n.opts.PublicURL, "/") + "/p/" + m.PolicyID,
	}, nil
}

// FormatAmount renders 元 with thousands separators: 12,345.00元; empty when there is no amount.
func FormatAmount(a *float64) string {
	if a == nil {
		return ""
	}
	s := strconv.FormatFloat(*a, 'f', 2, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String() + "." + frac + "元"
}
