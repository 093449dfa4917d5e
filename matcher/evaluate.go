package matcher

import (
	"context"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/policypush/policypush/rules"
)

// policyPlan is a policy planned against a snapshot for one evaluation date.
type policyPlan struct {
	policy *rules.Policy
	asOf   time.Time
	elig   boolPlan
	amount numPlan // nil: amounts of eligible firms come from the VM
	tables []*codeTable
	consts []*codeTable // constant parts (they may read as_of), for comparing two dates
	guards []*guard
	// combined: a combination rule (不得重复享受, 每个单位一次) can take an eligible firm away, so
	// every firm the plan finds eligible is also put to rules.Policy.Exclusion.
	combined bool
}

// guard is a dictionary condition every eligible firm must meet, checked against a block's zone
// map before anything else: a policy of 南京市 does not look at a block holding only 苏州 firms.
type guard struct {
	col      *column
	possible []uint64 // codes for which the condition holds
}

// rejects reports whether the condition is false for one row.
func (g *guard) rejects(row int) bool {
	code := int(g.col.codes[row])
	return code/wordBits >= len(g.possible) || g.possible[code/wordBits]&(1<<(code%wordBits)) == 0
}

// excludes reports whether block blk holds no row for which the condition can hold (by its zone map).
func (g *guard) excludes(blk int) bool {
	zones := g.col.zones
	if zones == nil || blk >= len(zones) {
		return false
	}
	for i, w := range zones[blk] {
		if i < len(g.possible) && w&g.possible[i] != 0 {
			return false
		}
	}
	return true
}

// current reports whether the plan was prepared for the dictionaries as they are now.
func (pp *policyPlan) current() bool {
	for _, t := range pp.tables {
		if (!t.col.dictionary() && !t.col.boolean()) || t.col.cardinality() != t.covered() {
			return false
		}
	}
	return true
}

// prepare brings the plan's tables up to date with the dictionaries (codes added since the last
// pass) and picks the guards. It returns false when the plan no longer fits the snapshot (a
// dictionary overflowed into plain values) and must be built again.
func (pp *policyPlan) prepare() bool {
	for _, t := range pp.tables {
		if !t.col.dictionary() && !t.col.boolean() {
			return false
		}
		t.refresh()
	}
	pp.guards = nil
	pp.combined = pp.policy.HasCombination()
	switch e := pp.elig.(type) {
	case *dictPlan:
		if e.total() {
			pp.guards = []*guard{newGuard(e)}
		}
	case *andPlan:
		// Dictionary conditions in the leading run of conditions that can never be unknown may be
		// checked first: whichever of those is false, the firm is not eligible and nothing before it
		// could have raised an error.
		e.flatten()
		var front, rest []boolPlan
		leading := true
		for _, part := range e.orig {
			if d, ok := part.(*dictPlan); ok && leading && d.total() {
				front = append(front, part)
				pp.guards = append(pp.guards, newGuard(d))
				continue
			}
			rest = append(rest, part)
			if !part.total() {
				leading = false
			}
		}
		e.parts = append(front, rest...)
	}
	return true
}

func newGuard(d *dictPlan) *guard {
	g := &guard{col: d.col, possible: make([]uint64, (len(d.table.truth)+wordBits-1)/wordBits)}
	for code, v := range d.table.truth {
		if v != triFalse {
			g.possible[code/wordBits] |= 1 << (code % wordBits)
		}
	}
	return g
}

// decisions are one policy's answers for the rows evaluated, in row order: the eligible rows as
// bitset words (only words with an eligible row), their amounts, and the rows whose rule failed.
type decisions struct {
	words   []int32   // global word index (row / 64)
	bits    []uint64  // eligible rows of that word
	amounts []float64 // one per eligible row, in row order, when the policy has an amount formula
	errs    []rowError
	vm      int // rows the plan left to the VM
}

type rowError struct {
	row int32
	err error
}

// eligible is the number of eligible rows.
func (d *decisions) eligible() int {
	n := 0
	for _, b := range d.bits {
		n += bits.OnesCount64(b)
	}
	return n
}

// each calls fn for every eligible row in order, with its amount (nil without a formula).
func (d *decisions) each(fn func(row int, amount *float64)) {
	k := 0
	for i, w := range d.words {
		for x := d.bits[i]; x != 0; x &= x - 1 {
			row := int(w)*wordBits + bits.TrailingZeros64(x)
			if len(d.amounts) > 0 {
				fn(row, &d.amounts[k])
				k++
			} else {
				fn(row, nil)
			}
		}
	}
}

