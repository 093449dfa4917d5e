package matcher

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr/ast"

	"github.com/policypush/policypush/rules"
)

// A plan is a rule turned into operations over snapshot columns, built from the type-checked tree
// that rules.Program exposes. Each operation says, for every row it is asked about, true, false or
// unknown; unknown rows are decided by the rule's own program (the expr VM), so a plan never has to
// understand everything to give the VM's answers:
//
//   - a part of the rule that reads one dictionary or boolean column (in_region(...), status ==
//     "active", tax_credit_rating in params.ratings, years_since(registered_at) >= 3, !refund_fraud_36m)
//     is evaluated by compiling that part as a rule of its own and running it once per distinct
//     value of the column. The result is a table from code to true/false/unknown (or a number):
//     exactly what the VM says, errors included (an error makes the code unknown);
//   - comparisons and arithmetic over number columns (employees >= 10, insured_employees /
//     employees >= 0.8) run as kernels over 64 rows at a time, with expr's semantics for int and
//     float (integers compare and compute as int64, anything with a float as float64, / always as
//     float, % only by a non-zero constant);
//   - &&, ||, !, ?: combine those with short-circuit semantics: an operand that may be unknown keeps
//     later operands from deciding its rows, so a row the VM would report as an error is never
//     given an answer here;
//   - anything else is unknown for every row it is asked about.

// tri is a per-code answer of a boolean table.
const (
	triFalse   = 0
	triTrue    = 1
	triUnknown = 2
)

// numKind is the runtime type class of a number: whole numbers compute as int64, the rest as float64.
type numKind uint8

const (
	kInt numKind = iota + 1
	kFloat
)

func kindOf(t reflect.Type) (numKind, bool) {
	if t == nil {
		return 0, false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return kInt, true
	case reflect.Float32, reflect.Float64:
		return kFloat, true
	}
	return 0, false
}

func isBool(t reflect.Type) bool { return t != nil && t.Kind() == reflect.Bool }

// codeTable is the value of a rule part that reads a single dictionary or boolean column (and
// perhaps as_of), by code of that column.
type codeTable struct {
	col     *column
	prog    *rules.Program
	asOf    time.Time
	numeric bool
	kind    numKind // numeric tables: the kind every known value has (set by the first one)
	truth   []uint8 // boolean tables: tri per code
	// Numeric tables: the value per code, as int64 and as float64 (the one of kind is read), and
	// the codes whose value is unknown (an error, or a value of another kind).
	ints     []int64
	floats   []float64
	unknown  []uint64
	unknowns int // codes whose answer is unknown
}

// sameAt reports whether two tables give the same answer for a code.
func (t *codeTable) sameAt(o *codeTable, code int) bool {
	if t.numeric != o.numeric || code >= o.covered() {
		return false
	}
	if !t.numeric {
		return t.truth[code] == o.truth[code]
	}
	ua, ub := t.unknown[code/wordBits]>>(code%wordBits)&1, o.unknown[code/wordBits]>>(code%wordBits)&1
	return ua == ub && t.kind == o.kind && t.ints[code] == o.ints[code] &&
		math.Float64bits(t.floats[code]) == math.Float64bits(o.floats[code])
}

// sameTable reports whether two tables without a column (constants) agree.
func sameTable(a, b *codeTable) bool { return a.covered() == b.covered() && a.sameAt(b, 0) }

// covered is the number of codes the table has answers for.
func (t *codeTable) covered() int {
	if t.numeric {
		return len(t.ints)
	}
	return len(t.truth)
}

// refresh evaluates the codes added to the column's dictionary since the last call.
func (t *codeTable) refresh() {
	card := t.col.cardinality()
	n := len(t.truth)
	if t.numeric {
		n = len(t.ints)
	}
	for code := n; code < card; code++ {
		out, err := t.run(t.col.codeValue(code))
		if !t.numeric {
			v := truthOf(out, err)
			if v == triUnknown {
				t.unknowns++
			}
			t.truth = append(t.truth, v)
			continue
		}
		if code/wordBits >= len(t.unknown) {
			t.unknown = append(t.unknown, 0)
		}
		k, _ := kindOf(reflect.TypeOf(out))
		if t.kind == 0 && err == nil && k != 0 {
			t.kind = k
		}
		known := err == nil && k != 0 && k == t.kind
		var iv int64
		var fv float64
		if known {
			if k == kInt {
				iv = reflect.ValueOf(out).Int()
			} else {
				fv = reflect.ValueOf(out).Float()
			}
		} else {
			t.unknown[code/wordBits] |= 1 << (code % wordBits)
			t.unknowns++
		}
		t.ints = append(t.ints, iv)
		t.floats = append(t.floats, fv)
	}
}

