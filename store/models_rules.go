package store

import "time"

// Version states of the review lifecycle beyond those in models.go: a draft moves
// draft → in_review → approved → published; a rejected one stays as it was written, for the record.
const (
	VersionApproved  = "approved"  // a second person approved it; it can be published
	VersionWithdrawn = "withdrawn" // an unpublished version replaced by a newer draft of the same policy
)

func init() { Register(&EnterpriseFact{}, &PolicyReview{}) }

// EnterpriseFact holds a value of a deployment-declared extra field (config fields.extra) for one
// firm. Extra fields live here, one row per (firm, field), so a deployment can add a field without
// a schema change; Value is the text form the importer accepted, parsed by the field's type when
// firms are loaded for matching.
type EnterpriseFact struct {
	CreditCode string    `gorm:"column:credit_code;primaryKey;size:18" json:"credit_code"`
	Field      string    `gorm:"column:field;primaryKey;size:64" json:"field"`
	Value      string    `gorm:"column:value;size:500;not null;default:''" json:"value"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func (EnterpriseFact) TableName() string { return "enterprise_facts" }

// PolicyReview is one review decision on a policy version: who approved or rejected it, when and
// why. The two-person rule is checked against it (the reviewer is never the author).
type PolicyReview struct {
	ID       uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	PolicyID string    `gorm:"size:64;not null;index:ix_review,priority:1" json:"policy_id"`
	Version  int       `gorm:"not null;index:ix_review,priority:2" json:"version"`
	Reviewer string    `gorm:"size:64;not null" json:"reviewer"`
	Decision string    `gorm:"size:16;not null" json:"decision"` // approved or rejected
	Reason   string    `gorm:"size:1000;not null;default:''" json:"reason"`
	At       time.Time `gorm:"not null" json:"at"`
}
