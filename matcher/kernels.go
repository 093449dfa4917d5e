package matcher

import (
	"math"
	"math/bits"

	"github.com/policypush/policypush/rules"
)

// bitset is one block's rows, one bit per row.
type bitset [blockWords]uint64

// frame is one worker's view of the block it evaluates, with scratch space. Plans are shared by
// workers; everything that changes during evaluation lives here.
type frame struct {
	snap *Snapshot
	blk  int // block index
	base int // first row of the block
	env  rules.Env
	bs   []*bitset
	is   []*[wordBits]int64
	fs   []*[wordBits]float64
	bt   int
	it   int
	ft   int
	// wlo, whi are the words of the block being evaluated: all words holding rows for a whole
	// block, one word for one firm's re-match. Plans read and write only these words.
	wlo, whi int
}

// at moves the frame to a block, evaluating all its words.
func (f *frame) at(blk int) {
	f.blk, f.base = blk, blk*blockRows
	f.wlo, f.whi = 0, min(blockWords, (f.snap.n-f.base+wordBits-1)/wordBits)
}

// word returns the row range [lo, hi) of word w of the block (hi-lo < 64 only at the end).
func (f *frame) word(w int) (lo, hi int) {
	lo = f.base + w*wordBits
	return lo, min(lo+wordBits, f.snap.n)
}

// pushBits, pushInts and pushFloats are twins on purpose: each hands out a scratch array of its own
// element type from its own stack, so a plan never converts or allocates per word.
func (f *frame) pushBits() *bitset {
	if f.bt == len(f.bs) {
		f.bs = append(f.bs, new(bitset))
	}
	b := f.bs[f.bt]
	f.bt++
	return b
}

func (f *frame) pushInts() *[wordBits]int64 {
	if f.it == len(f.is) {
		f.is = append(f.is, new([wordBits]int64))
	}
	v := f.is[f.it]
	f.it++
	return v
}

func (f *frame) pushFloats() *[wordBits]float64 {
	if f.ft == len(f.fs) {
		f.fs = append(f.fs, new([wordBits]float64))
	}
	v := f.fs[f.ft]
	f.ft++
	return v
}

// boolPlan decides rows: for the rows set in m it sets t (true) or u (unknown: the VM decides);
// rows in neither are false. Words where m is zero come back zero.
type boolPlan interface {
	eval(f *frame, m, t, u *bitset)
	// total reports whether no row can ever be unknown (the plan never needs the VM).
	total() bool
}

// numPlan computes a number per row. ints/floats fill out for the rows of word w set in m and
// return the rows whose value is unknown; ints is only called on plans of kind kInt.
//
// The ints and floats methods of each plan are twins on purpose: each is a tight loop over one
// element type that the compiler can keep in registers and unroll. Sharing one body through a
// type parameter or a per-row conversion function costs an indirect call or a dictionary lookup
// per row in the matcher's hot path (BenchmarkEngineFullMatch measures it).
type numPlan interface {
	kind() numKind
	ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64
	floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64
	total() bool
}

// unknownPlan is a part of a rule the plan does not evaluate: every row asked about goes to the VM.
type unknownPlan struct{}

func (unknownPlan) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		t[w], u[w] = 0, m[w]
	}
}
func (unknownPlan) total() bool { return false }

// constPlan is a part that reads no firm field.
type constPlan struct{ v uint8 }

func (p constPlan) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		t[w], u[w] = 0, 0
		switch p.v {
		case triTrue:
			t[w] = m[w]
		case triUnknown:
			u[w] = m[w]
		}
	}
}
func (p constPlan) total() bool { return p.v != triUnknown }

// dictPlan looks a dictionary column's codes up in a table.
type dictPlan struct {
	col   *column
	table *codeTable
}

func (p *dictPlan) eval(f *frame, m, t, u *bitset) {
	truth := p.table.truth
	codes := p.col.codes
	for w := f.wlo; w < f.whi; w++ {
		mw := m[w]
		if mw == 0 {
			t[w], u[w] = 0, 0
			continue
		}
		lo, hi := f.word(w)
		var tb, ub uint64
		if bits.OnesCount64(mw) <= sparse {
			for x := mw; x != 0; x &= x - 1 {
				i := bits.TrailingZeros64(x)
				v := uint64(truth[codes[lo+i]])
				tb |= (v & 1) << i
				ub |= (v >> 1) << i
			}
		} else {
			for i, c := range codes[lo:hi] {
				v := uint64(truth[c])
				tb |= (v & 1) << i
				ub |= (v >> 1) << i
			}
		}
		t[w], u[w] = tb&mw, ub&mw
	}
}
func (p *dictPlan) total() bool { return p.table.unknowns == 0 }