// run evaluates the table's program with the column's field set to v.
func (t *codeTable) run(v any) (any, error) {
	env := rules.Env{AsOf: t.asOf}
	if t.col != nil {
		reflect.ValueOf(&env).Elem().Field(t.col.spec.index).Set(reflect.ValueOf(v))
	}
	return t.prog.Run(&env)
}

// tableCache shares tables between the plans of one engine: policies repeat the same conditions
// (the same region list, the same rating condition), and a table is computed once per as-of date.
type tableCache struct {
	mu     sync.Mutex
	tables map[string]*codeTable
}

func newTableCache() *tableCache { return &tableCache{tables: map[string]*codeTable{}} }

// builder turns one expression tree into a plan.
type builder struct {
	snap   *Snapshot
	asOf   time.Time
	cache  *tableCache
	tables []*codeTable
	consts []*codeTable // parts that read no column (some read as_of)
}

// varSet is what a part of a rule reads.
type varSet struct {
	cols  []string // snapshot columns
	asOf  bool
	other bool // something no column holds (extra fields, $env, credit_code, ...)
}

func (b *builder) vars(n ast.Node) varSet {
	var vs varSet
	var walk func(n ast.Node)
	walk = func(n ast.Node) {
		switch x := n.(type) {
		case nil:
		case *ast.IdentifierNode:
			switch {
			case x.Value == asOfKey:
				vs.asOf = true
			case b.snap.cols[x.Value] != nil:
				if !slices.Contains(vs.cols, x.Value) {
					vs.cols = append(vs.cols, x.Value)
				}
			default:
				vs.other = true
			}
		case *ast.IntegerNode, *ast.FloatNode, *ast.StringNode, *ast.BoolNode, *ast.NilNode, *ast.ConstantNode:
		case *ast.UnaryNode:
			walk(x.Node)
		case *ast.BinaryNode:
			walk(x.Left)
			walk(x.Right)
		case *ast.ConditionalNode:
			walk(x.Cond)
			walk(x.Exp1)
			walk(x.Exp2)
		case *ast.CallNode:
			if _, ok := x.Callee.(*ast.IdentifierNode); !ok {
				walk(x.Callee)
			}
			for _, a := range x.Arguments {
				walk(a)
			}
		case *ast.BuiltinNode:
			for _, a := range x.Arguments {
				walk(a)
			}
		case *ast.ArrayNode:
			for _, a := range x.Nodes {
				walk(a)
			}
		default:
			vs.other = true
		}
	}
	walk(n)
	return vs
}

// table builds (or reuses) the table of n over col (nil: n reads no column and is a constant).
func (b *builder) table(n ast.Node, col *column, numeric bool) *codeTable {
	src, params, ok := reconstruct(n)
	if !ok {
		return nil
	}
	colKey := ""
	if col != nil {
		colKey = col.spec.key
	}
	key := fmt.Sprintf("%s|%t|%s|%s|%s", colKey, numeric, b.asOf.Format(time.RFC3339Nano), src, typedKey(params))
	b.cache.mu.Lock()
	t, found := b.cache.tables[key]
	b.cache.mu.Unlock()
	if !found {
		want := reflect.Bool
		if numeric {
			want = reflect.Invalid
		}
		prog, err := rules.Compile("part", src, params, want)
		if err != nil || !sameTree(n, prog.Tree.Node) {
			return nil
		}
		t = &codeTable{col: col, prog: prog, asOf: b.asOf, numeric: numeric}
		if col == nil { // a constant: one "code"
			t.refreshConst()
		} else {
			t.refresh()
		}
		if numeric && t.kind == 0 {
			return nil // no code has a number: nothing a kernel could compute with
		}
		b.cache.mu.Lock()
		if prev, ok := b.cache.tables[key]; ok {
			t = prev
		} else {
			b.cache.tables[key] = t
		}
		b.cache.mu.Unlock()
	}
	switch {
	case col == nil:
		b.consts = append(b.consts, t)
	case !slices.Contains(b.tables, t):
		b.tables = append(b.tables, t)
	}
	return t
}

