package matcher

import (
	"math/bits"
	"time"

	"github.com/expr-lang/expr/ast"

	"github.com/policypush/policypush/rules"
)

// sizePlan decides a comparison of a size() call with fixed tiers — size() == "large",
// size("vat") in ["small", "micro"], size() != "undecided" — row by row with rules.ClassifySize, the
// function the rule's own size() helper calls, so the answers are the VM's. A classification error
// leaves the row to the VM, which reports it in its own words.
type sizePlan struct {
	industry, employees, revenue, assets, vat *column
	asOf                                      time.Time
	variant                                   string
	cut                                       int
	holds                                     map[string]bool // tier → the comparison's value
}

// sizeTiers are every answer size() can give.
var sizeTiers = []string{rules.SizeLarge, rules.SizeMedium, rules.SizeSmall, rules.SizeMicro, rules.SizeUndecided}

// sizeComparison plans n when it compares a size() call with text constants; nil otherwise.
func (b *builder) sizeComparison(n ast.Node) boolPlan {
	x, ok := n.(*ast.BinaryNode)
	if !ok {
		return nil
	}
	call, ok := x.Left.(*ast.CallNode)
	if !ok || len(call.Arguments) < 6 {
		return nil
	}
	if id, ok := call.Callee.(*ast.IdentifierNode); !ok || id.Value != "size" {
		return nil
	}
	p := &sizePlan{asOf: b.asOf}
	for i, dst := range []**column{&p.industry, &p.employees, &p.revenue, &p.assets, &p.vat} {
		id, ok := call.Arguments[i].(*ast.IdentifierNode)
		if !ok || b.snap.cols[id.Value] == nil {
			return nil
		}
		*dst = b.snap.cols[id.Value]
	}
	if id, ok := call.Arguments[5].(*ast.IdentifierNode); !ok || id.Value != asOfKey {
		return nil
	}
	if !p.industry.dictionary() && p.industry.plain == nil || p.employees.spec.kind != kindInt ||
		p.revenue.spec.kind != kindFloat || p.assets.spec.kind != kindFloat || p.vat.spec.kind != kindFloat {
		return nil
	}
	variant := call.Arguments[6:]
	if len(variant) > 0 {
		if p.variant, ok = constText(variant[0]); !ok {
			return nil
		}
	}
	if len(variant) > 1 {
		cut, ok := constInt(variant[1])
		if !ok || len(variant) > 2 {
			return nil
		}
		p.cut = cut
	}
	var tiers []string
	switch x.Operator {
	case "==", "!=":
		t, ok := constText(x.Right)
		if !ok {
			return nil
		}
		tiers = []string{t}
	case "in", "not in":
		if tiers, ok = constTexts(x.Right); !ok {
			return nil
		}
	default:
		return nil
	}
	negate := x.Operator == "!=" || x.Operator == "not in"
	p.holds = map[string]bool{}
	for _, t := range sizeTiers {
		listed := false
		for _, w := range tiers {
			listed = listed || w == t
		}
		p.holds[t] = listed != negate
	}
	return p
}

func constText(n ast.Node) (string, bool) {
	switch x := n.(type) {
	case *ast.StringNode:
		return x.Value, true
	case *ast.ConstantNode:
		s, ok := x.Value.(string)
		return s, ok
	}
	return "", false
}

func constInt(n ast.Node) (int, bool) {
	switch x := n.(type) {
	case *ast.IntegerNode:
		return x.Value, true
	case *ast.ConstantNode:
		switch v := x.Value.(type) {
		case int:
			return v, true
		case int64:
			return int(v), true
		}
	}
	return 0, false
}

func constTexts(n ast.Node) ([]string, bool) {
	var items []any
	switch x := n.(type) {
	case *ast.ArrayNode:
		for _, e := range x.Nodes {
			s, ok := constText(e)
			if !ok {
				return nil, false
			}
			items = append(items, s)
		}
	case *ast.ConstantNode:
		list, ok := x.Value.([]any)
		if !ok {
			return nil, false
		}
		items = list
	default:
		return nil, false
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (p *sizePlan) eval(f *frame, m, t, u *bitset) {
	for w := f.wlo; w < f.whi; w++ {
		var tb, ub uint64
		lo, _ := f.word(w)
		for x := m[w]; x != 0; x &= x - 1 {
			i := bits.TrailingZeros64(x)
			row := lo + i
			var industry string
			if p.industry.dict != nil {
				industry, _ = p.industry.dict.values[p.industry.codes[row]].(string)
			} else {
				industry, _ = p.industry.plain[row].(string)
			}
			res, err := rules.ClassifySize(rules.SizeInput{IndustryCode: industry, Employees: p.employees.ints[row],
				Revenue: p.revenue.floats[row], Assets: p.assets.floats[row], VATSales: p.vat.floats[row]}, p.asOf, p.variant, p.cut)
			switch {
			case err != nil:
				ub |= 1 << i
			case p.holds[res.Tier]:
				tb |= 1 << i
			}
		}
		t[w], u[w] = tb, ub
	}
}

// total is false: a classification can fail (bad size data), and then the VM decides.
func (p *sizePlan) total() bool { return false }
