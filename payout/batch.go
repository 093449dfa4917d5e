package payout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// CreateRequest asks for a new batch of a policy.
type CreateRequest struct {
	PolicyID string
	// AsOf takes matches evaluated on or before this date; zero: today.
	AsOf time.Time
	// ConfirmedOnly takes only firms that confirmed (意愿确认) on their page; otherwise every
	// matched firm that did not object (免申即享 proper).
	ConfirmedOnly bool
	By            Actor
}

// Created is what Create answers (the CLI's --json and the API).
type Created struct {
	BatchID     uint64 `json:"batch_id"`
	PolicyID    string `json:"policy_id"`
	Round       int    `json:"round"`
	Firms       int    `json:"firms"`
	AmountTotal string `json:"amount_total"` // 元, two decimals
	AmountFen   int64  `json:"amount_fen"`
	// Excluded counts the active matches left out, by reason.
	Excluded map[string]int `json:"excluded"`
}

// Exclusion reasons of Created.Excluded.
const (
	ExclBatched     = "already_batched_or_paid" // in a batch not yet failed or removed, or paid
	ExclObjected    = "objected"                // the firm objected on its page, or a 公示 objection was sustained
	ExclUnconfirmed = "not_confirmed"           // ConfirmedOnly and the firm has not confirmed
	ExclNoAmount    = "no_amount"               // the rule gives no positive amount
	ExclInactive    = "firm_not_active"         // revoked, deregistered or moved out since matching
)

// policyInfo is what the payout steps need of a policy's published version.
type policyInfo struct {
	pol      store.Policy
	def      *rules.Definition
	channels []string
}

func (s *Service) policy(ctx context.Context, db *gorm.DB, id string) (*policyInfo, error) {
	var pol store.Policy
	if err := db.WithContext(ctx).Where("id = ?", id).Take(&pol).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, fmt.Errorf("%w: policy %q", ErrNotFound, id)
		}
		return nil, fmt.Errorf("load policy %s: %w", id, err)
	}
	if pol.PublishedVersion == 0 {
		return nil, fmt.Errorf("%w: policy %s has no published version", ErrState, id)
	}
	var v store.PolicyVersion
	if err := db.WithContext(ctx).Where("policy_id = ? AND version = ?", id, pol.PublishedVersion).Take(&v).Error; err != nil {
		return nil, fmt.Errorf("load policy %s v%d: %w", id, pol.PublishedVersion, err)
	}
	def, err := rules.FromCanonical([]byte(v.Source))
	if err != nil {
		return nil, fmt.Errorf("policy %s v%d: %w", id, v.Version, err)
	}
	return &policyInfo{pol: pol, def: def, channels: def.Channels}, nil
}

// liveLineStates are the line states that keep a firm out of a new batch of the same policy.
var liveLineStates = []string{store.LinePending, store.LineHeld, store.LineExported, store.LinePaid}

// committedFen is what the policy's budget already carries: lines pending, held, exported or paid.
func committedFen(db *gorm.DB, policyID string) (int64, error) {
	var sum int64
	if err := db.Model(&store.PayoutLine{}).Select("COALESCE(SUM(amount_fen), 0)").
		Where("policy_id = ? AND state IN ?", policyID, liveLineStates).Scan(&sum).Error; err != nil {
		return 0, fmt.Errorf("sum committed amounts of %s: %w", policyID, err)
	}
	return sum, nil
}

// Budget is a policy's budget against what its batches carry.
type Budget struct {
	PolicyID     string `json:"policy_id"`
	Declared     bool   `json:"declared"`
	BudgetFen    int64  `json:"budget_fen"`
	CommittedFen int64  `json:"committed_fen"` // lines pending, held, exported or paid
	PaidFen      int64  `json:"paid_fen"`
	RemainingFen int64  `json:"remaining_fen"`
}