// boolColPlan maps a boolean column's two values through a table.
type boolColPlan struct {
	col   *column
	table *codeTable
}

func (p *boolColPlan) eval(f *frame, m, t, u *bitset) {
	ff, tt := p.table.truth[0], p.table.truth[1]
	first := f.base / wordBits
	for w := f.wlo; w < f.whi; w++ {
		mw := m[w]
		if mw == 0 {
			t[w], u[w] = 0, 0
			continue
		}
		b := p.col.bools[first+w]
		var tb, ub uint64
		if tt == triTrue {
			tb |= b
		}
		if ff == triTrue {
			tb |= ^b
		}
		if tt == triUnknown {
			ub |= b
		}
		if ff == triUnknown {
			ub |= ^b
		}
		t[w], u[w] = tb&mw, ub&mw
	}
}
func (p *boolColPlan) total() bool { return p.table.unknowns == 0 }

// andPlan is a chain of && with short-circuit: a part only decides the rows all earlier parts found
// true. At each pass it puts the cheap dictionary parts that may go first (guards) in front.
type andPlan struct {
	orig  []boolPlan // the chain as written (nested && flattened)
	parts []boolPlan // evaluation order for this pass
}

func (p *andPlan) eval(f *frame, m, t, u *bitset) {
	cur, tt, uu := f.pushBits(), f.pushBits(), f.pushBits()
	for w := f.wlo; w < f.whi; w++ {
		cur[w], u[w] = m[w], 0
	}
	parts := p.parts
	if parts == nil {
		parts = p.orig
	}
	for _, part := range parts {
		part.eval(f, cur, tt, uu)
		any := uint64(0)
		for w := f.wlo; w < f.whi; w++ {
			u[w] |= uu[w]
			cur[w] = tt[w]
			any |= tt[w]
		}
		if any == 0 {
			break
		}
	}
	for w := f.wlo; w < f.whi; w++ {
		t[w] = cur[w]
	}
	f.bt -= 3
}

func (p *andPlan) total() bool {
	for _, x := range p.orig {
		if !x.total() {
			return false
		}
	}
	return true
}

// flatten merges nested && chains into one.
func (p *andPlan) flatten() {
	var out []boolPlan
	for _, x := range p.orig {
		if a, ok := x.(*andPlan); ok {
			a.flatten()
			out = append(out, a.orig...)
		} else {
			out = append(out, x)
		}
	}
	p.orig = out
}

// orPlan is a chain of || with short-circuit: a part only decides the rows all earlier parts found false.
type orPlan struct{ parts []boolPlan }

func (p *orPlan) eval(f *frame, m, t, u *bitset) {
	cur, tt, uu := f.pushBits(), f.pushBits(), f.pushBits()
	for w := f.wlo; w < f.whi; w++ {
		cur[w], t[w], u[w] = m[w], 0, 0
	}
	for _, part := range p.parts {
		part.eval(f, cur, tt, uu)
		any := uint64(0)
		for w := f.wlo; w < f.whi; w++ {
			t[w] |= tt[w]
			u[w] |= uu[w]
			cur[w] &^= tt[w] | uu[w]
			any |= cur[w]
		}
		if any == 0 {
			break
		}
	}
	f.bt -= 3
}

func (p *orPlan) total() bool {
	for _, x := range p.parts {
		if !x.total() {
			return false
		}
	}
	return true
}

type notPlan struct{ x boolPlan }

func (p *notPlan) eval(f *frame, m, t, u *bitset) {
	tt := f.pushBits()
	p.x.eval(f, m, tt, u)
	for w := f.wlo; w < f.whi; w++ {
		t[w] = m[w] &^ (tt[w] | u[w])
	}
	f.bt--
}
func (p *notPlan) total() bool { return p.x.total() }

// condPlan is c ? x : y with boolean branches.
type condPlan struct{ c, x, y boolPlan }

