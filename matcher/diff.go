package matcher

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Storing a decision is a diff against the stored matches: a firm that newly qualifies gets a match
// row and one outbox row per channel in the same transaction; a firm that no longer qualifies has
// its match revoked; a firm that still qualifies keeps its row (a new policy version or amount
// updates it without a second notice). The same diff serves a whole policy (publish, a full
// match, a shard of one) and one firm across every active policy (a change event).

const writeBatch = 500

// changeSet is what one policy's decisions change in a set of stored matches.
type changeSet struct {
	fresh     []Outcome           // no row yet: insert and notify
	revive    []*store.Match      // revoked row of this version: reactivate, no second notice
	supersede []*store.Match      // active row of an older version: replace, no second notice
	amounts   map[string]*float64 // amount of each superseding row, by credit code
	reamount  []*store.Match      // active row of this version with another amount
	lost      []uint64            // active rows of firms that no longer qualify
	unchanged int
}

// storedMatches are a policy's stored rows in a scope, by credit code.
type storedMatches struct {
	active  map[string]*store.Match // state active (any version)
	earlier map[string]*store.Match // this version, not active
}

func newStoredMatches() storedMatches {
	return storedMatches{active: map[string]*store.Match{}, earlier: map[string]*store.Match{}}
}

func (s storedMatches) add(p *rules.Policy, m *store.Match) {
	switch {
	case m.State == store.MatchActive:
		s.active[m.CreditCode] = m
	case m.PolicyVersion == p.Version:
		s.earlier[m.CreditCode] = m
	}
}

// diff compares outcomes (the eligible firms of the scope) with the stored rows of the scope.
func (s storedMatches) diff(p *rules.Policy, outcomes []Outcome) changeSet {
	cs := changeSet{amounts: map[string]*float64{}}
	eligible := make(map[string]bool, len(outcomes))
	for _, oc := range outcomes {
		eligible[oc.CreditCode] = true
		cur, ok := s.active[oc.CreditCode]
		switch {
		case !ok:
			if old, ok := s.earlier[oc.CreditCode]; ok {
				old.Amount = oc.Amount
				cs.revive = append(cs.revive, old)
			} else {
				cs.fresh = append(cs.fresh, oc)
			}
		case cur.PolicyVersion != p.Version:
			cs.amounts[oc.CreditCode] = oc.Amount
			cs.supersede = append(cs.supersede, cur)
		case !sameAmount(cur.Amount, oc.Amount):
			cur.Amount = oc.Amount
			cs.reamount = append(cs.reamount, cur)
		default:
			cs.unchanged++
		}
	}
	for code, m := range s.active {
		if !eligible[code] {
			cs.lost = append(cs.lost, m.ID)
		}
	}
	sort.Slice(cs.lost, func(i, j int) bool { return cs.lost[i] < cs.lost[j] })
	return cs
}

func (cs changeSet) empty() bool {
	return len(cs.fresh)+len(cs.revive)+len(cs.supersede)+len(cs.reamount)+len(cs.lost) == 0
}

// count adds the change set to a result.
func (cs changeSet) count(res *PolicyResult) {
	res.New += len(cs.fresh) + len(cs.revive)
	res.Updated += len(cs.supersede) + len(cs.reamount)
	res.Revoked += len(cs.lost)
	res.Unchanged += cs.unchanged
}

// writer stores change sets.
type writer struct {
	asOf   time.Time
	prefix string
	now    time.Time
}

// insertFresh stores new matches with their outbox rows.
func (w writer) insertFresh(tx *gorm.DB, p *rules.Policy, batch []Outcome) error {
	if len(batch) == 0 {
		return nil
	}
	rows := make([]store.Match, len(batch))
	for i, oc := range batch {
		rows[i] = store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: oc.CreditCode,
			State: store.MatchActive, Amount: oc.Amount, AsOf: w.asOf, Notified: true, MatchedAt: w.now}
	}
	if err := tx.Create(&rows).Error; err != nil {
		return fmt.Errorf("insert matches of %s: %w", p.Def.ID, err)
	}
	if err := tx.Create(outboxRows(rows, p.Def.Channels, w.prefix, w.now)).Error; err != nil {
		return fmt.Errorf("queue notices of %s: %w", p.Def.ID, err)
	}
	return nil
}

