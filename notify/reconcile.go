package notify

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// StatusQuerier is implemented by senders whose provider answers "what became of this message"
// (Tencent PullSmsSendStatusByPhoneNumber, Aliyun QuerySendDetails), looked up by the delivery id
// the send carried. found is false while the provider has no final report.
type StatusQuerier interface {
	QueryStatus(ctx context.Context, n Notice, since time.Time) (r Receipt, found bool, err error)
}

// ReconcileSummary counts what Reconcile did.
type ReconcileSummary struct {
	Checked     int `json:"checked"`
	Delivered   int `json:"delivered"`
	Undelivered int `json:"undelivered"`
	Unknown     int `json:"unknown"` // marked unknown: the provider could not say
	Errors      int `json:"errors"`  // the query failed; left sent, tried again next time
}

// Reconcile settles deliveries stuck in sent: accepted more than window ago with no report (lost
// callbacks, a database stall while reports arrived). For each, the provider that accepted it is
// asked when it can be (StatusQuerier); its answer is recorded as a receipt would be (delivered, or
// undelivered — a WeChat one then falls back to SMS). A delivery the provider cannot speak for
// (WeChat has no status query, or the provider has no report) becomes unknown with an event saying
// so; a report arriving later still moves it on. A query that fails leaves the delivery sent for the
// next round. At most limit deliveries, oldest first.
func Reconcile(ctx context.Context, c ReceiptConfig, senders []Sender, window time.Duration, limit int) (ReconcileSummary, error) {
	var sum ReconcileSummary
	now := c.now()
	var stuck []store.Delivery
	if err := c.DB.WithContext(ctx).Where("state = ? AND sent_at < ?", store.DeliverySent, now.Add(-window)).
		Order("sent_at, id").Limit(max(limit, 1)).Find(&stuck).Error; err != nil {
		return sum, fmt.Errorf("read deliveries waiting for a report: %w", err)
	}
	byName := map[string]StatusQuerier{}
	for _, s := range senders {
		if q, ok := s.(StatusQuerier); ok {
			byName[s.Name()] = q
		}
	}
	var receipts []Receipt
	var unknown []store.Delivery
	for _, d := range stuck {
		sum.Checked++
		q, ok := byName[d.Provider]
		if !ok {
			unknown = append(unknown, d)
			continue
		}
		since := d.CreatedAt
		if d.AttemptedAt != nil {
			since = *d.AttemptedAt
		}
		r, found, err := q.QueryStatus(ctx, Notice{DeliveryID: idText(d.ID), Phone: d.Recipient, OpenID: d.Recipient}, since.Add(-time.Minute))
		switch {
		case err != nil:
			sum.Errors++
			c.log().Warn("query delivery status", "delivery", d.ID, "provider", d.Provider, "err", err)
		case !found:
			unknown = append(unknown, d)
		default:
			r.DeliveryID = d.ID
			if r.ProviderID == "" {
				r.ProviderID = d.ProviderID
			}
			if r.Delivered {
				sum.Delivered++
			} else {
				sum.Undelivered++
			}
			receipts = append(receipts, r)
		}
	}
	if len(receipts) > 0 {
		if _, err := RecordReceipts(ctx, c, receipts); err != nil {
			return sum, err
		}
	}
	err := c.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, d := range unknown {
			detail := "no report within the receipt window; " + d.Provider + " has no status query"
			if _, ok := byName[d.Provider]; ok {
				detail = "no report within the receipt window; " + d.Provider + " has no record of its outcome"
			}
			t := tr(TrUnknown)
			rows, err := apply(tx, change{tr: t, ids: []uint64{d.ID}, vars: map[string]any{"last_error": detail}, channel: d.Channel}, now)
			if err != nil {
				return fmt.Errorf("mark delivery %d unknown: %w", d.ID, err)
			}
			if rows == 0 {
				continue // a report arrived meanwhile
			}
			sum.Unknown++
			ev := t.event(d.ID, now, d.Provider, "", detail)
			if err := tx.Create(&ev).Error; err != nil {
				return fmt.Errorf("record unknown event: %w", err)
			}
		}
		return nil
	})
	return sum, err
}
