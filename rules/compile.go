package rules

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// Language limits. A rule is untrusted input: these keep parsing and evaluation bounded whatever
// an author types. They are checked before expr's parser sees deep nesting (which it recurses on).
const (
	MaxSourceLen = 4000 // characters of one expression
	MaxDepth     = 24   // nesting of brackets and parentheses
	MaxNodes     = 400  // AST nodes after parsing
)

// CompileError is a rule that cannot be saved: what is wrong and where (1-based line and column
// inside the expression; Field says which expression of the policy).
type CompileError struct {
	Field   string
	Line    int
	Column  int
	Message string
	Snippet string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("%s %d:%d: %s", e.Field, e.Line, e.Column, e.Message)
}

// Program is a compiled, type-checked expression of a policy.
type Program struct {
	Source string
	// Tree is the type-checked AST after params were substituted and helper calls rewritten, before
	// expr's optimizer: what explanations and fast evaluation paths analyse. Read-only. Helper calls
	// carry their implicit fields as leading arguments (in_region(region_code, "3205"),
	// size(industry_code, employees, annual_revenue, total_assets, vat_sales, as_of, "vat")); an
	// extra field reads as fact_<type>(extra, "key").
	Tree *parser.Tree
	// Cost is the static upper bound on evaluation work for one firm (see MaxCost).
	Cost int
	prog *vm.Program
	cfg  *conf.Config // the checked configuration, for compiling parts of Tree (explanations)
	voc  *Vocabulary  // what the program was checked against: labels of explanations, extra facts

	condOnce sync.Once // builds cond, the condition tree, on first use
	cond     *condNode
	condErr  error
}

// allowedBuiltins is the part of expr's builtin library a rule may use: pure, bounded, no loops
// over caller-made ranges, no string growth (repeat), no clock (now), no dynamic lookups.
var allowedBuiltins = map[string]bool{
	"len": true, "abs": true, "ceil": true, "floor": true, "round": true, "max": true, "min": true,
	"int": true, "float": true, "string": true, "trim": true, "upper": true, "lower": true,
	"hasPrefix": true, "hasSuffix": true, "date": true, "duration": true,
}

// helperFuncs are the domain helpers. Each is rewritten to pass the firm's field (and as_of) that it
// reads, so the functions themselves stay pure.
var helperFuncs = map[string]helper{
	"in_region": {implicit: []string{"region_code"}, doc: `in_region("3205", "320111") — 行政区划代码以任一前缀开头（苏州市或浦口区）；也可传参数列表 in_region(params.regions)`},
	"size": {implicit: []string{"industry_code", "employees", "annual_revenue", "total_assets", "vat_sales", "as_of"},
		doc: `size() — 企业规模 large/medium/small/micro（工信部联企业〔2011〕300号，按行业、从业人数、营业收入、资产总额），缺少所需指标或金融业时为 undecided；size("vat") 留抵退税口径（14号第八条：只用营业收入——以增值税销售额代替——和资产总额，不看从业人数）；size("headcount", 300) 本地口径：300 人及以上为大型`},
	"in_industry":  {implicit: []string{"industry_code"}, doc: `in_industry("52", "62", "I65") — 行业代码（GB/T 4754，可带门类字母）属于任一前缀；也可传参数列表`},
	"years_since":  {implicit: []string{"as_of"}, doc: `years_since(registered_at) — 从该日期到评估日期（as_of）的整年数`},
	"months_since": {implicit: []string{"as_of"}, doc: `months_since(registered_at) — 从该日期到评估日期的整月数`},
}

type helper struct {
	implicit []string // identifiers prepended to the call's arguments
	doc      string
}

// Helpers documents the helper functions for authors.
func Helpers() map[string]string {
	out := make(map[string]string, len(helperFuncs))
	for k, h := range helperFuncs {
		out[k] = h.doc
	}
	return out
}

