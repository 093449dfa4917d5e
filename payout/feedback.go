package payout

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"

	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Feedback records a firm's rating (1–5) and comment on a paid line, once per line (its page is
// the only way in; the signed link names the firm).
func (s *Service) Feedback(ctx context.Context, lineID uint64, creditCode string, rating int, comment string) error {
	comment = strings.TrimSpace(comment)
	if rating < 1 || rating > 5 {
		return fmt.Errorf("%w: rating %d must be 1 to 5", ErrInvalid, rating)
	}
	if len([]rune(comment)) > 1000 {
		return fmt.Errorf("%w: the comment is longer than 1000 characters", ErrInvalid)
	}
	now := s.now()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var l store.PayoutLine
		if err := tx.Where("id = ? AND credit_code = ?", lineID, creditCode).Take(&l).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("%w: payout line %d of your firm", ErrNotFound, lineID)
			}
			return fmt.Errorf("load line %d: %w", lineID, err)
		}
		if l.State != store.LinePaid {
			return fmt.Errorf("%w: feedback is taken once the money is paid", ErrState)
		}
		fb := store.PayoutFeedback{LineID: l.ID, PolicyID: l.PolicyID, CreditCode: creditCode, Rating: rating, Comment: comment, At: now}
		if err := tx.Create(&fb).Error; err != nil {
			if store.IsUniqueViolation(err) {
				return fmt.Errorf("%w: your firm already rated this payment", ErrState)
			}
			return fmt.Errorf("record feedback: %w", err)
		}
		actor := "firm:" + creditCode
		if err := event(tx, l.BatchID, l.ID, "feedback", actor, fmt.Sprintf("%d 星 %s", rating, comment), now); err != nil {
			return err
		}
		return audit(tx, Actor{Name: actor}, auditlog.PayoutFeedback, batchObject(l.BatchID), map[string]any{"line_id": l.ID, "rating": rating}, now)
	})
}

// FeedbackFigures is the feedback of one policy.
type FeedbackFigures struct {
	PolicyID string  `json:"policy_id"`
	Ratings  int64   `json:"ratings"`
	Average  float64 `json:"average"`
	// Comments are the latest comments (up to five).
	Comments []string `json:"comments"`
}

// FeedbackByPolicy summarises the ratings per policy; policyIDs narrows (nil: every policy).
func (s *Service) FeedbackByPolicy(ctx context.Context, policyIDs []string) ([]FeedbackFigures, error) {
	db := s.db.WithContext(ctx)
	var rows []struct {
		PolicyID string
		N        int64
		Sum      int64
	}
	q := db.Model(&store.PayoutFeedback{}).Select("policy_id, COUNT(*) AS n, SUM(rating) AS sum").Group("policy_id").Order("policy_id")
	if policyIDs != nil {
		q = q.Where("policy_id IN ?", policyIDs)
	}
	if err := q.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("summarise feedback: %w", err)
	}
	out := make([]FeedbackFigures, 0, len(rows))
	for _, r := range rows {
		f := FeedbackFigures{PolicyID: r.PolicyID, Ratings: r.N}
		if r.N > 0 {
			f.Average = float64(r.Sum*10/r.N) / 10
		}
		if err := db.Model(&store.PayoutFeedback{}).Where("policy_id = ? AND comment <> ''", r.PolicyID).
			Order("at DESC").Limit(5).Pluck("comment", &f.Comments).Error; err != nil {
			return nil, fmt.Errorf("load comments of %s: %w", r.PolicyID, err)
		}
		out = append(out, f)
	}
	return out, nil
}