func (p *condPlan) eval(f *frame, m, t, u *bitset) {
	tc, uc, fc := f.pushBits(), f.pushBits(), f.pushBits()
	tx, ux := f.pushBits(), f.pushBits()
	p.c.eval(f, m, tc, uc)
	for w := f.wlo; w < f.whi; w++ {
		fc[w] = m[w] &^ (tc[w] | uc[w])
	}
	p.x.eval(f, tc, tx, ux)
	p.y.eval(f, fc, t, u)
	for w := f.wlo; w < f.whi; w++ {
		t[w] |= tx[w]
		u[w] |= ux[w] | uc[w]
	}
	f.bt -= 5
}
func (p *condPlan) total() bool { return p.c.total() && p.x.total() && p.y.total() }

// cmpOp is a comparison operator.
type cmpOp uint8

const (
	opLT cmpOp = iota
	opLE
	opGT
	opGE
	opEQ
	opNE
)

func opOf(s string) cmpOp {
	switch s {
	case "<":
		return opLT
	case "<=":
		return opLE
	case ">":
		return opGT
	case ">=":
		return opGE
	case "==":
		return opEQ
	}
	return opNE
}

// swapped is the operator with its operands exchanged (c < x is x > c).
func (o cmpOp) swapped() cmpOp {
	switch o {
	case opLT:
		return opGT
	case opLE:
		return opGE
	case opGT:
		return opLT
	case opGE:
		return opLE
	}
	return o
}

// compare sets bit i when a[i] op b[i]. Go's comparisons are expr's: runtime.Less and friends
// compare int kinds as int and anything with a float as float64 (NaN compares false, != true).
func compare[T int64 | float64](op cmpOp, a, b []T) uint64 {
	var r uint64
	b = b[:len(a)]
	switch op {
	case opLT:
		for i := range a {
			r |= bit(a[i] < b[i]) << i
		}
	case opLE:
		for i := range a {
			r |= bit(a[i] <= b[i]) << i
		}
	case opGT:
		for i := range a {
			r |= bit(a[i] > b[i]) << i
		}
	case opGE:
		for i := range a {
			r |= bit(a[i] >= b[i]) << i
		}
	case opEQ:
		for i := range a {
			r |= bit(a[i] == b[i]) << i
		}
	case opNE:
		for i := range a {
			r |= bit(a[i] != b[i]) << i
		}
	}
	return r
}

// compareConst sets bit i when a[i] op c.
func compareConst[T int64 | float64](op cmpOp, a []T, c T) uint64 {
	var r uint64
	switch op {
	case opLT:
		for i, x := range a {
			r |= bit(x < c) << i
		}
	case opLE:
		for i, x := range a {
			r |= bit(x <= c) << i
		}
	case opGT:
		for i, x := range a {
			r |= bit(x > c) << i
		}
	case opGE:
		for i, x := range a {
			r |= bit(x >= c) << i
		}
	case opEQ:
		for i, x := range a {
			r |= bit(x == c) << i
		}
	case opNE:
		for i, x := range a {
			r |= bit(x != c) << i
		}
	}
	return r
}

// compareIntFloat sets bit i when float64(a[i]) op c: an int column against a float constant.
func compareIntFloat(op cmpOp, a []int64, c float64) uint64 {
	var r uint64
	switch op {
	case opLT:
		for i, x := range a {
			r |= bit(float64(x) < c) << i
		}
	case opLE:
		for i, x := range a {
			r |= bit(float64(x) <= c) << i
		}
	case opGT:
		for i, x := range a {
			r |= bit(float64(x) > c) << i
		}
	case opGE:
		for i, x := range a {
			r |= bit(float64(x) >= c) << i
		}
	case opEQ:
		for i, x := range a {
			r |= bit(float64(x) == c) << i
		}
	case opNE:
		for i, x := range a {
			r |= bit(float64(x) != c) << i
		}
	}
	return r
}

// compareOne is a op c for one value: the sparse path of the kernels (a firm's re-match asks
// about one row of a word).
func compareOne[T int64 | float64](op cmpOp, a, c T) bool {
	switch op {
	case opLT:
		return a < c
	case opLE:
		return a <= c
	case opGT:
		return a > c
	case opGE:
		return a >= c
	case opEQ:
		return a == c
	}
	return a != c
}

// sparse is the number of rows of a word below which kernels test rows one by one.
const sparse = 4

func bit(b bool) uint64 {
	var v uint64
	if b {
		v = 1
	}
	return v
}