// BudgetOf reports a policy's budget and what is committed against it.
func (s *Service) BudgetOf(ctx context.Context, policyID string) (Budget, error) {
	db := s.db.WithContext(ctx)
	info, err := s.policy(ctx, db, policyID)
	if err != nil {
		return Budget{}, err
	}
	b := Budget{PolicyID: policyID}
	if b.CommittedFen, err = committedFen(db, policyID); err != nil {
		return b, err
	}
	if err := db.Model(&store.PayoutLine{}).Select("COALESCE(SUM(amount_fen), 0)").
		Where("policy_id = ? AND state = ?", policyID, store.LinePaid).Scan(&b.PaidFen).Error; err != nil {
		return b, fmt.Errorf("sum paid amounts of %s: %w", policyID, err)
	}
	if info.def.Budget != nil {
		b.Declared = true
		if b.BudgetFen, err = Fen(*info.def.Budget); err != nil {
			return b, err
		}
		b.RemainingFen = b.BudgetFen - b.CommittedFen
	}
	return b, nil
}

// Create chooses the firms to pay for a policy: its active matches with a positive amount, minus
// firms already batched or paid for it, firms that objected, and (ConfirmedOnly) firms that have
// not confirmed. A batch over the policy's remaining budget is refused with the shortfall.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*Created, error) {
	db := s.db.WithContext(ctx)
	info, err := s.policy(ctx, db, req.PolicyID)
	if err != nil {
		return nil, err
	}
	if err := mayWrite(req.By, info.pol.Department); err != nil {
		return nil, err
	}
	now := s.now()
	asOf := req.AsOf
	if asOf.IsZero() {
		l := now.In(s.opts.Location)
		asOf = time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, time.UTC)
	}
	type row struct {
		ID         uint64
		CreditCode string
		Amount     *float64
		Name       string
		Status     string
	}
	var rows []row
	if err := db.Table("matches m").Select("m.id, m.credit_code, m.amount, e.name, e.status").
		Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.policy_id = ? AND m.state = ? AND m.as_of <= ?", req.PolicyID, store.MatchActive, asOf).
		Order("m.credit_code").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load matches of %s: %w", req.PolicyID, err)
	}
	var batched, objected, confirmed []string
	if err := db.Model(&store.PayoutLine{}).Where("policy_id = ? AND state IN ?", req.PolicyID, liveLineStates).
		Pluck("credit_code", &batched).Error; err != nil {
		return nil, fmt.Errorf("load batched firms: %w", err)
	}
	if err := db.Model(&store.EnterpriseResponse{}).Where("policy_id = ? AND kind = ?", req.PolicyID, store.ResponseObject).
		Pluck("credit_code", &objected).Error; err != nil {
		return nil, fmt.Errorf("load objections: %w", err)
	}
	var sustained []string
	if err := db.Table("payout_objections o").Joins("JOIN payout_lines l ON l.id = o.line_id").
		Where("l.policy_id = ? AND o.decision = ?", req.PolicyID, store.ObjectionSustained).
		Pluck("o.credit_code", &sustained).Error; err != nil {
		return nil, fmt.Errorf("load sustained objections: %w", err)
	}
	objected = append(objected, sustained...)
	if err := db.Model(&store.EnterpriseResponse{}).Where("policy_id = ? AND kind = ?", req.PolicyID, store.ResponseConfirm).
		Pluck("credit_code", &confirmed).Error; err != nil {
		return nil, fmt.Errorf("load confirmations: %w", err)
	}
	in := func(xs []string) map[string]bool {
		m := make(map[string]bool, len(xs))
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	isBatched, isObjected, isConfirmed := in(batched), in(objected), in(confirmed)

	out := &Created{PolicyID: req.PolicyID, Excluded: map[string]int{}}
	var lines []store.PayoutLine
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.CreditCode] {
			continue // one line per firm, whatever versions matched it
		}
		seen[r.CreditCode] = true
		reason := ""
		var fen int64
		switch {
		case r.Status != store.StatusActive:
			reason = ExclInactive
		case isBatched[r.CreditCode]:
			reason = ExclBatched
		case isObjected[r.CreditCode]:
			reason = ExclObjected
		case req.ConfirmedOnly && !isConfirmed[r.CreditCode]:
			reason = ExclUnconfirmed
		case r.Amount == nil:
			reason = ExclNoAmount
		default:
			if fen, err = Fen(*r.Amount); err != nil || fen <= 0 {
				reason = ExclNoAmount
			}
		}
		if reason != "" {
			out.Excluded[reason]++
			continue
		}
		lines = append(lines, store.PayoutLine{CreditCode: r.CreditCode, PolicyID: req.PolicyID, MatchID: r.ID, Name: r.Name,
			AmountFen: fen, State: store.LinePending, UpdatedAt: now})
		out.AmountFen += fen
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("%w: policy %s has no firm left to pay (excluded: %v)", ErrState, req.PolicyID, out.Excluded)
	}
	out.Firms = len(lines)
	out.AmountTotal = Yuan(out.AmountFen)

	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if info.def.Budget != nil {
			budget, err := Fen(*info.def.Budget)
			if err != nil {
				return err
			}
			committed, err := committedFen(tx, req.PolicyID)
			if err != nil {
				return err
			}
			if remaining := budget - committed; out.AmountFen > remaining {
				return fmt.Errorf("%w: batch of %s元 exceeds the remaining budget of policy %s (budget %s元, committed %s元, remaining %s元): short by %s元",
					ErrState, Yuan(out.AmountFen), req.PolicyID, Yuan(budget), Yuan(committed), Yuan(remaining), Yuan(out.AmountFen-remaining))
			}
		}
		var round int
		if err := tx.Model(&store.PayoutBatch{}).Select("COALESCE(MAX(round), 0)").Where("policy_id = ?", req.PolicyID).Scan(&round).Error; err != nil {
			return fmt.Errorf("next round of %s: %w", req.PolicyID, err)
		}
		b := store.PayoutBatch{PolicyID: req.PolicyID, Round: round + 1, PolicyTitle: info.pol.Title, Department: info.pol.Department,
			AsOf: asOf, State: store.BatchCreated, ConfirmedOnly: req.ConfirmedOnly, Firms: len(lines), AmountFen: out.AmountFen,
			CreatedBy: req.By.Name, CreatedAt: now}
		if err := tx.Create(&b).Error; err != nil {
			if store.IsUniqueViolation(err) {
				return fmt.Errorf("%w: another batch of %s was created at the same time; try again", ErrState, req.PolicyID)
			}
			return fmt.Errorf("create batch: %w", err)
		}
		for i := range lines {
			lines[i].BatchID = b.ID
		}
		if err := tx.CreateInBatches(lines, 500).Error; err != nil {
			return fmt.Errorf("create batch lines: %w", err)
		}
		out.BatchID, out.Round = b.ID, b.Round
		detail := fmt.Sprintf("%d 家，合计 %s 元，截至 %s", len(lines), Yuan(out.AmountFen), asOf.Format(time.DateOnly))
		if err := event(tx, b.ID, 0, "created", req.By.Name, detail, now); err != nil {
			return err
		}
		return audit(tx, req.By, auditlog.PayoutCreate, batchObject(b.ID), map[string]any{"policy_id": req.PolicyID, "round": b.Round,
			"firms": len(lines), "amount_fen": out.AmountFen, "confirmed_only": req.ConfirmedOnly, "excluded": out.Excluded}, now)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// load reads a batch.