// Compile type-checks one expression of a policy against a vocabulary (WithVocabulary; the standard
// one without options) with the policy's params substituted, and returns a program. kind is
// reflect.Bool for eligibility and reflect.Float64 for amounts.
func Compile(field, source string, params map[string]any, want reflect.Kind, opts ...Option) (*Program, error) {
	voc := VocabularyOf(opts...)
	if err := precheck(field, source); err != nil {
		return nil, err
	}
	cfg := conf.CreateNew()
	cfg.MaxNodes = MaxNodes
	tree, err := parser.ParseWithConfig(source, cfg)
	if err != nil {
		return nil, toCompileError(voc, field, source, err)
	}
	facts := map[string]string{}
	for _, f := range voc.extra {
		facts[f.Key] = factFunc(f.Type)
	}
	v := &validator{params: params, facts: facts}
	ast.Walk(&tree.Node, v)
	if v.err != nil {
		return nil, toCompileError(voc, field, source, v.err.Bind(tree.Source))
	}
	exprOpts := []expr.Option{
		expr.Env(Env{}),
		expr.Timezone("UTC"),
		expr.MaxNodes(MaxNodes),
		expr.Patch(&rewriter{params: params, facts: facts}),
	}
	for name := range cfg.Builtins {
		if !allowedBuiltins[name] {
			exprOpts = append(exprOpts, expr.DisableBuiltin(name))
		}
	}
	exprOpts = append(exprOpts, helperOptions()...)
	exprOpts = append(exprOpts, factOptions()...)
	// parts compiles pieces of the checked tree for explanations: the same options, no expected type.
	parts := newConfig(exprOpts)
	switch want {
	case reflect.Bool:
		exprOpts = append(exprOpts, expr.AsBool())
	case reflect.Float64:
		exprOpts = append(exprOpts, expr.AsFloat64())
	}
	// Type-check and bound the cost before expr.Compile, whose optimizer already evaluates
	// constant parts of the rule.
	checkedTree, err := checker.ParseCheck(source, newConfig(exprOpts))
	if err != nil {
		return nil, toCompileError(voc, field, source, err)
	}
	cost, limitErr := checkLimits(checkedTree.Node, voc)
	if limitErr != nil {
		return nil, toCompileError(voc, field, source, limitErr.Bind(checkedTree.Source))
	}
	prog, err := expr.Compile(source, exprOpts...)
	if err != nil {
		return nil, toCompileError(voc, field, source, err)
	}
	return &Program{Source: source, Tree: checkedTree, Cost: cost, prog: prog, cfg: parts, voc: voc}, nil
}

// newConfig builds a checked expr configuration from options, as expr.Compile does.
func newConfig(opts []expr.Option) *conf.Config {
	c := conf.CreateNew()
	for _, op := range opts {
		op(c)
	}
	for name := range c.Disabled {
		delete(c.Builtins, name)
	}
	c.Check()
	return c
}

// precheck rejects what would make the parser itself expensive: huge sources and deep nesting.
func precheck(field, source string) error {
	if strings.TrimSpace(source) == "" {
		return &CompileError{Field: field, Line: 1, Column: 1, Message: "expression is empty"}
	}
	if n := len([]rune(source)); n > MaxSourceLen {
		return &CompileError{Field: field, Line: 1, Column: 1,
			Message: fmt.Sprintf("expression has %d characters; at most %d are allowed — split the policy or use params", n, MaxSourceLen)}
	}
	depth, line, col := 0, 1, 0
	var lit quoteState
	type pos struct {
		line, col int
		r         rune
	}
	var open []pos // unclosed brackets, for "never closed"
	for _, r := range source {
		col++
		if r == '\n' {
			line++
			col = 0
		}
		if lit.in(r) {
			continue
		}
		switch r {
		case '(', '[', '{':
			depth++
			if depth > MaxDepth {
				return &CompileError{Field: field, Line: line, Column: col,
					Message: fmt.Sprintf("nesting deeper than %d levels is not allowed", MaxDepth)}
			}
			open = append(open, pos{line, col, r})
		case ')', ']', '}':
			depth--
			if len(open) > 0 {
				open = open[:len(open)-1]
			}
		}
	}
	if lit.quote == 0 && len(open) > 0 {
		o := open[len(open)-1]
		return &CompileError{Field: field, Line: o.line, Column: o.col,
			Message: fmt.Sprintf("%c opened here is never closed", o.r)}
	}
	return nil
}

