// Package matcher owns deciding who qualifies: it evaluates published policies against the
// active firms of the registry as of a date, diffs the result against the stored matches, and
// writes new matches together with their outbox rows in one transaction. It never sends anything;
// the outbox relay and the notifiers do.
package matcher

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Options tune a run.
type Options struct {
	Workers       int       // evaluation goroutines; 0 = one per core
	SubjectPrefix string    // NATS subject prefix of notices
	Progress      io.Writer // progress bars; nil = none
	Log           *slog.Logger
}

// PolicyResult is what one policy's evaluation did.
type PolicyResult struct {
	PolicyID  string `json:"policy_id"`
	Version   int    `json:"version"`
	Title     string `json:"title"`
	Skipped   string `json:"skipped,omitempty"` // why the policy was not evaluated
	Eligible  int    `json:"eligible"`
	New       int    `json:"new"`
	Revoked   int    `json:"revoked"`
	Updated   int    `json:"updated"` // amount or version changed; no new notice
	Unchanged int    `json:"unchanged"`
	Errors    int    `json:"errors"`
}

// Summary is what a run did.
type Summary struct {
	AsOf     string         `json:"as_of"`
	Firms    int            `json:"firms"`
	Policies []PolicyResult `json:"policies"`
	Seconds  float64        `json:"seconds"`
}