// evalBlock decides the rows of m in the frame's block.
func (pp *policyPlan) evalBlock(f *frame, m *bitset, out *decisions) {
	for _, g := range pp.guards {
		if g.excludes(f.blk) {
			return
		}
	}
	t, u := f.pushBits(), f.pushBits()
	amounts := f.pushFloats()
	defer func() { f.bt -= 2; f.ft-- }()
	pp.elig.eval(f, m, t, u)
	withAmount := pp.policy.Amount != nil
	for w := f.wlo; w < f.whi; w++ {
		tw, uw := t[w], u[w]
		if tw|uw == 0 {
			continue
		}
		vm := uw // rows the VM decides: unknown, or eligible with an amount the plan cannot compute
		if withAmount {
			switch {
			case pp.amount == nil:
				vm |= tw
			case tw != 0:
				vm |= pp.amount.floats(f, w, tw, amounts) & tw
			}
		}
		final := tw &^ vm
		for x := final; x != 0; x &= x - 1 {
			i := bits.TrailingZeros64(x)
			row := f.base + w*wordBits + i
			if withAmount {
				a, err := rules.RoundAmount(amounts[i])
				if err != nil { // not money: the VM reports it in its own words
					final &^= 1 << i
					vm |= 1 << i
					continue
				}
				amounts[i] = a
			}
			if pp.combined && pp.excluded(f, row) {
				final &^= 1 << i
			}
		}
		for x := vm; x != 0; x &= x - 1 {
			i := bits.TrailingZeros64(x)
			if a, ok := pp.vm(f, f.base+w*wordBits+i, out); ok {
				final |= 1 << i
				amounts[i] = a
			}
		}
		if final == 0 {
			continue
		}
		out.words = append(out.words, int32(f.base/wordBits+w))
		out.bits = append(out.bits, final)
		if withAmount {
			for x := final; x != 0; x &= x - 1 {
				out.amounts = append(out.amounts, amounts[bits.TrailingZeros64(x)])
			}
		}
	}
}

// excluded reports whether a combination rule takes an eligible row away from the policy.
func (pp *policyPlan) excluded(f *frame, row int) bool {
	f.snap.fill(row, &f.env)
	f.env.AsOf = pp.asOf
	return pp.policy.Exclusion(&f.env) != nil
}

// vm decides one row with the policy's own programs: eligible (and the amount), or not, or an error
// recorded in out.
func (pp *policyPlan) vm(f *frame, row int, out *decisions) (amount float64, eligible bool) {
	out.vm++
	f.snap.fill(row, &f.env)
	f.env.AsOf = pp.asOf
	res, err := pp.policy.Evaluate(&f.env)
	switch {
	case err != nil:
		out.errs = append(out.errs, rowError{row: int32(row), err: err})
	case res.Eligible:
		if res.Amount != nil {
			amount = *res.Amount
		}
		return amount, true
	}
	return 0, false
}

// chunkBlocks is the unit of work a goroutine takes: results are kept per chunk and joined in
// chunk order, so rows stay in order without sorting.
const chunkBlocks = 8

