package policies

import (
	"context"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
)

// CalculateActive runs the calculator against the published catalog (the console's 政策计算器 and
// `policypush calc`).
func CalculateActive(ctx context.Context, db *gorm.DB, facts map[string]any, asOf time.Time, opts ...rules.Option) (rules.CalcReport, error) {
	policies, err := LoadPublished(ctx, db, "", opts...)
	if err != nil {
		return rules.CalcReport{}, err
	}
	return rules.Calculate(policies, facts, asOf)
}