func load(tx *gorm.DB, id uint64) (*store.PayoutBatch, error) {
	var b store.PayoutBatch
	if err := tx.Where("id = ?", id).Take(&b).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, fmt.Errorf("%w: batch %d", ErrNotFound, id)
		}
		return nil, fmt.Errorf("load batch %d: %w", id, err)
	}
	return &b, nil
}

// move applies a state change guarded by the old state, so two people acting at once cannot both
// succeed.
func move(tx *gorm.DB, b *store.PayoutBatch, step Step, fields map[string]any) error {
	if to := transitions[step].to; to != "" {
		fields["state"] = to
	}
	res := tx.Model(&store.PayoutBatch{}).Where("id = ? AND state = ?", b.ID, b.State).Updates(fields)
	if res.Error != nil {
		return fmt.Errorf("%s batch %d: %w", step, b.ID, res.Error)
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("%w: batch %d changed meanwhile; reload and try again", ErrState, b.ID)
	}
	return nil
}

// Removal takes one firm out of a batch.
type Removal struct {
	CreditCode string `json:"credit_code"`
	Reason     string `json:"reason"`
}

// Approve is the second person's review: the creator cannot approve, removals (each with a reason)
// are applied first. An empty batch cannot be approved.
func (s *Service) Approve(ctx context.Context, id uint64, by Actor, removals []Removal) error {
	now := s.now()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		b, err := begin(tx, id, StepApprove, by)
		if err != nil {
			return err
		}
		if strings.EqualFold(by.Name, b.CreatedBy) {
			return fmt.Errorf("%w: %s created batch %d and cannot approve it (two-person rule)", ErrForbidden, by.Name, id)
		}
		if err := s.remove(tx, b, by, removals, now); err != nil {
			return err
		}
		if b.Firms == 0 {
			return fmt.Errorf("%w: batch %d has no line left; nothing to approve", ErrState, id)
		}
		if err := move(tx, b, StepApprove, map[string]any{"approved_by": by.Name, "approved_at": now}); err != nil {
			return err
		}
		if err := event(tx, id, 0, "approved", by.Name, fmt.Sprintf("%d 家，合计 %s 元", b.Firms, Yuan(b.AmountFen)), now); err != nil {
			return err
		}
		return audit(tx, by, auditlog.PayoutApprove, batchObject(id), map[string]any{"state": store.BatchApproved, "firms": b.Firms,
			"amount_fen": b.AmountFen, "removed": len(removals)}, now)
	})
}

