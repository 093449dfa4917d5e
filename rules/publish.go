package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// ApplyResult says what applying one definition did.
type ApplyResult struct {
	PolicyID string
	Version  int
	Changed  bool // false: the published version already had this content
}

// Apply publishes a definition as a new immutable version when its content differs from the
// published one (rules as code: the review happened in git). actor is recorded in the audit log.
func Apply(ctx context.Context, db *gorm.DB, def *Definition, sourceFile, actor string) (ApplyResult, error) {
	if _, err := def.Compile(); err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{PolicyID: def.ID}
	hash := def.Hash()
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var pol store.Policy
		err := tx.Where("id = ?", def.ID).Take(&pol).Error
		switch {
		case errors.Is(err, gorm.ErrRecordNotFound):
			pol = store.Policy{ID: def.ID, Title: def.Title, Department: def.Department}
			if err := tx.Create(&pol).Error; err != nil {
				return fmt.Errorf("create policy %s: %w", def.ID, err)
			}
		case err != nil:
			return fmt.Errorf("load policy %s: %w", def.ID, err)
		}
		var cur store.PolicyVersion
		if pol.PublishedVersion > 0 {
			if err := tx.Where("policy_id = ? AND version = ?", def.ID, pol.PublishedVersion).Take(&cur).Error; err != nil {
				return fmt.Errorf("load published version of %s: %w", def.ID, err)
			}
			if cur.ContentHash == hash && !pol.Retired {
				res.Version = cur.Version
				return nil
			}
		}
		var maxVersion int
		if err := tx.Model(&store.PolicyVersion{}).Where("policy_id = ?", def.ID).
			Select("COALESCE(MAX(version), 0)").Scan(&maxVersion).Error; err != nil {
			return fmt.Errorf("next version of %s: %w", def.ID, err)
		}
		now := time.Now().UTC()
		v := VersionRow(def, maxVersion+1)
		v.State, v.Author, v.SourceFile, v.PublishedAt = store.VersionPublished, actor, sourceFile, &now
		if err := tx.Create(&v).Error; err != nil {
			return fmt.Errorf("store version %d of %s: %w", v.Version, def.ID, err)
		}
		if cur.ID != 0 {
			if err := tx.Model(&store.PolicyVersion{}).Where("id = ?", cur.ID).Update("state", store.VersionReplaced).Error; err != nil {
				return err
			}
		}
		if err := tx.Model(&store.Policy{}).Where("id = ?", def.ID).Updates(map[string]any{
			"title": def.Title, "department": def.Department, "published_version": v.Version, "retired": false,
		}).Error; err != nil {
			return err
		}
		detail, _ := json.Marshal(map[string]any{"old_version": cur.Version, "new_version": v.Version, "file": sourceFile, "hash": hash})
		if err := tx.Create(&store.AuditLog{At: now, Actor: actor, Action: "policy.publish", Object: def.ID, Detail: string(detail)}).Error; err != nil {
			return err
		}
		res.Version, res.Changed = v.Version, true
		return nil
	})
	return res, err
}

// VersionRow is the stored form of a definition as a version (state and people left to the caller).
func VersionRow(def *Definition, version int) store.PolicyVersion {
	v := store.PolicyVersion{
		PolicyID: def.ID, Version: version, ContentHash: def.Hash(), Source: string(def.Canonical()),
		Title: def.Title, DocNo: def.DocNo, Department: def.Department, Category: def.Category,
		EffectiveFrom: def.EffectiveFrom.Time,
	}
	if def.EffectiveTo != nil {
		t := def.EffectiveTo.Time
		v.EffectiveTo = &t
	}
	return v
}

// LoadPublished compiles the published version of every policy that is not retired. With onlyID
// set, just that policy. Policies outside their window are included; callers filter with ActiveOn.
func LoadPublished(ctx context.Context, db *gorm.DB, onlyID string) ([]*Policy, error) {
	q := db.WithContext(ctx).Table("policy_versions AS v").
		Select("v.*").
		Joins("JOIN policies p ON p.id = v.policy_id AND p.published_version = v.version").
		Where("p.retired = ?", false).Order("v.policy_id")
	if onlyID != "" {
		q = q.Where("v.policy_id = ?", onlyID)
	}
	var rows []store.PolicyVersion
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load published policies: %w", err)
	}
	out := make([]*Policy, 0, len(rows))
	for _, r := range rows {
		def, err := FromCanonical([]byte(r.Source))
		if err != nil {
			return nil, fmt.Errorf("policy %s v%d: %w", r.PolicyID, r.Version, err)
		}
		p, err := def.Compile()
		if err != nil {
			return nil, fmt.Errorf("policy %s v%d no longer compiles: %w", r.PolicyID, r.Version, err)
		}
		p.Version = r.Version
		out = append(out, p)
	}
	return out, nil
}
