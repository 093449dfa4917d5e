package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Status is the overview `policypush status` and the console show.
type Status struct {
	Enterprises       int64                       `json:"enterprises"`
	EnterprisesActive int64                       `json:"enterprises_active"`
	PoliciesActive    int64                       `json:"policies_active"`
	PoliciesPublished int64                       `json:"policies_published"`
	MatchesActive     int64                       `json:"matches_active"`
	OutboxPending     int64                       `json:"outbox_pending"`
	Deliveries        map[string]map[string]int64 `json:"deliveries"` // channel → state → count
}

// ReadStatus counts what is in the database. A policy is active when it is published, not retired
// and asOf lies in its effective window.
func ReadStatus(ctx context.Context, db *gorm.DB, asOf time.Time) (Status, error) {
	s := Status{Deliveries: map[string]map[string]int64{}}
	db = db.WithContext(ctx)
	steps := []struct {
		what string
		q    *gorm.DB
		dst  *int64
	}{
		{"enterprises", db.Model(&Enterprise{}), &s.Enterprises},
		{"active enterprises", db.Model(&Enterprise{}).Where("status = ?", StatusActive), &s.EnterprisesActive},
		{"published policies", db.Model(&Policy{}).Where("published_version > 0 AND retired = ?", false), &s.PoliciesPublished},
		{"active policies", db.Table("policy_versions AS v").
			Joins("JOIN policies p ON p.id = v.policy_id AND p.published_version = v.version").
			Where("p.retired = ? AND v.effective_from <= ? AND (v.effective_to IS NULL OR v.effective_to >= ?)", false, asOf, asOf), &s.PoliciesActive},
		{"active matches", db.Model(&Match{}).Where("state = ?", MatchActive), &s.MatchesActive},
		{"pending outbox", db.Model(&Outbox{}).Where("published_at IS NULL"), &s.OutboxPending},
	}
	for _, st := range steps {
		if err := st.q.Count(st.dst).Error; err != nil {
			return s, fmt.Errorf("count %s: %w", st.what, err)
		}
	}
	var rows []struct {
		Channel string
		State   string
		N       int64
	}
	if err := db.Model(&Delivery{}).Select("channel, state, COUNT(*) AS n").Group("channel, state").Scan(&rows).Error; err != nil {
		return s, fmt.Errorf("count deliveries: %w", err)
	}
	for _, r := range rows {
		if s.Deliveries[r.Channel] == nil {
			s.Deliveries[r.Channel] = map[string]int64{}
		}
		s.Deliveries[r.Channel][r.State] = r.N
	}
	return s, nil
}