func toCompileError(voc *Vocabulary, field, source string, err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		if msg == "" {
			msg = fe.Error()
		}
		if name, ok := strings.CutPrefix(msg, "unknown name "); ok {
			msg += " (see `policypush fields`)"
			if near := voc.nearestField(name); near != "" {
				msg += "; did you mean " + near + "?"
			}
		}
		return &CompileError{Field: field, Line: fe.Line, Column: fe.Column + 1, Message: msg, Snippet: strings.TrimSpace(fe.Snippet)}
	}
	return &CompileError{Field: field, Line: 1, Column: 1, Message: err.Error()}
}

// nearestField suggests the vocabulary key closest to a misspelt name (at most 2 edits away).
func (voc *Vocabulary) nearestField(name string) string {
	best, bestDist := "", 3
	for _, f := range voc.or().all {
		if d := editDistance(name, f.Key); d < bestDist {
			best, bestDist = f.Key, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// validator enforces the allowed language on the parsed tree before type checking, so an author
// gets "what is not allowed, and where" rather than a type error about it.
type validator struct {
	params map[string]any
	facts  map[string]string // extra field key → accessor
	err    *file.Error
}

func (v *validator) fail(n ast.Node, format string, args ...any) {
	if v.err == nil {
		v.err = &file.Error{Location: n.Location(), Message: fmt.Sprintf(format, args...)}
	}
}

func (v *validator) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			v.fail(n, "only the documented functions can be called")
			return
		}
		if _, ok := helperFuncs[id.Value]; ok {
			return
		}
		_, fact := v.facts[id.Value]
		_, field := envFields[id.Value]
		if fact || field || id.Value == "as_of" {
			v.fail(n, "%s is a field, not a function: write %s without parentheses", id.Value, id.Value)
			return
		}
		v.fail(n, "function %s is not available in rules (helpers: %s)", id.Value, strings.Join(sortedKeys(helperFuncs), ", "))
	case *ast.BuiltinNode:
		if !allowedBuiltins[n.Name] {
			v.fail(n, "function %s is not allowed in rules (allowed: %s)", n.Name, strings.Join(sortedKeys(allowedBuiltins), ", "))
		}
		if n.Name == "date" && len(n.Arguments) > 2 {
			v.fail(n, `date takes a date text and optionally its layout, e.g. date("2022-06-30"); time zones are not allowed (rules run in UTC)`)
		}
	case *ast.BinaryNode:
		if n.Operator == ".." {
			v.fail(n, "ranges (a..b) are not allowed in rules")
		}
	case *ast.VariableDeclaratorNode:
		v.fail(n, "let declarations are not allowed in rules")
	case *ast.SequenceNode:
		v.fail(n, "a rule is one expression; several separated by ; are not allowed")
	case *ast.PredicateNode, *ast.PointerNode:
		v.fail(n, "closures are not allowed in rules")
	case *ast.MemberNode:
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "params" {
			name, ok := n.Property.(*ast.StringNode)
			if !ok {
				v.fail(n, "params must be read by name, e.g. params.rate")
				return
			}
			if _, ok := v.params[name.Value]; !ok {
				v.fail(n, "unknown parameter params.%s (declared: %s)", name.Value, strings.Join(sortedKeys(v.params), ", "))
			}
		}
	case *ast.IdentifierNode:
		switch n.Value {
		case "$env", "extra":
			v.fail(n, "%s is not available in rules: read fields by their name (see `policypush fields`)", n.Value)
		}
	}
}

// rewriter substitutes params, passes the implicit arguments of helpers and turns extra fields
// into typed accessors. It runs inside expr.Compile before the final type check.
type rewriter struct {
	params map[string]any
	facts  map[string]string // extra field key → accessor function
}

func (r *rewriter) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		fn, ok := r.facts[n.Value]
		if !ok {
			return
		}
		callee := &ast.IdentifierNode{Value: fn}
		env := &ast.IdentifierNode{Value: "extra"}
		key := &ast.StringNode{Value: n.Value}
		for _, x := range []ast.Node{callee, env, key} {
			x.SetLocation(n.Location())
		}
		ast.Patch(node, &ast.CallNode{Callee: callee, Arguments: []ast.Node{env, key}})
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "params" {
			return
		}
		if name, ok := n.Property.(*ast.StringNode); ok {
			if val, ok := r.params[name.Value]; ok {
				ast.Patch(node, &ast.ConstantNode{Value: val})
			}
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		h, ok := helperFuncs[id.Value]
		if !ok || isImplicit(n, h) {
			return
		}
		args := make([]ast.Node, 0, len(h.implicit)+len(n.Arguments))
		for _, name := range h.implicit {
			in := &ast.IdentifierNode{Value: name}
			in.SetLocation(n.Location())
			args = append(args, in)
		}
		n.Arguments = append(args, n.Arguments...)
	}
}

