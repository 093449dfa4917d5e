package policies

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// The review lifecycle of a policy version:
//
//	draft ──submit──▶ in_review ──approve──▶ approved ──publish──▶ published ──▶ superseded / retired
//	                      └──reject──▶ rejected
//
// A draft is written by an author of the policy's department; a second person, a reviewer, approves
// or rejects it (the author can never review or publish their own version: the two-person rule);
// publishing requires the policy's own tests to pass and runs a preview on the live registry, whose
// counts go into the audit record. Saving a new draft withdraws any unpublished version of the
// same policy, so at most one is open. Published versions are never edited: a change is a new
// version. Every step writes an audit record (who, when, which version, old and new).
//
// Publishing stores the version and makes it the one `match` evaluates; it does not match by
// itself. The next `match` run (or the matcher's policy-change path) evaluates the registry against
// it, notifies new matches and moves firms that still qualify to the new version without a second
// notice. Retiring a policy revokes its active matches at once, since no later run evaluates it.
//
// File-based `policy apply` (rules as code, reviewed in git) publishes directly and records who
// applied it.

// Actor is who performs a lifecycle step.
type Actor struct {
	Name       string `json:"name"`
	Role       string `json:"role"` // store.RoleAuthor, store.RoleReviewer, … or RoleOperator
	Department string `json:"department"`
}

// RoleOperator is the CLI user of a deployment that has no staff accounts yet: one operator may do
// every step, and the two-person rule still holds by name (--by).
const RoleOperator = "operator"

// Errors a lifecycle step returns, wrapped with what to do.
var (
	ErrForbidden = errors.New("not allowed")
	ErrState     = errors.New("not in the right state")
)

// ActorOf makes the actor of a signed-in staff account.
func ActorOf(u store.User) Actor {
	return Actor{Name: u.Username, Role: u.Role, Department: u.Department}
}

// ResolveActor finds the account named by the CLI's --by. With no accounts in the users table the
// CLI runs as an operator under that name.
func ResolveActor(ctx context.Context, db *gorm.DB, name string) (Actor, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return Actor{}, fmt.Errorf("say who you are with --by USER: %w", ErrForbidden)
	}
	var n int64
	if err := db.WithContext(ctx).Model(&store.User{}).Count(&n).Error; err != nil {
		return Actor{}, fmt.Errorf("read users: %w", err)
	}
	if n == 0 {
		return Actor{Name: name, Role: RoleOperator}, nil
	}
	var u store.User
	if err := db.WithContext(ctx).Where("username = ?", name).Take(&u).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return Actor{}, fmt.Errorf("user %s does not exist; --by must name a staff account of this deployment: %w", name, ErrForbidden)
		}
		return Actor{}, fmt.Errorf("read user %s: %w", name, err)
	}
	return ActorOf(u), nil
}

func (a Actor) mayAuthor(department string) error {
	if a.Role != store.RoleAuthor && a.Role != RoleOperator {
		return fmt.Errorf("%s has role %q; only a policy author writes and submits drafts: %w", a.Name, a.Role, ErrForbidden)
	}
	if a.Role == store.RoleAuthor && a.Department != "" && department != "" && a.Department != department {
		return fmt.Errorf("%s writes for %s, this policy belongs to %s: %w", a.Name, a.Department, department, ErrForbidden)
	}
	return nil
}

func (a Actor) mayReview(author string) error {
	if a.Role != store.RoleReviewer && a.Role != RoleOperator {
		return fmt.Errorf("%s has role %q; only a policy reviewer approves, publishes or retires: %w", a.Name, a.Role, ErrForbidden)
	}
	if author != "" && a.Name == author {
		return fmt.Errorf("two-person rule: %s wrote this version and cannot review or publish it; another reviewer must: %w", a.Name, ErrForbidden)
	}
	return nil
}

// openStates are the states of a version that is neither published nor closed.
var openStates = []string{store.VersionDraft, store.VersionInReview, store.VersionApproved}