// Run matches published policies (or only policyID) as of asOf.
func Run(ctx context.Context, db *gorm.DB, asOf time.Time, policyID string, o Options) (Summary, error) {
	start := time.Now()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sum := Summary{AsOf: asOf.Format("2006-01-02")}
	policies, err := rules.LoadPublished(ctx, db, policyID)
	if err != nil {
		return sum, err
	}
	if policyID != "" && len(policies) == 0 {
		return sum, fmt.Errorf("policy %s is not published (apply it first, or check `policypush policy list`)", policyID)
	}
	firms, err := LoadActiveFirms(ctx, db, asOf, o.Progress)
	if err != nil {
		return sum, err
	}
	sum.Firms = len(firms)
	for _, p := range policies {
		res := PolicyResult{PolicyID: p.Def.ID, Version: p.Version, Title: p.Def.Title}
		if !p.Def.ActiveOn(asOf) {
			res.Skipped = fmt.Sprintf("not in effect on %s (window %s – %s)", sum.AsOf, p.Def.EffectiveFrom, windowEnd(p.Def))
			sum.Policies = append(sum.Policies, res)
			continue
		}
		outcomes, evalErrs := Evaluate(p, firms, o.Workers)
		res.Eligible = len(outcomes)
		res.Errors = len(evalErrs)
		if err := recordErrors(ctx, db, p, asOf, evalErrs); err != nil {
			return sum, err
		}
		if err := writeDiff(ctx, db, p, asOf, outcomes, o.SubjectPrefix, &res); err != nil {
			return sum, err
		}
		o.Log.Info("matched", "policy", p.Def.ID, "version", p.Version, "eligible", res.Eligible, "new", res.New, "revoked", res.Revoked, "errors", res.Errors)
		sum.Policies = append(sum.Policies, res)
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

func windowEnd(d *rules.Definition) string {
	if d.EffectiveTo == nil {
		return "open"
	}
	return d.EffectiveTo.String()
}

// LoadActiveFirms reads every active firm by keyset pagination on the credit code.
func LoadActiveFirms(ctx context.Context, db *gorm.DB, asOf time.Time, progress io.Writer) ([]rules.Env, error) {
	var total int64
	if err := db.WithContext(ctx).Model(&store.Enterprise{}).Where("status = ?", store.StatusActive).Count(&total).Error; err != nil {
		return nil, fmt.Errorf("count firms: %w", err)
	}
	bar := newBar(progress, total, "载入企业")
	out := make([]rules.Env, 0, total)
	after := ""
	const page = 5000
	for {
		var batch []store.Enterprise
		if err := db.WithContext(ctx).Where("status = ? AND credit_code > ?", store.StatusActive, after).
			Order("credit_code").Limit(page).Find(&batch).Error; err != nil {
			return nil, fmt.Errorf("load firms after %q: %w", after, err)
		}
		for i := range batch {
			out = append(out, rules.EnvOf(&batch[i], asOf))
		}
		if bar != nil {
			_ = bar.Add(len(batch))
		}
		if len(batch) < page {
			break
		}
		after = batch[len(batch)-1].CreditCode
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return out, nil
}

func newBar(w io.Writer, total int64, desc string) *progressbar.ProgressBar {
	if w == nil {
		return nil
	}
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}

// Outcome is one eligible firm.
type Outcome struct {
	CreditCode string
	Amount     *float64
}

// EvalError is a rule that failed for one firm.
type EvalError struct {
	CreditCode string
	Err        error
}

// Evaluate runs the policy over firms on every core. Results come back sorted by credit code, so
// the same inputs always give the same output.
func Evaluate(p *rules.Policy, firms []rules.Env, workers int) ([]Outcome, []EvalError) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	chunk := (len(firms) + workers - 1) / workers
	if chunk < 256 {
		chunk = 256
	}
	type part struct {
		out  []Outcome
		errs []EvalError
	}
	parts := make([]part, (len(firms)+chunk-1)/chunk)
	var wg sync.WaitGroup
	for i := range parts {
		lo, hi := i*chunk, min((i+1)*chunk, len(firms))
		wg.Add(1)
		go func(i, lo, hi int) {
			defer wg.Done()
			var pt part
			for j := lo; j < hi; j++ {
				res, err := p.Evaluate(&firms[j])
				if err != nil {
					pt.errs = append(pt.errs, EvalError{CreditCode: firms[j].CreditCode, Err: err})
					continue
				}
				if res.Eligible {
					pt.out = append(pt.out, Outcome{CreditCode: firms[j].CreditCode, Amount: res.Amount})
				}
			}
			parts[i] = pt
		}(i, lo, hi)
	}
	wg.Wait()
	var out []Outcome
	var errs []EvalError
	for _, pt := range parts {
		out = append(out, pt.out...)
		errs = append(errs, pt.errs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreditCode < out[j].CreditCode })
	return out, errs
}

// recordErrors replaces the policy version's error rows for this date with the new ones.
func recordErrors(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, errs []EvalError) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("policy_id = ?", p.Def.ID).Delete(&store.EvalError{}).Error; err != nil {
			return fmt.Errorf("clear evaluation errors of %s: %w", p.Def.ID, err)
		}
		if len(errs) == 0 {
			return nil
		}
		now := time.Now().UTC()
		rows := make([]store.EvalError, len(errs))
		for i, e := range errs {
			msg := e.Err.Error()
			if len(msg) > 480 {
				msg = msg[:480]
			}
			rows[i] = store.EvalError{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: e.CreditCode, AsOf: asOf, Message: msg, At: now}
		}
		return tx.CreateInBatches(rows, 500).Error
	})
}

const writeBatch = 500

