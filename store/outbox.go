package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// OutboxPending counts the outbox rows not yet published (scheduled ones included) and the notices
// they carry: Rows is what `status` shows and what `serve --until-idle` waits on, Notices what
// bus.Pending and the benchmarks wait for. It is the one such count for every caller, so it lives
// in store, below all of them.
type OutboxPending struct {
	Rows    int64 `json:"rows" gorm:"column:pending_rows"`
	Notices int64 `json:"notices" gorm:"column:pending_notices"`
}

// PendingOutbox reads both counts in one statement (the outbox's published_at index serves it).
func PendingOutbox(ctx context.Context, db *gorm.DB) (OutboxPending, error) {
	var p OutboxPending
	err := db.WithContext(ctx).Model(&Outbox{}).Where("published_at IS NULL").
		Select("COUNT(*) AS pending_rows, COALESCE(SUM(notices), 0) AS pending_notices").Scan(&p).Error
	if err != nil {
		return p, fmt.Errorf("count pending outbox rows: %w", err)
	}
	return p, nil
}
