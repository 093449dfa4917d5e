package admin

import (
	"context"

	"gorm.io/gorm"

	"github.com/policypush/policypush/payout"
)

// The dashboard's funnel continues past "confirmed" into the payout stage: approved (a line in an
// approved batch, not removed and not failed) → paid, with amounts per city and park inside the
// principal's scope, and the firms' ratings per policy.

// payoutFunnel is the payout part of the dashboard. Amounts are fen and their 元 text.
type payoutFunnel struct {
	Approved       int64                    `json:"approved"`
	ApprovedFen    int64                    `json:"approved_fen"`
	ApprovedAmount string                   `json:"approved_amount"`
	Paid           int64                    `json:"paid"`
	PaidFen        int64                    `json:"paid_fen"`
	PaidAmount     string                   `json:"paid_amount"`
	Failed         int64                    `json:"failed"`
	ByCity         []payoutGroup            `json:"by_city"`
	ByPark         []payoutGroup            `json:"by_park"`
	Feedback       []payout.FeedbackFigures `json:"feedback"`
}

type payoutGroup struct {
	Key            string `json:"key"`
	Label          string `json:"label"`
	Approved       int64  `json:"approved"`
	ApprovedFen    int64  `json:"approved_fen"`
	Paid           int64  `json:"paid"`
	PaidFen        int64  `json:"paid_fen"`
	ApprovedAmount string `json:"approved_amount"`
	PaidAmount     string `json:"paid_amount"`
}

// payoutCounts is the SELECT list shared by the totals and the groups.
const payoutCounts = `COALESCE(SUM(CASE WHEN l.state NOT IN ('removed', 'failed') THEN 1 ELSE 0 END), 0) AS approved,
	COALESCE(SUM(CASE WHEN l.state NOT IN ('removed', 'failed') THEN l.amount_fen ELSE 0 END), 0) AS approved_fen,
	COALESCE(SUM(CASE WHEN l.state = 'paid' THEN 1 ELSE 0 END), 0) AS paid,
	COALESCE(SUM(CASE WHEN l.state = 'paid' THEN l.amount_fen ELSE 0 END), 0) AS paid_fen`

func (s *Server) payoutFunnel(ctx context.Context, p *Principal, policyID string) (payoutFunnel, error) {
	var f payoutFunnel
	lines := func() *gorm.DB {
		q := s.opts.DB.WithContext(ctx).Table("payout_lines AS l").
			Joins("JOIN payout_batches b ON b.id = l.batch_id AND b.approved_at IS NOT NULL").
			Joins("JOIN enterprises e ON e.credit_code = l.credit_code")
		if policyID != "" {
			q = q.Where("l.policy_id = ?", policyID)
		}
		return p.scopeFirms(q, "e")
	}
	var tot struct{ Approved, ApprovedFen, Paid, PaidFen, Failed int64 }
	if err := lines().Select(payoutCounts + `, COALESCE(SUM(CASE WHEN l.state = 'failed' THEN 1 ELSE 0 END), 0) AS failed`).Scan(&tot).Error; err != nil {
		return f, err
	}
	f.Approved, f.ApprovedFen, f.Paid, f.PaidFen, f.Failed = tot.Approved, tot.ApprovedFen, tot.Paid, tot.PaidFen, tot.Failed
	f.ApprovedAmount, f.PaidAmount = payout.YuanGrouped(f.ApprovedFen), payout.YuanGrouped(f.PaidFen)
	for _, g := range []struct {
		dst  *[]payoutGroup
		key  string
		cond string
	}{
		{&f.ByCity, "SUBSTR(e.region_code, 1, 4)", ""},
		{&f.ByPark, "e.park_id", "e.park_id <> ''"},
	} {
		q := lines().Select(g.key + " AS `key`, " + payoutCounts).Group(g.key).Order("approved_fen DESC")
		if g.cond != "" {
			q = q.Where(g.cond)
		}
		if err := q.Limit(30).Scan(g.dst).Error; err != nil {
			return f, err
		}
		for i := range *g.dst {
			r := &(*g.dst)[i]
			r.Label = r.Key
			if c := cityNames[r.Key]; c != "" {
				r.Label = c
			}
			r.ApprovedAmount, r.PaidAmount = payout.YuanGrouped(r.ApprovedFen), payout.YuanGrouped(r.PaidFen)
		}
	}
	var ids []string
	if policyID != "" {
		ids = []string{policyID}
	}
	var err error
	f.Feedback, err = s.payouts().FeedbackByPolicy(ctx, ids)
	return f, err
}