// writeDiff stores the difference between the outcomes and the stored active matches. New matches
// and their outbox rows are written in the same transaction; lost ones are revoked; firms that
// still qualify keep their row (a new version or amount updates it without a second notice).
func writeDiff(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, outcomes []Outcome, prefix string, res *PolicyResult) error {
	var active []store.Match
	if err := db.WithContext(ctx).Where("policy_id = ? AND state = ?", p.Def.ID, store.MatchActive).Find(&active).Error; err != nil {
		return fmt.Errorf("load matches of %s: %w", p.Def.ID, err)
	}
	current := make(map[string]*store.Match, len(active))
	for i := range active {
		current[active[i].CreditCode] = &active[i]
	}
	// Rows of this version that are not active (revoked earlier): a firm that qualifies again gets
	// its row back but never a second notice for the same version.
	var dormant []store.Match
	if err := db.WithContext(ctx).Where("policy_id = ? AND policy_version = ? AND state <> ?", p.Def.ID, p.Version, store.MatchActive).
		Find(&dormant).Error; err != nil {
		return fmt.Errorf("load earlier matches of %s: %w", p.Def.ID, err)
	}
	earlier := make(map[string]*store.Match, len(dormant))
	for i := range dormant {
		earlier[dormant[i].CreditCode] = &dormant[i]
	}

	var fresh []Outcome
	var revive, supersede, reamount []*store.Match
	freshAmount := map[string]*float64{}
	eligible := make(map[string]bool, len(outcomes))
	for _, oc := range outcomes {
		eligible[oc.CreditCode] = true
		cur, ok := current[oc.CreditCode]
		switch {
		case !ok:
			if old, ok := earlier[oc.CreditCode]; ok {
				old.Amount = oc.Amount
				revive = append(revive, old)
			} else {
				fresh = append(fresh, oc)
			}
		case cur.PolicyVersion != p.Version:
			freshAmount[oc.CreditCode] = oc.Amount
			supersede = append(supersede, cur)
		case !sameAmount(cur.Amount, oc.Amount):
			cur.Amount = oc.Amount
			reamount = append(reamount, cur)
		default:
			res.Unchanged++
		}
	}
	var lost []uint64
	for code, m := range current {
		if !eligible[code] {
			lost = append(lost, m.ID)
		}
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i] < lost[j] })
	now := time.Now().UTC()

	for lo := 0; lo < len(fresh); lo += writeBatch {
		batch := fresh[lo:min(lo+writeBatch, len(fresh))]
		err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			rows := make([]store.Match, len(batch))
			for i, oc := range batch {
				rows[i] = store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: oc.CreditCode,
					State: store.MatchActive, Amount: oc.Amount, AsOf: asOf, Notified: true, MatchedAt: now}
			}
			if err := tx.Create(&rows).Error; err != nil {
				return fmt.Errorf("insert matches of %s: %w", p.Def.ID, err)
			}
			return tx.Create(outboxRows(rows, p.Def.Channels, prefix, now)).Error
		})
		if err != nil {
			return err
		}
		res.New += len(batch)
	}
	for lo := 0; lo < len(supersede); lo += writeBatch {
		batch := supersede[lo:min(lo+writeBatch, len(supersede))]
		err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			ids := make([]uint64, len(batch))
			rows := make([]store.Match, len(batch))
			for i, m := range batch {
				ids[i] = m.ID
				rows[i] = store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: m.CreditCode,
					State: store.MatchActive, Amount: freshAmount[m.CreditCode], AsOf: asOf, Notified: m.Notified, MatchedAt: m.MatchedAt}
			}
			if err := tx.Model(&store.Match{}).Where("id IN ?", ids).Updates(map[string]any{"state": store.MatchSuperseded, "updated_at": now}).Error; err != nil {
				return err
			}
			return tx.Create(&rows).Error
		})
		if err != nil {
			return fmt.Errorf("supersede matches of %s: %w", p.Def.ID, err)
		}
		res.Updated += len(batch)
	}
	for _, m := range append(revive, reamount...) {
		if err := db.WithContext(ctx).Model(&store.Match{}).Where("id = ?", m.ID).Updates(map[string]any{
			"state": store.MatchActive, "amount": m.Amount, "as_of": asOf, "revoked_at": nil, "updated_at": now,
		}).Error; err != nil {
			return fmt.Errorf("update match %d: %w", m.ID, err)
		}
	}
	res.Updated += len(reamount)
	res.New += len(revive)
	for lo := 0; lo < len(lost); lo += writeBatch {
		ids := lost[lo:min(lo+writeBatch, len(lost))]
		if err := db.WithContext(ctx).Model(&store.Match{}).Where("id IN ?", ids).
			Updates(map[string]any{"state": store.MatchRevoked, "revoked_at": now, "updated_at": now}).Error; err != nil {
			return fmt.Errorf("revoke matches of %s: %w", p.Def.ID, err)
		}
		res.Revoked += len(ids)
	}
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
