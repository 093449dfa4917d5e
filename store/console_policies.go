package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// The console's reads of the policy library: the catalog, a policy with its versions and reviews,
// one version, the review queue. Changes go through package policies (the lifecycle).

// PolicyByID reads a policy; ErrNotFound when there is none.
func PolicyByID(ctx context.Context, db *gorm.DB, id string) (Policy, error) {
	var p Policy
	if err := db.WithContext(ctx).Where("id = ?", id).Take(&p).Error; err != nil {
		return p, fmt.Errorf("read policy %s: %w", id, err)
	}
	return p, nil
}

// PublishedPolicy reads a policy that has a published version and is not retired; ErrNotFound
// otherwise.
func PublishedPolicy(ctx context.Context, db *gorm.DB, id string) (Policy, error) {
	var p Policy
	if err := db.WithContext(ctx).Where("id = ? AND published_version > 0 AND retired = ?", id, false).Take(&p).Error; err != nil {
		return p, fmt.Errorf("read published policy %s: %w", id, err)
	}
	return p, nil
}

// DepartmentPolicies lists the published policies not retired, by id: of one department, or of
// every department when department is empty.
func DepartmentPolicies(ctx context.Context, db *gorm.DB, department string) ([]Policy, error) {
	q := db.WithContext(ctx).Where("published_version > 0 AND retired = ?", false).Order("id")
	if department != "" {
		q = q.Where("department = ?", department)
	}
	var out []Policy
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read policies in force: %w", err)
	}
	return out, nil
}

// VersionOf reads one version of a policy; ErrNotFound when there is none.
func VersionOf(ctx context.Context, db *gorm.DB, policyID string, version int) (PolicyVersion, error) {
	var v PolicyVersion
	if err := db.WithContext(ctx).Where("policy_id = ? AND version = ?", policyID, version).Take(&v).Error; err != nil {
		return v, fmt.Errorf("read policy %s version %d: %w", policyID, version, err)
	}
	return v, nil
}

// VersionsOf lists every version of a policy, newest first.
func VersionsOf(ctx context.Context, db *gorm.DB, policyID string) ([]PolicyVersion, error) {
	var out []PolicyVersion
	if err := db.WithContext(ctx).Where("policy_id = ?", policyID).Order("version DESC").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read the versions of %s: %w", policyID, err)
	}
	return out, nil
}

// ReviewsOf lists the reviews of one version of a policy (version 0: of every version), oldest
// first.
func ReviewsOf(ctx context.Context, db *gorm.DB, policyID string, version int) ([]PolicyReview, error) {
	q := db.WithContext(ctx).Where("policy_id = ?", policyID)
	if version > 0 {
		q = q.Where("version = ?", version)
	}
	var out []PolicyReview
	if err := q.Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read the reviews of %s: %w", policyID, err)
	}
	return out, nil
}

// PolicyListRow is one policy of the library: its latest version and its active matches.
type PolicyListRow struct {
	ID               string `json:"id"`
	Title            string `json:"title"`
	Department       string `json:"department"`
	PublishedVersion int    `json:"published_version"`
	Retired          bool   `json:"retired"`
	LatestVersion    int    `json:"latest_version"`
	LatestState      string `json:"latest_state"`
	Matches          int64  `json:"active_matches"`
}

// PolicyLibrary lists every policy by id with its latest version and active matches, summed from
// the maintained counts (MatchCount: a few rows per policy) instead of counting the matches.
func PolicyLibrary(ctx context.Context, db *gorm.DB) ([]PolicyListRow, error) {
	var rows []PolicyListRow
	err := db.WithContext(ctx).Table("policies AS p").
		Select(`p.id, p.title, p.department, p.published_version, p.retired,
			COALESCE((SELECT MAX(v.version) FROM policy_versions v WHERE v.policy_id = p.id), 0) AS latest_version,
			COALESCE((SELECT v.state FROM policy_versions v WHERE v.policy_id = p.id ORDER BY v.version DESC LIMIT 1), '') AS latest_state,
			COALESCE((SELECT SUM(c.n) FROM match_counts c WHERE c.policy_id = p.id AND c.state = 'active'), 0) AS matches`).
		Order("p.id").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read the policy library: %w", err)
	}
	return rows, nil
}

// QueuedVersion is a version waiting for a reviewer, with its policy's published version.
type QueuedVersion struct {
	PolicyVersion
	Published int
}

// ReviewQueue lists the versions in review, then those approved and waiting to be published,
// oldest first.
func ReviewQueue(ctx context.Context, db *gorm.DB) ([]QueuedVersion, error) {
	var rows []QueuedVersion
	err := db.WithContext(ctx).Table("policy_versions AS v").
		Select("v.*, p.published_version AS published").Joins("JOIN policies p ON p.id = v.policy_id").
		Where("v.state IN ?", []string{VersionInReview, VersionApproved}).
		Order("v.state DESC, v.created_at").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read the review queue: %w", err)
	}
	return rows, nil
}
