package matcher

import (
	"container/heap"
	"context"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"
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

// writeBatch is how many rows one UPDATE names. txMatches is how many new matches, with their
// notice batches, one transaction commits: large enough that commits cost little, small enough
// that the relay, notifiers and console wait milliseconds for SQLite's one writer.
const writeBatch = 500

var txMatches = 5000 // a variable for tests

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

// writeTime is the time a writer stamps its rows with (matched_at, updated_at, revoked_at): now,
// to the millisecond, the precision MySQL's DATETIME(3) columns keep. On SQLite, which stores
// times as text, the nanoseconds cost 12 bytes in each of a row's two times and in the recency
// index: about a tenth of a new match's bytes.
func writeTime() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// writer stores change sets.
type writer struct {
	asOf   time.Time
	prefix string
	now    time.Time
	places *store.KnownPlaces // the firms' places for the counts of new matches; nil: read them
}

// newMatch is the row of a firm that newly qualifies.
func (w writer) newMatch(p *rules.Policy, oc Outcome) store.Match {
	return store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: oc.CreditCode,
		State: store.MatchActive, Amount: oc.Amount, AsOf: w.asOf, Notified: true, MatchedAt: w.now, UpdatedAt: w.now}
}

// noticeBatch is how many new matches one outbox row announces (per channel).
const noticeBatch = 500

// insertFresh stores new matches with their notices: one NoticeBatch outbox row per channel and
// noticeBatch matches, in the transaction of the matches.
func (w writer) insertFresh(tx *gorm.DB, matches []store.Match, channels map[string][]string) error {
	return w.insertBatch(tx, freshBatch{rows: matches}, channels)
}

// freshBatch is a transaction's new matches with what can be worked out before it begins.
type freshBatch struct {
	rows   []store.Match
	params []freshChunk          // SQLite: each INSERT's rows (encodeFresh); nil: encoded in the transaction
	counts *store.PreparedCounts // the counts if every row is inserted; nil: counted in the transaction
}

// prepare works out what it can of a transaction of new matches before it begins: their places
// and counts from the known places, and SQLite's statements (store.PlaceMatches checks the
// places again in the transaction; a changed place discards the statements).
func (w writer) prepare(rows []store.Match, sqlite bool) (freshBatch, error) {
	b := freshBatch{rows: rows, counts: w.places.Prepare(rows)}
	if sqlite {
		var err error
		if b.params, err = encodeFresh(rows); err != nil {
			return b, err
		}
	}
	return b, nil
}

// insertBatch is insertFresh of a prepared batch.
func (w writer) insertBatch(tx *gorm.DB, b freshBatch, channels map[string][]string) error {
	matches := b.rows
	if len(matches) == 0 {
		return nil
	}
	placed, changed, err := store.PlaceMatches(tx, matches, w.places)
	if err != nil {
		return err
	}
	params := b.params
	if changed {
		params = nil
	}
	if err := insertEncoded(tx, matches, params); err != nil {
		return err
	}
	if err := store.CountPlaced(tx, matches, placed, b.counts); err != nil {
		return err
	}
	var outbox []store.Outbox
	for lo := 0; lo < len(matches); lo += noticeBatch {
		outbox = append(outbox, noticeRows(matches[lo:min(lo+noticeBatch, len(matches))], channels, w.prefix, w.now)...)
	}
	if len(outbox) == 0 {
		return nil
	}
	if err := tx.Create(&outbox).Error; err != nil {
		return fmt.Errorf("queue notices: %w", err)
	}
	return nil
}

// supersede replaces active rows of older versions by rows of this version, without a notice.
func (w writer) supersede(tx *gorm.DB, p *rules.Policy, batch []*store.Match, amounts map[string]*float64) error {
	if len(batch) == 0 {
		return nil
	}
	return countedWrite(tx, matchIDs(batch), func() ([]uint64, error) { return w.supersedeRows(tx, p, batch, amounts) })
}

