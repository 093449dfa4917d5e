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
	Limit  int       // page size (0: 50)
	Offset int
}

// Page is one page of records, newest first, with the count of all that match.
type Page struct {
	Rows  []store.AuditLog
	Total int64
}

// List reads one page of the audit log.
func List(ctx context.Context, db *gorm.DB, f Filter) (Page, error) {
	var out Page
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
	if err := q.Count(&out.Total).Error; err != nil {
		return out, fmt.Errorf("count audit records: %w", err)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	if err := q.Order("id DESC").Limit(limit).Offset(f.Offset).Find(&out.Rows).Error; err != nil {
		return out, fmt.Errorf("read audit records: %w", err)
	}
	return out, nil
}

// Recorded lists the actions the log holds, for the viewer's action filter.
func Recorded(ctx context.Context, db *gorm.DB) ([]string, error) {
	var out []string
	if err := db.WithContext(ctx).Model(&store.AuditLog{}).Distinct("action").Order("action").Pluck("action", &out).Error; err != nil {
		return nil, fmt.Errorf("read audit actions: %w", err)
	}
	return out, nil
}