// SaveDraft stores a definition as a new draft version (unchanged content of the open draft is a
// no-op). It must compile; its tests may still fail (Submit requires them to pass).
func SaveDraft(ctx context.Context, db *gorm.DB, def *rules.Definition, by Actor, sourceFile string, opts ...rules.Option) (store.PolicyVersion, error) {
	if _, err := def.Compile(opts...); err != nil {
		return store.PolicyVersion{}, err
	}
	if err := by.mayAuthor(def.Department); err != nil {
		return store.PolicyVersion{}, err
	}
	var out store.PolicyVersion
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		pol, err := policyRow(tx, def)
		if err != nil {
			return err
		}
		if err := by.mayAuthor(pol.Department); err != nil {
			return err
		}
		var open []store.PolicyVersion
		if err := tx.Where("policy_id = ? AND state IN ?", def.ID, openStates).Order("version").Find(&open).Error; err != nil {
			return fmt.Errorf("load open versions of %s: %w", def.ID, err)
		}
		if n := len(open); n > 0 && open[n-1].State == store.VersionDraft && open[n-1].ContentHash == def.Hash() {
			out = open[n-1]
			return nil
		}
		var withdrawn []int
		for _, v := range open {
			withdrawn = append(withdrawn, v.Version)
		}
		if len(withdrawn) > 0 {
			if err := tx.Model(&store.PolicyVersion{}).Where("policy_id = ? AND state IN ?", def.ID, openStates).
				Update("state", store.VersionWithdrawn).Error; err != nil {
				return fmt.Errorf("withdraw open versions of %s: %w", def.ID, err)
			}
		}
		last, err := maxVersion(tx, def.ID)
		if err != nil {
			return err
		}
		out = VersionRow(def, last+1)
		out.State, out.Author, out.SourceFile = store.VersionDraft, by.Name, sourceFile
		if err := tx.Create(&out).Error; err != nil {
			return fmt.Errorf("store draft of %s: %w", def.ID, err)
		}
		return audit(tx, by, "policy.draft", def.ID, map[string]any{"new_version": out.Version,
			"published_version": pol.PublishedVersion, "withdrawn": withdrawn, "hash": out.ContentHash, "file": sourceFile})
	})
	return out, err
}

// Submit sends a draft to review. Its tests must pass. Version 0 means the open draft.
func Submit(ctx context.Context, db *gorm.DB, policyID string, version int, by Actor, opts ...rules.Option) (store.PolicyVersion, error) {
	row, err := versionIn(ctx, db, policyID, version, store.VersionDraft)
	if err != nil {
		return row, err
	}
	if err := by.mayAuthor(row.Department); err != nil {
		return row, err
	}
	if err := mustPassTests(row, opts...); err != nil {
		return row, err
	}
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := transition(tx, &row, store.VersionDraft, store.VersionInReview, nil); err != nil {
			return err
		}
		return audit(tx, by, "policy.submit", policyID, map[string]any{"version": row.Version, "author": row.Author})
	})
	return row, err
}

// Review approves or rejects a version in review. The reviewer cannot be its author; a rejection
// needs a reason the author can act on. Version 0 means the version in review.
func Review(ctx context.Context, db *gorm.DB, policyID string, version int, by Actor, approve bool, reason string) (store.PolicyVersion, error) {
	row, err := versionIn(ctx, db, policyID, version, store.VersionInReview)
	if err != nil {
		return row, err
	}
	if err := by.mayReview(row.Author); err != nil {
		return row, err
	}
	decision, action, to := store.VersionApproved, "policy.approve", store.VersionApproved
	if !approve {
		if strings.TrimSpace(reason) == "" {
			return row, fmt.Errorf("a rejection needs --reason: tell the author what to change")
		}
		decision, action, to = store.VersionRejected, "policy.reject", store.VersionRejected
	}
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := transition(tx, &row, store.VersionInReview, to, map[string]any{"reviewer": by.Name}); err != nil {
			return err
		}
		row.Reviewer = by.Name
		if err := tx.Create(&store.PolicyReview{PolicyID: policyID, Version: row.Version, Reviewer: by.Name,
			Decision: decision, Reason: reason, At: time.Now().UTC()}).Error; err != nil {
			return fmt.Errorf("record review of %s v%d: %w", policyID, row.Version, err)
		}
		return audit(tx, by, action, policyID, map[string]any{"version": row.Version, "author": row.Author, "reason": reason})
	})
	return row, err
}

// PublishResult is what publishing did.
type PublishResult struct {
	PolicyID   string              `json:"policy_id"`
	Version    int                 `json:"version"`
	OldVersion int                 `json:"old_version"` // 0: first publication
	Preview    rules.PreviewReport `json:"preview"`
}

