package payout

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Detail is a batch with its lines, objections and history.
type Detail struct {
	Batch      store.PayoutBatch       `json:"batch"`
	Lines      []store.PayoutLine      `json:"lines"`
	Objections []store.PayoutObjection `json:"objections"`
	Events     []store.PayoutEvent     `json:"events"`
}

// Get reads a batch. scope narrows the lines (a park manager's firms); nil keeps every line.
func (s *Service) Get(ctx context.Context, id uint64, scope func(*gorm.DB) *gorm.DB) (*Detail, error) {
	db := s.db.WithContext(ctx)
	b, err := load(db, id)
	if err != nil {
		return nil, err
	}
	d := &Detail{Batch: *b}
	q := db.Table("payout_lines l").Select("l.*").Where("l.batch_id = ?", id)
	if scope != nil {
		q = scope(q.Joins("JOIN enterprises e ON e.credit_code = l.credit_code"))
	}
	if err := q.Order("l.credit_code").Find(&d.Lines).Error; err != nil {
		return nil, fmt.Errorf("load lines of batch %d: %w", id, err)
	}
	ids := make([]uint64, len(d.Lines))
	for i, l := range d.Lines {
		ids[i] = l.ID
	}
	if len(ids) > 0 {
		if err := db.Where("line_id IN ?", ids).Order("id").Find(&d.Objections).Error; err != nil {
			return nil, fmt.Errorf("load objections of batch %d: %w", id, err)
		}
	}
	ev := db.Where("batch_id = ?", id)
	if scope != nil {
		ev = ev.Where("line_id = 0 OR line_id IN ?", append(ids, 0))
	}
	if err := ev.Order("id").Find(&d.Events).Error; err != nil {
		return nil, fmt.Errorf("load history of batch %d: %w", id, err)
	}
	return d, nil
}

// List reads batches, newest first; policyID narrows to one policy.
func (s *Service) List(ctx context.Context, policyID string) ([]store.PayoutBatch, error) {
	q := s.db.WithContext(ctx).Order("id DESC").Limit(500)
	if policyID != "" {
		q = q.Where("policy_id = ?", policyID)
	}
	var out []store.PayoutBatch
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	return out, nil
}

// PublicLine is what the 公示 shows of a line: nothing beyond name, masked code and amount.
type PublicLine struct {
	Name       string `json:"name"`
	CreditCode string `json:"credit_code"` // masked
	Amount     string `json:"amount"`
}

// Public is the 公示 of a batch.
type Public struct {
	Batch store.PayoutBatch `json:"-"`
	Lines []PublicLine      `json:"lines"`
	Total string            `json:"amount_total"`
	Open  bool              `json:"open"` // objections are still taken
}

// PublicListing reads the 公示 of a batch; batches not (yet) publicized are not found.
func (s *Service) PublicListing(ctx context.Context, id uint64) (*Public, error) {
	db := s.db.WithContext(ctx)
	b, err := load(db, id)
	if err != nil {
		return nil, err
	}
	if b.PublicizedAt == nil {
		return nil, fmt.Errorf("%w: batch %d is not publicized", ErrNotFound, id)
	}
	var lines []store.PayoutLine
	if err := db.Where("batch_id = ? AND state <> ?", id, store.LineRemoved).Order("credit_code").Find(&lines).Error; err != nil {
		return nil, fmt.Errorf("load lines of batch %d: %w", id, err)
	}
	p := &Public{Batch: *b, Open: b.State == store.BatchPublicized && b.PublicizeUntil != nil && s.now().Before(*b.PublicizeUntil)}
	var total int64
	for _, l := range lines {
		p.Lines = append(p.Lines, PublicLine{Name: l.Name, CreditCode: MaskCode(l.CreditCode), Amount: YuanGrouped(l.AmountFen)})
		total += l.AmountFen
	}
	p.Total = YuanGrouped(total)
	return p, nil
}

// Publicized lists the batches whose 公示 has started, newest first (the public index).
func (s *Service) Publicized(ctx context.Context) ([]store.PayoutBatch, error) {
	var out []store.PayoutBatch
	if err := s.db.WithContext(ctx).Where("publicized_at IS NOT NULL").Order("id DESC").Limit(200).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list publicized batches: %w", err)
	}
	return out, nil
}

// FirmLine is a firm's own line, for its page: what it will be paid, and whether it can object.
type FirmLine struct {
	Line      store.PayoutLine       `json:"line"`
	Batch     store.PayoutBatch      `json:"batch"`
	Objection *store.PayoutObjection `json:"objection,omitempty"`
	CanObject bool                   `json:"can_object"`
	Feedback  *store.PayoutFeedback  `json:"feedback,omitempty"`
	Amount    string                 `json:"amount"`
}

