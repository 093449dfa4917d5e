// Package matcher owns deciding who qualifies: it evaluates published policies against the
// active firms of the registry as of a date, diffs the result against the stored matches, and
// writes new matches together with their outbox rows in one transaction. It never sends anything;
// the outbox relay and the notifiers do.
//
// Evaluation runs on a column-oriented snapshot of the registry (snapshot.go) with plans compiled
// from each rule's checked tree (plan.go, kernels.go); whatever a plan cannot decide goes to the
// rule's own expr program, so the answers are those of plain expr.Run, which stays available as
// the differential baseline (Options.Plain, Evaluate). A long-lived Engine (engine.go) keeps the
// snapshot current from change events and re-matches incrementally; shard jobs on JetStream spread
// full matches over several processes (shards.go). docs/matcher.md describes the design.
package matcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/schollz/progressbar/v3"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Options tune a run.
type Options struct {
	Workers       int       // evaluation goroutines; 0 = one per core
	SubjectPrefix string    // NATS subject prefix of notices
	Progress      io.Writer // progress bars; nil = none
	Log           *slog.Logger
	// Plain evaluates every firm with the policies' expr programs on rules.Env values loaded
	// through GORM, without snapshot or plans: the differential baseline of the engine.
	Plain bool
	// Vocabulary is what the published rules are compiled against (the deployment's extra fields);
	// nil: the standard field catalog.
	Vocabulary *rules.Vocabulary
	// BulkLoadFirms: a full match (every policy) into an empty matches table over at least this
	// many active firms builds the table's deferrable secondary indexes after its rows
	// (store.DeferMatchIndexes). 0: DefaultBulkLoadFirms; negative: never.
	BulkLoadFirms int
}

// DefaultBulkLoadFirms is Options.BulkLoadFirms's default: below it, keeping the indexes in step
// costs less than a second and the console keeps its indexes throughout.
const DefaultBulkLoadFirms = 20000

// bulkLoad reports whether a full match over firms active firms is a bulk load.
func (o Options) bulkLoad(firms int) bool {
	limit := o.BulkLoadFirms
	if limit == 0 {
		limit = DefaultBulkLoadFirms
	}
	return limit > 0 && firms >= limit
}

func (o Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.Log
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
	Phases   Phases         `json:"phases"`
}

// Phases are the seconds a run spent in each of its steps: loading the registry, evaluating the
// policies, comparing the decisions with the stored matches, and writing the difference.
type Phases struct {
	Load     float64 `json:"load"`
	Evaluate float64 `json:"evaluate"`
	Diff     float64 `json:"diff"`
	Write    float64 `json:"write"`
	// Index is the part of Write spent building the secondary indexes of matches after a bulk
	// load's rows (0 when the run was not one).
	Index float64 `json:"index,omitempty"`
}

func (p Phases) String() string {
	s := fmt.Sprintf("load %.2f s, evaluate %.2f s, diff %.2f s, write %.2f s", p.Load, p.Evaluate, p.Diff, p.Write)
	if p.Index > 0 {
		s += fmt.Sprintf(" (of which building match indexes after the rows %.2f s)", p.Index)
	}
	return s
}

// since adds the time since start to a phase and returns now.
func since(phase *float64, start time.Time) time.Time {
	now := time.Now()
	*phase += now.Sub(start).Seconds()
	return now
}