// Publish makes an approved version the published one. Its tests must pass; the preview on the
// registry as of asOf is computed first and recorded in the audit log. Version 0 means the approved
// version.
func Publish(ctx context.Context, db *gorm.DB, policyID string, version int, by Actor, asOf time.Time, opts ...rules.Option) (PublishResult, error) {
	row, err := versionIn(ctx, db, policyID, version, store.VersionApproved)
	if err != nil {
		return PublishResult{}, err
	}
	if err := by.mayReview(row.Author); err != nil {
		return PublishResult{}, err
	}
	if err := mustPassTests(row, opts...); err != nil {
		return PublishResult{}, err
	}
	preview, err := PreviewVersion(ctx, db, policyID, row.Version, asOf, 5, opts...)
	if err != nil {
		return PublishResult{}, fmt.Errorf("preview before publishing: %w", err)
	}
	res := PublishResult{PolicyID: policyID, Version: row.Version, Preview: preview}
	def, err := rules.FromCanonical([]byte(row.Source))
	if err != nil {
		return res, err
	}
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := time.Now().UTC()
		if err := transition(tx, &row, store.VersionApproved, store.VersionPublished, map[string]any{"published_at": now}); err != nil {
			return err
		}
		if res.OldVersion, err = promote(tx, def, row.Version); err != nil {
			return err
		}
		return audit(tx, by, "policy.publish", policyID, map[string]any{"old_version": res.OldVersion, "new_version": row.Version,
			"hash": row.ContentHash, "author": row.Author, "reviewer": row.Reviewer, "as_of": preview.AsOf,
			"preview": map[string]any{"firms": preview.Firms, "new": preview.New, "kept": preview.Kept, "dropped": preview.Dropped,
				"errors": preview.Errors}})
	})
	return res, err
}

// RetireResult is what retiring did.
type RetireResult struct {
	PolicyID       string `json:"policy_id"`
	Version        int    `json:"version"`
	MatchesRevoked int    `json:"matches_revoked"`
}

// Retire withdraws a published policy: it is no longer matched, and its active matches are revoked
// (a notice not yet sent for them is skipped by the notifier).
func Retire(ctx context.Context, db *gorm.DB, policyID string, by Actor, reason string) (RetireResult, error) {
	res := RetireResult{PolicyID: policyID}
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var pol store.Policy
		if err := tx.Where("id = ?", policyID).Take(&pol).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("policy %s does not exist: %w", policyID, ErrNotFound)
			}
			return fmt.Errorf("load policy %s: %w", policyID, err)
		}
		if pol.PublishedVersion == 0 || pol.Retired {
			return fmt.Errorf("policy %s is not published (or already retired): %w", policyID, ErrState)
		}
		if err := by.mayReview(""); err != nil {
			return err
		}
		res.Version = pol.PublishedVersion
		now := time.Now().UTC()
		if err := tx.Model(&store.Policy{}).Where("id = ?", policyID).Update("retired", true).Error; err != nil {
			return err
		}
		if err := tx.Model(&store.PolicyVersion{}).Where("policy_id = ? AND version = ?", policyID, pol.PublishedVersion).
			Update("state", store.VersionRetired).Error; err != nil {
			return err
		}
		revoked := tx.Model(&store.Match{}).Where("policy_id = ? AND state = ?", policyID, store.MatchActive).
			Updates(map[string]any{"state": store.MatchRevoked, "revoked_at": now, "updated_at": now})
		if revoked.Error != nil {
			return fmt.Errorf("revoke matches of %s: %w", policyID, revoked.Error)
		}
		res.MatchesRevoked = int(revoked.RowsAffected)
		if err := store.RevokePolicyCounts(tx, policyID); err != nil {
			return err
		}
		return audit(tx, by, "policy.retire", policyID, map[string]any{"old_version": pol.PublishedVersion,
			"matches_revoked": res.MatchesRevoked, "reason": reason})
	})
	return res, err
}

// Versions lists a policy's versions, oldest first.
func Versions(ctx context.Context, db *gorm.DB, policyID string) ([]store.PolicyVersion, error) {
	var rows []store.PolicyVersion
	if err := db.WithContext(ctx).Where("policy_id = ?", policyID).Order("version").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load versions of %s: %w", policyID, err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("policy %s has no versions: %w", policyID, ErrNotFound)
	}
	return rows, nil
}

// Reviews lists the review decisions on a policy, oldest first.
func Reviews(ctx context.Context, db *gorm.DB, policyID string) ([]store.PolicyReview, error) {
	var rows []store.PolicyReview
	if err := db.WithContext(ctx).Where("policy_id = ?", policyID).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load reviews of %s: %w", policyID, err)
	}
	return rows, nil
}

