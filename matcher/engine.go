package matcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Engine is a long-lived matcher: it holds the snapshot of the registry and the published
// policies, and keeps the stored matches current as things change —
//
//   - a firm's data changes (ApplyChanges, ApplyChangeJSON, the change subject, or the catch-up
//     by updated_at): that firm is re-evaluated against every active policy and only the
//     differences are written, in one transaction with the firm's upsert;
//   - a policy is published, changed or retired (PolicyChanged, or the catch-up noticing a new
//     published version): the whole population is re-evaluated for that policy only;
//   - the evaluation date moves on (the catch-up's daily sweep): policies whose window opens are
//     evaluated, and policies whose rule reads the date (as_of, years_since, ...) re-evaluated.
//
// Its methods are safe for concurrent use; they run one at a time.
type Engine struct {
	db *gorm.DB
	o  EngineOptions

	mu       sync.Mutex
	snap     *Snapshot
	all      []*rules.Policy // published, not retired, linked (any window)
	versions map[string]int  // published version by policy id, as last read
	asOf     time.Time
	// asOfNow is asOf (nil before the first load) for readers that must not wait
	// for mu: the console asks on every page, and the engine holds mu through a whole load,
	// catch-up or policy evaluation (at 200,000 firms every console request made while serve
	// was loading ran past its 5 s deadline waiting in AsOf).
	asOfNow   atomic.Pointer[time.Time]
	pl        *planner
	frame     *frame
	watermark time.Time // firms updated before this are reflected in the snapshot and matches
	// cursorSaved is when the watermark was last stored; bulkPending, that a catch-up round put
	// many changed firms into the snapshot but did not finish evaluating every policy over them.
	cursorSaved time.Time
	bulkPending bool
	// The policy set and date whose fields the snapshot is known to hold. The slice itself is kept
	// (not its address as text): while it is referenced its memory cannot be reused by a later set.
	fieldsAll []*rules.Policy
	fieldsDay time.Time
}

// EngineOptions configure an Engine.
type EngineOptions struct {
	Workers       int
	SubjectPrefix string // of notices
	// AsOf gives the evaluation date; nil: today (midnight) in Location.
	AsOf     func() time.Time
	Location *time.Location
	Progress io.Writer // progress bar of the snapshot load; nil: none
	Log      *slog.Logger
	// Vocabulary is what the published rules are compiled against; nil: the standard catalog.
	Vocabulary *rules.Vocabulary
}

// ErrNotLoaded is returned by an engine whose snapshot is still loading (or failed to load).
var ErrNotLoaded = errors.New("the matcher is still loading the registry; try again shortly")

// catchUpOverlap re-reads firms updated shortly before the watermark: a transaction that commits
// late can carry an updated_at earlier than rows already read. Re-reading is harmless, a firm
// whose data the snapshot already holds is skipped.
const catchUpOverlap = time.Minute

// bulkFloor is the fewest changed firms the catch-up handles by evaluating every policy rather than
// re-matching the firms one by one (besides a tenth of the snapshot).
const bulkFloor = 200

// cursorRegistry names the MatcherCursor of the catch-up.
const cursorRegistry = "registry"

// NewEngine makes an engine; Load must be called before anything else.
func NewEngine(db *gorm.DB, o EngineOptions) *Engine {
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Engine{db: db, o: o, frame: &frame{}, versions: map[string]int{}}
}

func (e *Engine) today() time.Time {
	if e.o.AsOf != nil {
		return rules.Day(e.o.AsOf(), time.UTC)
	}
	return rules.Day(time.Now(), e.o.Location)
}

func (e *Engine) options() Options {
	return Options{Workers: e.o.Workers, SubjectPrefix: e.o.SubjectPrefix, Log: e.o.Log}
}

// AsOf is the date the engine evaluates on (zero before its first load). It does not wait for
// the engine's work in progress.
func (e *Engine) AsOf() time.Time {
	if d := e.asOfNow.Load(); d != nil {
		return *d
	}
	return time.Time{}
}

// setAsOf changes the date the engine evaluates on; the caller holds e.mu.
func (e *Engine) setAsOf(d time.Time) {
	e.asOf = d
	e.asOfNow.Store(&d)
}

