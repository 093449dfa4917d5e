package store

import "time"

// Tables of the payout stage (package payout, docs/payout.md): reviewed batches of matched firms,
// their lines, objections raised during 公示, the append-only history of every step, and the
// firms' feedback. Money is integer fen, so sums are exact on every database.

func init() {
	Register(&PayoutBatch{}, &PayoutLine{}, &PayoutObjection{}, &PayoutEvent{}, &PayoutFeedback{})
}

// Batch states, in the order a batch moves through them (payout.transitions is the table).
const (
	BatchCreated    = "created"    // lines chosen, waiting for a second person's approval
	BatchApproved   = "approved"   // approved, waiting for the 公示 to start
	BatchPublicized = "publicized" // listed publicly until PublicizeUntil; objections accepted
	BatchExported   = "exported"   // payment file handed to finance; waiting for bank results
	BatchClosed     = "closed"     // every exported line has a bank result
)

// PayoutBatch is one reviewed list of firms to pay for one policy (Round counts the batches of the
// policy: instalments, re-batched failures).
type PayoutBatch struct {
	ID             uint64     `gorm:"primaryKey;autoIncrement" json:"batch_id"`
	PolicyID       string     `gorm:"size:64;not null;index;uniqueIndex:ux_payout_round,priority:1" json:"policy_id"`
	Round          int        `gorm:"not null;uniqueIndex:ux_payout_round,priority:2" json:"round"`
	PolicyTitle    string     `gorm:"size:200;not null;default:''" json:"policy_title"`
	Department     string     `gorm:"size:100;not null;default:''" json:"department"`
	AsOf           time.Time  `gorm:"type:date;not null" json:"as_of"`
	State          string     `gorm:"size:16;not null;index" json:"state"`
	ConfirmedOnly  bool       `gorm:"not null;default:false" json:"confirmed_only"` // only firms that confirmed (意愿确认)
	Firms          int        `gorm:"not null;default:0" json:"firms"`              // lines still in the batch (not removed)
	AmountFen      int64      `gorm:"not null;default:0" json:"amount_fen"`         // sum of those lines
	CreatedBy      string     `gorm:"size:64;not null" json:"created_by"`
	CreatedAt      time.Time  `gorm:"not null" json:"created_at"`
	ApprovedBy     string     `gorm:"size:64;not null;default:''" json:"approved_by"`
	ApprovedAt     *time.Time `json:"approved_at"`
	PublicizedBy   string     `gorm:"size:64;not null;default:''" json:"publicized_by"`
	PublicizedAt   *time.Time `json:"publicized_at"`
	PublicizeDays  int        `gorm:"not null;default:0" json:"publicize_days"`
	PublicizeUntil *time.Time `json:"publicize_until"` // the 公示 ends at this instant (exports allowed from then)
	ExportedAt     *time.Time `json:"exported_at"`
	ClosedAt       *time.Time `json:"closed_at"`
}

// Line states.
const (
	LinePending  = "pending"  // in the batch, no bank result yet
	LineHeld     = "held"     // an objection waits for a reviewer's decision
	LineRemoved  = "removed"  // taken out by a reviewer (reason kept) or by a sustained objection
	LineExported = "exported" // in the payment file handed to finance
	LinePaid     = "paid"
	LineFailed   = "failed" // the bank could not pay; a later batch takes the firm again
)

// PayoutLine is one firm of a batch and its amount.
type PayoutLine struct {
	ID         uint64     `gorm:"primaryKey;autoIncrement" json:"line_id"`
	BatchID    uint64     `gorm:"not null;uniqueIndex:ux_payout_line,priority:1" json:"batch_id"`
	CreditCode string     `gorm:"size:18;not null;uniqueIndex:ux_payout_line,priority:2;index:ix_payout_firm,priority:1" json:"credit_code"`
	PolicyID   string     `gorm:"size:64;not null;index:ix_payout_firm,priority:2" json:"policy_id"`
	MatchID    uint64     `gorm:"not null;index" json:"match_id"`
	Name       string     `gorm:"size:200;not null;default:''" json:"name"`
	AmountFen  int64      `gorm:"not null" json:"amount_fen"`
	State      string     `gorm:"size:16;not null;index" json:"state"`
	Reason     string     `gorm:"size:500;not null;default:''" json:"reason"` // why removed, or the bank's reason of a failure
	PaidAt     *time.Time `json:"paid_at"`
	UpdatedAt  time.Time  `gorm:"not null" json:"updated_at"`
}

// Objection decisions.
const (
	ObjectionSustained = "sustained" // the objection holds: the line leaves the batch
	ObjectionDismissed = "dismissed" // the line goes ahead
)

// PayoutObjection is an objection to a line raised during its 公示 through the firm's own page.
type PayoutObjection struct {
	ID         uint64     `gorm:"primaryKey;autoIncrement" json:"objection_id"`
	BatchID    uint64     `gorm:"not null;index" json:"batch_id"`
	LineID     uint64     `gorm:"not null;index" json:"line_id"`
	CreditCode string     `gorm:"size:18;not null" json:"credit_code"`
	Reason     string     `gorm:"size:1000;not null" json:"reason"`
	At         time.Time  `gorm:"not null" json:"at"`
	Decision   string     `gorm:"size:16;not null;default:''" json:"decision"` // empty while undecided
	DecidedBy  string     `gorm:"size:64;not null;default:''" json:"decided_by"`
	DecidedAt  *time.Time `json:"decided_at"`
	Note       string     `gorm:"size:1000;not null;default:''" json:"note"`
}

// PayoutEvent is one step of a batch's history. Rows are only ever inserted.
type PayoutEvent struct {
	ID      uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	BatchID uint64    `gorm:"not null;index" json:"batch_id"`
	LineID  uint64    `gorm:"not null;default:0" json:"line_id,omitempty"`
	At      time.Time `gorm:"not null" json:"at"`
	Kind    string    `gorm:"size:32;not null" json:"kind"`
	Actor   string    `gorm:"size:64;not null;default:''" json:"actor"`
	Detail  string    `gorm:"size:1000;not null;default:''" json:"detail,omitempty"`
}

// PayoutFeedback is a firm's rating (1–5) and comment on a paid line, once per line.
type PayoutFeedback struct {
	LineID     uint64    `gorm:"primaryKey;autoIncrement:false" json:"line_id"`
	PolicyID   string    `gorm:"size:64;not null;index" json:"policy_id"`
	CreditCode string    `gorm:"size:18;not null" json:"credit_code"`
	Rating     int       `gorm:"not null" json:"rating"`
	Comment    string    `gorm:"size:1000;not null;default:''" json:"comment"`
	At         time.Time `gorm:"not null" json:"at"`
}