// versionIn loads a version that must be in state; version 0 picks the latest one in that state.
func versionIn(ctx context.Context, db *gorm.DB, policyID string, version int, state string) (store.PolicyVersion, error) {
	var row store.PolicyVersion
	q := db.WithContext(ctx).Where("policy_id = ?", policyID)
	if version > 0 {
		q = q.Where("version = ?", version)
	} else {
		q = q.Where("state = ?", state)
	}
	if err := q.Order("version DESC").Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			if version > 0 {
				return row, fmt.Errorf("policy %s has no version %d (see `policypush policy versions %s`): %w", policyID, version, policyID, ErrNotFound)
			}
			return row, fmt.Errorf("policy %s has no version in state %s (see `policypush policy versions %s`): %w", policyID, state, policyID, ErrNotFound)
		}
		return row, fmt.Errorf("load policy %s: %w", policyID, err)
	}
	if row.State != state {
		return row, fmt.Errorf("policy %s version %d is %s, not %s: %w", policyID, row.Version, row.State, state, ErrState)
	}
	return row, nil
}

// transition moves a version between states, failing if another process moved it first.
func transition(tx *gorm.DB, row *store.PolicyVersion, from, to string, extra map[string]any) error {
	set := map[string]any{"state": to}
	for k, v := range extra {
		set[k] = v
	}
	res := tx.Model(&store.PolicyVersion{}).Where("id = ? AND state = ?", row.ID, from).Updates(set)
	if res.Error != nil {
		return fmt.Errorf("move %s v%d to %s: %w", row.PolicyID, row.Version, to, res.Error)
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("policy %s version %d is no longer %s (changed meanwhile): %w", row.PolicyID, row.Version, from, ErrState)
	}
	row.State = to
	return nil
}

// mustPassTests compiles a stored version and runs its test cases.
func mustPassTests(row store.PolicyVersion, opts ...rules.Option) error {
	p, err := compileVersion(row, opts...)
	if err != nil {
		return err
	}
	var failed []string
	for _, r := range p.RunTests() {
		if !r.Passed {
			failed = append(failed, r.Name+": "+r.Problem)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("policy %s version %d: %d test case(s) fail — fix the rule or the tests and save a new draft:\n  %s",
			row.PolicyID, row.Version, len(failed), strings.Join(failed, "\n  "))
	}
	return nil
}

func maxVersion(tx *gorm.DB, policyID string) (int, error) {
	var n int
	if err := tx.Model(&store.PolicyVersion{}).Where("policy_id = ?", policyID).
		Select("COALESCE(MAX(version), 0)").Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("next version of %s: %w", policyID, err)
	}
	return n, nil
}

// promote makes version the published one of def's policy: the previous published version is
// superseded and the policy row points at the new one. It returns the previous version (0: none).
func promote(tx *gorm.DB, def *rules.Definition, version int) (int, error) {
	var pol store.Policy
	if err := tx.Where("id = ?", def.ID).Take(&pol).Error; err != nil {
		return 0, fmt.Errorf("load policy %s: %w", def.ID, err)
	}
	if pol.PublishedVersion > 0 && pol.PublishedVersion != version {
		if err := tx.Model(&store.PolicyVersion{}).Where("policy_id = ? AND version = ? AND state IN ?", def.ID, pol.PublishedVersion,
			[]string{store.VersionPublished, store.VersionRetired}).Update("state", store.VersionReplaced).Error; err != nil {
			return 0, fmt.Errorf("supersede %s v%d: %w", def.ID, pol.PublishedVersion, err)
		}
	}
	if err := tx.Model(&store.Policy{}).Where("id = ?", def.ID).Updates(map[string]any{
		"title": def.Title, "department": def.Department, "published_version": version, "retired": false,
	}).Error; err != nil {
		return 0, fmt.Errorf("publish %s v%d: %w", def.ID, version, err)
	}
	return pol.PublishedVersion, nil
}

// audit appends an audit record of a rule change.
func audit(tx *gorm.DB, by Actor, action, object string, detail map[string]any) error {
	if by.Role != "" {
		detail["role"] = by.Role
	}
	return auditlog.Write(tx, auditlog.Entry{Actor: by.Name, Action: auditlog.Action(action), Object: object, Detail: detail})
}