// SnapshotInfo describes what the engine holds.
type SnapshotInfo struct {
	Firms  int      `json:"firms"`  // active firms evaluated
	Rows   int      `json:"rows"`   // firms held (active or not)
	Bytes  int      `json:"bytes"`  // memory of the snapshot
	Fields []string `json:"fields"` // registry fields held
}

// Info describes the engine's snapshot.
func (e *Engine) Info() SnapshotInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.snap == nil {
		return SnapshotInfo{}
	}
	return SnapshotInfo{Firms: e.snap.Active(), Rows: e.snap.Len(), Bytes: e.snap.Bytes(), Fields: e.snap.Fields()}
}

// Load reads the published policies and the snapshot, then brings the stored matches up to date:
// policies never evaluated at their published version (or, when they read the date, not on this
// date) are evaluated for the whole population; firms changed since the last matcher ran are
// re-matched.
func (e *Engine) Load(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now().UTC()
	if err := e.readPolicies(ctx); err != nil {
		return err
	}
	e.setAsOf(e.today())
	fields, extras := fieldsOf(e.active())
	snap, err := LoadSnapshot(ctx, e.db, LoadOptions{Fields: fields, Extras: extras, Progress: e.o.Progress, Vocabulary: e.o.Vocabulary})
	if err != nil {
		return err
	}
	e.snap, e.pl = snap, newPlanner(snap, e.asOf)
	since, err := e.lastMatched(ctx)
	if err != nil {
		return err
	}
	if _, err := e.evaluateStale(ctx); err != nil {
		return err
	}
	e.watermark = start
	if !since.IsZero() {
		e.watermark = since
	}
	e.o.Log.Info("matcher loaded", "firms", snap.Active(), "bytes_per_firm", snap.Bytes()/max(1, snap.Len()), "policies", len(e.active()), "as_of", e.asOf.Format(time.DateOnly))
	// Firms changed since the last matcher stopped may not be matched on their current data.
	_, err = e.catchUpFirms(ctx, true)
	return err
}

// lastMatched is when the stored matches were last brought up to date with the registry: the
// catch-up cursor, or else the oldest whole-population evaluation; zero when nothing was matched.
func (e *Engine) lastMatched(ctx context.Context) (time.Time, error) {
	var c store.MatcherCursor
	err := e.db.WithContext(ctx).Where("name = ?", cursorRegistry).Take(&c).Error
	if err == nil {
		return c.At, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return time.Time{}, fmt.Errorf("read matcher cursor: %w", err)
	}
	var oldest []store.PolicyEvaluation
	if err := e.db.WithContext(ctx).Order("evaluated").Limit(1).Find(&oldest).Error; err != nil {
		return time.Time{}, fmt.Errorf("read policy evaluations: %w", err)
	}
	if len(oldest) == 0 {
		return time.Time{}, nil
	}
	return oldest[0].Evaluated, nil
}

// readPolicies loads the published policies and their combination rules.
func (e *Engine) readPolicies(ctx context.Context) error {
	all, err := policies.LoadPublished(ctx, e.db, "", rules.WithVocabulary(e.o.Vocabulary))
	if err != nil {
		return err
	}
	e.all = all
	e.versions = map[string]int{}
	for _, p := range all {
		e.versions[p.Def.ID] = p.Version
	}
	return nil
}

// active lists the policies in effect on the engine's date.
func (e *Engine) active() []*rules.Policy {
	var out []*rules.Policy
	for _, p := range e.all {
		if p.Def.ActiveOn(e.asOf) {
			out = append(out, p)
		}
	}
	return out
}

// ensureFields loads the columns the active policies read and are not held yet.
func (e *Engine) ensureFields(ctx context.Context) error {
	if sameSlice(e.all, e.fieldsAll) && e.asOf.Equal(e.fieldsDay) {
		return nil
	}
	fields, extras := fieldsOf(e.active())
	if err := e.snap.addFields(ctx, e.db, fields, extras); err != nil {
		return err
	}
	e.fieldsAll, e.fieldsDay = e.all, e.asOf
	return nil
}

