package audit

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Filter selects audit records for the log viewer (console /audit, GET /api/v1/audit).
type Filter struct {
	Actor  string    // exactly
	Action string    // prefix: "firm." selects every firm read
	Object string    // contains
	From   time.Time // at or after (zero: no bound)
	Before time.Time // before (zero: no bound)
}

// Query is the audit records f selects, unordered and unpaged: the viewer pages it by id, newest
// first, with a keyset (store.KeysetWindow), and caps its count (store.CountUpTo).
func Query(ctx context.Context, db *gorm.DB, f Filter) *gorm.DB {
	q := db.WithContext(ctx).Model(&store.AuditLog{})
	if f.Actor != "" {
		q = q.Where("actor = ?", f.Actor)
	}
	if f.Action != "" {
		q = q.Where("action LIKE ? ESCAPE '!'", store.LikePrefix(f.Action))
	}
	if f.Object != "" {
		q = q.Where("object LIKE ? ESCAPE '!'", store.LikeContains(f.Object))
	}
	if !f.From.IsZero() {
		q = q.Where("at >= ?", f.From)
	}
	if !f.Before.IsZero() {
		q = q.Where("at < ?", f.Before)
	}
	return q
}

// Recorded lists the actions the log holds, for the viewer's action filter.
func Recorded(ctx context.Context, db *gorm.DB) ([]string, error) {
	var out []string
	if err := db.WithContext(ctx).Model(&store.AuditLog{}).Distinct("action").Order("action").Pluck("action", &out).Error; err != nil {
		return nil, fmt.Errorf("read audit actions: %w", err)
	}
	return out, nil
}
