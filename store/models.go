package store

import "time"

// The table models (models*.go) are one Go struct per table with gorm's tags: they share their
// shape on purpose (duplicates lists them as twins by shape), as the tables share their
// conventions (an id or natural key, states as short strings, times in UTC).

// Enterprise statuses (登记状态). Only StatusActive firms can match or be notified.
const (
	StatusActive       = "active"
	StatusRevoked      = "revoked"      // 吊销
	StatusDeregistered = "deregistered" // 注销
	StatusMovedOut     = "moved_out"    // 迁出
)

// Enterprise is one firm of the registry, keyed on its 统一社会信用代码. The column names are the
// standard catalog keys (see registry.Catalog); money is in 元.
type Enterprise struct {
	CreditCode string `gorm:"column:credit_code;primaryKey;size:18;index:ix_enterprise_region,priority:2;index:ix_enterprise_park,priority:3;index:ix_enterprise_name,priority:4" json:"credit_code"`
	// ix_enterprise_name (name, region_code, park_id, credit_code) serves the console's name
	// search: "name contains" is no range, but the index is a narrow copy of every firm's name and
	// place, read from end to end far faster than the rows (store.FirmsNamed).
	Name         string `gorm:"column:name;size:200;not null;default:'';index:ix_enterprise_name,priority:1" json:"name"`
	RegionCode   string `gorm:"column:region_code;size:6;not null;default:'';index:ix_enterprise_region,priority:1;index:ix_enterprise_status_region,priority:2;index:ix_enterprise_name,priority:2" json:"region_code"`
	IndustryCode string `gorm:"column:industry_code;size:8;not null;default:''" json:"industry_code"`
	// ix_enterprise_status_region counts the active firms of the province or a city from the
	// index alone (the matcher's load, status): without it every firm's row was read (2.6 s at
	// 1,000,000 firms on MariaDB); ix_enterprise_park (park_id, status, credit_code) does the same
	// for a park (status read each park firm's row: 1 s for the 45,000 firms of a park, on every
	// status page), and gives its firms' codes for the joins. ix_enterprise_region (region_code,
	// credit_code) gives a city's (indexes.go).
	Status                    string     `gorm:"column:status;size:16;not null;default:'active';index:ix_enterprise_status_region,priority:1;index:ix_enterprise_park,priority:2" json:"status"`
	RegisteredAt              *time.Time `gorm:"column:registered_at;type:date" json:"registered_at"`
	Employees                 int64      `gorm:"column:employees;not null;default:0" json:"employees"`
	InsuredEmployees          int64      `gorm:"column:insured_employees;not null;default:0" json:"insured_employees"`
	AnnualRevenue             float64    `gorm:"column:annual_revenue;not null;default:0" json:"annual_revenue"`
	TotalAssets               float64    `gorm:"column:total_assets;not null;default:0" json:"total_assets"`
	VATSales                  float64    `gorm:"column:vat_sales;not null;default:0" json:"vat_sales"`
	TaxCreditRating           string     `gorm:"column:tax_credit_rating;size:1;not null;default:''" json:"tax_credit_rating"`
	TaxpayerType              string     `gorm:"column:taxpayer_type;size:16;not null;default:''" json:"taxpayer_type"`
	IsHighTech                bool       `gorm:"column:is_high_tech;not null;default:false" json:"is_high_tech"`
	SpecializedLevel          string     `gorm:"column:specialized_level;size:16;not null;default:'none'" json:"specialized_level"`
	ParkID                    string     `gorm:"column:park_id;size:32;not null;default:'';index:ix_enterprise_park,priority:1;index:ix_enterprise_name,priority:3" json:"park_id"`
	LayoffRate                float64    `gorm:"column:layoff_rate;not null;default:0" json:"layoff_rate"`
	UnemploymentInsurancePaid float64    `gorm:"column:unemployment_insurance_paid;not null;default:0" json:"unemployment_insurance_paid"`
	GraduatesHired            int64      `gorm:"column:graduates_hired;not null;default:0" json:"graduates_hired"`
	TaxViolations36m          int64      `gorm:"column:tax_violations_36m;not null;default:0" json:"tax_violations_36m"`
	RefundFraud36m            bool       `gorm:"column:refund_fraud_36m;not null;default:false" json:"refund_fraud_36m"`
	ImmediateRefundSince2019  bool       `gorm:"column:immediate_refund_since_2019;not null;default:false" json:"immediate_refund_since_2019"`
	ContactPhone              string     `gorm:"column:contact_phone;size:32;not null;default:''" json:"contact_phone"`
	WechatOpenID              string     `gorm:"column:wechat_openid;size:64;not null;default:''" json:"wechat_openid"`
	// Fields the 2022 texts need (policies.md): who the entity is, its taxable income, whether it
	// rents state-owned premises, and how long it has paid unemployment insurance without a gap.
	EntityType         string  `gorm:"column:entity_type;size:16;not null;default:''" json:"entity_type"`
	TaxableIncome      float64 `gorm:"column:taxable_income;not null;default:0" json:"taxable_income"`
	RentsStateProperty bool    `gorm:"column:rents_state_property;not null;default:false" json:"rents_state_property"`
	InsuredMonths      int64   `gorm:"column:insured_months;not null;default:0" json:"insured_months"`
	// CodeWarning is set when the credit code fails the GB 32100 checksum but was kept (early pilot codes).
	CodeWarning bool      `gorm:"column:code_warning;not null;default:false" json:"code_warning"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `gorm:"index" json:"updated_at"`
}

func (Enterprise) TableName() string { return "enterprises" }

// Policy is the stable identity of a benefit item; its rule lives in immutable PolicyVersions.
type Policy struct {
	ID               string    `gorm:"primaryKey;size:64" json:"id"`
	Title            string    `gorm:"size:200;not null" json:"title"`
	Department       string    `gorm:"size:100;not null;default:''" json:"department"`
	PublishedVersion int       `gorm:"not null;default:0" json:"published_version"` // 0: never published
	Retired          bool      `gorm:"not null;default:false" json:"retired"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Version states of the lifecycle.
const (
	VersionDraft     = "draft"
	VersionInReview  = "in_review"
	VersionPublished = "published"
	VersionRetired   = "retired"
	VersionReplaced  = "superseded" // a later version of the same policy was published
	VersionRejected  = "rejected"
)

// PolicyVersion is one immutable revision of a policy. Once published its content never changes;
// an edit is a new version.
type PolicyVersion struct {
	ID            uint64     `gorm:"primaryKey;autoIncrement" json:"-"`
	PolicyID      string     `gorm:"size:64;not null;uniqueIndex:ux_policy_version,priority:1" json:"policy_id"`
	Version       int        `gorm:"not null;uniqueIndex:ux_policy_version,priority:2" json:"version"`
	ContentHash   string     `gorm:"size:64;not null" json:"content_hash"`
	Source        string     `gorm:"type:text;not null" json:"source"` // canonical JSON of the definition
	Title         string     `gorm:"size:200;not null" json:"title"`
	DocNo         string     `gorm:"size:200;not null;default:''" json:"doc_no"`
	Department    string     `gorm:"size:100;not null;default:''" json:"department"`
	Category      string     `gorm:"size:32;not null;default:''" json:"category"`
	EffectiveFrom time.Time  `gorm:"type:date;not null" json:"effective_from"`
	EffectiveTo   *time.Time `gorm:"type:date" json:"effective_to"`
	State         string     `gorm:"size:16;not null;index" json:"state"`
	Author        string     `gorm:"size:64;not null;default:''" json:"author"`
	Reviewer      string     `gorm:"size:64;not null;default:''" json:"reviewer"`
	SourceFile    string     `gorm:"size:500;not null;default:''" json:"source_file"`
	PublishedAt   *time.Time `json:"published_at"`
	CreatedAt     time.Time  `json:"created_at"`
}

// Match states.
const (
	MatchActive     = "active"
	MatchRevoked    = "revoked"    // the firm no longer qualifies
	MatchSuperseded = "superseded" // a newer policy version took over; the firm still qualifies
)

// How far the notices of a match got (Match.Reached): a match is sent when a message carrying a
// notice of its firm and policy is sent (or delivered), delivered when one is delivered.
const (
	ReachNone      int8 = 0
	ReachSent      int8 = 1
	ReachDelivered int8 = 2
)

// Match records that a firm qualifies for a policy version as of a date. Rows are unique per
// (policy, version, firm): a firm is never notified twice for the same policy version.
type Match struct {
	ID            uint64 `gorm:"primaryKey;autoIncrement" json:"id"`
	PolicyID      string `gorm:"size:64;not null;uniqueIndex:ux_match,priority:1" json:"policy_id"`
	PolicyVersion int    `gorm:"not null;uniqueIndex:ux_match,priority:2" json:"policy_version"`
	// ix_match_firm (credit_code, state, matched_at) is the firm index: a firm's matches, and the
	// keys of a park's list pages without reading the rows (match_indexes.go).
	CreditCode string    `gorm:"size:18;not null;uniqueIndex:ux_match,priority:3;index:ix_match_firm,priority:1" json:"credit_code"`
	State      string    `gorm:"size:16;not null;index:ix_match_firm,priority:2;index:ix_match_place,priority:3" json:"state"`
	Amount     *float64  `json:"amount"`
	AsOf       time.Time `gorm:"type:date;not null" json:"as_of"`
	Notified   bool      `gorm:"not null;default:false" json:"notified"` // outbox rows were written for it
	// Reached is how far the firm's notices of this policy got (ReachNone, ReachSent,
	// ReachDelivered), kept by store.RefreshReach whenever a delivery enters or leaves sent or
	// delivered, so that the console's funnel and list read it instead of probing delivery_items
	// per match (reach.go).
	Reached int8 `gorm:"not null;default:0" json:"reached"`
	// On SQLite ix_match_recent (state, matched_at), made at migrate time (match_indexes.go),
	// serves the province's newest-first list and export: a walk that stops at the page's LIMIT.
	MatchedAt time.Time  `gorm:"not null;index:ix_match_firm,priority:3;index:ix_match_place,priority:4" json:"matched_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	// RegionCode and ParkID are the firm's place, copied into the row when it is written
	// (PlaceMatches) and moved with the firm (MoveMatches, in the import's transaction), as the
	// maintained counts are: ix_match_place (region code, park, state, matched_at) lets a city's
	// or a park's list page walk its newest matches and stop at its LIMIT (MatchKeys) instead of
	// sorting every match of the scope. A match whose firm is not in the registry has none.
	RegionCode string `gorm:"size:6;not null;default:'';index:ix_match_place,priority:1" json:"region_code"`
	ParkID     string `gorm:"size:32;not null;default:'';index:ix_match_place,priority:2" json:"park_id"`
}

// Outbox is a message waiting to be published to JetStream. It is written in the same transaction as
// the state change it announces; the relay publishes it with Nats-Msg-Id = its id and sets
// PublishedAt only after the PubAck.
type Outbox struct {
	ID          uint64     `gorm:"primaryKey;autoIncrement" json:"id"`
	Subject     string     `gorm:"size:128;not null" json:"subject"`
	Payload     []byte     `gorm:"not null" json:"payload"`
	CreatedAt   time.Time  `gorm:"not null" json:"created_at"`
	PublishedAt *time.Time `gorm:"index:ix_outbox_due,priority:1" json:"published_at"`
	// AvailableAt delays publishing until then (a digest's send time, a retry, the end of quiet
	// hours); NULL is at once.
	AvailableAt *time.Time `gorm:"index:ix_outbox_due,priority:2" json:"available_at"`
	// Notices is how many messages the row stands for: 1 for a message whose payload is published
	// as it is; more for a batch of match notices (bus.NoticeBatch) that the relay publishes as one
	// message per match. A full match writes one batch row per few hundred new matches instead of
	// a row per match, in the same transaction as the matches.
	Notices int `gorm:"not null;default:1" json:"notices"`
}

// Delivery states.
const (
	DeliveryQueued    = "queued"    // row exists, not yet handed to the provider
	DeliverySent      = "sent"      // the provider accepted it
	DeliveryDelivered = "delivered" // the provider reported it reached the handset / user
	DeliveryFailed    = "failed"    // last attempt failed, may be retried
	DeliveryDead      = "dead"      // gave up: permanent error or retries exhausted
	DeliverySkipped   = "skipped"   // not sent on purpose (firm no longer active, match revoked, fell back)
)

// Delivery is one notice to one recipient on one channel for one match. The unique key makes a
// second send of the same notice impossible; its ID is the provider-side idempotency id.
type Delivery struct {
	ID         uint64     `gorm:"primaryKey;autoIncrement" json:"id"`
	MatchID    uint64     `gorm:"not null;uniqueIndex:ux_delivery,priority:1" json:"match_id"`
	Channel    string     `gorm:"size:16;not null;uniqueIndex:ux_delivery,priority:2;index:ix_delivery_state,priority:1;index:ix_delivery_firm,priority:2" json:"channel"`
	Recipient  string     `gorm:"size:64;not null;uniqueIndex:ux_delivery,priority:3" json:"recipient"`
	CreditCode string     `gorm:"size:18;not null;index:ix_delivery_firm,priority:1" json:"credit_code"`
	PolicyID   string     `gorm:"size:64;not null" json:"policy_id"`
	State      string     `gorm:"size:16;not null;index:ix_delivery_state,priority:2;index:ix_delivery_failed,priority:1;index:ix_delivery_firm,priority:3" json:"state"`
	Provider   string     `gorm:"size:32;not null;default:''" json:"provider"`
	ProviderID string     `gorm:"size:128;not null;default:'';index" json:"provider_id"`
	Attempts   int        `gorm:"not null;default:0" json:"attempts"`
	LastCode   string     `gorm:"size:64;not null;default:''" json:"last_code"`
	LastError  string     `gorm:"size:500;not null;default:''" json:"last_error"`
	CreatedAt  time.Time  `json:"created_at"`
	SentAt     *time.Time `json:"sent_at"`
	// ix_delivery_failed serves the console's failed-delivery log: the rows in the failed states,
	// newest change first (a range per state and a sort of those rows, never a scan of every
	// delivery).
	UpdatedAt time.Time `gorm:"index:ix_delivery_failed,priority:2" json:"updated_at"`
	// Digests, scheduling and attempts (package notify, docs/delivery.md).
	Items       int        `gorm:"not null;default:1" json:"items"` // matches this message announces (DeliveryItem)
	DueAt       *time.Time `json:"due_at"`                          // not attempted before (digest window, quiet hours, throttle, backoff)
	OpenKey     *string    `gorm:"size:160;uniqueIndex" json:"-"`   // set while the digest still takes matches
	Claim       string     `gorm:"size:32;not null;default:''" json:"-"`
	LeaseUntil  *time.Time `json:"-"` // an attempt not recorded by then is in doubt
	AttemptedAt *time.Time `json:"attempted_at"`
	InDoubt     bool       `gorm:"not null;default:false" json:"in_doubt"` // the last attempt may have reached the provider
	DeliveredAt *time.Time `json:"delivered_at"`
	// Kind and Ref: what the message announces (empty: matches; else a payout step of the payout
	// line Ref, see DeliveryItem). Part of the unique key, so a firm gets each payout notice once.
	Kind string `gorm:"size:16;not null;default:'';uniqueIndex:ux_delivery,priority:4" json:"kind,omitempty"`
	Ref  uint64 `gorm:"not null;default:0;uniqueIndex:ux_delivery,priority:5" json:"ref,omitempty"`
}

// EvalError records a rule that failed for one firm (division by zero, bad data). The run goes on;
// the row says which firm, which policy version and why, so the author can fix the rule or the data.
type EvalError struct {
	ID            uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	PolicyID      string    `gorm:"size:64;not null;index" json:"policy_id"`
	PolicyVersion int       `gorm:"not null" json:"policy_version"`
	CreditCode    string    `gorm:"size:18;not null;index" json:"credit_code"`
	AsOf          time.Time `gorm:"type:date;not null" json:"as_of"`
	Message       string    `gorm:"size:500;not null" json:"message"`
	At            time.Time `gorm:"not null" json:"at"`
}

// User roles.
const (
	RoleAdmin    = "admin"
	RoleAuthor   = "author"
	RoleReviewer = "reviewer"
	RolePark     = "park_manager"
	RoleDistrict = "district"
	RoleAuditor  = "auditor"
)

// User is a staff account. Scope fields restrict what the role may see.
type User struct {
	ID           uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	Username     string    `gorm:"size:64;not null;uniqueIndex" json:"username"`
	PasswordHash string    `gorm:"size:100;not null" json:"-"`
	Role         string    `gorm:"size:32;not null" json:"role"`
	Department   string    `gorm:"size:100;not null;default:''" json:"department"`
	ParkID       string    `gorm:"size:32;not null;default:''" json:"park_id"`
	RegionPrefix string    `gorm:"size:6;not null;default:''" json:"region_prefix"`
	CreatedAt    time.Time `json:"created_at"`
}

// AuditLog is an append-only record of rule changes and staff reads of firm data.
type AuditLog struct {
	ID     uint64    `gorm:"primaryKey;autoIncrement" json:"id"`
	At     time.Time `gorm:"not null;index" json:"at"`
	Actor  string    `gorm:"size:64;not null" json:"actor"`
	Action string    `gorm:"size:64;not null;index" json:"action"`
	Object string    `gorm:"size:200;not null;default:''" json:"object"`
	Detail string    `gorm:"type:text" json:"detail"`
}

// ChannelOptOut records that a firm unsubscribed from a channel (退订). The notifier checks it
// before every send; the enterprise page and the API write it.
type ChannelOptOut struct {
	CreditCode string    `gorm:"size:18;primaryKey" json:"credit_code"`
	Channel    string    `gorm:"size:16;primaryKey" json:"channel"`
	At         time.Time `gorm:"not null" json:"at"`
	Via        string    `gorm:"size:32;not null;default:''" json:"via"` // link, page, api
}

var extraModels []any

// Register adds tables owned by other files of this package (one file per area keeps the schema
// of each stage next to its neighbours). Call it from an init function.
func Register(models ...any) { extraModels = append(extraModels, models...) }

// Models lists every table, in migration order.
func Models() []any {
	base := []any{&Enterprise{}, &Policy{}, &PolicyVersion{}, &Match{}, &Outbox{}, &Delivery{}, &EvalError{},
		&User{}, &AuditLog{}, &ChannelOptOut{}}
	return append(base, extraModels...)
}