// FirmLines reads a firm's lines of publicized batches (newest first).
func (s *Service) FirmLines(ctx context.Context, creditCode string) ([]FirmLine, error) {
	db := s.db.WithContext(ctx)
	var lines []store.PayoutLine
	if err := db.Table("payout_lines l").Select("l.*").Joins("JOIN payout_batches b ON b.id = l.batch_id").
		Where("l.credit_code = ? AND b.publicized_at IS NOT NULL", creditCode).Order("l.id DESC").Limit(50).Find(&lines).Error; err != nil {
		return nil, fmt.Errorf("load payout lines of %s: %w", creditCode, err)
	}
	now := s.now()
	out := make([]FirmLine, 0, len(lines))
	for _, l := range lines {
		b, err := load(db, l.BatchID)
		if err != nil {
			return nil, err
		}
		fl := FirmLine{Line: l, Batch: *b, Amount: YuanGrouped(l.AmountFen)}
		var o store.PayoutObjection
		if err := db.Where("line_id = ?", l.ID).Order("id DESC").Limit(1).Find(&o).Error; err != nil {
			return nil, fmt.Errorf("load objection of line %d: %w", l.ID, err)
		}
		if o.ID != 0 {
			fl.Objection = &o
		}
		var fb store.PayoutFeedback
		if err := db.Where("line_id = ?", l.ID).Limit(1).Find(&fb).Error; err != nil {
			return nil, fmt.Errorf("load feedback of line %d: %w", l.ID, err)
		}
		if fb.LineID != 0 {
			fl.Feedback = &fb
		}
		fl.CanObject = b.State == store.BatchPublicized && l.State == store.LinePending && b.PublicizeUntil != nil && now.Before(*b.PublicizeUntil)
		out = append(out, fl)
	}
	return out, nil
}

// PolicyFigures are the payout counts of one policy (status --json "payouts").
type PolicyFigures struct {
	PolicyID   string `json:"policy_id"`
	Batched    int64  `json:"batched"`     // lines in a batch, not removed
	Approved   int64  `json:"approved"`    // of those, in an approved (or later) batch
	Publicized int64  `json:"publicized"`  // of those, in a batch whose 公示 started
	Paid       int64  `json:"paid"`        // lines paid
	PaidAmount string `json:"paid_amount"` // 元
	PaidFen    int64  `json:"paid_fen"`
	Failed     int64  `json:"failed"` // lines the bank could not pay
}

// Figures counts, per policy, what its batches carry.
func (s *Service) Figures(ctx context.Context) ([]PolicyFigures, error) {
	type row struct {
		PolicyID   string
		Batched    int64
		Approved   int64
		Publicized int64
		Paid       int64
		PaidFen    int64
		Failed     int64
	}
	var rows []row
	err := s.db.WithContext(ctx).Table("payout_lines l").Joins("JOIN payout_batches b ON b.id = l.batch_id").
		Select(`l.policy_id,
			SUM(CASE WHEN l.state <> ? THEN 1 ELSE 0 END) AS batched,
			SUM(CASE WHEN l.state <> ? AND b.approved_at IS NOT NULL THEN 1 ELSE 0 END) AS approved,
			SUM(CASE WHEN l.state <> ? AND b.publicized_at IS NOT NULL THEN 1 ELSE 0 END) AS publicized,
			SUM(CASE WHEN l.state = ? THEN 1 ELSE 0 END) AS paid,
			COALESCE(SUM(CASE WHEN l.state = ? THEN l.amount_fen ELSE 0 END), 0) AS paid_fen,
			SUM(CASE WHEN l.state = ? THEN 1 ELSE 0 END) AS failed`,
			store.LineRemoved, store.LineRemoved, store.LineRemoved, store.LinePaid, store.LinePaid, store.LineFailed).
		Group("l.policy_id").Order("l.policy_id").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("count payouts: %w", err)
	}
	out := make([]PolicyFigures, len(rows))
	for i, r := range rows {
		out[i] = PolicyFigures{PolicyID: r.PolicyID, Batched: r.Batched, Approved: r.Approved, Publicized: r.Publicized,
			Paid: r.Paid, PaidFen: r.PaidFen, PaidAmount: Yuan(r.PaidFen), Failed: r.Failed}
	}
	return out, nil
}
