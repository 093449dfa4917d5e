package rules

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
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
	// expr's optimizer: what explanations and fast evaluation paths analyse. Read-only.
	Tree *parser.Tree
	prog *vm.Program
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
	"in_region":    {implicit: []string{"region_code"}, doc: `in_region("3205", "320111") — 行政区划代码以任一前缀开头（苏州市或浦口区）；也可传参数列表 in_region(params.regions)`},
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

// Compile type-checks one expression of a policy against the field catalog with the policy's
// params substituted, and returns a program. kind is reflect.Bool for eligibility and
// reflect.Float64 for amounts.
func Compile(field, source string, params map[string]any, want reflect.Kind) (*Program, error) {
	if err := precheck(field, source); err != nil {
		return nil, err
	}
	cfg := conf.CreateNew()
	cfg.MaxNodes = MaxNodes
	tree, err := parser.ParseWithConfig(source, cfg)
	if err != nil {
		return nil, toCompileError(field, source, err)
	}
	v := &validator{params: params}
	ast.Walk(&tree.Node, v)
	if v.err != nil {
		return nil, toCompileError(field, source, v.err.Bind(tree.Source))
	}
	opts := []expr.Option{
		expr.Env(Env{}),
		expr.Timezone("UTC"),
		expr.MaxNodes(MaxNodes),
		expr.Patch(&rewriter{params: params}),
	}
	for name := range cfg.Builtins {
		if !allowedBuiltins[name] {
			opts = append(opts, expr.DisableBuiltin(name))
		}
	}
	opts = append(opts, helperOptions()...)
	switch want {
	case reflect.Bool:
		opts = append(opts, expr.AsBool())
	case reflect.Float64:
		opts = append(opts, expr.AsFloat64())
	}
	prog, err := expr.Compile(source, opts...)
	if err != nil {
		return nil, toCompileError(field, source, err)
	}
	checked := conf.CreateNew()
	for _, op := range opts {
		op(checked)
	}
	for name := range checked.Disabled {
		delete(checked.Builtins, name)
	}
	checked.Check()
	checkedTree, err := checker.ParseCheck(source, checked)
	if err != nil {
		return nil, toCompileError(field, source, err)
	}
	return &Program{Source: source, Tree: checkedTree, prog: prog}, nil
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
	var quote rune
	escaped := false
	for _, r := range source {
		col++
		if r == '\n' {
			line++
			col = 0
		}
		if quote != 0 {
			switch {
			case escaped:
				escaped = false
			case r == '\\':
				escaped = true
			case r == quote:
				quote = 0
			}
			continue
		}
		switch r {
		case '"', '\'', '`':
			quote = r
		case '(', '[', '{':
			depth++
			if depth > MaxDepth {
				return &CompileError{Field: field, Line: line, Column: col,
					Message: fmt.Sprintf("nesting deeper than %d levels is not allowed", MaxDepth)}
			}
		case ')', ']', '}':
			depth--
		}
	}
	return nil
}

func toCompileError(field, source string, err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		if msg == "" {
			msg = fe.Error()
		}
		return &CompileError{Field: field, Line: fe.Line, Column: fe.Column + 1, Message: msg, Snippet: strings.TrimSpace(fe.Snippet)}
	}
	return &CompileError{Field: field, Line: 1, Column: 1, Message: err.Error()}
}

// validator enforces the allowed language on the parsed tree before type checking, so an author
// gets "what is not allowed, and where" rather than a type error about it.
type validator struct {
	params map[string]any
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
		v.fail(n, "function %s is not available in rules (helpers: %s)", id.Value, strings.Join(sortedKeys(helperFuncs), ", "))
	case *ast.BuiltinNode:
		if !allowedBuiltins[n.Name] {
			v.fail(n, "function %s is not allowed in rules (allowed: %s)", n.Name, strings.Join(sortedKeys(allowedBuiltins), ", "))
		}
	case *ast.BinaryNode:
		if n.Operator == ".." {
			v.fail(n, "ranges (a..b) are not allowed in rules")
		}
	case *ast.VariableDeclaratorNode:
		v.fail(n, "let declarations are not allowed in rules")
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
		if n.Value == "params" {
			return
		}
	}
}

// rewriter substitutes params and passes the implicit arguments of helpers. It runs inside
// expr.Compile before the final type check.
type rewriter struct{ params map[string]any }

func (r *rewriter) Visit(node *ast.Node) {
	switch n := (*node).(type) {
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
		if !ok || n.Arguments == nil || isImplicit(n, h) {
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
	if len(n.Arguments) < len(h.implicit)+1 {
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

// RoundAmount rounds to the fen (0.01 元), half away from zero, and rejects what is not money.
func RoundAmount(v float64) (float64, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("amount is not a number (%v)", v)
	}
	if v < 0 {
		return 0, fmt.Errorf("amount %.2f is negative", v)
	}
	return math.Round(v*100) / 100, nil
}
