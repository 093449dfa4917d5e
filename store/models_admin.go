package store

import "time"

// Tables of the console: staff sessions and sign-in throttling, integration tokens, what staff
// write about firms, and what firms answered through their notice link.

// Session is a signed-in staff member. Only the SHA-256 of the cookie value is stored, so a copy
// of the database does not let anyone sign in. CSRFToken is the synchronizer token every
// state-changing request of this session must carry.
type Session struct {
	IDHash     string    `gorm:"column:id_hash;primaryKey;size:64" json:"-"`
	UserID     uint64    `gorm:"not null;index" json:"user_id"`
	CSRFToken  string    `gorm:"column:csrf_token;size:64;not null" json:"-"`
	CreatedAt  time.Time `gorm:"not null" json:"created_at"`
	LastSeenAt time.Time `gorm:"not null" json:"last_seen_at"`
	ExpiresAt  time.Time `gorm:"not null;index" json:"expires_at"`
}

// LoginAttempt is one sign-in try, kept to throttle password guessing per account and per address.
type LoginAttempt struct {
	ID       uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	Username string    `gorm:"size:64;not null;index:ix_login_user,priority:1" json:"username"`
	Addr     string    `gorm:"size:64;not null;default:'';index:ix_login_addr,priority:1" json:"addr"`
	OK       bool      `gorm:"column:ok;not null" json:"ok"`
	At       time.Time `gorm:"not null;index:ix_login_user,priority:2;index:ix_login_addr,priority:2" json:"at"`
}

// APIToken lets an integration (the data platform pushing registry changes, a reporting job) call
// the JSON API without a session. Only the SHA-256 of the token is stored; Prefix identifies it in
// lists. Permissions is a comma-separated list; ParkID / RegionPrefix narrow what it may read.
type APIToken struct {
	ID           uint64     `gorm:"primaryKey;autoIncrement" json:"id"`
	Name         string     `gorm:"size:100;not null" json:"name"`
	Prefix       string     `gorm:"size:16;not null" json:"prefix"`
	TokenHash    string     `gorm:"size:64;not null;uniqueIndex" json:"-"`
	Permissions  string     `gorm:"size:300;not null" json:"permissions"`
	ParkID       string     `gorm:"size:32;not null;default:''" json:"park_id"`
	RegionPrefix string     `gorm:"size:6;not null;default:''" json:"region_prefix"`
	CreatedBy    string     `gorm:"size:64;not null" json:"created_by"`
	CreatedAt    time.Time  `gorm:"not null" json:"created_at"`
	ExpiresAt    *time.Time `json:"expires_at"`
	LastUsedAt   *time.Time `json:"last_used_at"`
	RevokedAt    *time.Time `json:"revoked_at"`
}

// FollowUpNote is what a park manager or district official wrote about a firm (called, visited,
// the firm asked about the payment date). PolicyID is empty for a note about the firm in general.
type FollowUpNote struct {
	ID         uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	CreditCode string    `gorm:"size:18;not null;index" json:"credit_code"`
	PolicyID   string    `gorm:"size:64;not null;default:''" json:"policy_id"`
	Author     string    `gorm:"size:64;not null" json:"author"`
	Body       string    `gorm:"type:text;not null" json:"body"`
	CreatedAt  time.Time `gorm:"not null" json:"created_at"`
}

// Responses of a firm to a match (意愿确认).
const (
	ResponseConfirm = "confirm" // the firm confirms it wants the benefit and signs the commitment
	ResponseObject  = "object"  // the firm objects (data wrong, does not want it) and says why
)

// EnterpriseResponse is a firm's answer to a policy's notice, given through its signed link. One
// answer per firm and policy (a later version the firm still qualifies for keeps it): a firm that
// wants to change it contacts the office, which sees the history in the audit log. MatchID is the
// match the firm answered.
type EnterpriseResponse struct {
	ID            uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	MatchID       uint64    `gorm:"not null;index" json:"match_id"`
	CreditCode    string    `gorm:"size:18;not null;uniqueIndex:ux_response,priority:1" json:"credit_code"`
	PolicyID      string    `gorm:"size:64;not null;uniqueIndex:ux_response,priority:2;index" json:"policy_id"`
	PolicyVersion int       `gorm:"not null" json:"policy_version"`
	Kind          string    `gorm:"size:16;not null" json:"kind"`
	Reason        string    `gorm:"size:1000;not null;default:''" json:"reason"`
	Commitment    string    `gorm:"type:text" json:"commitment"` // the commitment text the firm agreed to
	Signer        string    `gorm:"size:64;not null;default:''" json:"signer"`
	At            time.Time `gorm:"not null;index" json:"at"`
}

// LinkOpen counts how often a firm opened its notice link for a policy: the "opened" step of the
// funnel.
type LinkOpen struct {
	CreditCode string    `gorm:"size:18;primaryKey" json:"credit_code"`
	PolicyID   string    `gorm:"size:64;primaryKey" json:"policy_id"`
	FirstAt    time.Time `gorm:"not null;index" json:"first_at"`
	LastAt     time.Time `gorm:"not null" json:"last_at"`
	Count      int       `gorm:"not null;default:1" json:"count"`
}

func init() {
	Register(&Session{}, &LoginAttempt{}, &APIToken{}, &FollowUpNote{}, &EnterpriseResponse{}, &LinkOpen{})
}
