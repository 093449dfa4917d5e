package policies

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Preview compares a candidate definition with the published version of the same policy on the
// firms in business as of asOf. samples caps each sample list.
func Preview(ctx context.Context, db *gorm.DB, def *rules.Definition, asOf time.Time, samples int, opts ...rules.Option) (rules.PreviewReport, error) {
	cand, err := def.Compile(opts...)
	if err != nil {
		return rules.PreviewReport{}, err
	}
	var next int
	if err := db.WithContext(ctx).Model(&store.PolicyVersion{}).Where("policy_id = ?", def.ID).
		Select("COALESCE(MAX(version), 0)").Scan(&next).Error; err != nil {
		return rules.PreviewReport{}, fmt.Errorf("versions of %s: %w", def.ID, err)
	}
	cand.Version = next + 1
	return previewCompiled(ctx, db, cand, asOf, samples, opts...)
}

// PreviewVersion previews a stored version (a draft, one in review or an approved one).
func PreviewVersion(ctx context.Context, db *gorm.DB, policyID string, version int, asOf time.Time, samples int, opts ...rules.Option) (rules.PreviewReport, error) {
	row, err := loadVersionRow(ctx, db, policyID, version)
	if err != nil {
		return rules.PreviewReport{}, err
	}
	cand, err := compileVersion(row, opts...)
	if err != nil {
		return rules.PreviewReport{}, err
	}
	return previewCompiled(ctx, db, cand, asOf, samples, opts...)
}

func previewCompiled(ctx context.Context, db *gorm.DB, cand *rules.Policy, asOf time.Time, samples int, opts ...rules.Option) (rules.PreviewReport, error) {
	published, err := LoadPublished(ctx, db, "", opts...)
	if err != nil {
		return rules.PreviewReport{}, err
	}
	var cur *rules.Policy
	others := make([]*rules.Policy, 0, len(published)+1)
	for _, p := range published {
		if p.Def.ID == cand.Def.ID {
			cur = p
			continue
		}
		cp := *p // the published set stays linked to cur; the copies link to the candidate
		others = append(others, &cp)
	}
	rules.Link(append(others, cand))
	if err := loadReceived(ctx, db, cand); err != nil {
		return rules.PreviewReport{}, err
	}
	firms, err := ActiveFirms(ctx, db, asOf, opts...)
	if err != nil {
		return rules.PreviewReport{}, err
	}
	return rules.PreviewFirms(cur, cand, firms, samples), nil
}

// loadVersionRow reads a stored version (0: the latest).
func loadVersionRow(ctx context.Context, db *gorm.DB, policyID string, version int) (store.PolicyVersion, error) {
	var row store.PolicyVersion
	q := db.WithContext(ctx).Where("policy_id = ?", policyID)
	if version > 0 {
		q = q.Where("version = ?", version)
	}
	if err := q.Order("version DESC").Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			if version > 0 {
				return row, fmt.Errorf("policy %s has no version %d (see `policypush policy versions %s`): %w", policyID, version, policyID, ErrNotFound)
			}
			return row, fmt.Errorf("policy %s has no versions: %w", policyID, ErrNotFound)
		}
		return row, fmt.Errorf("load policy %s: %w", policyID, err)
	}
	return row, nil
}
