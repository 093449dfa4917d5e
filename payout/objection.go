package payout

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"

	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Object records a firm's objection to its own line during the 公示 (from its page: the signed
// link is the credential). The line is held until a reviewer decides.
func (s *Service) Object(ctx context.Context, batchID uint64, creditCode, reason string) (*store.PayoutObjection, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return nil, fmt.Errorf("%w: say why you object (异议理由)", ErrInvalid)
	}
	if len([]rune(reason)) > 1000 {
		return nil, fmt.Errorf("%w: the reason is longer than 1000 characters", ErrInvalid)
	}
	now := s.now()
	var o store.PayoutObjection
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		b, err := load(tx, batchID)
		if err != nil {
			return err
		}
		if err := check(StepObject, b); err != nil {
			return err
		}
		if b.PublicizeUntil != nil && !now.Before(*b.PublicizeUntil) {
			return fmt.Errorf("%w: the 公示 of batch %d ended at %s", ErrState, batchID, b.PublicizeUntil.In(s.opts.Location).Format("2006-01-02 15:04"))
		}
		var l store.PayoutLine
		if err := tx.Where("batch_id = ? AND credit_code = ?", batchID, creditCode).Take(&l).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("%w: your firm is not listed in batch %d", ErrNotFound, batchID)
			}
			return fmt.Errorf("load line: %w", err)
		}
		switch l.State {
		case store.LineHeld:
			return fmt.Errorf("%w: an objection to this line is already waiting for a decision", ErrState)
		case store.LinePending:
		default:
			return fmt.Errorf("%w: the line is %s and takes no objection", ErrState, l.State)
		}
		if err := setLine(tx, &l, store.LineHeld, map[string]any{}, now); err != nil {
			return err
		}
		o = store.PayoutObjection{BatchID: batchID, LineID: l.ID, CreditCode: creditCode, Reason: reason, At: now}
		if err := tx.Create(&o).Error; err != nil {
			return fmt.Errorf("record objection: %w", err)
		}
		actor := "firm:" + creditCode
		if err := event(tx, batchID, l.ID, "objected", actor, reason, now); err != nil {
			return err
		}
		return audit(tx, Actor{Name: actor}, auditlog.PayoutObject, batchObject(batchID), map[string]any{"line_id": l.ID,
			"state": store.LineHeld, "objection_id": o.ID}, now)
	})
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// Decide settles an objection: sustained takes the line out of the batch (and keeps the firm out
// of later batches of the policy), dismissed lets it go ahead. The batch's creator cannot decide.
func (s *Service) Decide(ctx context.Context, objectionID uint64, decision, note string, by Actor) error {
	note = strings.TrimSpace(note)
	if decision != store.ObjectionSustained && decision != store.ObjectionDismissed {
		return fmt.Errorf("%w: decision %q must be %s or %s", ErrInvalid, decision, store.ObjectionSustained, store.ObjectionDismissed)
	}
	if note == "" {
		return fmt.Errorf("%w: write down why (处理意见)", ErrInvalid)
	}
	now := s.now()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var o store.PayoutObjection
		if err := tx.Where("id = ?", objectionID).Take(&o).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("%w: objection %d", ErrNotFound, objectionID)
			}
			return fmt.Errorf("load objection %d: %w", objectionID, err)
		}
		if o.Decision != "" {
			return fmt.Errorf("%w: objection %d was already decided (%s by %s)", ErrState, objectionID, o.Decision, o.DecidedBy)
		}
		b, err := begin(tx, o.BatchID, StepDecide, by)
		if err != nil {
			return err
		}
		if strings.EqualFold(by.Name, b.CreatedBy) {
			return fmt.Errorf("%w: %s created batch %d and cannot decide its objections (two-person rule)", ErrForbidden, by.Name, b.ID)
		}
		res := tx.Model(&store.PayoutObjection{}).Where("id = ? AND decision = ''", o.ID).
			Updates(map[string]any{"decision": decision, "decided_by": by.Name, "decided_at": now, "note": clip(note, 1000)})
		if res.Error != nil {
			return fmt.Errorf("decide objection %d: %w", o.ID, res.Error)
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: objection %d was decided meanwhile", ErrState, o.ID)
		}
		var l store.PayoutLine
		if err := tx.Where("id = ?", o.LineID).Take(&l).Error; err != nil {
			return fmt.Errorf("load line %d: %w", o.LineID, err)
		}
		state := store.LinePending
		fields := map[string]any{}
		if decision == store.ObjectionSustained {
			state = store.LineRemoved
			fields["reason"] = clip("异议成立："+note, 500)
		}
		if err := setLine(tx, &l, state, fields, now); err != nil {
			return err
		}
		if state == store.LineRemoved {
			if err := tx.Model(&store.PayoutBatch{}).Where("id = ?", b.ID).Updates(map[string]any{
				"firms": gorm.Expr("firms - 1"), "amount_fen": gorm.Expr("amount_fen - ?", l.AmountFen)}).Error; err != nil {
				return fmt.Errorf("update totals of batch %d: %w", b.ID, err)
			}
		}
		if err := event(tx, b.ID, l.ID, "objection_"+decision, by.Name, note, now); err != nil {
			return err
		}
		return audit(tx, by, auditlog.PayoutDecide, batchObject(b.ID), map[string]any{"objection_id": o.ID, "decision": decision,
			"line_id": l.ID, "line_state": state, "note": note}, now)
	})
}
