package store

import (
	"context"

	"gorm.io/gorm"
)

// The console's failed-delivery log (/deliveries/failed, GET /api/v1/deliveries): which
// deliveries, in the caller's scope, newest first by (updated_at, id). The lines themselves come
// from notify.Ops.Failed, by id.

// FailedDeliveryFilter selects deliveries in some states, of one channel (empty: both), to firms
// in a scope.
type FailedDeliveryFilter struct {
	Scope   FirmScope
	States  []string
	Channel string
}

func failedQuery(ctx context.Context, db *gorm.DB, f FailedDeliveryFilter) *gorm.DB {
	q := db.WithContext(ctx).Table("deliveries AS d").Where("d.state IN ?", f.States)
	if f.Channel != "" {
		q = q.Where("d.channel = ?", f.Channel)
	}
	if !f.Scope.All() {
		q = f.Scope.Apply(q.Joins("JOIN enterprises e ON e.credit_code = d.credit_code"), "e")
	}
	return q
}

// CountFailedDeliveries counts the deliveries the filter selects, up to max+1.
func CountFailedDeliveries(ctx context.Context, db *gorm.DB, f FailedDeliveryFilter, max int) (int64, error) {
	return CountUpTo(failedQuery(ctx, db, f), max)
}

// FailedDeliveryKeys reads the keys (updated_at, id) of one page of the deliveries the filter
// selects.
func FailedDeliveryKeys(ctx context.Context, db *gorm.DB, f FailedDeliveryFilter, p Page) (Window, error) {
	return KeysetWindow(failedQuery(ctx, db, f), "d.updated_at", "d.id", p)
}