// sameSlice reports whether a and b are the same slice (not merely equal elements).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// evaluateStale evaluates, for the whole population, the active policies whose last evaluation
// was of another version, or (when their rule reads the date) on another date.
func (e *Engine) evaluateStale(ctx context.Context) ([]PolicyResult, error) {
	var rows []store.PolicyEvaluation
	if err := e.db.WithContext(ctx).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read policy evaluations: %w", err)
	}
	last := map[string]store.PolicyEvaluation{}
	for _, r := range rows {
		last[r.PolicyID] = r
	}
	var stale []*rules.Policy
	for _, p := range e.active() {
		r, ok := last[p.Def.ID]
		if !ok || r.Version != p.Version || (dependsOnDate(p) && !rules.Day(r.AsOf, time.UTC).Equal(e.asOf)) {
			stale = append(stale, p)
		}
	}
	if len(stale) == 0 {
		return nil, nil
	}
	stale = e.withPartners(stale)
	if err := e.ensureFields(ctx); err != nil {
		return nil, err
	}
	e.o.Log.Info("evaluating policies for the whole population", "policies", len(stale), "as_of", e.asOf.Format(time.DateOnly))
	return matchPolicies(ctx, e.db, e.snap, e.pl, stale, e.options(), "", "", nil, &Phases{})
}

// withPartners adds the active policies a combination rule links to the given ones: a policy that
// excludes others (不得重复享受) changes who gets them too.
func (e *Engine) withPartners(policies []*rules.Policy) []*rules.Policy {
	in := map[*rules.Policy]bool{}
	for _, p := range policies {
		in[p] = true
	}
	out := policies
	for _, p := range policies {
		for _, q := range p.Partners() {
			if !in[q] && q.Def.ActiveOn(e.asOf) {
				in[q] = true
				out = append(out, q)
			}
		}
	}
	return out
}

// sweep moves the engine to a new evaluation date. A policy whose rule reads the date is compared
// between the two dates part by part: the parts that read as_of are tables by code (a founding
// date, say), so the firms whose answers can differ are exactly those with a code whose entry
// differs — usually the firms whose anniversary was crossed, often none (`as_of >= date(...)`
// before or after its boundary). Those firms are re-matched; the policy is re-evaluated for the
// whole population only when a part reading the date is not planned as a table. Policies whose
// window opens are left to evaluateStale.
func (e *Engine) sweep(ctx context.Context, today time.Time) (sweepStats, error) {
	var st sweepStats
	from := e.asOf
	old := e.pl
	e.setAsOf(today)
	e.pl = newPlanner(e.snap, today)
	var dated []*rules.Policy
	for _, p := range e.active() {
		if dependsOnDate(p) && p.Def.ActiveOn(from) {
			dated = append(dated, p)
		}
	}
	e.o.Log.Info("evaluation date moved", "from", from.Format(time.DateOnly), "to", today.Format(time.DateOnly), "date_dependent_policies", len(dated))
	if len(dated) == 0 {
		return st, nil
	}
	if err := e.ensureFields(ctx); err != nil {
		return st, err
	}
	before, after := old.prepared(dated, e.o.Workers), e.pl.prepared(dated, e.o.Workers)
	changed := make([]uint64, len(e.snap.active))
	var settled []*rules.Policy
	for i, p := range dated {
		rows, ok := changedRows(e.snap, before[i], after[i])
		if !ok {
			continue // evaluateStale re-evaluates it for everyone
		}
		for w := range changed {
			changed[w] |= rows[w] & e.snap.active[w]
		}
		settled = append(settled, p)
	}
	var codes []string
	rowOf := map[string]int{}
	for w, x := range changed {
		for ; x != 0; x &= x - 1 {
			row := w*wordBits + bits.TrailingZeros64(x)
			code := e.snap.code(row)
			codes = append(codes, code)
			rowOf[code] = row
		}
	}
	for lo := 0; lo < len(codes); lo += pageSize {
		part := codes[lo:min(lo+pageSize, len(codes))]
		err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			_, err := e.rematch(ctx, tx, part, rowOf)
			return err
		})
		if err != nil {
			return st, err
		}
	}
	for _, p := range settled { // their stored matches are those of the new date now
		err := e.db.WithContext(ctx).Model(&store.PolicyEvaluation{}).Where("policy_id = ? AND version = ?", p.Def.ID, p.Version).
			Updates(map[string]any{"as_of": today, "evaluated": time.Now().UTC()}).Error
		if err != nil {
			return st, fmt.Errorf("record evaluation of %s: %w", p.Def.ID, err)
		}
	}
	st = sweepStats{byFirm: len(settled), whole: len(dated) - len(settled), firms: len(codes)}
	e.o.Log.Info("date sweep", "policies_by_firm", st.byFirm, "policies_whole", st.whole, "firms_rematched", st.firms)
	return st, nil
}