// newCompare picks the kernel for l op r.
func newCompare(op cmpOp, l, r numPlan) boolPlan {
	if _, ok := l.(*constNum); ok {
		if _, ok := r.(*constNum); !ok {
			l, r, op = r, l, op.swapped()
		}
	}
	if c, ok := r.(*constNum); ok {
		switch col := l.(type) {
		case *intCol:
			if c.k == kInt {
				return &cmpIntConst{col: col.col, op: op, c: c.i}
			}
			return &cmpIntFloatConst{col: col.col, op: op, c: c.f}
		case *floatCol:
			return &cmpFloatConst{col: col.col, op: op, c: c.float()}
		}
	}
	return &cmpPlan{op: op, l: l, r: r}
}

// cmpIntConst, cmpIntFloatConst and cmpFloatConst are one kernel written out three times on purpose,
// one per column type and constant type: the per-row comparison in the sparse path must read the
// typed column directly, with no function value or interface call, and the dense path calls a
// different typed comparison (compareConst or compareIntFloat). See the note on numPlan.
type cmpIntConst struct {
	col *column
	op  cmpOp
	c   int64
}

func (p *cmpIntConst) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		u[w] = 0
		if m[w] == 0 {
			t[w] = 0
			continue
		}
		lo, hi := f.word(w)
		if bits.OnesCount64(m[w]) <= sparse {
			var r uint64
			for x := m[w]; x != 0; x &= x - 1 {
				i := bits.TrailingZeros64(x)
				r |= bit(compareOne(p.op, p.col.ints[lo+i], p.c)) << i
			}
			t[w] = r
			continue
		}
		t[w] = compareConst(p.op, p.col.ints[lo:hi], p.c) & m[w]
	}
}
func (p *cmpIntConst) total() bool { return true }

type cmpIntFloatConst struct {
	col *column
	op  cmpOp
	c   float64
}

func (p *cmpIntFloatConst) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		u[w] = 0
		if m[w] == 0 {
			t[w] = 0
			continue
		}
		lo, hi := f.word(w)
		if bits.OnesCount64(m[w]) <= sparse {
			var r uint64
			for x := m[w]; x != 0; x &= x - 1 {
				i := bits.TrailingZeros64(x)
				r |= bit(compareOne(p.op, float64(p.col.ints[lo+i]), p.c)) << i
			}
			t[w] = r
			continue
		}
		t[w] = compareIntFloat(p.op, p.col.ints[lo:hi], p.c) & m[w]
	}
}
func (p *cmpIntFloatConst) total() bool { return true }

type cmpFloatConst struct {
	col *column
	op  cmpOp
	c   float64
}

func (p *cmpFloatConst) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		u[w] = 0
		if m[w] == 0 {
			t[w] = 0
			continue
		}
		lo, hi := f.word(w)
		if bits.OnesCount64(m[w]) <= sparse {
			var r uint64
			for x := m[w]; x != 0; x &= x - 1 {
				i := bits.TrailingZeros64(x)
				r |= bit(compareOne(p.op, p.col.floats[lo+i], p.c)) << i
			}
			t[w] = r
			continue
		}
		t[w] = compareConst(p.op, p.col.floats[lo:hi], p.c) & m[w]
	}
}
func (p *cmpFloatConst) total() bool { return true }

// cmpPlan compares two computed numbers.
type cmpPlan struct {
	op   cmpOp
	l, r numPlan
}

func (p *cmpPlan) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		mw := m[w]
		if mw == 0 {
			t[w], u[w] = 0, 0
			continue
		}
		lo, hi := span(mw)
		var res, unk uint64
		if p.l.kind() == kInt && p.r.kind() == kInt {
			a, b := f.pushInts(), f.pushInts()
			unk = p.l.ints(f, w, mw, a) | p.r.ints(f, w, mw, b)
			res = compare(p.op, a[lo:hi], b[lo:hi]) << lo
			f.it -= 2
		} else {
			a, b := f.pushFloats(), f.pushFloats()
			unk = p.l.floats(f, w, mw, a) | p.r.floats(f, w, mw, b)
			res = compare(p.op, a[lo:hi], b[lo:hi]) << lo
			f.ft -= 2
		}
		unk &= mw
		t[w], u[w] = res&mw&^unk, unk
	}
}
func (p *cmpPlan) total() bool { return p.l.total() && p.r.total() }