// supersede replaces active rows of older versions by rows of this version, without a notice.
func (w writer) supersede(tx *gorm.DB, p *rules.Policy, batch []*store.Match, amounts map[string]*float64) error {
	if len(batch) == 0 {
		return nil
	}
	ids := make([]uint64, len(batch))
	rows := make([]store.Match, len(batch))
	for i, m := range batch {
		ids[i] = m.ID
		rows[i] = store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: m.CreditCode,
			State: store.MatchActive, Amount: amounts[m.CreditCode], AsOf: w.asOf, Notified: m.Notified, MatchedAt: m.MatchedAt}
	}
	if err := tx.Model(&store.Match{}).Where("id IN ?", ids).Updates(map[string]any{"state": store.MatchSuperseded, "updated_at": w.now}).Error; err != nil {
		return fmt.Errorf("supersede matches of %s: %w", p.Def.ID, err)
	}
	if err := tx.Create(&rows).Error; err != nil {
		return fmt.Errorf("supersede matches of %s: %w", p.Def.ID, err)
	}
	return nil
}

// reactivate makes a row active with its (new) amount: a firm that qualifies again, or whose amount changed.
func (w writer) reactivate(tx *gorm.DB, m *store.Match) error {
	if err := tx.Model(&store.Match{}).Where("id = ?", m.ID).Updates(map[string]any{
		"state": store.MatchActive, "amount": m.Amount, "as_of": w.asOf, "revoked_at": nil, "updated_at": w.now,
	}).Error; err != nil {
		return fmt.Errorf("update match %d: %w", m.ID, err)
	}
	return nil
}

// revoke marks rows of firms that no longer qualify.
func (w writer) revoke(tx *gorm.DB, p *rules.Policy, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	if err := tx.Model(&store.Match{}).Where("id IN ?", ids).
		Updates(map[string]any{"state": store.MatchRevoked, "revoked_at": w.now, "updated_at": w.now}).Error; err != nil {
		return fmt.Errorf("revoke matches of %s: %w", p.Def.ID, err)
	}
	return nil
}

// policyChanges is one policy's change set within a firm's change.
type policyChanges struct {
	policy *rules.Policy
	cs     changeSet
}

// writeAll stores the change sets of several policies in tx with as few statements as their kinds
// need (a firm's change event: one transaction, a handful of statements however many policies it
// affects): all new matches in one insert and their outbox rows in another, all revocations in one
// update.
func (w writer) writeAll(tx *gorm.DB, changes []policyChanges) error {
	var fresh []store.Match
	channels := map[string][]string{}
	var lost []uint64
	for _, c := range changes {
		p := c.policy
		channels[p.Def.ID] = p.Def.Channels
		for _, oc := range c.cs.fresh {
			fresh = append(fresh, store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: oc.CreditCode,
				State: store.MatchActive, Amount: oc.Amount, AsOf: w.asOf, Notified: true, MatchedAt: w.now})
		}
		if err := w.supersede(tx, p, c.cs.supersede, c.cs.amounts); err != nil {
			return err
		}
		for _, m := range append(c.cs.revive, c.cs.reamount...) {
			if err := w.reactivate(tx, m); err != nil {
				return err
			}
		}
		lost = append(lost, c.cs.lost...)
	}
	if len(fresh) > 0 {
		if err := tx.Create(&fresh).Error; err != nil {
			return fmt.Errorf("insert matches: %w", err)
		}
		var outbox []store.Outbox
		for i := range fresh {
			outbox = append(outbox, outboxRows(fresh[i:i+1], channels[fresh[i].PolicyID], w.prefix, w.now)...)
		}
		if err := tx.Create(&outbox).Error; err != nil {
			return fmt.Errorf("queue notices: %w", err)
		}
	}
	if len(lost) > 0 {
		if err := tx.Model(&store.Match{}).Where("id IN ?", lost).
			Updates(map[string]any{"state": store.MatchRevoked, "revoked_at": w.now, "updated_at": w.now}).Error; err != nil {
			return fmt.Errorf("revoke matches: %w", err)
		}
	}
	return nil
}

