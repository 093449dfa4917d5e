package rules

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"

	"github.com/policypush/policypush/registry/fields"
)

// The sandbox. A rule is untrusted input, so the language is cut down until its cost is a function
// of the rule text alone, and that cost is bounded when the rule is saved:
//
//   - before parsing: at most MaxSourceLen characters and MaxDepth levels of brackets (expr's
//     parser recurses on nesting; a million parentheses would overflow its stack);
//   - after parsing: at most MaxNodes nodes; only the allowed builtins and the domain helpers; no
//     ranges, let, closures, predicates (map/filter/reduce/all…), method calls, $env or dynamic
//     params; params bounded by MaxParamItems and MaxParamText;
//   - after type checking (this file): with no loops and no variables left, every node is evaluated
//     at most once per firm, so a static estimate bounds the work of one evaluation. Each node costs
//     one unit plus one per 64 bytes of text it reads or builds and one per list item it scans; a
//     rule above MaxCost units, or any text that could grow beyond MaxStringBytes (concatenation,
//     upper/lower), is rejected with its location. Enum comparisons against values the field
//     cannot take, regular expressions that are not constant, and malformed size() variants are
//     rejected here too, because they are mistakes that would otherwise evaluate silently to false.
//
// At run time, Program.Run recovers any panic, and a runtime error (division by zero in integer
// modulo, an index out of range) is an error for that firm and policy, recorded by the matcher,
// never the end of a run.
const (
	MaxCost        = 20000    // work units per evaluation of one expression
	MaxStringBytes = 16 << 10 // bytes of any text value an expression computes
	maxPattern     = 200      // characters of a regular expression (matches)
)

// estimate is an upper bound on what evaluating a node does and produces.
type estimate struct {
	cost  int // work units
	bytes int // length of the value when it is text (or the summed text of a list)
	items int // elements when it is a list or map
}

type limiter struct {
	err *file.Error
	voc *Vocabulary // the enum values of fields
}

func (l *limiter) fail(n ast.Node, format string, args ...any) {
	if l.err == nil {
		l.err = &file.Error{Location: n.Location(), Message: fmt.Sprintf(format, args...)}
	}
}

// checkLimits estimates the cost of a checked tree and enforces the limits above.
func checkLimits(root ast.Node, voc *Vocabulary) (int, *file.Error) {
	l := &limiter{voc: voc}
	e := l.walk(root)
	if l.err != nil {
		return 0, l.err
	}
	if e.cost > MaxCost {
		return 0, &file.Error{Location: root.Location(), Message: fmt.Sprintf(
			"this rule may cost more than %d units of work per firm, the most allowed — use shorter lists or fewer conditions, or split the policy", MaxCost)}
	}
	return e.cost, nil
}

func (l *limiter) walk(node ast.Node) estimate {
	e := l.node(node)
	if t := node.Type(); t != nil && t.Kind() == reflect.String && e.bytes > MaxStringBytes {
		l.fail(node, "this text may grow to %d bytes; at most %d are allowed — do not build long text in a rule", e.bytes, MaxStringBytes)
	}
	if e.cost > MaxCost {
		e.cost = MaxCost + 1 // saturate: sums of huge estimates must not overflow
	}
	return e
}

func (l *limiter) sum(nodes ...ast.Node) (total estimate) {
	for _, n := range nodes {
		if n == nil {
			continue
		}
		e := l.walk(n)
		total.cost += e.cost
		total.bytes += e.bytes
		total.items += e.items
	}
	return total
}

