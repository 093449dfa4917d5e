package policies

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// ApplyResult says what applying one definition did.
type ApplyResult struct {
	PolicyID string
	Version  int
	Changed  bool   // false: the published version already had this content
	Pending  string // Propose: the state of the version waiting for a second person (in_review, approved)
}

// Apply publishes a definition as a new immutable version when its content differs from the
// published one (rules as code: the review happened in git). actor is recorded in the audit log.
func Apply(ctx context.Context, db *gorm.DB, def *rules.Definition, sourceFile, actor string, opts ...rules.Option) (ApplyResult, error) {
	return ApplyBy(ctx, db, def, sourceFile, Actor{Name: actor}, "", opts...)
}

// ApplyBy is Apply on behalf of by (its role goes into the audit record); noReview, when set, says
// in the audit record why no second person reviewed the version (a single-operator deployment,
// review switched off in config).
func ApplyBy(ctx context.Context, db *gorm.DB, def *rules.Definition, sourceFile string, by Actor, noReview string, opts ...rules.Option) (ApplyResult, error) {
	actor := by.Name
	if _, err := def.Compile(opts...); err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{PolicyID: def.ID}
	hash := def.Hash()
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		pol, err := policyRow(tx, def)
		if err != nil {
			return err
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
		detail := map[string]any{"old_version": cur.Version, "new_version": v.Version, "file": sourceFile, "hash": hash, "via": "apply"}
		if noReview != "" {
			detail["review"] = noReview
		}
		if err := audit(tx, by, "policy.publish", def.ID, detail); err != nil {
			return err
		}
		res.Version, res.Changed = v.Version, true
		return nil
	})
	return res, err
}

// Propose puts a definition through the review lifecycle, as the console does: when its content
// differs from the published version it is saved as a draft by by (an author of the policy's
// department) and submitted for review — its tests must pass; a second person approves and
// publishes it. Version is 0 and Changed false when the published version already has the content.
func Propose(ctx context.Context, db *gorm.DB, def *rules.Definition, sourceFile string, by Actor, opts ...rules.Option) (ApplyResult, error) {
	res := ApplyResult{PolicyID: def.ID}
	var pol store.Policy
	err := db.WithContext(ctx).Where("id = ?", def.ID).Take(&pol).Error
	switch {
	case err == nil && pol.PublishedVersion > 0 && !pol.Retired:
		var cur store.PolicyVersion
		if err := db.WithContext(ctx).Where("policy_id = ? AND version = ?", def.ID, pol.PublishedVersion).Take(&cur).Error; err != nil {
			return res, fmt.Errorf("load published version of %s: %w", def.ID, err)
		}
		if cur.ContentHash == def.Hash() {
			res.Version = cur.Version
			return res, nil
		}
	case err != nil && !errors.Is(err, gorm.ErrRecordNotFound):
		return res, fmt.Errorf("load policy %s: %w", def.ID, err)
	}
	// The same content already in review or approved: nothing to do (running apply twice must not
	// withdraw the version a reviewer is reading).
	var open []store.PolicyVersion
	if err := db.WithContext(ctx).Where("policy_id = ? AND state IN ? AND content_hash = ?", def.ID,
		[]string{store.VersionInReview, store.VersionApproved}, def.Hash()).Find(&open).Error; err != nil {
		return res, fmt.Errorf("load open versions of %s: %w", def.ID, err)
	}
	if len(open) > 0 {
		res.Version, res.Pending = open[0].Version, open[0].State
		return res, nil
	}
	draft, err := SaveDraft(ctx, db, def, by, sourceFile, opts...)
	if err != nil {
		return res, err
	}
	v, err := Submit(ctx, db, def.ID, draft.Version, by, opts...)
	if err != nil {
		return res, err
	}
	res.Version, res.Changed, res.Pending = v.Version, true, v.State
	return res, nil
}

// VersionRow is the stored form of a definition as a version (state and people left to the caller).
func VersionRow(def *rules.Definition, version int) store.PolicyVersion {
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
func LoadPublished(ctx context.Context, db *gorm.DB, onlyID string, opts ...rules.Option) ([]*rules.Policy, error) {
	read := func(cols string) ([]store.PolicyVersion, error) {
		var rows []store.PolicyVersion
		err := db.WithContext(ctx).Table("policy_versions AS v").Select(cols).
			Joins("JOIN policies p ON p.id = v.policy_id AND p.published_version = v.version").
			Where("p.retired = ?", false).Order("v.policy_id").Find(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("load published policies: %w", err)
		}
		return rows, nil
	}
	// The versions' keys first: their programs are usually compiled already (compiledVersions),
	// and reading every version's source at each call was most of a firm page's catalog read
	// (27 ms at 1,000 policies). Only when one is not does the catalog come again with sources.
	rows, err := read("v.policy_id, v.version, v.content_hash")
	if err != nil {
		return nil, err
	}
	if !allCompiled(rows, opts...) {
		if rows, err = read("v.*"); err != nil {
			return nil, err
		}
	}
	all := make([]*rules.Policy, 0, len(rows))
	var only *rules.Policy
	for _, r := range rows {
		p, err := compileVersion(r, opts...)
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
	rules.Link(all)
	out := all
	if onlyID != "" {
		out = nil
		if only != nil {
			out = []*rules.Policy{only}
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
// Programs are immutable and shared; each caller gets its own Policy to link. The key includes the
// vocabulary (its extra fields change what a rule compiles to). It is a memo of pure compilation,
// not configuration: every caller still says which vocabulary it compiles against.
var compiledVersions sync.Map // content hash + vocabulary key → *rules.Policy (unlinked template)

// allCompiled reports whether compiledVersions holds every version of rows.
func allCompiled(rows []store.PolicyVersion, opts ...rules.Option) bool {
	vocab := rules.VocabularyOf(opts...).Key()
	for _, r := range rows {
		if r.ContentHash == "" {
			return false
		}
		if _, ok := compiledVersions.Load(r.ContentHash + "\x00" + vocab); !ok {
			return false
		}
	}
	return true
}

// compileVersion compiles a stored version.
func compileVersion(r store.PolicyVersion, opts ...rules.Option) (*rules.Policy, error) {
	key := r.ContentHash + "\x00" + rules.VocabularyOf(opts...).Key()
	if t, ok := compiledVersions.Load(key); ok && r.ContentHash != "" {
		p := *t.(*rules.Policy)
		p.Version = r.Version
		return &p, nil
	}
	def, err := rules.FromCanonical([]byte(r.Source))
	if err != nil {
		return nil, fmt.Errorf("policy %s v%d: %w", r.PolicyID, r.Version, err)
	}
	p, err := def.Compile(opts...)
	if err != nil {
		return nil, fmt.Errorf("policy %s v%d no longer compiles: %w", r.PolicyID, r.Version, err)
	}
	if r.ContentHash != "" {
		compiledVersions.Store(key, p)
		cp := *p
		p = &cp
	}
	p.Version = r.Version
	return p, nil
}

// policyRow loads the catalog row of def's policy in tx, creating it (title and department from
// def) when the policy is new.
func policyRow(tx *gorm.DB, def *rules.Definition) (store.Policy, error) {
	var pol store.Policy
	err := tx.Where("id = ?", def.ID).Take(&pol).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		pol = store.Policy{ID: def.ID, Title: def.Title, Department: def.Department}
		if err := tx.Create(&pol).Error; err != nil {
			return pol, fmt.Errorf("create policy %s: %w", def.ID, err)
		}
	case err != nil:
		return pol, fmt.Errorf("load policy %s: %w", def.ID, err)
	}
	return pol, nil
}
