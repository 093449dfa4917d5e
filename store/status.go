package store

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
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
// and asOf lies in its effective window (the evaluation date, which need not be today). scope
// narrows every firm count to the firms a caller may see (the console passes a principal's park or
// region scope; FirmScope{} is everything). A scoped status has no outbox count (OutboxPending is
// -1): the outbox is the pipeline's, not a park's. The active matches are read from the
// maintained counts (MatchCount), the firms and the deliveries from theirs (FirmCount,
// DeliveryCount: the deliveries as the notifier's last drain of the delivery queue counted them,
// a moment behind; DrainDeliveries first for the figures as of now).
func ReadStatus(ctx context.Context, db *gorm.DB, asOf time.Time, scope FirmScope) (Status, error) {
	s := Status{Deliveries: map[string]map[string]int64{}}
	// independent statements, a few at once (as the dashboard's: their waits behind a busy
	// pipeline do not add up)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	db = db.WithContext(ctx)
	count := func(what string, q *gorm.DB, dst *int64) {
		g.Go(func() error {
			if err := q.Count(dst).Error; err != nil {
				return fmt.Errorf("count %s: %w", what, err)
			}
			return nil
		})
	}
	count("published policies", db.Model(&Policy{}).Where("published_version > 0 AND retired = ?", false), &s.PoliciesPublished)
	count("active policies", db.Table("policy_versions AS v").
		Joins("JOIN policies p ON p.id = v.policy_id AND p.published_version = v.version").
		Where("p.retired = ? AND v.effective_from <= ? AND (v.effective_to IS NULL OR v.effective_to >= ?)", false, asOf, asOf), &s.PoliciesActive)
	if scope.All() {
		count("pending outbox", db.Model(&Outbox{}).Where("published_at IS NULL"), &s.OutboxPending)
	} else {
		s.OutboxPending = -1
	}
	// the firms from the maintained counts (FirmCount), a few rows per place
	var firmRows []FirmCount
	g.Go(func() error {
		if err := scope.Apply(db.Table("firm_counts AS f"), "f").Select("f.status, SUM(f.n) AS n").Group("f.status").Scan(&firmRows).Error; err != nil {
			return fmt.Errorf("count enterprises: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := scope.Apply(db.Table("match_counts AS c").Where("c.state = ?", MatchActive), "c").
			Select("COALESCE(SUM(c.n), 0)").Scan(&s.MatchesActive).Error; err != nil {
			return fmt.Errorf("count active matches: %w", err)
		}
		return nil
	})
	var rows []struct {
		Channel string
		State   string
		N       int64
	}
	// the deliveries from their maintained counts (DeliveryCount), a drain behind
	g.Go(func() error {
		if err := scope.Apply(db.Table("delivery_counts AS c"), "c").Select("c.channel AS channel, c.state AS state, SUM(c.n) AS n").
			Group("c.channel, c.state").Having("SUM(c.n) <> 0").Scan(&rows).Error; err != nil {
			return fmt.Errorf("count deliveries: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return s, err
	}
	for _, r := range firmRows {
		s.Enterprises += r.N
		if r.Status == StatusActive {
			s.EnterprisesActive += r.N
		}
	}
	for _, r := range rows {
		if s.Deliveries[r.Channel] == nil {
			s.Deliveries[r.Channel] = map[string]int64{}
		}
		s.Deliveries[r.Channel][r.State] = r.N
	}
	return s, nil
}
