package policies

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// ActiveFirms reads every firm in business (存续) with its extra fields, by keyset pagination on
// the credit code, as rule environments on asOf: the population previews and near-miss lists
// evaluate, the same one `match` evaluates.
func ActiveFirms(ctx context.Context, db *gorm.DB, asOf time.Time, opts ...rules.Option) ([]rules.Env, error) {
	return ActiveFirmsProgress(ctx, db, asOf, nil, opts...)
}

// ActiveFirmsProgress is ActiveFirms telling progress (nil: nobody) how many firms each page read
// held: the matcher's progress bar.
func ActiveFirmsProgress(ctx context.Context, db *gorm.DB, asOf time.Time, progress func(n int), opts ...rules.Option) ([]rules.Env, error) {
	var out []rules.Env
	after := ""
	const page = 5000
	for {
		var batch []store.Enterprise
		if err := store.ActiveFirmsByCode(db.WithContext(ctx)).Where("credit_code > ?", after).
			Order("credit_code").Limit(page).Find(&batch).Error; err != nil {
			return nil, fmt.Errorf("load firms after %q: %w", after, err)
		}
		for i := range batch {
			out = append(out, EnvOf(&batch[i], asOf))
		}
		if progress != nil {
			progress(len(batch))
		}
		if len(batch) < page {
			break
		}
		after = batch[len(batch)-1].CreditCode
	}
	if err := AttachExtraFacts(ctx, db, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}
