package rules

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
		last, err := maxVersion(tx, def.ID)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		v := VersionRow(def, last+1)
		v.State, v.Author, v.SourceFile, v.PublishedAt = store.VersionPublished, actor, sourceFile, &now
		if err := tx.Create(&v).Error; err != nil {
			return fmt.Errorf("store version %d of %s: %w", v.Version, def.ID, err)
		}
		if _, err := promote(tx, def, v.Version); err != nil {
			return err
		}
		if err := audit(tx, Actor{Name: actor}, "policy.publish", def.ID, map[string]any{"old_version": cur.Version,
			"new_version": v.Version, "file": sourceFile, "hash": hash, "via": "apply"}); err != nil {
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

// LoadPublished compiles the published version of every policy that is not retired, links their
// combination rules (see Link) and loads the once-per history. With onlyID set it returns just that
// policy, still linked to the rest of the catalog (a policy that no longer compiles is then left
// out of the links instead of failing the call). Policies outside their window are included;
// callers filter with ActiveOn.
func LoadPublished(ctx context.Context, db *gorm.DB, onlyID string) ([]*Policy, error) {
	q := db.WithContext(ctx).Table("policy_versions AS v").
		Select("v.*").
		Joins("JOIN policies p ON p.id = v.policy_id AND p.published_version = v.version").
		Where("p.retired = ?", false).Order("v.policy_id")
	var rows []store.PolicyVersion
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load published policies: %w", err)
	}
	all := make([]*Policy, 0, len(rows))
	var only *Policy
	for _, r := range rows {
		p, err := compileVersion(r)
		if err != nil {
			if onlyID == "" || r.PolicyID == onlyID {
				return nil, err
			}
			continue
		}
		all = append(all, p)
		if r.PolicyID == onlyID {
			only = p
		}
	}
	Link(all)
	out := all
	if onlyID != "" {
		out = nil
		if only != nil {
			out = []*Policy{only}
		}
	}
	for _, p := range out {
		if err := loadReceived(ctx, db, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compiledVersions caches compiled stored versions by content hash: explanations, previews and the
// calculator load the published catalog per request, and a version's content never changes.
// Programs are immutable and shared; each caller gets its own Policy to link. SetExtraFields clears
// it, since extra fields change what a rule compiles to.
var compiledVersions sync.Map // content hash → *Policy (unlinked template)

// compileVersion compiles a stored version.
func compileVersion(r store.PolicyVersion) (*Policy, error) {
	if t, ok := compiledVersions.Load(r.ContentHash); ok && r.ContentHash != "" {
		p := *t.(*Policy)
		p.Version = r.Version
		return &p, nil
	}
	def, err := FromCanonical([]byte(r.Source))
	if err != nil {
		return nil, fmt.Errorf("policy %s v%d: %w", r.PolicyID, r.Version, err)
	}
	p, err := def.Compile()
	if err != nil {
		return nil, fmt.Errorf("policy %s v%d no longer compiles: %w", r.PolicyID, r.Version, err)
	}
	if r.ContentHash != "" {
		compiledVersions.Store(r.ContentHash, p)
		cp := *p
		p = &cp
	}
	p.Version = r.Version
	return p, nil
}