// Remove takes lines out of a batch before its 公示, each with a reason.
func (s *Service) Remove(ctx context.Context, id uint64, by Actor, removals []Removal) error {
	if len(removals) == 0 {
		return fmt.Errorf("%w: name at least one firm to remove", ErrInvalid)
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		b, err := begin(tx, id, StepRemove, by)
		if err != nil {
			return err
		}
		return s.remove(tx, b, by, removals, s.now())
	})
}

// remove applies removals to b inside tx and keeps the batch's totals equal to its lines.
func (s *Service) remove(tx *gorm.DB, b *store.PayoutBatch, by Actor, removals []Removal, now time.Time) error {
	for i, r := range removals {
		code := strings.TrimSpace(r.CreditCode)
		reason := strings.TrimSpace(r.Reason)
		if reason == "" {
			return fmt.Errorf("%w: removal %d (%s): a reason is required", ErrInvalid, i+1, code)
		}
		var l store.PayoutLine
		if err := tx.Where("batch_id = ? AND credit_code = ?", b.ID, code).Take(&l).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("%w: removal %d: firm %q is not in batch %d", ErrInvalid, i+1, code, b.ID)
			}
			return fmt.Errorf("load line %s of batch %d: %w", code, b.ID, err)
		}
		if l.State == store.LineRemoved {
			return fmt.Errorf("%w: removal %d: firm %s was already removed (%s)", ErrState, i+1, code, l.Reason)
		}
		if err := setLine(tx, &l, store.LineRemoved, map[string]any{"reason": clip(reason, 500)}, now); err != nil {
			return err
		}
		b.Firms--
		b.AmountFen -= l.AmountFen
		if err := event(tx, b.ID, l.ID, "removed", by.Name, code+"："+reason, now); err != nil {
			return err
		}
		if err := audit(tx, by, auditlog.PayoutRemove, batchObject(b.ID), map[string]any{"credit_code": code, "state": store.LineRemoved,
			"reason": reason, "amount_fen": l.AmountFen}, now); err != nil {
			return err
		}
	}
	if len(removals) == 0 {
		return nil
	}
	if err := tx.Model(&store.PayoutBatch{}).Where("id = ?", b.ID).
		Updates(map[string]any{"firms": b.Firms, "amount_fen": b.AmountFen}).Error; err != nil {
		return fmt.Errorf("update totals of batch %d: %w", b.ID, err)
	}
	return nil
}

// setLine changes a line's state guarded by its old state.
func setLine(tx *gorm.DB, l *store.PayoutLine, state string, fields map[string]any, now time.Time) error {
	fields["state"], fields["updated_at"] = state, now
	res := tx.Model(&store.PayoutLine{}).Where("id = ? AND state = ?", l.ID, l.State).Updates(fields)
	if res.Error != nil {
		return fmt.Errorf("set line %d to %s: %w", l.ID, state, res.Error)
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("%w: line %d (%s) changed meanwhile; reload and try again", ErrState, l.ID, l.CreditCode)
	}
	l.State = state
	return nil
}

// MaxPublicizeDays bounds the 公示 (a typo of 50 instead of 5 should not hold money for months).
const MaxPublicizeDays = 30