// span is the range of bit positions [lo, hi) from the lowest to the highest set bit of m: the
// numeric kernels compute only those entries (one, for a firm's re-match).
func span(m uint64) (lo, hi int) {
	if m == 0 {
		return 0, 0
	}
	return bits.TrailingZeros64(m), wordBits - bits.LeadingZeros64(m)
}

// cells returns the span of m within word w, cut to the rows that exist: the entries [lo, hi)
// of out and the rows [r0+lo, r0+hi) they stand for.
func cells(f *frame, w int, m uint64) (r0, lo, hi int) {
	r0, r1 := f.word(w)
	lo, hi = span(m)
	return r0, lo, min(hi, r1-r0)
}

// intCol reads an int64 column.
type intCol struct{ col *column }

func (p *intCol) kind() numKind { return kInt }
func (p *intCol) total() bool   { return true }
func (p *intCol) ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64 {
	r0, lo, hi := cells(f, w, m)
	copy(out[lo:hi], p.col.ints[r0+lo:r0+hi])
	return 0
}
func (p *intCol) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	r0, lo, hi := cells(f, w, m)
	for i, x := range p.col.ints[r0+lo : r0+hi] {
		out[lo+i] = float64(x)
	}
	return 0
}

// floatCol reads a float64 column.
type floatCol struct{ col *column }

func (p *floatCol) kind() numKind { return kFloat }
func (p *floatCol) total() bool   { return true }
func (p *floatCol) ints(*frame, int, uint64, *[wordBits]int64) uint64 {
	panic("matcher: ints of a float plan")
}
func (p *floatCol) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	r0, lo, hi := cells(f, w, m)
	copy(out[lo:hi], p.col.floats[r0+lo:r0+hi])
	return 0
}

// constNum is a number that does not depend on the firm.
type constNum struct {
	k numKind
	i int64
	f float64
}

func (p *constNum) float() float64 {
	if p.k == kInt {
		return float64(p.i)
	}
	return p.f
}
func (p *constNum) kind() numKind { return p.k }
func (p *constNum) total() bool   { return true }
func (p *constNum) ints(_ *frame, _ int, m uint64, out *[wordBits]int64) uint64 {
	lo, hi := span(m)
	for i := lo; i < hi; i++ {
		out[i] = p.i
	}
	return 0
}
func (p *constNum) floats(_ *frame, _ int, m uint64, out *[wordBits]float64) uint64 {
	v := p.float()
	lo, hi := span(m)
	for i := lo; i < hi; i++ {
		out[i] = v
	}
	return 0
}

// tableNum looks a dictionary or boolean column's codes up in a numeric table.
type tableNum struct {
	col   *column
	table *codeTable
}

func (p *tableNum) kind() numKind { return p.table.kind }
func (p *tableNum) total() bool   { return p.table.unknowns == 0 }

// code returns the code of row i of word w (a boolean as 0/1).
func (p *tableNum) code(f *frame, w, i int) int {
	lo, _ := f.word(w)
	if p.col.boolean() {
		return int(p.col.bools[(lo+i)/wordBits]>>((lo+i)%wordBits)) & 1
	}
	return int(p.col.codes[lo+i])
}

func (p *tableNum) unknownOf(code int) uint64 {
	return (p.table.unknown[code/wordBits] >> (code % wordBits)) & 1
}

func (p *tableNum) ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64 {
	var unk uint64
	for x := m; x != 0; x &= x - 1 {
		i := bits.TrailingZeros64(x)
		c := p.code(f, w, i)
		out[i] = p.table.ints[c]
		unk |= p.unknownOf(c) << i
	}
	return unk
}

func (p *tableNum) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	var unk uint64
	for x := m; x != 0; x &= x - 1 {
		i := bits.TrailingZeros64(x)
		c := p.code(f, w, i)
		if p.table.kind == kInt {
			out[i] = float64(p.table.ints[c])
		} else {
			out[i] = p.table.floats[c]
		}
		unk |= p.unknownOf(c) << i
	}
	return unk
}

// arithmetic operators.
type arithOp uint8

const (
	aAdd arithOp = iota
	aSub
	aMul
	aDiv
	aMod
	aPow
)

// arithPlan is l op r. Kinds follow expr's runtime: two int kinds compute as int64 (wrapping), / and
// ** always as float64, anything with a float as float64. % is planned only with a constant
// non-zero int divisor, the one case where it cannot fail.
type arithPlan struct {
	op   arithOp
	k    numKind
	l, r numPlan
}

