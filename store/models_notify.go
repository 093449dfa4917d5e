package store

import "time"

// Tables of the notification path (package notify): which message carries which match, what
// happened to each message, the providers' receipts, and notices JetStream gave up on.

// Delivery states added by the notification path to the ones in models.go.
const (
	DeliverySending     = "sending"     // claimed by a notifier and handed to a provider; in doubt if the lease ran out
	DeliveryUndelivered = "undelivered" // the provider accepted it but reported that it did not reach the handset/user
	// DeliveryUnknown: accepted, but no report came within the receipt window and the provider
	// could not say (no status query, or no record): the firm may or may not have it. A late report
	// still moves it on.
	DeliveryUnknown = "unknown"
)

// Item states. An item with an empty state follows its delivery.
const (
	ItemSkipped  = "skipped"  // not announced on purpose (match revoked, firm inactive, opted out)
	ItemFallback = "fallback" // WeChat could not reach the firm; an SMS item was queued instead
	ItemDead     = "dead"     // no message can carry it (no recipient and nowhere to fall back to)
)

// DeliveryItem is one match announced on one channel, and the delivery (message) that carries it.
// The primary key makes it impossible to queue the same match twice on a channel; a digest is a
// delivery with several items. "Every match has exactly one accepted message per channel" is
// checked by joining items to deliveries and the delivery id to the provider's records.
type DeliveryItem struct {
	MatchID uint64 `gorm:"primaryKey;autoIncrement:false" json:"match_id"`
	Channel string `gorm:"primaryKey;size:16" json:"channel"`
	// Kind is what the item announces: empty for the match itself, or a payout step (publicized,
	// paid, failed) of the payout line Ref. Each (match, channel, kind, line) is queued once.
	Kind       string    `gorm:"primaryKey;size:16;default:''" json:"kind,omitempty"`
	Ref        uint64    `gorm:"primaryKey;autoIncrement:false;default:0" json:"ref,omitempty"`
	DeliveryID uint64    `gorm:"not null;default:0;index" json:"delivery_id"` // 0 when no message carries it (see State)
	CreditCode string    `gorm:"size:18;not null;index:ix_item_firm_policy,priority:1" json:"credit_code"`
	PolicyID   string    `gorm:"size:64;not null;index:ix_item_firm_policy,priority:2" json:"policy_id"`
	State      string    `gorm:"size:16;not null;default:''" json:"state"`
	Note       string    `gorm:"size:200;not null;default:''" json:"note"`
	Fallback   bool      `gorm:"not null;default:false" json:"fallback"` // queued because WeChat could not reach the firm
	QueuedAt   time.Time `gorm:"not null" json:"queued_at"`
}

// Delivery event kinds: the timeline of a delivery. "queued" is not stored: it is the delivery's
// creation (CreatedAt, and DueAt for a digest's window).
const (
	EventQueued      = "queued"
	EventDeferred    = "deferred" // digest window, quiet hours, throttle or paused provider: waits, no attempt used
	EventSent        = "sent"
	EventFailed      = "failed" // an attempt failed; Detail says when it is retried
	EventInDoubt     = "in_doubt"
	EventResolved    = "resolved" // an in-doubt attempt turned out accepted (provider lookup)
	EventDead        = "dead"
	EventSkipped     = "skipped"
	EventFallback    = "fallback"
	EventResend      = "resend"
	EventDelivered   = "delivered"
	EventUndelivered = "undelivered"
	EventUnknown     = "unknown" // no report within the receipt window; the provider could not say
)

// DeliveryEvent is one step of a delivery's timeline: queued → sent → delivered / failed, with every
// deferral, failed attempt, resend and receipt in between.
type DeliveryEvent struct {
	ID         uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	DeliveryID uint64    `gorm:"not null;index" json:"delivery_id"`
	At         time.Time `gorm:"not null" json:"at"`
	Kind       string    `gorm:"size:16;not null" json:"kind"`
	Provider   string    `gorm:"size:32;not null;default:''" json:"provider,omitempty"`
	Code       string    `gorm:"size:64;not null;default:''" json:"code,omitempty"`
	Detail     string    `gorm:"size:500;not null;default:''" json:"detail,omitempty"`
}

// DeliveryReceipt is a provider's report on an accepted message (WeChat TEMPLATESENDJOBFINISH,
// Tencent and Aliyun status reports). Providers resend reports; the unique key keeps one per
// message and recipient. RecipientHash is a truncated SHA-256 of the phone or openid, so the
// dedupe key does not store the number a second time.
type DeliveryReceipt struct {
	ID            uint64 `gorm:"primaryKey;autoIncrement" json:"id"`
	Provider      string `gorm:"size:16;not null;uniqueIndex:ux_receipt,priority:1" json:"provider"`
	ProviderID    string `gorm:"size:128;not null;uniqueIndex:ux_receipt,priority:2" json:"provider_id"`
	RecipientHash string `gorm:"size:16;not null;uniqueIndex:ux_receipt,priority:3" json:"-"`
	DeliveryID    uint64 `gorm:"not null;default:0;index" json:"delivery_id"` // 0: no delivery matched
	// Applied is false while the report waits for its delivery to be recorded as sent (a report
	// can overtake the notifier's own record of the send).
	Applied    bool      `gorm:"not null;default:false;index" json:"applied"`
	Delivered  bool      `gorm:"not null" json:"delivered"`
	Code       string    `gorm:"size:64;not null;default:''" json:"code"`
	Detail     string    `gorm:"size:200;not null;default:''" json:"detail"`
	ReportedAt time.Time `gorm:"not null" json:"reported_at"`
	ReceivedAt time.Time `gorm:"not null" json:"received_at"`
}

// DeadLetter is a notice message JetStream stopped redelivering (MAX_DELIVERIES advisory) or one the
// notifier could not use at all (malformed, unknown match). Deliveries that fail are dead in their
// own row; this table holds what never became one.
type DeadLetter struct {
	ID         uint64     `gorm:"primaryKey;autoIncrement" json:"id"`
	Stream     string     `gorm:"size:64;not null;uniqueIndex:ux_dead_letter,priority:1" json:"stream"`
	Seq        uint64     `gorm:"not null;uniqueIndex:ux_dead_letter,priority:2" json:"seq"`
	Subject    string     `gorm:"size:128;not null" json:"subject"`
	Payload    []byte     `json:"payload"`
	Reason     string     `gorm:"size:200;not null" json:"reason"`
	Deliveries int        `gorm:"not null;default:0" json:"deliveries"`
	At         time.Time  `gorm:"not null;index" json:"at"`
	ResolvedAt *time.Time `json:"resolved_at"`
}

func init() {
	Register(&DeliveryItem{}, &DeliveryEvent{}, &DeliveryReceipt{}, &DeadLetter{})
}
