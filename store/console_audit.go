package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// AuditLogsByID reads audit records by id, newest first (a page of the audit log viewer, whose
// query is core/audit.Query).
func AuditLogsByID(ctx context.Context, db *gorm.DB, ids []uint64) ([]AuditLog, error) {
	var out []AuditLog
	if len(ids) == 0 {
		return out, nil
	}
	if err := db.WithContext(ctx).Where("id IN ?", ids).Order("id DESC").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	return out, nil
}
