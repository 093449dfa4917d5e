package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// The console's dashboard (/, GET /api/v1/dashboard): the funnel matched → notified → delivered →
// opened → confirmed, amounts by policy, city, park and day, failed deliveries and the payout
// figures, all inside the caller's scope and optionally of one policy. The matched figures are
// sums of the maintained counts (counts.go); docs/console.md "Maintained aggregates".

// DashboardFilter is the scope and policy (empty: every policy) a dashboard figure covers.
type DashboardFilter struct {
	Scope    FirmScope
	PolicyID string
}

// countsQuery is the maintained counts (MatchCount) of the active matches the filter covers,
// under the alias "c". The counter rows carry the firm's region_code and park_id, so the scope
// applies to them as it does to enterprises.
func countsQuery(ctx context.Context, db *gorm.DB, f DashboardFilter) *gorm.DB {
	q := db.WithContext(ctx).Table("match_counts AS c").Where("c.state = ?", MatchActive)
	if f.PolicyID != "" {
		q = q.Where("c.policy_id = ?", f.PolicyID)
	}
	return f.Scope.Apply(q, "c")
}

// ActiveMatchTotal is the number of active matches the filter covers, from the maintained counts.
func ActiveMatchTotal(ctx context.Context, db *gorm.DB, f DashboardFilter) (int64, error) {
	var n int64
	if err := countsQuery(ctx, db, f).Select("COALESCE(SUM(c.n), 0)").Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("count active matches: %w", err)
	}
	return n, nil
}

// FunnelStages are the active matches that reached each stage after "matched".
type FunnelStages struct {
	Notified, Delivered, Opened, Confirmed, Objected int64
}

// ReadFunnelStages counts the active matches the filter covers that reached each stage after
// "matched". Notified and delivered are sums of the maintained counts (MatchCount.Notified,
// Delivered: the matches whose Reached is sent or delivered, reach.go). A firm's link opening and
// its response are unique per (firm, policy), so opened, confirmed and objected join those tables,
// the few firms that acted, to the active matches (by credit code and policy), instead of probing
// them once per match.
func ReadFunnelStages(ctx context.Context, db *gorm.DB, f DashboardFilter) (FunnelStages, error) {
	var out FunnelStages
	var sums struct{ Notified, Delivered int64 }
	if err := countsQuery(ctx, db, f).Select("COALESCE(SUM(c.notified), 0) AS notified, COALESCE(SUM(c.delivered), 0) AS delivered").
		Scan(&sums).Error; err != nil {
		return out, fmt.Errorf("count notified matches: %w", err)
	}
	out.Notified, out.Delivered = sums.Notified, sums.Delivered
	// the acting firms first, in this order (CROSS JOIN on SQLite, STRAIGHT_JOIN on MySQL): left to
	// itself SQLite walks every active match and probes the few openings
	join := "CROSS JOIN"
	if db.Dialector.Name() == "mysql" {
		join = "STRAIGHT_JOIN"
	}
	acted := func(table string) *gorm.DB {
		q := db.WithContext(ctx).Table(table).
			Joins(join+" matches m ON m.credit_code = x.credit_code AND m.policy_id = x.policy_id AND m.state = ?", MatchActive).
			Joins(join + " enterprises e ON e.credit_code = x.credit_code")
		if f.PolicyID != "" {
			q = q.Where("x.policy_id = ?", f.PolicyID)
		}
		return f.Scope.Apply(q, "e")
	}
	if err := acted("link_opens x").Count(&out.Opened).Error; err != nil {
		return out, fmt.Errorf("count opened links: %w", err)
	}
	var resp struct{ Confirmed, Objected int64 }
	if err := acted("enterprise_responses x").Select("COALESCE(SUM(CASE WHEN x.kind = ? THEN 1 ELSE 0 END), 0) AS confirmed, "+
		"COALESCE(SUM(CASE WHEN x.kind = ? THEN 1 ELSE 0 END), 0) AS objected", ResponseConfirm, ResponseObject).
		Scan(&resp).Error; err != nil {
		return out, fmt.Errorf("count answers: %w", err)
	}
	out.Confirmed, out.Objected = resp.Confirmed, resp.Objected
	return out, nil
}

// CountGroup is a group of counter rows: matches, how many of them have an amount, and the sum of
// the amounts in fen.
type CountGroup struct {
	Key       string
	N         int64
	Amounts   int64
	AmountFen int64
}

// GroupBy is what a dashboard chart groups by.
type GroupBy int

const (
	ByPolicy GroupBy = iota
	ByCity           // the first four digits of the region code
	ByPark           // firms in no park are left out
)

// countSums is the SELECT list of a CountGroup over counter rows under alias.
func countSums(alias string) string {
	return "COALESCE(SUM(" + alias + ".n), 0) AS n, COALESCE(SUM(" + alias + ".amounts), 0) AS amounts, COALESCE(SUM(" +
		alias + ".amount_fen), 0) AS amount_fen"
}

// groupKey is a GroupBy's key column (over enterprises, or a table carrying their region code and
// park, under alias) and the condition a row must meet to have one.
func groupKey(by GroupBy, alias string) (key, cond string) {
	switch by {
	case ByCity:
		return "SUBSTR(" + alias + ".region_code, 1, 4)", ""
	case ByPark:
		return alias + ".park_id", alias + ".park_id <> ''"
	}
	return alias + ".policy_id", ""
}

