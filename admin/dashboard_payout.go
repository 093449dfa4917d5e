package admin

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/store"
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

// payoutFunnel adds the reads of the payout part of the dashboard to g; they fill f.
func (s *Server) payoutFunnel(ctx context.Context, g *errgroup.Group, df store.DashboardFilter, f *payoutFunnel) {
	g.Go(func() error {
		tot, err := store.PayoutTotals(ctx, s.opts.DB, df)
		if err != nil {
			return err
		}
		f.Approved, f.ApprovedFen, f.Paid, f.PaidFen, f.Failed = tot.Approved, tot.ApprovedFen, tot.Paid, tot.PaidFen, tot.Failed
		f.ApprovedAmount, f.PaidAmount = payout.YuanGrouped(f.ApprovedFen), payout.YuanGrouped(f.PaidFen)
		return nil
	})
	for _, gr := range []struct {
		dst *[]payoutGroup
		by  store.GroupBy
	}{{&f.ByCity, store.ByCity}, {&f.ByPark, store.ByPark}} {
		g.Go(func() error {
			sums, err := store.PayoutGroups(ctx, s.opts.DB, df, gr.by)
			if err != nil {
				return err
			}
			*gr.dst = make([]payoutGroup, len(sums))
			for i, x := range sums {
				r := payoutGroup{Key: x.Key, Label: x.Key, Approved: x.Approved, ApprovedFen: x.ApprovedFen, Paid: x.Paid, PaidFen: x.PaidFen,
					ApprovedAmount: payout.YuanGrouped(x.ApprovedFen), PaidAmount: payout.YuanGrouped(x.PaidFen)}
				if c := cityNames[r.Key]; c != "" {
					r.Label = c
				}
				(*gr.dst)[i] = r
			}
			return nil
		})
	}
	g.Go(func() (err error) {
		var ids []string
		if df.PolicyID != "" {
			ids = []string{df.PolicyID}
		}
		f.Feedback, err = s.payouts().FeedbackByPolicy(ctx, ids)
		return err
	})
}