// evaluateAll decides every plan for every active row of the snapshot on `workers` goroutines.
func evaluateAll(ctx context.Context, snap *Snapshot, plans []*policyPlan, workers int) ([]decisions, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	blocks := (snap.n + blockRows - 1) / blockRows
	chunks := (blocks + chunkBlocks - 1) / chunkBlocks
	parts := make([][]decisions, chunks)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, max(chunks, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &frame{snap: snap}
			m := new(bitset)
			for {
				c := int(next.Add(1) - 1)
				if c >= chunks || ctx.Err() != nil {
					return
				}
				out := make([]decisions, len(plans))
				for blk := c * chunkBlocks; blk < min((c+1)*chunkBlocks, blocks); blk++ {
					f.at(blk)
					if !activeWords(snap, blk, m) {
						continue
					}
					for i, pp := range plans {
						pp.evalBlock(f, m, &out[i])
					}
				}
				parts[c] = out
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := make([]decisions, len(plans))
	for i := range plans {
		var nw, na, ne int
		for _, p := range parts {
			nw += len(p[i].words)
			na += len(p[i].amounts)
			ne += len(p[i].errs)
		}
		d := decisions{words: make([]int32, 0, nw), bits: make([]uint64, 0, nw), errs: make([]rowError, 0, ne)}
		if plans[i].policy.Amount != nil {
			d.amounts = make([]float64, 0, na)
		}
		for _, p := range parts {
			d.words = append(d.words, p[i].words...)
			d.bits = append(d.bits, p[i].bits...)
			d.amounts = append(d.amounts, p[i].amounts...)
			d.errs = append(d.errs, p[i].errs...)
			d.vm += p[i].vm
		}
		res[i] = d
	}
	return res, nil
}

// activeWords loads the active rows of a block into m and reports whether there are any.
func activeWords(snap *Snapshot, blk int, m *bitset) bool {
	any := uint64(0)
	first := blk * blockWords
	for w := range blockWords {
		var v uint64
		if first+w < len(snap.active) {
			v = snap.active[first+w]
		}
		m[w] = v
		any |= v
	}
	return any != 0
}

// rowIndex finds the plans that can hold for one firm: those without guards, and those whose first
// guard admits the firm's code in that guard's column (a policy of 苏州市 is not looked at for a
// 南京 firm). One firm's re-match thus touches the few hundred candidate plans, not all of them.
type rowIndex struct {
	gen       int // the planner generation it was built for
	plans     []*policyPlan
	unguarded []int32
	cols      []*column
	byCode    [][][]int32 // [guard column][code] → plans
}

func newRowIndex(plans []*policyPlan, gen int) *rowIndex {
	idx := &rowIndex{gen: gen, plans: plans}
	colOf := map[*column]int{}
	for i, pp := range plans {
		if len(pp.guards) == 0 {
			idx.unguarded = append(idx.unguarded, int32(i))
			continue
		}
		g := pp.guards[0]
		c, ok := colOf[g.col]
		if !ok {
			c = len(idx.cols)
			colOf[g.col] = c
			idx.cols = append(idx.cols, g.col)
			idx.byCode = append(idx.byCode, nil)
		}
		for w, x := range g.possible {
			for ; x != 0; x &= x - 1 {
				code := w*wordBits + bits.TrailingZeros64(x)
				for len(idx.byCode[c]) <= code {
					idx.byCode[c] = append(idx.byCode[c], nil)
				}
				idx.byCode[c][code] = append(idx.byCode[c][code], int32(i))
			}
		}
	}
	return idx
}

// planDecisions is one plan's decisions about one firm.
type planDecisions struct {
	plan int
	d    decisions
}

// evaluateRow decides one row (an incremental re-match) on the calling goroutine, for the candidate
// plans of the index; it returns the plans that found the row eligible or failed on it.
func evaluateRow(snap *Snapshot, idx *rowIndex, row int, f *frame) []planDecisions {
	if !snap.isActive(row) {
		return nil
	}
	f.snap = snap
	f.at(row / blockRows)
	m := f.pushBits()
	w := (row % blockRows) / wordBits
	f.wlo, f.whi = w, w+1
	m[w] = 1 << (row % wordBits)
	var out []planDecisions
	run := func(i int32) {
		pp := idx.plans[i]
		for _, g := range pp.guards[min(1, len(pp.guards)):] {
			if g.rejects(row) {
				return
			}
		}
		var d decisions
		pp.evalBlock(f, m, &d)
		if len(d.words) > 0 || len(d.errs) > 0 {
			out = append(out, planDecisions{plan: int(i), d: d})
		}
	}
	for _, i := range idx.unguarded {
		run(i)
	}
	for c, col := range idx.cols {
		if code := int(col.codes[row]); code < len(idx.byCode[c]) {
			for _, i := range idx.byCode[c][code] {
				run(i)
			}
		}
	}
	f.bt--
	slices.SortFunc(out, func(a, b planDecisions) int { return a.plan - b.plan })
	return out
}

// planner keeps plans of one snapshot for one evaluation date, built on first use.
type planner struct {
	snap  *Snapshot
	asOf  time.Time
	cache *tableCache
	plans map[*rules.Policy]*policyPlan
	gen   int       // counts plan builds and preparations; an index of another generation is stale
	idx   *rowIndex // the last index built
}

func newPlanner(snap *Snapshot, asOf time.Time) *planner {
	return &planner{snap: snap, asOf: asOf, cache: newTableCache(), plans: map[*rules.Policy]*policyPlan{}}
}

// setAsOf moves the planner to another date (plans and tables depend on as_of).
func (pl *planner) setAsOf(asOf time.Time) {
	if !asOf.Equal(pl.asOf) {
		pl.asOf, pl.cache, pl.plans = asOf, newTableCache(), map[*rules.Policy]*policyPlan{}
	}
}

// forget drops plans of policies no longer evaluated.
func (pl *planner) forget(keep []*rules.Policy) {
	live := map[*rules.Policy]bool{}
	for _, p := range keep {
		live[p] = true
	}
	for p := range pl.plans {
		if !live[p] {
			delete(pl.plans, p)
		}
	}
}

// prepared returns ready plans for policies, building missing ones on `workers` goroutines.
func (pl *planner) prepared(policies []*rules.Policy, workers int) []*policyPlan {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	out := make([]*policyPlan, len(policies))
	var todo []int
	for i, p := range policies {
		pp, ok := pl.plans[p]
		if ok && pp.current() {
			out[i] = pp
			continue
		}
		pl.gen++
		if ok && pp.prepare() {
			out[i] = pp
			continue
		}
		todo = append(todo, i)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= len(todo) {
					return
				}
				i := todo[k]
				out[i] = buildPlan(pl.snap, pl.cache, policies[i], pl.asOf)
			}
		}()
	}
	wg.Wait()
	for _, i := range todo {
		out[i].prepare()
		pl.plans[policies[i]] = out[i]
	}
	return out
}

// index returns the row index of plans (as prepared returned them), built again only when a plan
// was built or prepared since, or the list differs.
func (pl *planner) index(plans []*policyPlan) *rowIndex {
	if pl.idx != nil && pl.idx.gen == pl.gen && slices.Equal(pl.idx.plans, plans) {
		return pl.idx
	}
	pl.idx = newRowIndex(plans, pl.gen)
	return pl.idx
}