// Run matches published policies (or only policyID) as of asOf.
func Run(ctx context.Context, db *gorm.DB, asOf time.Time, policyID string, o Options) (Summary, error) {
	start := time.Now()
	sum := Summary{AsOf: asOf.Format(time.DateOnly)}
	policies, err := policies.LoadPublished(ctx, db, policyID, rules.WithVocabulary(o.Vocabulary))
	if err != nil {
		return sum, err
	}
	if policyID != "" && len(policies) == 0 {
		return sum, fmt.Errorf("policy %s is not published (apply it first, or check `policypush policy list`)", policyID)
	}
	active, skipped := splitActive(policies, asOf)
	if o.Plain {
		sum.Policies, sum.Firms, err = runPlain(ctx, db, asOf, active, o)
	} else {
		fields, extras := fieldsOf(active)
		var snap *Snapshot
		t := time.Now()
		moves, err := store.PlaceMoves(db.WithContext(ctx))
		if err != nil {
			return sum, err
		}
		snap, err = LoadSnapshot(ctx, db, LoadOptions{Fields: withPlaces(fields), Extras: extras, Progress: o.Progress, Vocabulary: o.Vocabulary})
		if err != nil {
			return sum, err
		}
		known := snap.places(t.Add(-placesMargin), moves)
		since(&sum.Phases.Load, t)
		sum.Firms = snap.Active()
		var restore func(context.Context) error
		if policyID == "" && o.bulkLoad(sum.Firms) {
			if restore, err = deferIndexes(ctx, db, o.logger()); err != nil {
				return sum, err
			}
		}
		sum.Policies, err = matchPolicies(ctx, db, snap, newPlanner(snap, asOf), active, o, "", "", known, &sum.Phases)
		if restore != nil {
			t := time.Now()
			// Built even when the run failed or was interrupted: the console needs them.
			rerr := restore(context.WithoutCancel(ctx))
			d := time.Since(t).Seconds()
			sum.Phases.Index, sum.Phases.Write = d, sum.Phases.Write+d
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return sum, err
	}
	sum.Policies = append(sum.Policies, skipped...)
	sort.Slice(sum.Policies, func(i, j int) bool { return sum.Policies[i].PolicyID < sum.Policies[j].PolicyID })
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// deferIndexes starts a bulk load when the matches table is empty: it drops the deferrable
// secondary indexes and returns the function that builds them again (nil when not a bulk load).
// On both databases: a full match writes its rows policy by policy within each transaction, so
// kept in step the firm index takes them in no order and splits its pages in the middle, while
// built afterwards it is one sorted pass (MariaDB, 200,000 firms × 140 policies: 2.1–2.3 s to
// build, the whole command 0.61–0.68× → 0.82× the script's speed; docs/matcher.md).
func deferIndexes(ctx context.Context, db *gorm.DB, log *slog.Logger) (func(context.Context) error, error) {
	empty, err := store.MatchesEmpty(ctx, db)
	if err != nil || !empty {
		return nil, err
	}
	restore, err := store.DeferMatchIndexes(ctx, db)
	if err != nil {
		return nil, errors.Join(err, restore(context.WithoutCancel(ctx)))
	}
	log.Info("first full match into an empty table: the match indexes are built after the rows")
	return restore, nil
}

// splitActive separates the policies in effect on asOf from the others, which are reported as skipped.
func splitActive(policies []*rules.Policy, asOf time.Time) (active []*rules.Policy, skipped []PolicyResult) {
	for _, p := range policies {
		if p.Def.ActiveOn(asOf) {
			active = append(active, p)
			continue
		}
		skipped = append(skipped, PolicyResult{PolicyID: p.Def.ID, Version: p.Version, Title: p.Def.Title,
			Skipped: fmt.Sprintf("not in effect on %s (window %s – %s)", asOf.Format(time.DateOnly), p.Def.EffectiveFrom, windowEnd(p.Def))})
	}
	return active, skipped
}

func windowEnd(d *rules.Definition) string {
	if d.EffectiveTo == nil {
		return "open"
	}
	return d.EffectiveTo.String()
}

// policyGroup is how many policies one pass over the snapshot decides: their decisions are held
// in memory until stored.
const policyGroup = 64

// matchPolicies evaluates policies over a snapshot (the registry, or the shard [lo, hi) of it) and
// stores the differences for that scope.
//
// known, when not nil, are the firms' places as the snapshot read them (Snapshot.places), which
// the new matches' places and counts take instead of reading them back (store.PlaceMatches).
func matchPolicies(ctx context.Context, db *gorm.DB, snap *Snapshot, pl *planner, policies []*rules.Policy, o Options, lo, hi string, known *store.KnownPlaces, ph *Phases) ([]PolicyResult, error) {
	log := o.logger()
	out := make([]PolicyResult, 0, len(policies))
	bar := newBar(o.Progress, int64(len(policies)), "比对并写入匹配结果（项政策）")
	for g := 0; g < len(policies); g += policyGroup {
		group := policies[g:min(g+policyGroup, len(policies))]
		t := time.Now()
		plans := pl.prepared(group, o.Workers)
		decs, err := evaluateAll(ctx, snap, plans, o.Workers)
		if err != nil {
			return out, err
		}
		since(&ph.Evaluate, t)
		// The group's decisions are stored in parts of about groupRows eligible firms, each part
		// by one storeGroup (diff.go: their new matches are written together, in firm order).
		results := make([]PolicyResult, len(group))
		var part []policyWrite
		rows := 0
		for i, p := range group {
			results[i] = PolicyResult{PolicyID: p.Def.ID, Version: p.Version, Title: p.Def.Title}
			t := time.Now()
			pw := policyWrite{policy: p, outcomes: decs[i].outcomes(snap), errs: decs[i].evalErrors(snap), res: &results[i]}
			since(&ph.Evaluate, t)
			part, rows = append(part, pw), rows+len(pw.outcomes)
			if rows < groupRows && i < len(group)-1 {
				continue
			}
			if err := storeGroup(ctx, db, part, pl.asOf, o.SubjectPrefix, lo, hi, known, ph); err != nil {
				return out, err
			}
			for _, pw := range part {
				res := pw.res
				if lo == "" && hi == "" {
					if err := recordEvaluation(ctx, db, pw.policy, pl.asOf, snap.Active(), res.Eligible); err != nil {
						return out, err
					}
				}
				log.Info("matched", "policy", res.PolicyID, "version", res.Version, "eligible", res.Eligible, "new", res.New, "revoked", res.Revoked, "errors", res.Errors)
				out = append(out, *res)
				if bar != nil {
					_ = bar.Add(1)
				}
			}
			part, rows = nil, 0
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return out, nil
}

// storeDecisions records a policy's errors and match differences over a scope.
func storeDecisions(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, outcomes []Outcome, evalErrs []EvalError, prefix, lo, hi string, res *PolicyResult, ph *Phases) error {
	res.Eligible = len(outcomes)
	res.Errors = len(evalErrs)
	t := time.Now()
	if err := recordErrors(ctx, db, p, asOf, evalErrs, lo, hi); err != nil {
		return err
	}
	since(&ph.Write, t)
	return writeDiff(ctx, db, p, asOf, outcomes, prefix, lo, hi, res, ph)
}

// recordEvaluation notes that the whole population was evaluated for a policy version on a date.
func recordEvaluation(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, firms, eligible int) error {
	row := store.PolicyEvaluation{PolicyID: p.Def.ID, Version: p.Version, AsOf: asOf, Firms: firms, Eligible: eligible, Evaluated: time.Now().UTC()}
	err := db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "policy_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"version", "as_of", "firms", "eligible", "evaluated"}),
	}).Create(&row).Error
	if err != nil {
		return fmt.Errorf("record evaluation of %s: %w", p.Def.ID, err)
	}
	return nil
}

// outcomes turns a policy's decisions into eligible firms, in credit-code order.
func (d *decisions) outcomes(snap *Snapshot) []Outcome {
	out := make([]Outcome, 0, d.eligible())
	late := false
	lastRow, lastCode := -1, ""
	d.each(func(row int, amount *float64) {
		if row != lastRow {
			lastRow, lastCode = row, snap.code(row)
		}
		oc := Outcome{CreditCode: lastCode}
		if amount != nil {
			a := *amount
			oc.Amount = &a
		}
		out = append(out, oc)
		late = late || row >= snap.sorted
	})
	if late { // a firm added after loading: rows are no longer in code order
		sort.Slice(out, func(i, j int) bool { return out[i].CreditCode < out[j].CreditCode })
	}
	return out
}

func (d *decisions) evalErrors(snap *Snapshot) []EvalError {
	out := make([]EvalError, len(d.errs))
	for i, e := range d.errs {
		out[i] = EvalError{CreditCode: snap.code(int(e.row)), Err: e.err}
	}
	return out
}

// fieldsOf lists the registry fields and extra fields the policies (and the policies their
// combination rules consult) read.
func fieldsOf(policies []*rules.Policy) (fields, extras []string) {
	specs, _ := envSpecs()
	seen := map[string]bool{statusKey: true}
	fields = []string{statusKey}
	readsExtra := false
	v := visitFunc(func(n ast.Node) {
		id, ok := n.(*ast.IdentifierNode)
		if !ok {
			return
		}
		switch _, catalog := specs[id.Value]; {
		case catalog && !seen[id.Value]:
			seen[id.Value] = true
			fields = append(fields, id.Value)
		case id.Value == extraKey:
			readsExtra = true
		case id.Value == "$env":
			readsExtra = true
			for k := range specs {
				if !seen[k] {
					seen[k] = true
					fields = append(fields, k)
				}
			}
		}
	})
	seenPolicy := map[*rules.Policy]bool{}
	var walk func(p *rules.Policy)
	walk = func(p *rules.Policy) {
		if seenPolicy[p] {
			return
		}
		seenPolicy[p] = true
		for _, prog := range []*rules.Program{p.Eligibility, p.Amount} {
			if prog != nil {
				node := prog.Tree.Node
				ast.Walk(&node, v)
			}
		}
		for _, q := range p.Partners() { // combination rules evaluate the partners' rules on the firm
			walk(q)
		}
	}
	for _, p := range policies {
		walk(p)
	}
	if readsExtra { // the policies of one run share their vocabulary
		for _, f := range policies[0].Vocabulary().Extra() {
			extras = append(extras, f.Key)
		}
	}
	sort.Strings(fields)
	return fields, extras
}

type visitFunc func(ast.Node)

func (f visitFunc) Visit(n *ast.Node) { f(*n) }

// dependsOnDate reports whether a policy's rule reads the evaluation date (as_of, directly or
// through a helper such as years_since): its answers can change from one day to the next.
func dependsOnDate(p *rules.Policy) bool {
	found := false
	v := visitFunc(func(n ast.Node) {
		if id, ok := n.(*ast.IdentifierNode); ok && (id.Value == asOfKey || id.Value == "$env") {
			found = true
		}
	})
	for _, prog := range []*rules.Program{p.Eligibility, p.Amount} {
		if prog != nil {
			node := prog.Tree.Node
			ast.Walk(&node, v)
		}
	}
	return found
}

// runPlain is the plain path: every policy over every firm with its expr programs.
func runPlain(ctx context.Context, db *gorm.DB, asOf time.Time, policies []*rules.Policy, o Options) ([]PolicyResult, int, error) {
	log := o.logger()
	firms, err := LoadActiveFirms(ctx, db, asOf, o.Progress, rules.WithVocabulary(o.Vocabulary))
	if err != nil {
		return nil, 0, err
	}
	out := make([]PolicyResult, 0, len(policies))
	for _, p := range policies {
		res := PolicyResult{PolicyID: p.Def.ID, Version: p.Version, Title: p.Def.Title}
		outcomes, evalErrs := Evaluate(p, firms, o.Workers)
		if err := storeDecisions(ctx, db, p, asOf, outcomes, evalErrs, o.SubjectPrefix, "", "", &res, &Phases{}); err != nil {
			return out, len(firms), err
		}
		if err := recordEvaluation(ctx, db, p, asOf, len(firms), res.Eligible); err != nil {
			return out, len(firms), err
		}
		log.Info("matched", "policy", p.Def.ID, "version", p.Version, "eligible", res.Eligible, "new", res.New, "revoked", res.Revoked, "errors", res.Errors)
		out = append(out, res)
	}
	return out, len(firms), nil
}

// LoadActiveFirms reads every active firm by keyset pagination on the credit code, as rules.Env
// values with their extra fields (those of the options' vocabulary; the plain path).
func LoadActiveFirms(ctx context.Context, db *gorm.DB, asOf time.Time, progress io.Writer, opts ...rules.Option) ([]rules.Env, error) {
	var total int64
	if err := db.WithContext(ctx).Model(&store.Enterprise{}).Where("status = ?", store.StatusActive).Count(&total).Error; err != nil {
		return nil, fmt.Errorf("count firms: %w", err)
	}
	bar := newBar(progress, total, "载入企业")
	var onPage func(int)
	if bar != nil {
		onPage = func(n int) { _ = bar.Add(n) }
		defer bar.Finish()
	}
	return policies.ActiveFirmsProgress(ctx, db, asOf, onPage, opts...)
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

// Evaluate runs the policy's expr programs over firms on every core: the plain path and the
// reference the engine is checked against. Results come back sorted by credit code, so the same
// inputs always give the same output.
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