// truthOf is the table entry of a boolean result: true or false, unknown when the VM failed or did
// not give a boolean.
func truthOf(out any, err error) uint8 {
	b, ok := out.(bool)
	switch {
	case !ok || err != nil:
		return triUnknown
	case b:
		return triTrue
	}
	return triFalse
}

// refreshConst evaluates a table without a column once.
func (t *codeTable) refreshConst() {
	out, err := t.run(nil)
	if !t.numeric {
		v := truthOf(out, err)
		t.truth = []uint8{v}
		return
	}
	t.unknown, t.ints, t.floats = []uint64{0}, []int64{0}, []float64{0}
	k, _ := kindOf(reflect.TypeOf(out))
	switch {
	case err != nil || k == 0:
		t.unknown[0] = 1
		t.unknowns = 1
	case k == kInt:
		t.kind, t.ints[0] = kInt, reflect.ValueOf(out).Int()
	default:
		t.kind, t.floats[0] = kFloat, reflect.ValueOf(out).Float()
	}
}

// lookup builds the code table that stands for n when n reads no firm field besides at most one
// dictionary or boolean column: that column (nil for none) and its table; no table when n reads
// more, or another kind of column, or table cannot build one.
func (b *builder) lookup(n ast.Node, vs varSet, numeric bool) (*column, *codeTable) {
	if vs.other || len(vs.cols) > 1 {
		return nil, nil
	}
	var col *column
	if len(vs.cols) == 1 {
		col = b.snap.cols[vs.cols[0]]
	}
	if col != nil && !col.dictionary() && !col.boolean() {
		return nil, nil
	}
	return col, b.table(n, col, numeric)
}

// boolean plans a boolean part of a rule.
func (b *builder) boolean(n ast.Node) boolPlan {
	if !isBool(n.Type()) {
		return unknownPlan{}
	}
	if col, t := b.lookup(n, b.vars(n), false); t != nil {
		if col == nil {
			return constPlan{v: t.truth[0]}
		}
		if col.boolean() {
			return &boolColPlan{col: col, table: t}
		}
		return &dictPlan{col: col, table: t}
	}
	if p := b.sizeComparison(n); p != nil {
		return p
	}
	switch x := n.(type) {
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "and":
			return &andPlan{orig: []boolPlan{b.boolean(x.Left), b.boolean(x.Right)}}
		case "||", "or":
			return &orPlan{parts: []boolPlan{b.boolean(x.Left), b.boolean(x.Right)}}
		case "<", ">", "<=", ">=", "==", "!=":
			return b.comparison(x)
		}
	case *ast.UnaryNode:
		if x.Operator == "!" || x.Operator == "not" {
			return &notPlan{x: b.boolean(x.Node)}
		}
	case *ast.ConditionalNode:
		if isBool(x.Exp1.Type()) && isBool(x.Exp2.Type()) {
			return &condPlan{c: b.boolean(x.Cond), x: b.boolean(x.Exp1), y: b.boolean(x.Exp2)}
		}
	}
	return unknownPlan{}
}

func (b *builder) comparison(x *ast.BinaryNode) boolPlan {
	l, r := b.number(x.Left), b.number(x.Right)
	if l == nil || r == nil {
		return unknownPlan{}
	}
	op := opOf(x.Operator)
	return newCompare(op, l, r)
}

