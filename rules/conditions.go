package rules

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// A rule's conditions are the operands of its top-level && / || chains, recursively: `a && b &&
// (c || d)` has the conditions a, b and the group (c || d) of c and d. Explanations, near misses and
// the calculator evaluate each condition separately with expr, on the same checked tree the
// matcher's program was compiled from, so a condition's verdict and the rule's verdict cannot
// disagree about what the rule says.

// condNode is a node of a rule's condition tree.
type condNode struct {
	op       string // "and" or "or" for a group; "" for a condition
	children []*condNode
	node     ast.Node // the checked (params substituted, helpers rewritten) node
	text     string   // its source text as the author wrote it
	rule     string   // Chinese rendering with labels, without firm values
	reads    []string // fields it reads, including the implicit ones of helpers
	direct   []string // fields it reads outside size() calls (the calculator adds sizeNeeds)
	sizes    []sizeCall
	prog     *vm.Program
	cmp      *comparison // set when the condition is a comparison whose operands are worth showing
	voc      *Vocabulary // the program's: labels and units of the fields
}

// sizeCall is a size() call inside a condition: its variant decides which fields it needs.
type sizeCall struct {
	variant string
	cut     int
}

// comparison is a condition `left OP right` shown with the firm's values ("参保人数 9 < 10").
type comparison struct {
	op          string
	left, right operand
	voc         *Vocabulary
}

type operand struct {
	prog  *vm.Program // nil for a constant
	value any         // the constant's value
	text  string      // rendering
	hint  string      // field key whose unit and enum labels format the value
}

// conditions builds (once) the condition tree of a program.
func (p *Program) conditions() (*condNode, error) {
	p.condOnce.Do(func() {
		parsed, err := parser.ParseWithConfig(p.Source, conf.CreateNew())
		if err != nil {
			p.condErr = fmt.Errorf("re-parse rule: %w", err)
			return
		}
		b := &condBuilder{voc: p.voc, cfg: p.cfg, src: []rune(p.Source)}
		p.cond = b.build(p.Tree.Node, parsed.Node)
		p.condErr = b.err
	})
	return p.cond, p.condErr
}

type condBuilder struct {
	voc *Vocabulary
	cfg *conf.Config
	src []rune
	err error
}

func boolOp(n ast.Node) string {
	if b, ok := n.(*ast.BinaryNode); ok {
		switch b.Operator {
		case "&&", "and":
			return "and"
		case "||", "or":
			return "or"
		}
	}
	return ""
}

// flatten lists the operands of a chain of the same operator: a && (b && c) → a, b, c.
func flatten(n ast.Node, op string, out *[]ast.Node) {
	if boolOp(n) == op {
		b := n.(*ast.BinaryNode)
		flatten(b.Left, op, out)
		flatten(b.Right, op, out)
		return
	}
	*out = append(*out, n)
}

func (b *condBuilder) build(checked, parsed ast.Node) *condNode {
	if op := boolOp(checked); op != "" {
		var cs, ps []ast.Node
		flatten(checked, op, &cs)
		if parsed != nil {
			flatten(parsed, op, &ps)
		}
		if len(ps) != len(cs) {
			ps = make([]ast.Node, len(cs))
		}
		g := &condNode{op: op, node: checked, text: b.text(checked, parsed), rule: b.voc.render(checked, ""), voc: b.voc}
		for i := range cs {
			g.children = append(g.children, b.build(cs[i], ps[i]))
		}
		return g
	}
	c := &condNode{node: checked, text: b.text(checked, parsed), rule: b.voc.render(checked, ""), voc: b.voc}
	c.reads, c.direct, c.sizes = reads(checked)
	c.prog = b.compile(checked)
	c.cmp = b.comparison(checked)
	return c
}

// compile compiles part of a checked tree with the configuration it was checked with.
func (b *condBuilder) compile(n ast.Node) *vm.Program {
	prog, err := compiler.Compile(&parser.Tree{Node: n}, b.cfg)
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("compile condition %s: %w", n, err)
	}
	return prog
}

