package store

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"
)

// A firm's page in the console (/firms/{code}, GET /api/v1/firms/{code}) and what a firm's own
// page reads: the firm, every match it had, what was sent to it, what it opened and answered,
// and the notes staff wrote.

// FirmByCode reads one firm; ErrNotFound when the registry has none with that credit code.
func FirmByCode(ctx context.Context, db *gorm.DB, code string) (Enterprise, error) {
	var e Enterprise
	if err := db.WithContext(ctx).Where("credit_code = ?", code).Take(&e).Error; err != nil {
		return e, fmt.Errorf("read firm %s: %w", code, err)
	}
	return e, nil
}

// FirmMatch is one match of a firm, any state, with the firm's answer to the policy.
type FirmMatch struct {
	MatchID       uint64     `json:"match_id"`
	PolicyID      string     `json:"policy_id"`
	PolicyVersion int        `json:"policy_version"`
	Title         string     `json:"policy_title"`
	State         string     `json:"state"`
	Amount        *float64   `json:"amount"`
	AsOf          time.Time  `json:"as_of"`
	MatchedAt     time.Time  `json:"matched_at"`
	RevokedAt     *time.Time `json:"revoked_at"`
	Response      string     `json:"response"`
}

// FirmHistory is everything that happened to a firm that its console page shows.
type FirmHistory struct {
	Matches    []FirmMatch // newest first
	Notes      []FollowUpNote
	OptOuts    []string // channels the firm unsubscribed from, by name
	Opens      []LinkOpen
	Responses  []EnterpriseResponse
	Deliveries []Delivery // by id
	Items      []DeliveryItem
	Events     []DeliveryEvent // of Deliveries, by id
}

// ReadFirmHistory reads a firm's history (every table by the firm's credit code, or by the ids
// of its deliveries).
func ReadFirmHistory(ctx context.Context, db *gorm.DB, code string) (FirmHistory, error) {
	var h FirmHistory
	// independent reads by the firm's indexes, four at once (the dashboard's reasoning: their
	// waits behind a busy pipeline do not add up)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	db = db.WithContext(ctx)
	g.Go(func() error {
		if err := db.Table("matches AS m").
			Select("m.id AS match_id, m.policy_id, m.policy_version, v.title, m.state, m.amount, m.as_of, m.matched_at, m.revoked_at, "+responseSQL+" AS response").
			Joins("JOIN policy_versions v ON v.policy_id = m.policy_id AND v.version = m.policy_version").
			Where("m.credit_code = ?", code).Order("m.matched_at DESC, m.id DESC").Scan(&h.Matches).Error; err != nil {
			return fmt.Errorf("read the matches of %s: %w", code, err)
		}
		return nil
	})
	g.Go(func() (err error) { h.OptOuts, err = FirmOptOuts(ctx, db, code); return })
	g.Go(func() (err error) { h.Responses, err = FirmResponses(ctx, db, code); return })
	steps := []struct {
		what string
		q    *gorm.DB
		dst  any
	}{
		{"notes", db.Where("credit_code = ?", code).Order("id DESC"), &h.Notes},
		{"link opens", db.Where("credit_code = ?", code), &h.Opens},
		{"delivery items", db.Where("credit_code = ?", code), &h.Items},
	}
	for _, st := range steps {
		g.Go(func() error {
			if err := st.q.Find(st.dst).Error; err != nil {
				return fmt.Errorf("read the %s of %s: %w", st.what, code, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := db.Where("credit_code = ?", code).Order("id").Find(&h.Deliveries).Error; err != nil {
			return fmt.Errorf("read the deliveries of %s: %w", code, err)
		}
		if len(h.Deliveries) == 0 {
			return nil
		}
		ids := make([]uint64, len(h.Deliveries))
		for i, d := range h.Deliveries {
			ids[i] = d.ID
		}
		if err := db.Where("delivery_id IN ?", ids).Order("id").Find(&h.Events).Error; err != nil {
			return fmt.Errorf("read the delivery events of %s: %w", code, err)
		}
		return nil
	})
	return h, g.Wait()
}

// FirmOptOuts lists the channels a firm unsubscribed from, by name.
func FirmOptOuts(ctx context.Context, db *gorm.DB, code string) ([]string, error) {
	var out []string
	if err := db.WithContext(ctx).Model(&ChannelOptOut{}).Where("credit_code = ?", code).Order("channel").Pluck("channel", &out).Error; err != nil {
		return nil, fmt.Errorf("read the opt-outs of %s: %w", code, err)
	}
	return out, nil
}

// FirmResponses lists a firm's answers (one per policy at most).
func FirmResponses(ctx context.Context, db *gorm.DB, code string) ([]EnterpriseResponse, error) {
	var out []EnterpriseResponse
	if err := db.WithContext(ctx).Where("credit_code = ?", code).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("read the answers of %s: %w", code, err)
	}
	return out, nil
}

// AddNote stores a follow-up note (n.ID is set) and its audit record in one transaction.
func AddNote(ctx context.Context, db *gorm.DB, n *FollowUpNote, record Recorder) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(n).Error; err != nil {
			return fmt.Errorf("add a note on %s: %w", n.CreditCode, err)
		}
		return record(tx)
	})
}