func (w writer) supersedeRows(tx *gorm.DB, p *rules.Policy, batch []*store.Match, amounts map[string]*float64) ([]uint64, error) {
	ids := make([]uint64, len(batch))
	rows := make([]store.Match, len(batch))
	for i, m := range batch {
		ids[i] = m.ID
		rows[i] = store.Match{PolicyID: p.Def.ID, PolicyVersion: p.Version, CreditCode: m.CreditCode,
			State: store.MatchActive, Amount: amounts[m.CreditCode], AsOf: w.asOf, Notified: m.Notified, MatchedAt: m.MatchedAt, UpdatedAt: w.now}
	}
	for lo := 0; lo < len(ids); lo += writeBatch {
		if err := tx.Model(&store.Match{}).Where("id IN ?", ids[lo:min(lo+writeBatch, len(ids))]).
			Updates(map[string]any{"state": store.MatchSuperseded, "updated_at": w.now}).Error; err != nil {
			return nil, fmt.Errorf("supersede matches of %s: %w", p.Def.ID, err)
		}
	}
	if _, _, err := store.PlaceMatches(tx, rows, w.places); err != nil {
		return nil, err
	}
	if err := insertMatches(tx, rows); err != nil {
		return nil, fmt.Errorf("supersede matches of %s: %w", p.Def.ID, err)
	}
	if err := store.ReachOfNew(tx, rows); err != nil { // the firm's notices of the older version
		return nil, err
	}
	return insertedIDs(rows), nil
}

// reactivate makes rows active with their (new) amounts: firms that qualify again, or whose amount changed.
func (w writer) reactivate(tx *gorm.DB, ms []*store.Match) error {
	if len(ms) == 0 {
		return nil
	}
	return countedWrite(tx, matchIDs(ms), func() ([]uint64, error) { return nil, w.reactivateRows(tx, ms) })
}

func (w writer) reactivateRows(tx *gorm.DB, ms []*store.Match) error {
	for _, m := range ms {
		if err := tx.Model(&store.Match{}).Where("id = ?", m.ID).Updates(map[string]any{
			"state": store.MatchActive, "amount": m.Amount, "as_of": w.asOf, "revoked_at": nil, "updated_at": w.now,
		}).Error; err != nil {
			return fmt.Errorf("update match %d: %w", m.ID, err)
		}
	}
	return nil
}

// revoke marks rows of firms that no longer qualify.
func (w writer) revoke(tx *gorm.DB, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	return countedWrite(tx, ids, func() ([]uint64, error) { return nil, w.revokeRows(tx, ids) })
}