// ActiveMatchGroups sums the active matches the filter covers by policy, city or park, from the
// maintained counts: the largest 30 groups, most matches first.
func ActiveMatchGroups(ctx context.Context, db *gorm.DB, f DashboardFilter, by GroupBy) ([]CountGroup, error) {
	key, cond := groupKey(by, "c")
	q := countsQuery(ctx, db, f).Select(key + " AS `key`, " + countSums("c")).
		Group(key).Having("SUM(c.n) > 0").Order("n DESC").Order("`key`")
	if cond != "" {
		q = q.Where(cond)
	}
	var rows []CountGroup
	if err := q.Limit(30).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sum active matches: %w", err)
	}
	return rows, nil
}

// ActiveMatchHours sums the active matches the filter covers by the UTC hour they were made
// (MatchHour; the key is "2006-01-02T15"), for the chart by local day.
func ActiveMatchHours(ctx context.Context, db *gorm.DB, f DashboardFilter) ([]CountGroup, error) {
	q := db.WithContext(ctx).Table("match_hours AS h")
	if f.PolicyID != "" {
		q = q.Where("h.policy_id = ?", f.PolicyID)
	}
	var rows []CountGroup
	if err := f.Scope.Apply(q, "h").Select("h.hour AS `key`, " + countSums("h")).Group("h.hour").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sum active matches by hour: %w", err)
	}
	return rows, nil
}

// DeadDeliveries counts the deliveries given up on (state dead) to firms the filter covers: from
// the maintained delivery counts (DeliveryCount, a drain behind) for every policy, from the dead
// deliveries themselves (ix_delivery_state) for one.
func DeadDeliveries(ctx context.Context, db *gorm.DB, f DashboardFilter) (int64, error) {
	if f.PolicyID == "" {
		var n int64
		if err := f.Scope.Apply(db.WithContext(ctx).Table("delivery_counts AS c").Where("c.state = ?", DeliveryDead), "c").
			Select("COALESCE(SUM(c.n), 0)").Scan(&n).Error; err != nil {
			return 0, fmt.Errorf("count dead deliveries: %w", err)
		}
		return n, nil
	}
	q := db.WithContext(ctx).Table("deliveries AS d").Joins("JOIN enterprises e ON e.credit_code = d.credit_code").
		Where("d.state = ?", DeliveryDead)
	if f.PolicyID != "" {
		q = q.Where("d.policy_id = ?", f.PolicyID)
	}
	var n int64
	if err := f.Scope.Apply(q, "e").Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count dead deliveries: %w", err)
	}
	return n, nil
}

// PayoutSums are the lines of approved payout batches: approved (not removed, not failed) and
// paid, with their amounts in fen, and failed.
type PayoutSums struct {
	Key         string // the group's key (empty for the totals)
	Approved    int64
	ApprovedFen int64
	Paid        int64
	PaidFen     int64
	Failed      int64
}

// payoutCounts is the SELECT list shared by the totals and the groups.
const payoutCounts = `COALESCE(SUM(CASE WHEN l.state NOT IN ('removed', 'failed') THEN 1 ELSE 0 END), 0) AS approved,
	COALESCE(SUM(CASE WHEN l.state NOT IN ('removed', 'failed') THEN l.amount_fen ELSE 0 END), 0) AS approved_fen,
	COALESCE(SUM(CASE WHEN l.state = 'paid' THEN 1 ELSE 0 END), 0) AS paid,
	COALESCE(SUM(CASE WHEN l.state = 'paid' THEN l.amount_fen ELSE 0 END), 0) AS paid_fen,
	COALESCE(SUM(CASE WHEN l.state = 'failed' THEN 1 ELSE 0 END), 0) AS failed`

// payoutLines are the lines of approved batches to firms the filter covers.
func payoutLines(ctx context.Context, db *gorm.DB, f DashboardFilter) *gorm.DB {
	q := db.WithContext(ctx).Table("payout_lines AS l").
		Joins("JOIN payout_batches b ON b.id = l.batch_id AND b.approved_at IS NOT NULL").
		Joins("JOIN enterprises e ON e.credit_code = l.credit_code")
	if f.PolicyID != "" {
		q = q.Where("l.policy_id = ?", f.PolicyID)
	}
	return f.Scope.Apply(q, "e")
}

// PayoutTotals sums the lines of approved payout batches to firms the filter covers.
func PayoutTotals(ctx context.Context, db *gorm.DB, f DashboardFilter) (PayoutSums, error) {
	var out PayoutSums
	if err := payoutLines(ctx, db, f).Select(payoutCounts).Scan(&out).Error; err != nil {
		return out, fmt.Errorf("sum payout lines: %w", err)
	}
	return out, nil
}

// PayoutGroups sums the same lines by city or park: the 30 groups with the largest approved
// amounts.
func PayoutGroups(ctx context.Context, db *gorm.DB, f DashboardFilter, by GroupBy) ([]PayoutSums, error) {
	key, cond := groupKey(by, "e")
	q := payoutLines(ctx, db, f).Select(key + " AS `key`, " + payoutCounts).Group(key).Order("approved_fen DESC")
	if cond != "" {
		q = q.Where(cond)
	}
	var out []PayoutSums
	if err := q.Limit(30).Scan(&out).Error; err != nil {
		return nil, fmt.Errorf("sum payout lines: %w", err)
	}
	return out, nil
}