// sweepStats say how a date change was handled: policies settled by re-matching the firms whose
// answers can differ, policies left to a whole-population evaluation, firms re-matched.
type sweepStats struct{ byFirm, whole, firms int }

// changedRows compares a policy's plans for two dates. ok is false when the comparison cannot tell
// (a part of the rule left to the VM, a constant that reads the date and changed); otherwise rows
// are the snapshot rows whose answer may differ.
func changedRows(snap *Snapshot, a, b *policyPlan) (rows []uint64, ok bool) {
	if !closed(a.elig) || (a.policy.Amount != nil && (a.amount == nil || !closedNum(a.amount))) ||
		len(a.tables) != len(b.tables) || len(a.consts) != len(b.consts) {
		return nil, false
	}
	for i := range a.consts {
		if !sameTable(a.consts[i], b.consts[i]) {
			return nil, false
		}
	}
	rows = make([]uint64, len(snap.active))
	for i, ta := range a.tables {
		tb := b.tables[i]
		if ta.col != tb.col {
			return nil, false
		}
		differs := map[int]bool{}
		for code := 0; code < ta.covered(); code++ {
			if !ta.sameAt(tb, code) {
				differs[code] = true
			}
		}
		if len(differs) == 0 {
			continue
		}
		for row := range snap.n {
			var code int
			if ta.col.boolean() {
				code = int(ta.col.bools[row/wordBits]>>(row%wordBits)) & 1
			} else {
				code = int(ta.col.codes[row])
			}
			if differs[code] {
				rows[row/wordBits] |= 1 << (row % wordBits)
			}
		}
	}
	return rows, true
}

// closed reports whether a plan decides every row without the VM's help, apart from table codes
// that are unknown (those are compared like any other entry).
func closed(p boolPlan) bool {
	switch x := p.(type) {
	case unknownPlan:
		return false
	case *andPlan:
		for _, q := range x.orig {
			if !closed(q) {
				return false
			}
		}
	case *orPlan:
		for _, q := range x.parts {
			if !closed(q) {
				return false
			}
		}
	case *notPlan:
		return closed(x.x)
	case *condPlan:
		return closed(x.c) && closed(x.x) && closed(x.y)
	case *cmpPlan:
		return closedNum(x.l) && closedNum(x.r)
	}
	return true
}

func closedNum(p numPlan) bool {
	switch x := p.(type) {
	case *arithPlan:
		return closedNum(x.l) && closedNum(x.r)
	case *negNum:
		return closedNum(x.x)
	case *condNum:
		return closed(x.c) && closedNum(x.x) && closedNum(x.y)
	case *builtinNum:
		for _, a := range x.args {
			if !closedNum(a) {
				return false
			}
		}
	}
	return true
}

// PolicyChanged re-reads the published policies after policyID was published, changed or retired,
// and evaluates the whole population for it (and for the policies its combination rules link to)
// when it is in effect.
func (e *Engine) PolicyChanged(ctx context.Context, policyID string) ([]PolicyResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.snap == nil {
		return nil, ErrNotLoaded
	}
	affected := map[string]bool{policyID: true} // the policy, and those its old version was linked to
	for _, p := range e.all {
		if p.Def.ID == policyID {
			for _, q := range p.Partners() {
				affected[q.Def.ID] = true
			}
		}
	}
	if err := e.readPolicies(ctx); err != nil {
		return nil, err
	}
	e.pl.forget(e.all)
	var target []*rules.Policy
	for _, p := range e.active() {
		if affected[p.Def.ID] {
			target = append(target, p)
		}
	}
	if len(target) == 0 {
		return nil, nil
	}
	if err := e.ensureFields(ctx); err != nil {
		return nil, err
	}
	return matchPolicies(ctx, e.db, e.snap, e.pl, e.withPartners(target), e.options(), "", "", nil, &Phases{})
}

