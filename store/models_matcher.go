package store

import "time"

func init() { Register(&MatcherCursor{}, &PolicyEvaluation{}, &MatchRun{}, &MatchShard{}) }

// MatcherCursor is a named position the matcher keeps across restarts: how far its catch-up has
// read the registry by updated_at ("registry"), so firms changed while no matcher ran are
// re-matched when one starts.
type MatcherCursor struct {
	Name      string    `gorm:"primaryKey;size:64" json:"name"`
	At        time.Time `gorm:"not null" json:"at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PolicyEvaluation records the last whole-population evaluation of a policy: which version, as of
// which date, over how many firms. A matcher that starts, or whose date moves on, re-evaluates a
// policy whose published version differs from it, and a date-dependent policy whose as_of differs.
type PolicyEvaluation struct {
	PolicyID  string    `gorm:"primaryKey;size:64" json:"policy_id"`
	Version   int       `gorm:"not null" json:"version"`
	AsOf      time.Time `gorm:"type:date;not null" json:"as_of"`
	Firms     int       `gorm:"not null;default:0" json:"firms"`
	Eligible  int       `gorm:"not null;default:0" json:"eligible"`
	Evaluated time.Time `gorm:"not null" json:"evaluated"`
}

// MatchRun is a match split into shard jobs that matcher worker processes take from JetStream
// (matcher.shards > 1). The coordinator writes it and waits for every MatchShard to be done.
type MatchRun struct {
	ID         string     `gorm:"primaryKey;size:32" json:"id"`
	AsOf       time.Time  `gorm:"type:date;not null" json:"as_of"`
	PolicyID   string     `gorm:"size:64;not null;default:''" json:"policy_id"` // empty: every active policy
	Shards     int        `gorm:"not null" json:"shards"`
	CreatedAt  time.Time  `gorm:"not null" json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// Shard states.
const (
	ShardRunning = "running"
	ShardDone    = "done"
)

// MatchShard is one shard of a MatchRun: the firms whose credit code lies in [Lo, Hi) (empty Hi:
// no upper bound). A worker marks it running when it takes the job and done, with the shard's
// summary, when its matches are stored. A shard taken again after its worker died shows more
// deliveries.
type MatchShard struct {
	RunID      string     `gorm:"primaryKey;size:32" json:"run_id"`
	Shard      int        `gorm:"primaryKey;autoIncrement:false" json:"shard"`
	Lo         string     `gorm:"size:18;not null;default:''" json:"lo"`
	Hi         string     `gorm:"size:18;not null;default:''" json:"hi"`
	State      string     `gorm:"size:16;not null" json:"state"`
	Worker     string     `gorm:"size:128;not null;default:''" json:"worker"`
	Deliveries int        `gorm:"not null;default:0" json:"deliveries"`
	Summary    string     `gorm:"type:text" json:"summary"`
	StartedAt  time.Time  `gorm:"not null" json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}