// writeBatched stores a large change set (a whole policy) in transactions of writeBatch rows: a
// new match and its outbox rows always share one.
func (w writer) writeBatched(ctx context.Context, db *gorm.DB, p *rules.Policy, cs changeSet) error {
	for lo := 0; lo < len(cs.fresh); lo += writeBatch {
		batch := cs.fresh[lo:min(lo+writeBatch, len(cs.fresh))]
		if err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return w.insertFresh(tx, p, batch) }); err != nil {
			return err
		}
	}
	for lo := 0; lo < len(cs.supersede); lo += writeBatch {
		batch := cs.supersede[lo:min(lo+writeBatch, len(cs.supersede))]
		if err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return w.supersede(tx, p, batch, cs.amounts) }); err != nil {
			return err
		}
	}
	for _, m := range append(cs.revive, cs.reamount...) {
		if err := w.reactivate(db.WithContext(ctx), m); err != nil {
			return err
		}
	}
	for lo := 0; lo < len(cs.lost); lo += writeBatch {
		if err := w.revoke(db.WithContext(ctx), p, cs.lost[lo:min(lo+writeBatch, len(cs.lost))]); err != nil {
			return err
		}
	}
	return nil
}

// writeDiff stores the difference between a policy's outcomes over a credit-code range ([lo, hi),
// empty = open) and its stored matches there.
func writeDiff(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, outcomes []Outcome, prefix, lo, hi string, res *PolicyResult) error {
	stored := newStoredMatches()
	var rows []store.Match
	q := db.WithContext(ctx).Where("policy_id = ? AND (state = ? OR policy_version = ?)", p.Def.ID, store.MatchActive, p.Version)
	if err := rangeWhere(q, lo, hi).Find(&rows).Error; err != nil {
		return fmt.Errorf("load matches of %s: %w", p.Def.ID, err)
	}
	for i := range rows {
		stored.add(p, &rows[i])
	}
	cs := stored.diff(p, outcomes)
	w := writer{asOf: asOf, prefix: prefix, now: time.Now().UTC()}
	if err := w.writeBatched(ctx, db, p, cs); err != nil {
		return err
	}
	cs.count(res)
	return nil
}

func sameAmount(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// outboxRows makes one notice per channel the policy asks for.
func outboxRows(matches []store.Match, channels []string, prefix string, now time.Time) []store.Outbox {
	out := make([]store.Outbox, 0, len(matches)*len(channels))
	for _, m := range matches {
		for _, ch := range channels {
			payload, _ := json.Marshal(bus.NoticeJob{MatchID: m.ID, Channel: ch})
			out = append(out, store.Outbox{Subject: bus.NotifySubject(prefix, ch), Payload: payload, CreatedAt: now})
		}
	}
	return out
}

// recordErrors replaces the policy's error rows of a credit-code range with the new ones.
func recordErrors(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, errs []EvalError, lo, hi string) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := rangeWhere(tx.Where("policy_id = ?", p.Def.ID), lo, hi).Delete(&store.EvalError{}).Error; err != nil {
			return fmt.Errorf("clear evaluation errors of %s: %w", p.Def.ID, err)
		}
		if len(errs) == 0 {
			return nil
		}
		return tx.CreateInBatches(errorRows(p, asOf, errs), 500).Error
	})
}

func errorRows(p *rules.Policy, asOf time.Time, errs []EvalError) []store.EvalError {
	now := time.Now().UTC()
	rows := make([]store.EvalError, len(errs))
	for i, e := range errs {
		msg := e.Err.Error()
		if len(msg) > 480 {
			msg = msg[:480]
		}
		rows[i] = store.EvalError{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: e.CreditCode, AsOf: asOf, Message: msg, At: now}
	}
	return rows
}