// CatchUp runs one round of what a running engine does periodically: move to a new evaluation
// date (the daily sweep), evaluate newly published policies, and re-match firms whose registry
// data changed (by updated_at) without a change event.
func (e *Engine) CatchUp(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.snap == nil {
		return ErrNotLoaded
	}
	if today := e.today(); !today.Equal(e.asOf) {
		if _, err := e.sweep(ctx, today); err != nil {
			return err
		}
	}
	var current []struct {
		ID               string
		PublishedVersion int
		Retired          bool
	}
	if err := e.db.WithContext(ctx).Model(&store.Policy{}).Select("id, published_version, retired").Scan(&current).Error; err != nil {
		return fmt.Errorf("read policies: %w", err)
	}
	changed := false
	seen := 0
	for _, p := range current {
		if p.PublishedVersion == 0 || p.Retired {
			continue
		}
		seen++
		if e.versions[p.ID] != p.PublishedVersion {
			changed = true
		}
	}
	if changed || seen != len(e.versions) {
		if err := e.readPolicies(ctx); err != nil {
			return err
		}
		e.pl.forget(e.all)
	}
	if _, err := e.evaluateStale(ctx); err != nil {
		return err
	}
	_, err := e.catchUpFirms(ctx, false)
	return err
}

// catchUpFirms re-matches firms updated since the watermark. With force, every such firm is
// re-matched; otherwise only those whose data differs from the snapshot (a change event already
// handled the rest).
func (e *Engine) catchUpFirms(ctx context.Context, force bool) (ChangeResult, error) {
	var res ChangeResult
	from := e.watermark.Add(-catchUpOverlap)
	started := time.Now().UTC()
	var many int64
	if err := e.db.WithContext(ctx).Model(&store.Enterprise{}).Where("updated_at > ?", from).Count(&many).Error; err != nil {
		return res, fmt.Errorf("count changed firms: %w", err)
	}
	// After a bulk import it is cheaper to evaluate every policy over the (updated) snapshot than
	// to re-match the changed firms one by one.
	bulk := many > int64(max(e.snap.Len()/10, bulkFloor))
	after, afterCode := from, ""
	for {
		var batch []store.Enterprise
		// "updated_at >= ?" first: without it MariaDB reads the OR as no range at all and scans
		// every firm each round (18–28 s at 1,000,000 firms, every 20 s, on an idle registry)
		err := e.db.WithContext(ctx).Where("updated_at >= ? AND (updated_at > ? OR credit_code > ?)", after, after, afterCode).
			Order("updated_at, credit_code").Limit(pageSize).Find(&batch).Error
		if err != nil {
			return res, fmt.Errorf("read changed firms: %w", err)
		}
		if bulk {
			changed, err := e.putAll(ctx, batch)
			if err != nil {
				return res, err
			}
			res.Firms += len(batch)
			res.Changed += changed
		} else if len(batch) > 0 {
			r, err := e.reconcile(ctx, batch, force)
			if err != nil {
				return res, err
			}
			res.add(r)
		}
		if len(batch) < pageSize {
			break
		}
		last := batch[len(batch)-1]
		after, afterCode = last.UpdatedAt, last.CreditCode
	}
	// Only firms whose data differs from the snapshot count: the rows of the overlap, or of an
	// import the previous round already evaluated, are read again but change nothing. A round
	// whose evaluation failed leaves bulkPending set, so the next one evaluates although the
	// snapshot already holds the data.
	if bulk && (res.Changed > 0 || e.bulkPending) {
		e.bulkPending = true
		e.o.Log.Info("many firms changed: evaluating every policy", "firms", res.Changed)
		results, err := matchPolicies(ctx, e.db, e.snap, e.pl, e.active(), e.options(), "", "", nil, &Phases{})
		if err != nil {
			return res, err
		}
		e.bulkPending = false
		for _, r := range results {
			res.New, res.Revoked, res.Updated, res.Errors = res.New+r.New, res.Revoked+r.Revoked, res.Updated+r.Updated, res.Errors+r.Errors
		}
	}
	codes, err := factsChangedSince(ctx, e.db, e.snap.extras, from, "", "")
	if err != nil {
		return res, err
	}
	for lo := 0; lo < len(codes); lo += pageSize {
		var batch []store.Enterprise
		if err := e.db.WithContext(ctx).Where("credit_code IN ?", codes[lo:min(lo+pageSize, len(codes))]).Find(&batch).Error; err != nil {
			return res, fmt.Errorf("read firms with changed extra fields: %w", err)
		}
		r, err := e.reconcile(ctx, batch, force)
		if err != nil {
			return res, err
		}
		res.add(r)
	}
	e.watermark = started
	if res.Changed == 0 && time.Since(e.cursorSaved) < catchUpOverlap {
		return res, nil // nothing changed: an idle round writes nothing (the stored cursor is recent enough)
	}
	e.cursorSaved = time.Now()
	err = e.db.WithContext(ctx).Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "name"}}, DoUpdates: clause.AssignmentColumns([]string{"at", "updated_at"})}).
		Create(&store.MatcherCursor{Name: cursorRegistry, At: started, UpdatedAt: started}).Error
	if err != nil {
		return res, fmt.Errorf("store matcher cursor: %w", err)
	}
	if res.Changed > 0 {
		e.o.Log.Info("re-matched changed firms", "firms", res.Changed, "new", res.New, "revoked", res.Revoked)
	}
	return res, nil
}