func (l *limiter) node(node ast.Node) estimate {
	switch n := node.(type) {
	case *ast.NilNode, *ast.BoolNode, *ast.IntegerNode, *ast.FloatNode:
		return estimate{cost: 1, bytes: 32}
	case *ast.StringNode:
		return estimate{cost: 1, bytes: len(n.Value)}
	case *ast.BytesNode:
		return estimate{cost: 1, bytes: len(n.Value)}
	case *ast.ConstantNode:
		return constEstimate(n.Value)
	case *ast.IdentifierNode:
		return estimate{cost: 1, bytes: identBytes(n.Value)}
	case *ast.UnaryNode:
		e := l.walk(n.Node)
		e.cost++
		return e
	case *ast.ChainNode:
		return l.walk(n.Node)
	case *ast.BinaryNode:
		return l.binary(n)
	case *ast.MemberNode:
		e := l.sum(n.Node, n.Property)
		e.cost++
		return e
	case *ast.SliceNode:
		base := l.walk(n.Node)
		idx := l.sum(n.From, n.To)
		return estimate{cost: base.cost + idx.cost + 1, bytes: base.bytes, items: base.items}
	case *ast.CallNode:
		return l.call(n)
	case *ast.BuiltinNode:
		return l.builtin(n)
	case *ast.ConditionalNode:
		c, a, b := l.walk(n.Cond), l.walk(n.Exp1), l.walk(n.Exp2)
		return estimate{cost: c.cost + max(a.cost, b.cost) + 1, bytes: max(a.bytes, b.bytes), items: max(a.items, b.items)}
	case *ast.ArrayNode:
		e := l.sum(n.Nodes...)
		e.cost++
		e.items = len(n.Nodes)
		return e
	case *ast.MapNode:
		e := l.sum(n.Pairs...)
		e.cost++
		e.items = len(n.Pairs)
		return e
	case *ast.PairNode:
		return l.sum(n.Key, n.Value)
	}
	// The validator rejects everything else (predicates, pointers, let, sequences) before checking.
	l.fail(node, "this construct is not allowed in rules")
	return estimate{cost: MaxCost + 1}
}

func (l *limiter) binary(n *ast.BinaryNode) estimate {
	left, right := l.walk(n.Left), l.walk(n.Right)
	e := estimate{cost: left.cost + right.cost + 1, bytes: 32}
	text := (left.bytes + right.bytes) / 64
	switch n.Operator {
	case "+":
		if t := n.Type(); t != nil && t.Kind() == reflect.String {
			e.bytes = left.bytes + right.bytes
			e.cost += text
		}
	case "??":
		e.bytes, e.items = max(left.bytes, right.bytes), max(left.items, right.items)
	case "==", "!=", "<", ">", "<=", ">=", "contains", "startsWith", "endsWith":
		e.cost += text
		l.checkEnum(n)
	case "in", "not in":
		e.cost += max(right.items, 1) * (1 + left.bytes/64)
		l.checkEnum(n)
	case "matches":
		pattern, ok := constString(n.Right)
		if !ok {
			l.fail(n.Right, "the pattern of matches must be a fixed text, e.g. name matches \"科技$\"")
			return e
		}
		if len([]rune(pattern)) > maxPattern {
			l.fail(n.Right, "the pattern has %d characters; at most %d are allowed", len([]rune(pattern)), maxPattern)
			return e
		}
		if _, err := regexp.Compile(pattern); err != nil {
			l.fail(n.Right, "the pattern is not a valid regular expression: %v", err)
			return e
		}
		e.cost += (left.bytes/64 + 1) * (len(pattern)/8 + 1)
	}
	return e
}

func (l *limiter) call(n *ast.CallNode) estimate {
	e := l.sum(n.Arguments...)
	e.cost++
	name := calleeName(n)
	switch name {
	case "in_region", "in_industry":
		items := 0
		for _, a := range n.Arguments[1:] {
			items += max(l.walk(a).items, 1)
		}
		e.cost += items
	case "size":
		e.cost += 20 // the row lookup scans the table's industry prefixes
		if len(n.Arguments) >= len(helperFuncs["size"].implicit) {
			l.checkSizeArgs(n, n.Arguments[len(helperFuncs["size"].implicit):])
		}
		return estimate{cost: e.cost, bytes: 8}
	case "fact_string":
		return estimate{cost: e.cost, bytes: MaxFactText * 4}
	}
	return estimate{cost: e.cost, bytes: 32}
}

func (l *limiter) builtin(n *ast.BuiltinNode) estimate {
	args := l.sum(n.Arguments...)
	e := estimate{cost: args.cost + 1, bytes: 32}
	switch n.Name {
	case "upper", "lower":
		// Unicode case mapping can turn a 2-byte character into a 3-byte one.
		e.bytes = args.bytes*3/2 + 4
		e.cost += args.bytes / 64
	case "trim":
		e.bytes = args.bytes
		e.cost += args.bytes / 64
	case "string":
		e.bytes = args.bytes + 24*args.items + 32
		e.cost += e.bytes / 64
	case "hasPrefix", "hasSuffix", "int", "float":
		e.cost += args.bytes / 64
	case "date", "duration":
		e.cost += args.bytes/64 + 10
	case "max", "min":
		e.cost += max(args.items, len(n.Arguments))
	}
	return e
}

