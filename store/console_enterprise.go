package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// What a firm's own page (/e/{token}, opened from the signed link of its notice) reads and writes:
// always of the one credit code the link names.

// EnterpriseMatches lists a firm's active matches and every match of the policy its link names
// (so the page can say the firm no longer qualifies), newest first.
func EnterpriseMatches(ctx context.Context, db *gorm.DB, code, linkPolicy string) ([]Match, error) {
	var out []Match
	if err := db.WithContext(ctx).Where("credit_code = ? AND (state = ? OR policy_id = ?)", code, MatchActive, linkPolicy).
		Order("matched_at DESC, id DESC").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read the matches of %s: %w", code, err)
	}
	return out, nil
}

// ActiveMatchOf is a firm's newest active match of a policy; ErrNotFound when it has none.
func ActiveMatchOf(ctx context.Context, db *gorm.DB, code, policyID string) (Match, error) {
	var m Match
	if err := db.WithContext(ctx).Where("credit_code = ? AND policy_id = ? AND state = ?", code, policyID, MatchActive).
		Order("id DESC").Take(&m).Error; err != nil {
		return m, fmt.Errorf("read the match of %s for %s: %w", code, policyID, err)
	}
	return m, nil
}

// RecordLinkOpen counts a visit of a firm's link for a policy (the "opened" step of the funnel):
// the first visit adds the row, later ones count up.
func RecordLinkOpen(ctx context.Context, db *gorm.DB, code, policyID string, at time.Time) error {
	db = db.WithContext(ctx)
	res := db.Model(&LinkOpen{}).Where("credit_code = ? AND policy_id = ?", code, policyID).
		Updates(map[string]any{"count": gorm.Expr("count + 1"), "last_at": at})
	if res.Error != nil {
		return fmt.Errorf("count a link open: %w", res.Error)
	}
	if res.RowsAffected > 0 {
		return nil
	}
	err := db.Create(&LinkOpen{CreditCode: code, PolicyID: policyID, FirstAt: at, LastAt: at, Count: 1}).Error
	if IsUniqueViolation(err) { // opened twice at the same moment: the other request counted it
		return nil
	}
	if err != nil {
		return fmt.Errorf("count a link open: %w", err)
	}
	return nil
}

// CreateResponse stores a firm's answer (a.ID is set) and its audit record in one transaction. A
// second answer to the same policy is a unique violation (IsUniqueViolation).
func CreateResponse(ctx context.Context, db *gorm.DB, a *EnterpriseResponse, record Recorder) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(a).Error; err != nil {
			return fmt.Errorf("store the answer of %s: %w", a.CreditCode, err)
		}
		return record(tx)
	})
}