// putAll puts firms read from the database into the snapshot without re-matching them, and
// says how many differed from what the snapshot held.
func (e *Engine) putAll(ctx context.Context, firms []store.Enterprise) (int, error) {
	codes := make([]string, len(firms))
	for i := range firms {
		codes[i] = firms[i].CreditCode
	}
	facts, err := factsOf(ctx, e.db, e.snap.voc, e.snap.extras, codes)
	if err != nil {
		return 0, err
	}
	changed := 0
	for i := range firms {
		if e.snap.inRange(firms[i].CreditCode) && len(firms[i].CreditCode) <= codeLen {
			// An inactive firm the snapshot never held changes nothing: no evaluation matched it.
			if img, ok := e.snap.put(&firms[i], facts[firms[i].CreditCode]); ok && img.row >= 0 {
				changed++
			}
		}
	}
	return changed, nil
}

// reconcile puts firms read from the database into the snapshot and re-matches those that changed
// (or all, with force). The database already holds them: nothing is upserted.
func (e *Engine) reconcile(ctx context.Context, firms []store.Enterprise, force bool) (ChangeResult, error) {
	var out ChangeResult
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		out, err = e.putAndRematch(ctx, tx, firms, force)
		return err
	})
	out.Firms = len(firms)
	return out, err
}

// ChangeResult says what a batch of registry changes did.
type ChangeResult struct {
	Firms    int                   `json:"firms"`    // firms received
	Changed  int                   `json:"changed"`  // firms whose data rules read changed: re-matched
	New      int                   `json:"new"`      // matches added (each with its notices)
	Revoked  int                   `json:"revoked"`  // matches revoked
	Updated  int                   `json:"updated"`  // matches whose amount or version changed
	Errors   int                   `json:"errors"`   // rule evaluation errors recorded
	Rejected []string              `json:"rejected"` // firms not applied: where, credit code and reason
	Written  []registry.FirmChange `json:"-"`        // firms inserted or updated, with their changed fields
	write    registry.WriteResult
}

// Add accumulates another batch's result.
func (r *ChangeResult) Add(o ChangeResult) { r.add(o) }

func (r *ChangeResult) add(o ChangeResult) {
	r.Firms += o.Firms
	r.Changed += o.Changed
	r.New += o.New
	r.Revoked += o.Revoked
	r.Updated += o.Updated
	r.Errors += o.Errors
	r.Rejected = append(r.Rejected, o.Rejected...)
	r.Written = append(r.Written, o.Written...)
}

// WriteResult is what the batch did to the registry rows (inserted, updated, unchanged, refused).
func (r ChangeResult) WriteResult() registry.WriteResult { return r.write }

func (r *ChangeResult) reject(issues []registry.Issue) {
	for _, is := range issues {
		if !is.Warning {
			r.Rejected = append(r.Rejected, is.String())
		}
	}
}

// ApplyChanges upserts complete firms (keyed on the credit code) and re-matches each whose data
// changed against every active policy, in one transaction: new matches get their outbox rows, lost
// ones are revoked. Each firm goes through the registry's checks as an import line would; one that
// fails is left out and listed in Rejected, the others are applied.
func (e *Engine) ApplyChanges(ctx context.Context, firms []store.Enterprise) (ChangeResult, error) {
	var res ChangeResult
	recs := make([]registry.Record, 0, len(firms))
	for i, f := range firms {
		r, issues, ok := registry.RecordOf(f, registry.Position{Unit: registry.UnitFirm, N: i + 1})
		res.reject(issues)
		if ok {
			recs = append(recs, r)
		}
	}
	r, err := e.ApplyRecords(ctx, recs, nil)
	r.Rejected = append(res.Rejected, r.Rejected...)
	r.Firms = len(firms)
	return r, err
}

