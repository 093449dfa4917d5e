package store

import (
	"context"
	"time"

	"gorm.io/gorm"
)

// IndexNamesAt is IndexNames of a pass that began at start (a test's clock).
func IndexNamesAt(ctx context.Context, db *gorm.DB, start time.Time) (NameIndexPass, error) {
	return indexNames(ctx, db, nil, start, nameIndexFew)
}

// IndexNamesWalking is IndexNamesAt walking every firm (as with an import's many updates).
func IndexNamesWalking(ctx context.Context, db *gorm.DB, start time.Time) (NameIndexPass, error) {
	return indexNames(ctx, db, nil, start, 1)
}

// SetNameIndexAt records when the last complete pass of the name index began (zero: never).
func SetNameIndexAt(db *gorm.DB, at time.Time) error {
	var ms int64
	if !at.IsZero() {
		ms = at.UnixMilli()
	}
	return db.Exec("UPDATE registry_counters SET n = ? WHERE name = ?", ms, counterNameIndex).Error
}

// FirmsByGrams is FirmsNamed's lookup through the name index alone; ok is false when the index
// cannot answer.
func FirmsByGrams(ctx context.Context, db *gorm.DB, f MatchFilter) (codes []string, ok bool, err error) {
	return firmsByGrams(ctx, db, f, f.namedFirms)
}
