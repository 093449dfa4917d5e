package notify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/store"
)

// Ops is the operator's side of deliveries: the failed-delivery log, resend, a delivery's
// timeline, the notice status of matches, and unsubscribe. The CLI and the console share it;
// the console checks permissions and scope before calling it.
type Ops struct {
	DB            *gorm.DB
	SubjectPrefix string // NATS subject prefix (config nats.subject_prefix), for resends
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

func (o Ops) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

// FailedDelivery is one line of the failed-delivery log: what was to be sent, to whom (masked),
// why it failed and how often it was tried.
type FailedDelivery struct {
	ID          uint64     `json:"id"`
	Channel     string     `json:"channel"`
	State       string     `json:"state"` // dead, failed (will be retried), undelivered (accepted, not received)
	CreditCode  string     `json:"credit_code"`
	FirmName    string     `json:"firm_name"`
	Recipient   string     `json:"recipient"` // masked
	Provider    string     `json:"provider"`
	Attempts    int        `json:"attempts"`
	Code        string     `json:"code"`
	Reason      string     `json:"reason"`
	InDoubt     bool       `json:"in_doubt"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	MatchIDs    []uint64   `json:"match_ids"`
	PolicyIDs   []string   `json:"policy_ids"`
	Resendable  bool       `json:"resendable"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// FailedQuery filters the failed-delivery log. Zero values mean no filter; States defaults to
// dead, failed and undelivered; CreditCodes narrows it to a park manager's firms.
type FailedQuery struct {
	Channel     string
	States      []string
	CreditCodes []string
	Limit       int // default 100
	Offset      int
	// IDs narrows it to these deliveries (a page the console chose by keyset).
	IDs []uint64
}

// Failed lists failed deliveries, most recently changed first, and how many match in all.
func (o Ops) Failed(ctx context.Context, q FailedQuery) ([]FailedDelivery, int64, error) {
	states := q.States
	if len(states) == 0 {
		states = []string{store.DeliveryDead, store.DeliveryFailed, store.DeliveryUndelivered, store.DeliveryUnknown}
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	base := o.DB.WithContext(ctx).Model(&store.Delivery{}).Where("state IN ?", states)
	if q.Channel != "" {
		base = base.Where("channel = ?", q.Channel)
	}
	if len(q.CreditCodes) > 0 {
		base = base.Where("credit_code IN ?", q.CreditCodes)
	}
	if len(q.IDs) > 0 {
		base = base.Where("id IN ?", q.IDs)
	}
	var total int64
	if err := base.Session(&gorm.Session{}).Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count failed deliveries: %w", err)
	}
	var ds []store.Delivery
	if err := base.Order("updated_at DESC, id DESC").Limit(limit).Offset(q.Offset).Find(&ds).Error; err != nil {
		return nil, 0, fmt.Errorf("list failed deliveries: %w", err)
	}
	ids := make([]uint64, len(ds))
	codes := make([]string, len(ds))
	for i, d := range ds {
		ids[i], codes[i] = d.ID, d.CreditCode
	}
	items, err := itemsOf(ctx, o.DB, ids)
	if err != nil {
		return nil, 0, err
	}
	firms, err := loadFirms(ctx, o.DB, codes)
	if err != nil {
		return nil, 0, err
	}
	out := make([]FailedDelivery, len(ds))
	for i, d := range ds {
		f := FailedDelivery{ID: d.ID, Channel: d.Channel, State: d.State, CreditCode: d.CreditCode,
			Recipient: MaskRecipient(d.Channel, d.Recipient), Provider: d.Provider, Attempts: d.Attempts, Code: d.LastCode,
			Reason: d.LastError, InDoubt: d.InDoubt, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
			Resendable: d.State == store.DeliveryDead || d.State == store.DeliveryFailed}
		if d.State == store.DeliveryFailed {
			f.NextAttempt = d.DueAt
		}
		if firm := firms[d.CreditCode]; firm != nil {
			f.FirmName = firm.Name
		}
		for _, it := range items[d.ID] {
			f.MatchIDs = append(f.MatchIDs, it.MatchID)
			f.PolicyIDs = append(f.PolicyIDs, it.PolicyID)
		}
		out[i] = f
	}
	return out, total, nil
}

// Unsendable lists notices no message can carry (no openid and no SMS channel): they are dead as
// items, without a delivery.
func (o Ops) Unsendable(ctx context.Context, limit int) ([]store.DeliveryItem, error) {
	var items []store.DeliveryItem
	err := o.DB.WithContext(ctx).Where("state = ?", store.ItemDead).Order("queued_at DESC").Limit(max(limit, 1)).Find(&items).Error
	return items, err
}

// DeadLetters lists notice messages JetStream gave up on or the notifier could not read.
func (o Ops) DeadLetters(ctx context.Context, limit int) ([]store.DeadLetter, error) {
	var rows []store.DeadLetter
	err := o.DB.WithContext(ctx).Where("resolved_at IS NULL").Order("id DESC").Limit(max(limit, 1)).Find(&rows).Error
	return rows, err
}

// ResendResult says what a resend did for one delivery.
type ResendResult struct {
	ID     uint64 `json:"id"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// Resend queues a new attempt at each delivery that is dead or waiting for a retry, at once and
// with a fresh attempt budget. It is the same delivery with the same id, so the guarantees hold:
// providers that dedupe drop it if the firm already got it, an attempt whose outcome was unknown
// is settled with its provider first, and a firm that unsubscribed or was deregistered meanwhile
// is skipped. Sent, delivered and undelivered messages are not resent (the provider accepted them).
func (o Ops) Resend(ctx context.Context, ids []uint64, actor string) ([]ResendResult, error) {
	now := o.now()
	out := make([]ResendResult, 0, len(ids))
	err := o.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		out = out[:0]
		var ds []store.Delivery
		if err := tx.Where("id IN ?", ids).Find(&ds).Error; err != nil {
			return fmt.Errorf("load deliveries: %w", err)
		}
		byID := map[uint64]store.Delivery{}
		for _, d := range ds {
			byID[d.ID] = d
		}
		var outbox []store.Outbox
		var events []store.DeliveryEvent
		for _, id := range ids {
			d, ok := byID[id]
			switch {
			case !ok:
				out = append(out, ResendResult{ID: id, Reason: "no such delivery"})
				continue
			case d.State != store.DeliveryDead && d.State != store.DeliveryFailed:
				out = append(out, ResendResult{ID: id, Reason: "state " + d.State + ": only dead or failed deliveries are resent"})
				continue
			}
			t := tr(TrResend)
			rows, err := apply(tx, change{tr: t, ids: []uint64{d.ID}, state: d.State, claim: d.Claim, vars: map[string]any{"due_at": now}}, now)
			if err != nil {
				return fmt.Errorf("resend %d: %w", d.ID, err)
			}
			if rows == 0 {
				out = append(out, ResendResult{ID: id, Reason: "changed meanwhile; look again"})
				continue
			}
			outbox = append(outbox, newOutboxJob(o.SubjectPrefix, bus.NoticeJob{Channel: d.Channel, DeliveryID: d.ID}, nil, now))
			events = append(events, t.event(d.ID, now, "", "", clip("by "+actor+"; was "+d.State+": "+d.LastError, 480)))
			out = append(out, ResendResult{ID: id, OK: true})
		}
		if len(outbox) > 0 {
			if err := tx.Create(&outbox).Error; err != nil {
				return fmt.Errorf("queue resends: %w", err)
			}
			if err := tx.Create(&events).Error; err != nil {
				return fmt.Errorf("record resends: %w", err)
			}
		}
		return nil
	})
	return out, err
}

// ResendDead resends every dead delivery (of one channel, when given).
func (o Ops) ResendDead(ctx context.Context, channel, actor string) ([]ResendResult, error) {
	q := o.DB.WithContext(ctx).Model(&store.Delivery{}).Where("state = ?", store.DeliveryDead)
	if channel != "" {
		q = q.Where("channel = ?", channel)
	}
	var ids []uint64
	if err := q.Order("id").Pluck("id", &ids).Error; err != nil {
		return nil, fmt.Errorf("list dead deliveries: %w", err)
	}
	var out []ResendResult
	for lo := 0; lo < len(ids); lo += 500 {
		res, err := o.Resend(ctx, ids[lo:min(lo+500, len(ids))], actor)
		out = append(out, res...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// TimelineItem is one match a delivery announces, with what the firm did about it.
type TimelineItem struct {
	MatchID   uint64     `json:"match_id"`
	PolicyID  string     `json:"policy_id"`
	State     string     `json:"state,omitempty"` // empty: follows the delivery
	Note      string     `json:"note,omitempty"`
	Fallback  bool       `json:"fallback"`
	QueuedAt  time.Time  `json:"queued_at"`
	ReadAt    *time.Time `json:"read_at,omitempty"`      // first time the firm opened its link for the policy
	Response  string     `json:"response,omitempty"`     // confirm or object
	RespondAt *time.Time `json:"responded_at,omitempty"` // when it answered
}

// Step is a milestone of the timeline: queued → sent → delivered / undelivered → read → confirmed.
type Step struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// Timeline is everything known about one delivery. Its first fields repeat FailedDelivery's on
// purpose: both are API answers, and a shared embedded struct would reorder their JSON keys.
type Timeline struct {
	ID          uint64                  `json:"id"`
	Channel     string                  `json:"channel"`
	State       string                  `json:"state"`
	CreditCode  string                  `json:"credit_code"`
	Recipient   string                  `json:"recipient"` // masked
	Provider    string                  `json:"provider"`
	ProviderID  string                  `json:"provider_id"`
	Attempts    int                     `json:"attempts"`
	InDoubt     bool                    `json:"in_doubt"`
	Code        string                  `json:"code"`
	Reason      string                  `json:"reason"`
	NextAttempt *time.Time              `json:"next_attempt,omitempty"`
	Steps       []Step                  `json:"steps"`
	Items       []TimelineItem          `json:"items"`
	Events      []store.DeliveryEvent   `json:"events"`
	Receipts    []store.DeliveryReceipt `json:"receipts"`
}

// ErrNoDelivery is returned for an unknown delivery id.
var ErrNoDelivery = errors.New("no such delivery")

// Timeline explains a delivery: its matches, every event, the receipts, and the firm's reading and
// answer (from the console's link opens and responses).
func (o Ops) Timeline(ctx context.Context, id uint64) (Timeline, error) {
	db := o.DB.WithContext(ctx)
	var d store.Delivery
	if err := db.Where("id = ?", id).Take(&d).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return Timeline{}, ErrNoDelivery
		}
		return Timeline{}, fmt.Errorf("load delivery %d: %w", id, err)
	}
	t := Timeline{ID: d.ID, Channel: d.Channel, State: d.State, CreditCode: d.CreditCode, Recipient: MaskRecipient(d.Channel, d.Recipient),
		Provider: d.Provider, ProviderID: d.ProviderID, Attempts: d.Attempts, InDoubt: d.InDoubt, Code: d.LastCode, Reason: d.LastError}
	if d.State == store.DeliveryFailed || d.State == store.DeliveryQueued {
		t.NextAttempt = d.DueAt
	}
	if err := db.Where("delivery_id = ?", id).Order("at, id").Find(&t.Events).Error; err != nil {
		return t, fmt.Errorf("load events: %w", err)
	}
	queued := store.DeliveryEvent{DeliveryID: d.ID, At: d.CreatedAt, Kind: store.EventQueued, Detail: fmt.Sprintf("%d match(es)", d.Items)}
	t.Events = append([]store.DeliveryEvent{queued}, t.Events...)
	if err := db.Where("delivery_id = ?", id).Order("reported_at, id").Find(&t.Receipts).Error; err != nil {
		return t, fmt.Errorf("load receipts: %w", err)
	}
	items, err := itemsOf(ctx, o.DB, []uint64{id})
	if err != nil {
		return t, err
	}
	var policies []string
	for _, it := range items[id] {
		t.Items = append(t.Items, TimelineItem{MatchID: it.MatchID, PolicyID: it.PolicyID, State: it.State, Note: it.Note,
			Fallback: it.Fallback, QueuedAt: it.QueuedAt})
		policies = append(policies, it.PolicyID)
	}
	var opens []store.LinkOpen
	if len(policies) > 0 {
		if err := db.Where("credit_code = ? AND policy_id IN ?", d.CreditCode, policies).Find(&opens).Error; err != nil {
			return t, fmt.Errorf("load link opens: %w", err)
		}
	}
	var answers []store.EnterpriseResponse
	if len(policies) > 0 {
		if err := db.Where("credit_code = ? AND policy_id IN ?", d.CreditCode, policies).Find(&answers).Error; err != nil {
			return t, fmt.Errorf("load responses: %w", err)
		}
	}
	for i := range t.Items {
		it := &t.Items[i]
		for _, op := range opens {
			if op.PolicyID == it.PolicyID && !op.FirstAt.Before(d.CreatedAt) {
				at := op.FirstAt
				it.ReadAt = &at
			}
		}
		for _, a := range answers {
			if a.PolicyID == it.PolicyID {
				at := a.At
				it.Response, it.RespondAt = a.Kind, &at
			}
		}
	}
	t.Steps = steps(d, t.Items)
	return t, nil
}

// steps condenses a delivery into its milestones.
func steps(d store.Delivery, items []TimelineItem) []Step {
	out := []Step{{Name: "queued", At: d.CreatedAt}}
	if d.SentAt != nil {
		out = append(out, Step{Name: "sent", At: *d.SentAt})
	}
	switch {
	case d.State == store.DeliveryDelivered && d.DeliveredAt != nil:
		out = append(out, Step{Name: "delivered", At: *d.DeliveredAt})
	case d.State == store.DeliveryUndelivered:
		out = append(out, Step{Name: "undelivered", At: d.UpdatedAt})
	case d.State == store.DeliveryDead || d.State == store.DeliverySkipped:
		out = append(out, Step{Name: d.State, At: d.UpdatedAt})
	}
	var read, confirmed *time.Time
	for _, it := range items {
		if it.ReadAt != nil && (read == nil || it.ReadAt.Before(*read)) {
			read = it.ReadAt
		}
		if it.Response == store.ResponseConfirm && it.RespondAt != nil && (confirmed == nil || it.RespondAt.Before(*confirmed)) {
			confirmed = it.RespondAt
		}
	}
	if read != nil {
		out = append(out, Step{Name: "read", At: *read})
	}
	if confirmed != nil {
		out = append(out, Step{Name: "confirmed", At: *confirmed})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// MatchNotice is how one match was announced on one channel.
type MatchNotice struct {
	Channel     string     `json:"channel"`
	DeliveryID  uint64     `json:"delivery_id"` // 0 when no message carries it (see ItemState)
	State       string     `json:"state"`       // the delivery's state, or the item's when it has none
	ItemState   string     `json:"item_state,omitempty"`
	Note        string     `json:"note,omitempty"`
	SentAt      *time.Time `json:"sent_at,omitempty"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	Digest      int        `json:"digest"` // how many matches the message announces
}

// MatchNotices tells, per match, how it was announced on each channel: what the park manager's
// list shows as sent / delivered / failed. Matches never taken in yet have no entry.
func (o Ops) MatchNotices(ctx context.Context, matchIDs []uint64) (map[uint64][]MatchNotice, error) {
	out := map[uint64][]MatchNotice{}
	if len(matchIDs) == 0 {
		return out, nil
	}
	var rows []struct {
		MatchID     uint64
		Channel     string
		DeliveryID  uint64
		ItemState   string
		Note        string
		State       *string
		SentAt      *time.Time
		DeliveredAt *time.Time
		Items       *int
	}
	err := o.DB.WithContext(ctx).Table("delivery_items AS i").
		Select("i.match_id, i.channel, i.delivery_id, i.state AS item_state, i.note, d.state, d.sent_at, d.delivered_at, d.items").
		Joins("LEFT JOIN deliveries d ON d.id = i.delivery_id").
		Where("i.match_id IN ?", matchIDs).Order("i.match_id, i.channel").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("load match notices: %w", err)
	}
	for _, r := range rows {
		mn := MatchNotice{Channel: r.Channel, DeliveryID: r.DeliveryID, ItemState: r.ItemState, Note: r.Note,
			SentAt: r.SentAt, DeliveredAt: r.DeliveredAt, State: r.ItemState}
		if r.State != nil && r.ItemState == "" {
			mn.State = *r.State
		}
		if r.Items != nil {
			mn.Digest = *r.Items
		}
		out[r.MatchID] = append(out[r.MatchID], mn)
	}
	return out, nil
}

// Unsubscribe records that a firm wants no more notices on channel (退订), via "link", "page",
// "api", "cli" or "provider". It takes effect at once: every attempt checks it, including those of
// notices already queued.
func (o Ops) Unsubscribe(ctx context.Context, creditCode, channel, via string) error {
	if channel != ChannelWeChat && channel != ChannelSMS {
		return fmt.Errorf("channel %q: use wechat or sms", channel)
	}
	row := store.ChannelOptOut{CreditCode: creditCode, Channel: channel, At: o.now(), Via: via}
	return o.DB.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error
}

// Resubscribe undoes Unsubscribe. Notices skipped meanwhile stay skipped.
func (o Ops) Resubscribe(ctx context.Context, creditCode, channel string) error {
	return o.DB.WithContext(ctx).Where("credit_code = ? AND channel = ?", creditCode, channel).Delete(&store.ChannelOptOut{}).Error
}

// itemsOf reads the items of deliveries, in queue order.
func itemsOf(ctx context.Context, db *gorm.DB, ids []uint64) (map[uint64][]store.DeliveryItem, error) {
	out := map[uint64][]store.DeliveryItem{}
	if len(ids) == 0 {
		return out, nil
	}
	var items []store.DeliveryItem
	if err := db.WithContext(ctx).Where("delivery_id IN ?", ids).Order("queued_at, match_id").Find(&items).Error; err != nil {
		return nil, fmt.Errorf("load items: %w", err)
	}
	for _, it := range items {
		out[it.DeliveryID] = append(out[it.DeliveryID], it)
	}
	return out, nil
}

// MaskRecipient hides a phone number (138****1234) or an openid (first 4 characters) for lists
// and logs.
func MaskRecipient(channel, r string) string {
	if r == "" {
		return ""
	}
	if channel == ChannelSMS {
		rs := []rune(r)
		if len(rs) < 8 {
			return "****"
		}
		return string(rs[:3]) + "****" + string(rs[len(rs)-4:])
	}
	if len(r) <= 4 {
		return "****"
	}
	return r[:4] + "****"
}