var comparisonOps = []string{"<", "<=", ">", ">=", "==", "!=", "in", "not in", "contains", "startsWith", "endsWith"}

func (b *condBuilder) comparison(n ast.Node) *comparison {
	bin, ok := n.(*ast.BinaryNode)
	if !ok || !slices.Contains(comparisonOps, bin.Operator) {
		return nil
	}
	hint := fieldOf(bin.Left)
	if hint == "" {
		hint = fieldOf(bin.Right)
	}
	side := func(x ast.Node) operand {
		o := operand{text: b.voc.render(x, hint), hint: hint}
		if v, ok := literal(x); ok {
			o.value = v
		} else {
			o.prog = b.compile(x)
		}
		return o
	}
	return &comparison{op: bin.Operator, left: side(bin.Left), right: side(bin.Right), voc: b.voc}
}

// literal is the value of a constant operand, including array literals of constants.
func literal(n ast.Node) (any, bool) {
	if v, ok := constValue(n); ok {
		return v, true
	}
	if arr, ok := n.(*ast.ArrayNode); ok {
		out := make([]any, len(arr.Nodes))
		for i, x := range arr.Nodes {
			v, ok := constValue(x)
			if !ok {
				return nil, false
			}
			out[i] = v
		}
		return out, true
	}
	return nil, false
}

// fieldOf names the field an operand is about, so constants beside it are formatted in its unit
// and enum labels: a field, an extra field, or size().
func fieldOf(n ast.Node) string {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if _, ok := standardVocabulary().Lookup(x.Value); ok { // identifiers are catalog fields or as_of; extra fields are fact_ calls
			return x.Value
		}
	case *ast.CallNode:
		switch name := calleeName(x); {
		case name == "size":
			return "size()"
		case slices.Contains(factFuncs, name) && len(x.Arguments) == 2:
			if key, ok := x.Arguments[1].(*ast.StringNode); ok {
				return key.Value
			}
		}
	case *ast.BinaryNode:
		if f := fieldOf(x.Left); f != "" {
			return f
		}
		return fieldOf(x.Right)
	}
	return ""
}

// reads lists the fields a checked node reads, in order of appearance: all of them, those outside
// size() calls, and the size() calls.
func reads(n ast.Node) (all, direct []string, sizes []sizeCall) {
	var walk func(n ast.Node, inSize bool)
	add := func(list *[]string, k string) {
		if !slices.Contains(*list, k) {
			*list = append(*list, k)
		}
	}
	walk = func(n ast.Node, inSize bool) {
		if n == nil {
			return
		}
		switch x := n.(type) {
		case *ast.IdentifierNode:
			if _, ok := standardVocabulary().Lookup(x.Value); ok { // identifiers are catalog fields or as_of; extra fields are fact_ calls
				add(&all, x.Value)
				if !inSize {
					add(&direct, x.Value)
				}
			}
			return
		case *ast.CallNode:
			name := calleeName(x)
			if slices.Contains(factFuncs, name) && len(x.Arguments) == 2 {
				if key, ok := x.Arguments[1].(*ast.StringNode); ok {
					add(&all, key.Value)
					if !inSize {
						add(&direct, key.Value)
					}
				}
				return
			}
			if name == "size" {
				implicit := len(helperFuncs["size"].implicit)
				variant, cut := sizeCallArgs(x.Arguments)
				sizes = append(sizes, sizeCall{variant: variant, cut: cut})
				for i, a := range x.Arguments {
					walk(a, inSize || i < implicit)
				}
				return
			}
			for _, a := range x.Arguments {
				walk(a, inSize)
			}
			return
		}
		for _, c := range children(n) {
			walk(c, inSize)
		}
	}
	walk(n, false)
	return all, direct, sizes
}