// Publicize starts the 公示 for `days` working days (0: the policy needs none; the batch can be
// exported at once) and queues the "公示 started" notice of every line.
func (s *Service) Publicize(ctx context.Context, id uint64, days int, by Actor) error {
	if days < 0 || days > MaxPublicizeDays {
		return fmt.Errorf("%w: --days %d must be between 0 and %d working days", ErrInvalid, days, MaxPublicizeDays)
	}
	now := s.now()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		b, err := begin(tx, id, StepPublicize, by)
		if err != nil {
			return err
		}
		until := s.publicizeUntil(now, days)
		if err := move(tx, b, StepPublicize, map[string]any{"publicized_by": by.Name, "publicized_at": now,
			"publicize_days": days, "publicize_until": until}); err != nil {
			return err
		}
		var lines []store.PayoutLine
		if err := tx.Where("batch_id = ? AND state = ?", id, store.LinePending).Find(&lines).Error; err != nil {
			return fmt.Errorf("load lines of batch %d: %w", id, err)
		}
		if err := s.queueNotices(ctx, tx, b.PolicyID, lines, NoticePublicized, now); err != nil {
			return err
		}
		detail := fmt.Sprintf("%d 个工作日，至 %s", days, until.In(s.opts.Location).Format("2006-01-02 15:04"))
		if err := event(tx, id, 0, "publicized", by.Name, detail, now); err != nil {
			return err
		}
		return audit(tx, by, auditlog.PayoutPublicize, batchObject(id), map[string]any{"state": store.BatchPublicized, "days": days,
			"publicize_until": until}, now)
	})
}

// queueNotices writes one outbox notice per line and channel of the policy, in the caller's
// transaction: the same path (relay, digest, quiet hours, throttle, fallback, exactly once) as a
// match notice.
func (s *Service) queueNotices(ctx context.Context, tx *gorm.DB, policyID string, lines []store.PayoutLine, kind string, now time.Time) error {
	if len(lines) == 0 {
		return nil
	}
	info, err := s.policy(ctx, tx, policyID)
	if err != nil {
		return err
	}
	rows := make([]store.Outbox, 0, len(lines)*len(info.channels))
	for _, l := range lines {
		for _, ch := range info.channels {
			payload, err := json.Marshal(bus.NoticeJob{MatchID: l.MatchID, Channel: ch, Kind: kind, Ref: l.ID})
			if err != nil {
				return fmt.Errorf("encode notice: %w", err)
			}
			rows = append(rows, store.Outbox{Subject: bus.NotifySubject(s.opts.SubjectPrefix, ch), Payload: payload, CreatedAt: now})
		}
	}
	if err := tx.CreateInBatches(rows, 500).Error; err != nil {
		return fmt.Errorf("queue %s notices: %w", kind, err)
	}
	return nil
}

// VersionBudget reads the budget (元) a stored policy version declares; nil when it declares none.
func VersionBudget(ctx context.Context, db *gorm.DB, policyID string, version int) (*float64, error) {
	var v store.PolicyVersion
	if err := db.WithContext(ctx).Select("source").Where("policy_id = ? AND version = ?", policyID, version).Take(&v).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, nil // a candidate file not stored yet: its caller has the definition
		}
		return nil, fmt.Errorf("load policy %s v%d: %w", policyID, version, err)
	}
	def, err := rules.FromCanonical([]byte(v.Source))
	if err != nil {
		return nil, fmt.Errorf("policy %s v%d: %w", policyID, version, err)
	}
	return def.Budget, nil
}

// BudgetCheck is a preview's total amount against the policy's budget.
type BudgetCheck struct {
	Budget       *float64 `json:"budget"`        // 元; nil: none declared
	BudgetAmount string   `json:"budget_amount"` // the budget as a two-decimal 元 text
	Total        string   `json:"total"`         // the preview's total amount after publishing, 元
	Shortfall    string   `json:"shortfall"`     // how much the total exceeds the budget, 元; "" when within
	Over         bool     `json:"over_budget"`
}

// CheckBudget compares a total amount (元, the preview's sum of amounts) with a budget.
func CheckBudget(budget *float64, total float64) BudgetCheck {
	c := BudgetCheck{Budget: budget}
	t, err := Fen(total)
	if err != nil {
		return c
	}
	c.Total = Yuan(t)
	if budget == nil {
		return c
	}
	b, err := Fen(*budget)
	if err != nil {
		return c
	}
	c.BudgetAmount = Yuan(b)
	if t > b {
		c.Over, c.Shortfall = true, Yuan(t-b)
	}
	return c
}