func newArith(op string, l, r numPlan) numPlan {
	both := l.kind() == kInt && r.kind() == kInt
	p := &arithPlan{l: l, r: r, k: kFloat}
	switch op {
	case "+":
		p.op = aAdd
	case "-":
		p.op = aSub
	case "*":
		p.op = aMul
	case "/":
		p.op = aDiv
	case "**", "^":
		p.op = aPow
	case "%":
		c, ok := r.(*constNum)
		if !both || !ok || c.i == 0 {
			return nil
		}
		p.op = aMod
	default:
		return nil
	}
	if both && p.op != aDiv && p.op != aPow {
		p.k = kInt
	}
	return p
}

func (p *arithPlan) kind() numKind { return p.k }
func (p *arithPlan) total() bool   { return p.l.total() && p.r.total() }

func (p *arithPlan) ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64 {
	b := f.pushInts()
	unk := p.l.ints(f, w, m, out) | p.r.ints(f, w, m, b)
	lo, hi := span(m)
	o, y := out[lo:hi], b[lo:hi]
	switch p.op {
	case aAdd:
		for i := range o {
			o[i] += y[i]
		}
	case aSub:
		for i := range o {
			o[i] -= y[i]
		}
	case aMul:
		for i := range o {
			o[i] *= y[i]
		}
	case aMod:
		c := p.r.(*constNum).i // non-zero
		for i := range o {
			o[i] %= c
		}
	}
	f.it--
	return unk
}

func (p *arithPlan) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	lo, hi := span(m)
	if p.k == kInt {
		v := f.pushInts()
		unk := p.ints(f, w, m, v)
		for i := lo; i < hi; i++ {
			out[i] = float64(v[i])
		}
		f.it--
		return unk
	}
	b := f.pushFloats()
	unk := p.l.floats(f, w, m, out) | p.r.floats(f, w, m, b)
	o, y := out[lo:hi], b[lo:hi]
	switch p.op {
	case aAdd:
		for i := range o {
			o[i] += y[i]
		}
	case aSub:
		for i := range o {
			o[i] -= y[i]
		}
	case aMul:
		for i := range o {
			o[i] *= y[i]
		}
	case aDiv:
		for i := range o {
			o[i] /= y[i]
		}
	case aPow:
		for i := range o {
			o[i] = math.Pow(o[i], y[i])
		}
	}
	f.ft--
	return unk
}

// negNum is -x.
type negNum struct{ x numPlan }

func (p *negNum) kind() numKind { return p.x.kind() }
func (p *negNum) total() bool   { return p.x.total() }
func (p *negNum) ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64 {
	unk := p.x.ints(f, w, m, out)
	lo, hi := span(m)
	for i := lo; i < hi; i++ {
		out[i] = -out[i]
	}
	return unk
}
func (p *negNum) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	lo, hi := span(m)
	if p.x.kind() == kInt {
		v := f.pushInts()
		unk := p.ints(f, w, m, v)
		for i := lo; i < hi; i++ {
			out[i] = float64(v[i])
		}
		f.it--
		return unk
	}
	unk := p.x.floats(f, w, m, out)
	for i := lo; i < hi; i++ {
		out[i] = -out[i]
	}
	return unk
}

// condNum is c ? x : y with numeric branches of one kind.
type condNum struct {
	c    boolPlan
	x, y numPlan
}

func (p *condNum) kind() numKind { return p.x.kind() }
func (p *condNum) total() bool   { return p.c.total() && p.x.total() && p.y.total() }

// split evaluates the condition for the rows of word w in m.
func (p *condNum) split(f *frame, w int, m uint64) (tc, fc, uc uint64) {
	mb, tb, ub := f.pushBits(), f.pushBits(), f.pushBits()
	lo, hi := f.wlo, f.whi
	f.wlo, f.whi = w, w+1
	mb[w] = m
	p.c.eval(f, mb, tb, ub)
	f.wlo, f.whi = lo, hi
	tc, uc = tb[w], ub[w]
	f.bt -= 3
	return tc, m &^ (tc | uc), uc
}