// children lists the direct child nodes of a node.
func children(n ast.Node) []ast.Node {
	switch x := n.(type) {
	case *ast.UnaryNode:
		return []ast.Node{x.Node}
	case *ast.BinaryNode:
		return []ast.Node{x.Left, x.Right}
	case *ast.ChainNode:
		return []ast.Node{x.Node}
	case *ast.MemberNode:
		return []ast.Node{x.Node, x.Property}
	case *ast.SliceNode:
		return []ast.Node{x.Node, x.From, x.To}
	case *ast.CallNode:
		return append([]ast.Node{x.Callee}, x.Arguments...)
	case *ast.BuiltinNode:
		return x.Arguments
	case *ast.ConditionalNode:
		return []ast.Node{x.Cond, x.Exp1, x.Exp2}
	case *ast.ArrayNode:
		return x.Nodes
	case *ast.MapNode:
		return x.Pairs
	case *ast.PairNode:
		return []ast.Node{x.Key, x.Value}
	}
	return nil
}

// text is the source text of a condition: the span of its parsed nodes, widened to balance
// brackets (a call's closing parenthesis is not a node), with whitespace collapsed.
func (b *condBuilder) text(checked, parsed ast.Node) string {
	n := parsed
	if n == nil {
		n = checked
	}
	from, to := len(b.src), 0
	var walk func(ast.Node)
	walk = func(x ast.Node) {
		if x == nil {
			return
		}
		if loc := x.Location(); loc.To > loc.From {
			from, to = min(from, loc.From), max(to, loc.To)
		}
		for _, c := range children(x) {
			walk(c)
		}
	}
	walk(n)
	if from >= to || to > len(b.src) {
		return n.String()
	}
	depth := bracketBalance(b.src[from:to])
	for depth > 0 && to < len(b.src) {
		switch b.src[to] {
		case ')', ']', '}':
			depth--
		case '(', '[', '{':
			depth++
		}
		to++
	}
	for depth < 0 && from > 0 {
		from--
		switch b.src[from] {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		}
	}
	return stripParens(strings.Join(strings.FieldsFunc(string(b.src[from:to]), unicode.IsSpace), " "))
}

// stripParens removes parentheses around a whole condition: "(a ? b : c)" reads as "a ? b : c".
func stripParens(s string) string {
	for len(s) >= 2 && s[0] == '(' && s[len(s)-1] == ')' {
		inner := []rune(s[1 : len(s)-1])
		depth, ok := 0, true
		for _, r := range inner { // the outer pair must enclose everything: "(a) && (b)" keeps its own
			switch r {
			case '(':
				depth++
			case ')':
				depth--
			}
			if depth < 0 {
				ok = false
				break
			}
		}
		if !ok || bracketBalance(inner) != 0 {
			return s
		}
		s = strings.TrimSpace(string(inner))
	}
	return s
}

// bracketBalance counts opening minus closing brackets outside string literals.
func bracketBalance(s []rune) int {
	depth := 0
	var lit quoteState
	for _, r := range s {
		if lit.in(r) {
			continue
		}
		switch r {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		}
	}
	return depth
}

// quoteState follows expr's string literals ("...", '...', `...`) through a text read one rune at a time,
// so that brackets inside them are not counted.
type quoteState struct {
	quote   rune // the quote of the literal being read, 0 outside one
	escaped bool
}

// in reads r and reports whether it is part of a string literal, its quotes included.
func (l *quoteState) in(r rune) bool {
	if l.quote != 0 {
		switch {
		case l.escaped:
			l.escaped = false
		case r == '\\':
			l.escaped = true
		case r == l.quote:
			l.quote = 0
		}
		return true
	}
	switch r {
	case '"', '\'', '`':
		l.quote = r
		return true
	}
	return false
}

// run evaluates a compiled condition or operand for one firm; a panic becomes an error.
func run(prog *vm.Program, env *Env) (out any, err error) {
	if prog == nil {
		return nil, fmt.Errorf("condition did not compile")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("evaluation failed: %v", r)
		}
	}()
	return expr.Run(prog, env)
}