// ErrBadChange marks a change message that can never be applied (not JSON, no firm in it).
var ErrBadChange = registry.ErrBadChange

// ApplyChangeJSON applies a change message of the data-sharing platform (registry.ParseChanges):
// keys present replace the stored values, absent keys keep them; a firm not yet in the registry
// starts from the catalog defaults and must give name and region_code. Errors wrapping ErrBadChange
// mean the message itself is malformed.
func (e *Engine) ApplyChangeJSON(ctx context.Context, payload []byte) (ChangeResult, error) {
	return e.ApplyChangeJSONGuarded(ctx, payload, nil)
}

// ApplyChangeJSONGuarded is ApplyChangeJSON with a guard that sees each firm's stored record (nil
// for a new one) and its new state before anything is written, and may refuse it (the console's
// scope check).
func (e *Engine) ApplyChangeJSONGuarded(ctx context.Context, payload []byte, guard func(old, next *store.Enterprise) error) (ChangeResult, error) {
	recs, issues, err := registry.ParseChanges(payload)
	if err != nil {
		return ChangeResult{}, err
	}
	var res ChangeResult
	res.reject(issues)
	r, err := e.ApplyRecords(ctx, recs, guard)
	r.Rejected = append(res.Rejected, r.Rejected...)
	r.Firms = len(recs) + countFirms(issues)
	return r, err
}

// countFirms counts the distinct records issues name (rejected before the write).
func countFirms(issues []registry.Issue) int {
	seen := map[int]bool{}
	for _, is := range issues {
		if !is.Warning {
			seen[is.Line] = true
		}
	}
	return len(seen)
}

// Write makes the engine a registry.Sink: the SQL source's sync writes through it, so each page
// is upserted and re-matched in one transaction.
func (e *Engine) Write(ctx context.Context, recs []registry.Record) (registry.WriteResult, error) {
	res, err := e.ApplyRecords(ctx, recs, nil)
	return res.write, err
}

// ApplyRecords lays records over the stored firms (registry.Merge), upserts those that changed and
// re-matches them, all in one transaction; the snapshot is put back if it fails. guard (nil: none)
// may refuse a firm.
func (e *Engine) ApplyRecords(ctx context.Context, recs []registry.Record, guard func(old, next *store.Enterprise) error) (ChangeResult, error) {
	var res ChangeResult
	if len(recs) == 0 {
		return res, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.snap == nil {
		return res, ErrNotLoaded
	}
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		stored, err := registry.LockStored(tx, recs)
		if err != nil {
			return err
		}
		write, unchanged, wr := registry.Merge(recs, stored, guard)
		if err := registry.UpsertCounted(tx, stored, write); err != nil {
			return err
		}
		res.write = wr
		res.reject(wr.Rejected)
		res.Written = wr.Changes
		all := append(write, unchanged...)
		sort.Slice(all, func(i, j int) bool { return all[i].CreditCode < all[j].CreditCode })
		out, err := e.putAndRematch(ctx, tx, all, false)
		res.Changed, res.New, res.Revoked, res.Updated, res.Errors = out.Changed, out.New, out.Revoked, out.Updated, out.Errors
		return err
	})
	res.Firms = len(recs)
	return res, err
}

// putAndRematch puts firms into the snapshot and re-matches those whose data (as rules see it)
// changed, or all of them with force, inside tx. On error the snapshot is restored.
func (e *Engine) putAndRematch(ctx context.Context, tx *gorm.DB, firms []store.Enterprise, force bool) (ChangeResult, error) {
	var res ChangeResult
	codes := make([]string, 0, len(firms))
	for _, f := range firms {
		if e.snap.inRange(f.CreditCode) {
			codes = append(codes, f.CreditCode)
		}
	}
	facts, err := factsOf(ctx, tx, e.snap.voc, e.snap.extras, codes)
	if err != nil {
		return res, err
	}
	var undo []rowImage
	var rematch []string
	rows := map[string]int{}
	for i := range firms {
		f := &firms[i]
		if !e.snap.inRange(f.CreditCode) || len(f.CreditCode) > codeLen {
			continue
		}
		img, changed := e.snap.put(f, facts[f.CreditCode])
		if img.row >= 0 {
			undo = append(undo, img)
			rows[f.CreditCode] = img.row
		}
		if changed || force {
			rematch = append(rematch, f.CreditCode)
		}
	}
	out, err := e.rematch(ctx, tx, rematch, rows)
	if err != nil {
		for i := len(undo) - 1; i >= 0; i-- {
			e.snap.restore(undo[i])
		}
		return res, err
	}
	return out, nil
}

