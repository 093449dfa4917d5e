package admin

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Enterprise size (大中小微) in the park managers' list comes from rules.ClassifySize: the standard
// of 工信部联企业〔2011〕300号 in force on the evaluation date, the same table rules use. Size is not a
// column, so a size filter is applied here, over the rows the other filters left.

// Size tiers, in filter order.
var sizeTiers = []string{rules.SizeLarge, rules.SizeMedium, rules.SizeSmall, rules.SizeMicro}

// maxSizeScan caps how many rows a size filter classifies; past it the caller narrows the filter.
const maxSizeScan = 200000

func sizeOf(industry string, employees int64, revenue, assets float64, asOf time.Time) string {
	res, err := rules.ClassifySize(rules.SizeInput{IndustryCode: industry, Employees: employees, Revenue: revenue, Assets: assets}, asOf, "", 0)
	if err != nil {
		return ""
	}
	return res.Tier
}

func firmSize(e *store.Enterprise, asOf time.Time) string {
	return sizeOf(e.IndustryCode, e.Employees, e.AnnualRevenue, e.TotalAssets, asOf)
}

// sizeFilteredKeys lists, in list order, the keys (matched_at, id) of the matches the filter
// selects, size included.
func (s *Server) sizeFilteredKeys(ctx context.Context, sf store.MatchFilter, size string, asOf time.Time) ([]store.Cursor, error) {
	rows, err := store.MatchSizeInputs(ctx, s.opts.DB, sf, maxSizeScan)
	var many *store.TooManyRowsError
	if errors.As(err, &many) {
		return nil, badRequest("按规模筛选前请先缩小范围：当前条件下有 %d 条匹配，超过 %d 条（可加政策、区划或行业条件）", many.Rows, many.Max)
	}
	if err != nil {
		return nil, err
	}
	keys := make([]store.Cursor, 0, len(rows))
	for _, r := range rows {
		if sizeOf(r.IndustryCode, r.Employees, r.AnnualRevenue, r.TotalAssets, asOf) == size {
			keys = append(keys, store.Cursor{At: r.MatchedAt.UTC(), ID: r.ID})
		}
	}
	return keys, nil
}

// sizeTierOK reports whether a filter value is a tier.
func sizeTierOK(t string) bool { return slices.Contains(sizeTiers, t) }
