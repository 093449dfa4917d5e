package core

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// NearMissRequest asks which firms in business fail a published policy by exactly one condition.
type NearMissRequest struct {
	Actor    string // recorded in the audit log
	PolicyID string
	AsOf     time.Time // the evaluation date
	// Firms narrows the firms to a scope (a park manager's park, a district's region) on the
	// enterprises alias given; nil: every firm.
	Firms  func(q *gorm.DB, alias string) *gorm.DB
	ParkID string // only this park
	Region string // only region codes starting with this
	Limit  int    // list at most this many firms (0: all); Total counts them all
	// MaxFirms refuses a scope with more firms than this (0: no cap): the console keeps one request
	// from evaluating a province.
	MaxFirms int
}

// NearMissResult is what NearMisses found.
type NearMissResult struct {
	Policy *rules.Policy
	Firms  int // firms evaluated
	Total  int // near misses among them
	Items  []rules.NearMiss
}

// TooManyFirmsError refuses a near-miss request whose scope holds more firms than its MaxFirms.
type TooManyFirmsError struct{ Firms, Max int64 }

func (e *TooManyFirmsError) Error() string {
	return fmt.Sprintf("%d firms in scope, more than the %d one request evaluates: filter by park or region", e.Firms, e.Max)
}

func (e *TooManyFirmsError) Unwrap() error { return ErrInvalid }

// nearMissPage is how many firms one keyset page reads.
const nearMissPage = 5000

// NearMisses evaluates the published policy on the firms in business in the request's scope and
// records the read in the audit log (action firm.near_miss). Errors of the policy lookup and
// evaluation are rules' (rules.ErrNotFound, *rules.CompileError).
func (s *Service) NearMisses(ctx context.Context, req NearMissRequest) (NearMissResult, error) {
	var out NearMissResult
	pol, err := policies.LinkedVersion(ctx, s.db, req.PolicyID, 0, rules.WithVocabulary(s.opts.Vocabulary))
	if err != nil {
		return out, err
	}
	out.Policy = pol
	firms := func() *gorm.DB {
		q := s.db.WithContext(ctx).Table("enterprises AS e").Where("e.status = ?", store.StatusActive)
		if req.Firms != nil {
			q = req.Firms(q, "e")
		}
		if req.ParkID != "" {
			q = q.Where("e.park_id = ?", req.ParkID)
		}
		if req.Region != "" {
			q = store.WherePrefix(q, "e.region_code", req.Region)
		}
		return q
	}
	if req.MaxFirms > 0 {
		var n int64
		if err := firms().Count(&n).Error; err != nil {
			return out, fmt.Errorf("count firms: %w", err)
		}
		if n > int64(req.MaxFirms) {
			return out, &TooManyFirmsError{Firms: n, Max: int64(req.MaxFirms)}
		}
	}
	var envs []rules.Env
	for after := ""; ; {
		var batch []store.Enterprise
		if err := firms().Select("e.*").Where("e.credit_code > ?", after).Order("e.credit_code").Limit(nearMissPage).
			Find(&batch).Error; err != nil {
			return out, fmt.Errorf("load firms after %q: %w", after, err)
		}
		for i := range batch {
			envs = append(envs, policies.EnvOf(&batch[i], req.AsOf))
		}
		if len(batch) < nearMissPage {
			break
		}
		after = batch[len(batch)-1].CreditCode
	}
	if err := policies.AttachExtraFacts(ctx, s.db, envs, rules.WithVocabulary(s.opts.Vocabulary)); err != nil {
		return out, err
	}
	out.Firms = len(envs)
	if out.Total, out.Items, err = rules.NearMisses(pol, envs, req.Limit); err != nil {
		return out, err
	}
	return out, audit.Record(s.db.WithContext(ctx), s.opts.Journal, audit.Entry{At: s.now(), Actor: req.Actor, Action: audit.FirmNearMiss,
		Object: req.PolicyID, Detail: map[string]any{"version": pol.Version, "as_of": req.AsOf.Format(time.DateOnly),
			"park_id": req.ParkID, "region": req.Region, "firms": out.Firms, "near_misses": out.Total}})
}