// number plans a numeric part of a rule; nil when it cannot.
func (b *builder) number(n ast.Node) numPlan {
	if _, ok := kindOf(n.Type()); !ok && (n.Type() == nil || n.Type().Kind() != reflect.Interface) {
		return nil
	}
	switch x := n.(type) {
	case *ast.IntegerNode:
		if k, _ := kindOf(x.Type()); k == kFloat {
			return &constNum{k: kFloat, f: float64(x.Value)}
		}
		return &constNum{k: kInt, i: int64(x.Value)}
	case *ast.FloatNode:
		return &constNum{k: kFloat, f: x.Value}
	case *ast.ConstantNode:
		switch v := reflect.ValueOf(x.Value); {
		case v.CanInt():
			return &constNum{k: kInt, i: v.Int()}
		case v.CanFloat():
			return &constNum{k: kFloat, f: v.Float()}
		}
		return nil
	case *ast.IdentifierNode:
		if c := b.snap.cols[x.Value]; c != nil {
			switch c.spec.kind {
			case kindInt:
				return &intCol{col: c}
			case kindFloat:
				return &floatCol{col: c}
			}
		}
	}
	vs := b.vars(n)
	if vs.other {
		return nil
	}
	if col, t := b.lookup(n, vs, true); t != nil {
		if col == nil {
			if t.unknowns > 0 {
				return nil
			}
			if t.kind == kInt {
				return &constNum{k: kInt, i: t.ints[0]}
			}
			return &constNum{k: kFloat, f: t.floats[0]}
		}
		if t.kind == 0 {
			return nil
		}
		return &tableNum{col: col, table: t}
	}
	switch x := n.(type) {
	case *ast.UnaryNode:
		v := b.number(x.Node)
		switch {
		case v == nil:
			return nil
		case x.Operator == "-":
			return &negNum{x: v}
		case x.Operator == "+":
			return v
		}
	case *ast.BinaryNode:
		l, r := b.number(x.Left), b.number(x.Right)
		if l == nil || r == nil {
			return nil
		}
		return newArith(x.Operator, l, r)
	case *ast.ConditionalNode:
		c := b.boolean(x.Cond)
		l, r := b.number(x.Exp1), b.number(x.Exp2)
		if l == nil || r == nil || l.kind() != r.kind() {
			return nil
		}
		return &condNum{c: c, x: l, y: r}
	case *ast.BuiltinNode:
		args := make([]numPlan, len(x.Arguments))
		for i, a := range x.Arguments {
			if args[i] = b.number(a); args[i] == nil {
				return nil
			}
		}
		return newBuiltin(x.Name, args)
	}
	return nil
}

// buildPlan plans one policy as of a date over a snapshot's columns.
func buildPlan(snap *Snapshot, cache *tableCache, p *rules.Policy, asOf time.Time) *policyPlan {
	b := &builder{snap: snap, asOf: asOf, cache: cache}
	pp := &policyPlan{policy: p, asOf: asOf, elig: b.boolean(p.Eligibility.Tree.Node)}
	if p.Amount != nil {
		pp.amount = b.number(p.Amount.Tree.Node)
	}
	pp.tables, pp.consts = b.tables, b.consts
	return pp
}

// reconstruct prints a part of a checked tree back as a rule: constants become params (so their Go
// type survives exactly), helper calls lose the implicit arguments the rule compiler adds again.
// ok is false for nodes it does not print; the caller then compares the recompiled tree with the
// original (sameTree), so a print that would change the meaning is never used.
func reconstruct(n ast.Node) (src string, params map[string]any, ok bool) {
	p := &printer{params: map[string]any{}, ok: true}
	p.node(n)
	return p.b.String(), p.params, p.ok
}

type printer struct {
	b      strings.Builder
	params map[string]any
	ok     bool
}

func (p *printer) param(v any) {
	name := "p" + strconv.Itoa(len(p.params))
	p.params[name] = v
	p.b.WriteString("params." + name)
}

func (p *printer) node(n ast.Node) {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		p.b.WriteString(x.Value)
	case *ast.IntegerNode:
		if k, _ := kindOf(x.Type()); k == kFloat {
			p.param(float64(x.Value))
		} else {
			p.b.WriteString(strconv.Itoa(x.Value))
		}
	case *ast.FloatNode:
		p.param(x.Value)
	case *ast.StringNode:
		p.param(x.Value)
	case *ast.ConstantNode:
		p.param(x.Value)
	case *ast.BoolNode:
		p.b.WriteString(strconv.FormatBool(x.Value))
	case *ast.NilNode:
		p.b.WriteString("nil")
	case *ast.UnaryNode:
		p.b.WriteString("(" + x.Operator + " ")
		p.node(x.Node)
		p.b.WriteString(")")
	case *ast.BinaryNode:
		p.b.WriteString("(")
		p.node(x.Left)
		p.b.WriteString(" " + x.Operator + " ")
		p.node(x.Right)
		p.b.WriteString(")")
	case *ast.ConditionalNode:
		p.b.WriteString("(")
		p.node(x.Cond)
		p.b.WriteString(" ? ")
		p.node(x.Exp1)
		p.b.WriteString(" : ")
		p.node(x.Exp2)
		p.b.WriteString(")")
	case *ast.CallNode:
		id, ok := x.Callee.(*ast.IdentifierNode)
		if !ok {
			p.ok = false
			return
		}
		args := x.Arguments
		for len(args) > 0 {
			a, ok := args[0].(*ast.IdentifierNode)
			if !ok || a.Location() != x.Location() {
				break
			}
			args = args[1:] // an implicit argument the rule compiler passes again
		}
		p.b.WriteString(id.Value)
		p.list("(", args, ")")
	case *ast.BuiltinNode:
		args := x.Arguments
		for len(args) > 0 {
			c, ok := args[0].(*ast.ConstantNode)
			if !ok {
				break
			}
			if _, isLoc := c.Value.(*time.Location); !isLoc {
				break
			}
			args = args[1:] // the time zone expr.Timezone passes to date(), added again on compiling
		}
		p.b.WriteString(x.Name)
		p.list("(", args, ")")
	case *ast.ArrayNode:
		p.list("[", x.Nodes, "]")
	default:
		p.ok = false
	}
}