func calleeName(n *ast.CallNode) string {
	if id, ok := n.Callee.(*ast.IdentifierNode); ok {
		return id.Value
	}
	return ""
}

// checkSizeArgs validates the variant arguments of size() when the rule is saved, so a misspelt
// variant is a compile error, not an error for every firm.
func (l *limiter) checkSizeArgs(n *ast.CallNode, args []ast.Node) {
	vals := make([]any, len(args))
	for i, a := range args {
		v, ok := constValue(a)
		if !ok {
			l.fail(a, "the arguments of size() must be fixed values, e.g. size(\"vat\") or size(\"headcount\", params.large_employees)")
			return
		}
		vals[i] = v
	}
	variant, _, err := sizeArgs(vals)
	if err != nil {
		l.fail(n, "%v", err)
		return
	}
	if variant != "" && variant != SizeVariantVAT && variant != SizeVariantHeadcount {
		l.fail(n, "unknown size variant %q: use size(), size(\"vat\") or size(\"headcount\", N)", variant)
	}
}

// checkEnum rejects comparing an enum field (or size()) with a value it can never take: a typo
// such as taxpayer_type == "generl" would otherwise be false for every firm.
func (l *limiter) checkEnum(n *ast.BinaryNode) {
	field, values := l.enumSide(n.Left)
	other := n.Right
	if field == "" && n.Operator != "in" && n.Operator != "not in" {
		field, values = l.enumSide(n.Right)
		other = n.Left
	}
	if field == "" {
		return
	}
	var lits []string
	switch o := other.(type) {
	case *ast.StringNode:
		lits = []string{o.Value}
	case *ast.ArrayNode:
		for _, x := range o.Nodes {
			if s, ok := x.(*ast.StringNode); ok {
				lits = append(lits, s.Value)
			}
		}
	case *ast.ConstantNode:
		switch v := o.Value.(type) {
		case string:
			lits = []string{v}
		case []any:
			for _, x := range v {
				if s, ok := x.(string); ok {
					lits = append(lits, s)
				}
			}
		}
	}
	for _, s := range lits {
		if s != "" && !slices.Contains(values, s) {
			l.fail(other, "%s is never %q; its values are %s", field, s, strings.Join(values, ", "))
			return
		}
	}
}

// enumSide tells whether a node reads an enum: an enum catalog or extra field, or size().
func (l *limiter) enumSide(n ast.Node) (string, []string) {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		if f, ok := l.voc.Lookup(x.Value); ok && f.Type == fields.TypeEnum {
			return x.Value, f.Enum
		}
	case *ast.CallNode:
		switch name := calleeName(x); {
		case name == "size":
			return "size()", []string{SizeLarge, SizeMedium, SizeSmall, SizeMicro, SizeUndecided}
		case name == "fact_string" && len(x.Arguments) == 2:
			if key, ok := x.Arguments[1].(*ast.StringNode); ok {
				if f, ok := l.voc.extraField(key.Value); ok && f.Type == fields.TypeEnum {
					return key.Value, f.Enum
				}
			}
		}
	}
	return "", nil
}

func constString(n ast.Node) (string, bool) {
	v, ok := constValue(n)
	s, isText := v.(string)
	return s, ok && isText
}

// constValue is the value of a literal or substituted parameter.
func constValue(n ast.Node) (any, bool) {
	switch x := n.(type) {
	case *ast.StringNode:
		return x.Value, true
	case *ast.IntegerNode:
		return x.Value, true
	case *ast.FloatNode:
		return x.Value, true
	case *ast.BoolNode:
		return x.Value, true
	case *ast.ConstantNode:
		return x.Value, true
	}
	return nil, false
}

func constEstimate(v any) estimate {
	switch x := v.(type) {
	case string:
		return estimate{cost: 1, bytes: len(x)}
	case []any:
		e := estimate{cost: 1, items: len(x)}
		for _, item := range x {
			e.bytes += constEstimate(item).bytes
		}
		return e
	case map[string]any:
		return estimate{cost: 1, items: len(x), bytes: 32 * len(x)}
	}
	return estimate{cost: 1, bytes: 32}
}

// identBytes bounds the byte length of a field's text: its column size in UTF-8 (EnvOf and
// EnvFromFacts keep values within it).
func identBytes(name string) int {
	if limit, ok := textLimits[name]; ok {
		return limit * 4
	}
	return 32
}