// rematch evaluates firms against every active policy and stores the differences in tx. rows maps
// a credit code to its snapshot row; a firm without one (inactive, never held) qualifies for nothing.
func (e *Engine) rematch(ctx context.Context, tx *gorm.DB, codes []string, rows map[string]int) (ChangeResult, error) {
	res := ChangeResult{Changed: len(codes)}
	if len(codes) == 0 {
		return res, nil
	}
	if err := e.ensureFields(ctx); err != nil {
		return res, err
	}
	policies := e.active()
	idx := e.pl.index(e.pl.prepared(policies, e.o.Workers))
	index := make(map[string]int, len(policies))
	for i, p := range policies {
		index[p.Def.ID] = i
	}
	// Only policies a firm qualifies for now, or holds a row of, can change.
	outcomes := map[int][]Outcome{}
	var evalErrs []store.EvalError
	for _, code := range codes {
		row, ok := rows[code]
		if !ok {
			continue
		}
		for _, pd := range evaluateRow(e.snap, idx, row, e.frame) {
			if len(pd.d.words) > 0 {
				outcomes[pd.plan] = append(outcomes[pd.plan], pd.d.outcomes(e.snap)...)
			}
			if len(pd.d.errs) > 0 {
				evalErrs = append(evalErrs, errorRows(policies[pd.plan], e.asOf, pd.d.evalErrors(e.snap))...)
			}
		}
	}
	// The firms' stored rows, of every policy (a firm has few): rows of policies not in effect
	// are left alone.
	var stored []store.Match
	if err := tx.Where("credit_code IN ?", codes).Find(&stored).Error; err != nil {
		return res, fmt.Errorf("load matches: %w", err)
	}
	byPolicy := map[int]storedMatches{}
	for i := range stored {
		m := &stored[i]
		k, ok := index[m.PolicyID]
		if !ok {
			continue
		}
		if _, ok := byPolicy[k]; !ok {
			byPolicy[k] = newStoredMatches()
		}
		byPolicy[k].add(policies[k], m)
	}
	touched := make([]int, 0, len(outcomes)+len(byPolicy))
	for k := range outcomes {
		touched = append(touched, k)
	}
	for k := range byPolicy {
		if _, ok := outcomes[k]; !ok {
			touched = append(touched, k)
		}
	}
	sort.Ints(touched)
	w := writer{asOf: e.asOf, prefix: e.o.SubjectPrefix, now: writeTime()}
	var counts PolicyResult
	var changes []policyChanges
	for _, k := range touched {
		sm, ok := byPolicy[k]
		if !ok {
			sm = newStoredMatches()
		}
		cs := sm.diff(policies[k], outcomes[k])
		if cs.empty() {
			continue
		}
		changes = append(changes, policyChanges{policy: policies[k], cs: cs})
		cs.count(&counts)
	}
	if err := w.writeAll(tx, changes); err != nil {
		return res, err
	}
	var oldErrs []store.EvalError
	if err := tx.Select("id, policy_id").Where("credit_code IN ?", codes).Find(&oldErrs).Error; err != nil {
		return res, fmt.Errorf("read evaluation errors: %w", err)
	}
	var clear []uint64
	for _, oe := range oldErrs {
		if _, ok := index[oe.PolicyID]; ok {
			clear = append(clear, oe.ID)
		}
	}
	if len(clear) > 0 {
		if err := tx.Where("id IN ?", clear).Delete(&store.EvalError{}).Error; err != nil {
			return res, fmt.Errorf("clear evaluation errors: %w", err)
		}
	}
	if len(evalErrs) > 0 {
		if err := tx.CreateInBatches(evalErrs, 500).Error; err != nil {
			return res, fmt.Errorf("record evaluation errors: %w", err)
		}
	}
	res.New, res.Revoked, res.Updated, res.Errors = counts.New, counts.Revoked, counts.Updated, len(evalErrs)
	return res, nil
}