func (p *printer) list(open string, nodes []ast.Node, closing string) {
	p.b.WriteString(open)
	for i, a := range nodes {
		if i > 0 {
			p.b.WriteString(", ")
		}
		p.node(a)
	}
	p.b.WriteString(closing)
}

// literal returns the value of a constant node.
func literal(n ast.Node) (any, bool) {
	switch x := n.(type) {
	case *ast.IntegerNode:
		if k, _ := kindOf(x.Type()); k == kFloat {
			return float64(x.Value), true
		}
		return x.Value, true
	case *ast.FloatNode:
		return x.Value, true
	case *ast.StringNode:
		return x.Value, true
	case *ast.ConstantNode:
		return x.Value, true
	}
	return nil, false
}

// sameTree reports whether two checked trees compute the same thing: same node kinds, operators,
// names, constant values and types.
func sameTree(a, b ast.Node) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a.Type() != b.Type() {
		return false
	}
	if va, ok := literal(a); ok {
		vb, ok := literal(b)
		return ok && reflect.TypeOf(va) == reflect.TypeOf(vb) && reflect.DeepEqual(va, vb)
	}
	switch x := a.(type) {
	case *ast.IdentifierNode:
		y, ok := b.(*ast.IdentifierNode)
		return ok && x.Value == y.Value
	case *ast.BoolNode:
		y, ok := b.(*ast.BoolNode)
		return ok && x.Value == y.Value
	case *ast.NilNode:
		_, ok := b.(*ast.NilNode)
		return ok
	case *ast.UnaryNode:
		y, ok := b.(*ast.UnaryNode)
		return ok && x.Operator == y.Operator && sameTree(x.Node, y.Node)
	case *ast.BinaryNode:
		y, ok := b.(*ast.BinaryNode)
		return ok && x.Operator == y.Operator && sameTree(x.Left, y.Left) && sameTree(x.Right, y.Right)
	case *ast.ConditionalNode:
		y, ok := b.(*ast.ConditionalNode)
		return ok && sameTree(x.Cond, y.Cond) && sameTree(x.Exp1, y.Exp1) && sameTree(x.Exp2, y.Exp2)
	case *ast.CallNode:
		y, ok := b.(*ast.CallNode)
		return ok && sameTree(x.Callee, y.Callee) && sameList(x.Arguments, y.Arguments)
	case *ast.BuiltinNode:
		y, ok := b.(*ast.BuiltinNode)
		return ok && x.Name == y.Name && sameList(x.Arguments, y.Arguments)
	case *ast.ArrayNode:
		y, ok := b.(*ast.ArrayNode)
		return ok && sameList(x.Nodes, y.Nodes)
	}
	return false
}

func sameList(a, b []ast.Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameTree(a[i], b[i]) {
			return false
		}
	}
	return true
}

// typedKey renders params with their Go types, for cache keys (500 and 500.0 differ in a rule).
func typedKey(params map[string]any) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	var write func(v any)
	write = func(v any) {
		if l, ok := v.([]any); ok {
			sb.WriteString("[")
			for _, x := range l {
				write(x)
				sb.WriteString(",")
			}
			sb.WriteString("]")
			return
		}
		fmt.Fprintf(&sb, "%T(%#v)", v, v)
	}
	for _, k := range keys {
		sb.WriteString(k + "=")
		write(params[k])
		sb.WriteString(";")
	}
	return sb.String()
}