func (p *condNum) ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64 {
	tc, fc, uc := p.split(f, w, m)
	b := f.pushInts()
	unk := uc | p.x.ints(f, w, tc, out)&tc | p.y.ints(f, w, fc, b)&fc
	for x := fc; x != 0; x &= x - 1 {
		i := bits.TrailingZeros64(x)
		out[i] = b[i]
	}
	f.it--
	return unk
}

func (p *condNum) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	tc, fc, uc := p.split(f, w, m)
	b := f.pushFloats()
	unk := uc | p.x.floats(f, w, tc, out)&tc | p.y.floats(f, w, fc, b)&fc
	for x := fc; x != 0; x &= x - 1 {
		i := bits.TrailingZeros64(x)
		out[i] = b[i]
	}
	f.ft--
	return unk
}

// builtinNum is min, max or abs over numbers of one kind, float, int, round, floor or ceil of a
// number. expr's min and max walk their arguments keeping the first one no later one beats
// (runtime.More / runtime.Less), which with NaN depends on the order; the kernels walk the same
// way. round, floor and ceil return floats (of an int, the int as a float); int truncates a float
// as Go's conversion does.
type builtinNum struct {
	name string
	k    numKind
	args []numPlan
}

func newBuiltin(name string, args []numPlan) numPlan {
	switch name {
	case "min", "max":
		if len(args) < 1 {
			return nil
		}
		for _, a := range args {
			if a.kind() != args[0].kind() {
				return nil
			}
		}
		return &builtinNum{name: name, k: args[0].kind(), args: args}
	case "abs":
		if len(args) != 1 {
			return nil
		}
		return &builtinNum{name: name, k: args[0].kind(), args: args}
	case "float", "round", "floor", "ceil":
		if len(args) != 1 {
			return nil
		}
		return &builtinNum{name: name, k: kFloat, args: args}
	case "int":
		if len(args) != 1 {
			return nil
		}
		return &builtinNum{name: name, k: kInt, args: args}
	}
	return nil
}

func (p *builtinNum) kind() numKind { return p.k }
func (p *builtinNum) total() bool {
	for _, a := range p.args {
		if !a.total() {
			return false
		}
	}
	return true
}

func (p *builtinNum) ints(f *frame, w int, m uint64, out *[wordBits]int64) uint64 {
	lo, hi := span(m)
	if p.name == "int" && p.args[0].kind() == kFloat {
		v := f.pushFloats()
		unk := p.args[0].floats(f, w, m, v)
		for i := lo; i < hi; i++ {
			out[i] = int64(v[i])
		}
		f.ft--
		return unk
	}
	unk := p.args[0].ints(f, w, m, out)
	o := out[lo:hi]
	switch p.name {
	case "int":
		return unk
	case "abs":
		for i, x := range o {
			if x < 0 {
				o[i] = -x
			}
		}
		return unk
	}
	b := f.pushInts()
	for _, a := range p.args[1:] {
		unk |= a.ints(f, w, m, b)
		y := b[lo:hi]
		for i := range o {
			if (p.name == "min" && o[i] > y[i]) || (p.name == "max" && o[i] < y[i]) {
				o[i] = y[i]
			}
		}
	}
	f.it--
	return unk
}

func (p *builtinNum) floats(f *frame, w int, m uint64, out *[wordBits]float64) uint64 {
	lo, hi := span(m)
	if p.k == kInt {
		v := f.pushInts()
		unk := p.ints(f, w, m, v)
		for i := lo; i < hi; i++ {
			out[i] = float64(v[i])
		}
		f.it--
		return unk
	}
	unk := p.args[0].floats(f, w, m, out)
	o := out[lo:hi]
	switch p.name {
	case "float":
		return unk
	case "round":
		for i, x := range o {
			o[i] = math.Round(x)
		}
		return unk
	case "floor":
		for i, x := range o {
			o[i] = math.Floor(x)
		}
		return unk
	case "ceil":
		for i, x := range o {
			o[i] = math.Ceil(x)
		}
		return unk
	case "abs":
		for i, x := range o {
			if x < 0 {
				o[i] = -x
			}
		}
		return unk
	}
	b := f.pushFloats()
	for _, a := range p.args[1:] {
		unk |= a.floats(f, w, m, b)
		y := b[lo:hi]
		for i := range o {
			if (p.name == "min" && o[i] > y[i]) || (p.name == "max" && o[i] < y[i]) {
				o[i] = y[i]
			}
		}
	}
	f.ft--
	return unk
}