func (w writer) revokeRows(tx *gorm.DB, ids []uint64) error {
	for lo := 0; lo < len(ids); lo += writeBatch {
		if err := tx.Model(&store.Match{}).Where("id IN ?", ids[lo:min(lo+writeBatch, len(ids))]).
			Updates(map[string]any{"state": store.MatchRevoked, "revoked_at": w.now, "updated_at": w.now}).Error; err != nil {
			return fmt.Errorf("revoke matches: %w", err)
		}
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
// affects): all new matches in one insert and their notices in one more, all revocations in one
// update.
func (w writer) writeAll(tx *gorm.DB, changes []policyChanges) error {
	var fresh []store.Match
	channels := map[string][]string{}
	var lost []uint64
	for _, c := range changes {
		p := c.policy
		channels[p.Def.ID] = p.Def.Channels
		for _, oc := range c.cs.fresh {
			fresh = append(fresh, w.newMatch(p, oc))
		}
		if err := w.supersede(tx, p, c.cs.supersede, c.cs.amounts); err != nil {
			return err
		}
		if err := w.reactivate(tx, append(c.cs.revive, c.cs.reamount...)); err != nil {
			return err
		}
		lost = append(lost, c.cs.lost...)
	}
	if err := w.insertFresh(tx, fresh, channels); err != nil {
		return err
	}
	return w.revoke(tx, lost)
}

// writeBatched stores a large change set (a whole policy) in short transactions: txMatches new
// matches with their notices per transaction (a match and its notice always share one), and
// writeBatch rows per transaction for the other kinds of change.
func (w writer) writeBatched(ctx context.Context, db *gorm.DB, p *rules.Policy, cs changeSet) error {
	channels := map[string][]string{p.Def.ID: p.Def.Channels}
	txn := func(f func(tx *gorm.DB) error) error { return db.WithContext(ctx).Transaction(f) }
	for lo := 0; lo < len(cs.fresh); lo += txMatches {
		batch := cs.fresh[lo:min(lo+txMatches, len(cs.fresh))]
		rows := make([]store.Match, len(batch))
		for i, oc := range batch {
			rows[i] = w.newMatch(p, oc)
		}
		if err := txn(func(tx *gorm.DB) error { return w.insertFresh(tx, rows, channels) }); err != nil {
			return err
		}
	}
	for lo := 0; lo < len(cs.supersede); lo += txMatches {
		batch := cs.supersede[lo:min(lo+txMatches, len(cs.supersede))]
		if err := txn(func(tx *gorm.DB) error { return w.supersede(tx, p, batch, cs.amounts) }); err != nil {
			return err
		}
	}
	again := append(cs.revive, cs.reamount...)
	for lo := 0; lo < len(again); lo += writeBatch {
		batch := again[lo:min(lo+writeBatch, len(again))]
		if err := txn(func(tx *gorm.DB) error { return w.reactivate(tx, batch) }); err != nil {
			return err
		}
	}
	for lo := 0; lo < len(cs.lost); lo += txMatches {
		batch := cs.lost[lo:min(lo+txMatches, len(cs.lost))]
		if err := txn(func(tx *gorm.DB) error { return w.revoke(tx, batch) }); err != nil {
			return fmt.Errorf("revoke matches of %s: %w", p.Def.ID, err)
		}
	}
	return nil
}

// policyWrite is one policy's decisions over a scope, for storeGroup.
type policyWrite struct {
	policy   *rules.Policy
	outcomes []Outcome
	errs     []EvalError
	res      *PolicyResult
}

// groupRows bounds the eligible firms whose decisions one storeGroup holds (matchPolicies stores
// a group of policies in parts of about this size), so that memory stays bounded at any registry size.
const groupRows = 1_000_000

// storeGroup stores the decisions of several policies over a credit-code range: their errors and
// the difference with their stored matches, as writeDiff does for one, except that the new
// matches of all of them are written together in credit-code order (merged from each policy's
// outcomes, which are in that order), txMatches per transaction: each transaction takes the next
// txMatches of the merged order and inserts them policy by policy. On SQLite this is what makes a
// full match cheap: a transaction's new rows then fall into a narrow range of the firm index
// (credit_code) and into one short run per policy of the unique key, so a commit writes a few
// hundred pages to the WAL instead of one page of the firm index per new match, which is what a
// policy's matches, spread over the whole registry, cost per transaction before (docs/matcher.md).
func storeGroup(ctx context.Context, db *gorm.DB, items []policyWrite, asOf time.Time, prefix, lo, hi string, known *store.KnownPlaces, ph *Phases) error {
	sets := make([]changeSet, len(items))
	for i, it := range items {
		it.res.Eligible, it.res.Errors = len(it.outcomes), len(it.errs)
		t := time.Now()
		if err := recordErrors(ctx, db, it.policy, asOf, it.errs, lo, hi); err != nil {
			return err
		}
		t = since(&ph.Write, t)
		stored, err := loadStored(ctx, db, it.policy, lo, hi)
		if err != nil {
			return err
		}
		sets[i] = stored.diff(it.policy, it.outcomes)
		since(&ph.Diff, t)
	}
	t := time.Now()
	w := writer{asOf: asOf, prefix: prefix, now: writeTime(), places: known}
	if err := w.writeMerged(ctx, db, items, sets); err != nil {
		return err
	}
	for i, it := range items {
		rest := sets[i]
		rest.fresh = nil
		if err := w.writeBatched(ctx, db, it.policy, rest); err != nil {
			return err
		}
		sets[i].count(it.res)
	}
	since(&ph.Write, t)
	return nil
}

// writeMerged inserts the new matches of several policies with their notices, merged in
// credit-code order, txMatches per transaction.
func (w writer) writeMerged(ctx context.Context, db *gorm.DB, items []policyWrite, sets []changeSet) error {
	channels := map[string][]string{}
	heads := &mergeHeads{sets: sets}
	for i, it := range items {
		channels[it.policy.Def.ID] = it.policy.Def.Channels
		if len(sets[i].fresh) > 0 {
			heads.list = append(heads.list, mergeHead{item: i})
		}
	}
	heap.Init(heads)
	rows := make([]store.Match, 0, txMatches)
	// SQLite has one writer: its transactions follow each other. A MySQL server does the index
	// work of a transaction on the connection's own thread while this process waits: two
	// transactions at once keep two of its cores busy (mysqlWriters).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(1)
	sqlite := db.Dialector.Name() == "sqlite"
	if db.Dialector.Name() == "mysql" {
		g.SetLimit(mysqlWriters)
	}
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		// Policy by policy within the transaction (in credit-code order within each): the pages
		// the transaction writes are the same, and a policy's rows stay together in the table,
		// which is the order the next diff (loadStored) reads them in.
		// What needs no database (the INSERTs' parameters, the counts) is worked out here, on
		// the other core, while the previous transaction runs.
		batch, err := w.prepare(byPolicy(rows), sqlite)
		if err != nil {
			return err
		}
		rows = rows[:0]
		g.Go(func() error {
			return retryDeadlock(gctx, func() error {
				return db.WithContext(gctx).Transaction(func(tx *gorm.DB) error { return w.insertBatch(tx, batch, channels) })
			})
		})
		return nil
	}
	for heads.Len() > 0 {
		h := &heads.list[0]
		rows = append(rows, w.newMatch(items[h.item].policy, sets[h.item].fresh[h.next]))
		if h.next++; h.next == len(sets[h.item].fresh) {
			heap.Pop(heads)
		} else {
			heap.Fix(heads, 0)
		}
		if len(rows) == txMatches {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return g.Wait()
}

// byPolicy is rows policy by policy, in policy ID order, each policy's rows in their order: a
// stable sort by policy in linear time, into a new slice. (sort.SliceStable moved the 150-byte
// rows about log² n times each: 1.5 s of CPU in a full match of 1.5 million.)
func byPolicy(rows []store.Match) []store.Match {
	at := map[string]int{}
	var ids []string
	for i := range rows {
		id := rows[i].PolicyID
		if _, ok := at[id]; !ok {
			ids = append(ids, id)
		}
		at[id]++
	}
	sort.Strings(ids)
	next := 0
	for _, id := range ids {
		n := at[id]
		at[id] = next
		next += n
	}
	out := make([]store.Match, len(rows))
	for i := range rows {
		k := at[rows[i].PolicyID]
		out[k] = rows[i]
		at[rows[i].PolicyID] = k + 1
	}
	return out
}

// mysqlWriters is how many transactions of new matches writeMerged runs at once on MySQL.
const mysqlWriters = 2

// retryDeadlock runs a transaction again (up to three times in all) when MySQL chose it as a
// deadlock victim or it waited too long for a lock: concurrent writers of new matches take row
// locks on the same count rows (store.CountPlaced). A rolled-back transaction left nothing, so
// running it again is safe.
func retryDeadlock(ctx context.Context, run func() error) error {
	for attempt := 1; ; attempt++ {
		err := run()
		if err == nil || attempt == 3 || !store.IsLockConflict(err) || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(attempt*50) * time.Millisecond)
	}
}

// mergeHead is the next new match of one policy in writeMerged's merge.
type mergeHead struct {
	item, next int
}

// mergeHeads is a heap of policies by the credit code of their next new match (then by policy
// order, so that the merge is deterministic).
type mergeHeads struct {
	list []mergeHead
	sets []changeSet
}

func (h mergeHeads) Len() int { return len(h.list) }
func (h mergeHeads) Less(i, j int) bool {
	a, b := h.list[i], h.list[j]
	ca, cb := h.sets[a.item].fresh[a.next].CreditCode, h.sets[b.item].fresh[b.next].CreditCode
	if ca != cb {
		return ca < cb
	}
	return a.item < b.item
}
func (h mergeHeads) Swap(i, j int) { h.list[i], h.list[j] = h.list[j], h.list[i] }
func (h *mergeHeads) Push(x any)   { h.list = append(h.list, x.(mergeHead)) }
func (h *mergeHeads) Pop() any {
	x := h.list[len(h.list)-1]
	h.list = h.list[:len(h.list)-1]
	return x
}

// writeDiff stores the difference between a policy's outcomes over a credit-code range ([lo, hi),
// empty = open) and its stored matches there.
func writeDiff(ctx context.Context, db *gorm.DB, p *rules.Policy, asOf time.Time, outcomes []Outcome, prefix, lo, hi string, res *PolicyResult, ph *Phases) error {
	t := time.Now()
	stored, err := loadStored(ctx, db, p, lo, hi)
	if err != nil {
		return err
	}
	cs := stored.diff(p, outcomes)
	t = since(&ph.Diff, t)
	w := writer{asOf: asOf, prefix: prefix, now: writeTime()}
	if err := w.writeBatched(ctx, db, p, cs); err != nil {
		return err
	}
	since(&ph.Write, t)
	cs.count(res)
	return nil
}

// loadStored reads a policy's rows that the diff needs (active ones of any version, and this
// version's inactive ones) in a credit-code range, scanning only the columns the diff uses.
func loadStored(ctx context.Context, db *gorm.DB, p *rules.Policy, lo, hi string) (storedMatches, error) {
	stored := newStoredMatches()
	q := "SELECT id, policy_version, credit_code, state, amount, notified, matched_at FROM matches " +
		"WHERE policy_id = ? AND (state = ? OR policy_version = ?)"
	args := []any{p.Def.ID, store.MatchActive, p.Version}
	if lo != "" {
		q += " AND credit_code >= ?"
		args = append(args, lo)
	}
	if hi != "" {
		q += " AND credit_code < ?"
		args = append(args, hi)
	}
	rows, err := db.WithContext(ctx).Raw(q, args...).Rows()
	if err != nil {
		return stored, fmt.Errorf("load matches of %s: %w", p.Def.ID, err)
	}
	defer rows.Close()
	for rows.Next() {
		m := &store.Match{PolicyID: p.Def.ID}
		if err := rows.Scan(&m.ID, &m.PolicyVersion, &m.CreditCode, &m.State, &m.Amount, &m.Notified, &m.MatchedAt); err != nil {
			return stored, fmt.Errorf("load matches of %s: %w", p.Def.ID, err)
		}
		stored.add(p, m)
	}
	if err := rows.Err(); err != nil {
		return stored, fmt.Errorf("load matches of %s: %w", p.Def.ID, err)
	}
	return stored, nil
}

func sameAmount(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// noticeRows makes the outbox rows announcing new matches: per channel, one NoticeBatch of the
// matches whose policy asks for it (a match not inserted, ID 0, was stored and announced by a
// concurrent run).
func noticeRows(matches []store.Match, channels map[string][]string, prefix string, now time.Time) []store.Outbox {
	byChannel := map[string][]uint64{}
	var order []string
	for _, m := range matches {
		if m.ID == 0 {
			continue
		}
		for _, ch := range channels[m.PolicyID] {
			if _, ok := byChannel[ch]; !ok {
				order = append(order, ch)
			}
			byChannel[ch] = append(byChannel[ch], m.ID)
		}
	}
	out := make([]store.Outbox, 0, len(order))
	for _, ch := range order {
		out = append(out, bus.BatchOutbox(prefix, bus.NoticeBatch{Channel: ch, MatchIDs: byChannel[ch]}, now))
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