// isImplicit tells whether the helper call was already rewritten (patchers may run twice).
func isImplicit(n *ast.CallNode, h helper) bool {
	if len(n.Arguments) < len(h.implicit) {
		return false
	}
	for i, name := range h.implicit {
		id, ok := n.Arguments[i].(*ast.IdentifierNode)
		if !ok || id.Value != name || id.Location() != n.Location() {
			return false
		}
	}
	return true
}

func helperOptions() []expr.Option {
	return []expr.Option{
		expr.Function("in_region", func(a ...any) (any, error) {
			return anyPrefix(a[0].(string), a[1:], strings.HasPrefix), nil
		}, new(func(string, ...any) bool)),
		expr.Function("in_industry", func(a ...any) (any, error) {
			return anyPrefix(a[0].(string), a[1:], IndustryHasPrefix), nil
		}, new(func(string, ...any) bool)),
		expr.Function("years_since", func(a ...any) (any, error) {
			return wholeMonths(a[1].(time.Time), a[0].(time.Time)) / 12, nil
		}, new(func(time.Time, time.Time) int)),
		expr.Function("months_since", func(a ...any) (any, error) {
			return wholeMonths(a[1].(time.Time), a[0].(time.Time)), nil
		}, new(func(time.Time, time.Time) int)),
		expr.Function("size", func(a ...any) (any, error) {
			variant, cut, err := sizeArgs(a[6:])
			if err != nil {
				return nil, err
			}
			res, err := ClassifySize(SizeInput{IndustryCode: a[0].(string), Employees: a[1].(int64), Revenue: a[2].(float64),
				Assets: a[3].(float64), VATSales: a[4].(float64)}, a[5].(time.Time), variant, cut)
			return res.Tier, err
		}, new(func(string, int64, float64, float64, float64, time.Time, ...any) string)),
	}
}

// anyPrefix applies match to each prefix argument; an argument may be a list (a param).
func anyPrefix(code string, prefixes []any, match func(code, prefix string) bool) bool {
	for _, p := range prefixes {
		switch x := p.(type) {
		case string:
			if match(code, x) {
				return true
			}
		case []any:
			if anyPrefix(code, x, match) {
				return true
			}
		default:
			if match(code, fmt.Sprint(x)) {
				return true
			}
		}
	}
	return false
}

// IndustryHasPrefix matches a GB/T 4754 code against a prefix. Codes may carry the section letter
// ("C3911") or not ("3911"); a prefix may be a section letter ("C"), digits ("39") or both ("C39").
func IndustryHasPrefix(code, prefix string) bool {
	code, prefix = strings.ToUpper(strings.TrimSpace(code)), strings.ToUpper(strings.TrimSpace(prefix))
	if prefix == "" {
		return false
	}
	codeLetter, codeDigits := splitSection(code)
	prefLetter, prefDigits := splitSection(prefix)
	if prefLetter != "" && codeLetter != "" && prefLetter != codeLetter {
		return false
	}
	if prefLetter != "" && codeLetter == "" && prefDigits == "" {
		return false
	}
	return strings.HasPrefix(codeDigits, prefDigits)
}

func splitSection(s string) (letter, digits string) {
	if s != "" && s[0] >= 'A' && s[0] <= 'Z' {
		return s[:1], s[1:]
	}
	return "", s
}

// wholeMonths counts complete months from `from` to `to` (negative when to is earlier).
func wholeMonths(from, to time.Time) int {
	if from.IsZero() {
		return 0
	}
	m := (to.Year()-from.Year())*12 + int(to.Month()) - int(from.Month())
	if to.Day() < from.Day() {
		m--
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Vocabulary returns the vocabulary the program was compiled against.
func (p *Program) Vocabulary() *Vocabulary { return p.voc }

// Run evaluates the program for one firm. A panic inside the VM (which expr converts to errors for
// most cases) is turned into an error so that one firm can never stop a run.
func (p *Program) Run(env *Env) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("evaluation failed: %v", r)
		}
	}()
	return expr.Run(p.prog, env)
}
