package rules

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"

	"github.com/policypush/policypush/registry/fields"
)

// Rendering a rule in business language: catalog labels instead of keys, ≥ instead of >=, money in
// 万元, enum values by their Chinese names — "参保人数 ≥ 10", "纳税人类型 = 一般纳税人".

// enumLabels are the Chinese names of stored enum values (the catalog's descriptions say the same).
var enumLabels = map[string]map[string]string{
	"taxpayer_type":     {"general": "一般纳税人", "small_scale": "小规模纳税人"},
	"status":            {"active": "存续", "revoked": "吊销", "deregistered": "注销", "moved_out": "迁出"},
	"specialized_level": {"none": "无", "province": "省级专精特新", "national": "国家级专精特新“小巨人”"},
	"size()":            SizeLabels,
}

var opSymbols = map[string]string{
	"<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "=", "!=": "≠",
	"in": "属于", "not in": "不属于", "contains": "包含", "startsWith": "开头是", "endsWith": "结尾是", "matches": "匹配",
	"+": "+", "-": "−", "*": "×", "/": "÷", "%": "mod", "**": "^", "??": "??",
}

// negatedSymbols state the opposite of a comparison, for a condition that failed: 参保人数 9 < 10.
var negatedSymbols = map[string]string{
	"<": "≥", "<=": ">", ">": "≤", ">=": "<", "==": "≠", "!=": "=",
	"in": "不属于", "not in": "属于", "contains": "不包含", "startsWith": "开头不是", "endsWith": "结尾不是",
}

// fieldLabel is a field's Chinese label.
func (voc *Vocabulary) fieldLabel(key string) string {
	if f, ok := voc.Lookup(key); ok {
		return f.Label
	}
	return key
}

func (voc *Vocabulary) fieldUnit(key string) string {
	f, _ := voc.Lookup(key)
	return f.Unit
}

func (voc *Vocabulary) isBoolField(n ast.Node) (string, bool) {
	key := fieldOf(n)
	if key == "" || key == "size()" {
		return "", false
	}
	if _, ok := n.(*ast.BinaryNode); ok {
		return "", false
	}
	f, _ := voc.Lookup(key)
	return key, f.Type == fields.TypeBool
}

// renderCondition renders a condition: a bare boolean field reads as "高新技术企业：是".
func (voc *Vocabulary) renderCondition(n ast.Node) string {
	if key, ok := voc.isBoolField(n); ok {
		return voc.fieldLabel(key) + "：是"
	}
	return voc.render(n, "")
}

// render turns a checked node into Chinese; hint is the field whose unit and enum labels format
// constants next to it.
func (voc *Vocabulary) render(n ast.Node, hint string) string {
	switch x := n.(type) {
	case nil:
		return ""
	case *ast.IdentifierNode:
		return voc.fieldLabel(x.Value)
	case *ast.NilNode:
		return "空"
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.ConstantNode:
		v, _ := constValue(n)
		return voc.formatValue(v, hint)
	case *ast.ArrayNode:
		if v, ok := literal(n); ok {
			return voc.formatValue(v, hint)
		}
		parts := make([]string, len(x.Nodes))
		for i, e := range x.Nodes {
			parts[i] = voc.render(e, hint)
		}
		return strings.Join(parts, "、")
	case *ast.ChainNode:
		return voc.render(x.Node, hint)
	case *ast.UnaryNode:
		switch x.Operator {
		case "!", "not":
			if key, ok := voc.isBoolField(x.Node); ok {
				return voc.fieldLabel(key) + "：否"
			}
			if c, ok := x.Node.(*ast.CallNode); ok && isPrefixCall(c) {
				return voc.renderPrefixCall(c, false)
			}
			return "并非（" + voc.render(x.Node, "") + "）"
		case "-":
			return "−" + voc.render(x.Node, hint)
		}
		return x.Operator + voc.render(x.Node, hint)
	case *ast.BinaryNode:
		return voc.renderBinary(x, hint)
	case *ast.ConditionalNode:
		return "若" + voc.renderCondition(x.Cond) + "，则" + voc.render(x.Exp1, hint) + "；否则" + voc.render(x.Exp2, hint)
	case *ast.CallNode:
		return voc.renderCall(x)
	case *ast.BuiltinNode:
		args := make([]string, len(x.Arguments))
		for i, a := range x.Arguments {
			args[i] = voc.render(a, hint)
		}
		switch x.Name {
		case "len":
			return args[0] + "的长度"
		case "date":
			if len(args) > 0 {
				return args[0]
			}
		}
		return x.Name + "(" + strings.Join(args, ", ") + ")"
	case *ast.MemberNode:
		return voc.render(x.Node, hint) + "[" + voc.render(x.Property, "") + "]"
	case *ast.SliceNode:
		return voc.render(x.Node, hint) + "[" + voc.render(x.From, "") + ":" + voc.render(x.To, "") + "]"
	}
	return n.String()
}

func (voc *Vocabulary) renderBinary(x *ast.BinaryNode, hint string) string {
	if op := boolOp(x); op != "" {
		var parts []ast.Node
		flatten(x, op, &parts)
		out := make([]string, len(parts))
		for i, p := range parts {
			out[i] = voc.renderCondition(p)
			if boolOp(p) != "" {
				out[i] = "（" + out[i] + "）"
			}
		}
		if op == "and" {
			return strings.Join(out, "，且 ")
		}
		return strings.Join(out, "，或 ")
	}
	// Constants beside a field in a comparison take its unit (营业收入 < 2000万元); in arithmetic a
	// constant is a rate or a count, not an amount of the field's unit.
	hint = ""
	if slices.Contains(comparisonOps, x.Operator) {
		hint = fieldOf(x)
	}
	side := func(n ast.Node) string {
		s := voc.render(n, hint)
		switch y := n.(type) {
		case *ast.BinaryNode:
			if !slices.Contains(comparisonOps, y.Operator) {
				return "（" + s + "）"
			}
		case *ast.ConditionalNode:
			return "（" + s + "）"
		}
		return s
	}
	sym, ok := opSymbols[x.Operator]
	if !ok {
		sym = x.Operator
	}
	return side(x.Left) + " " + sym + " " + side(x.Right)
}

func isPrefixCall(c *ast.CallNode) bool {
	name := calleeName(c)
	return (name == "in_region" || name == "in_industry") && len(c.Arguments) >= 2
}

// renderPrefixCall renders in_region / in_industry, or their negation when holds is false.
func (voc *Vocabulary) renderPrefixCall(c *ast.CallNode, holds bool) string {
	field := fieldOf(c.Arguments[0])
	var prefixes []string
	for _, a := range c.Arguments[1:] {
		prefixes = append(prefixes, voc.render(a, ""))
	}
	list := strings.Join(prefixes, "、")
	if calleeName(c) == "in_region" {
		if holds {
			return voc.fieldLabel(field) + "以 " + list + " 开头"
		}
		return voc.fieldLabel(field) + "不以 " + list + " 开头"
	}
	if holds {
		return voc.fieldLabel(field) + "属于行业 " + list
	}
	return voc.fieldLabel(field) + "不属于行业 " + list
}

func (voc *Vocabulary) renderCall(c *ast.CallNode) string {
	name := calleeName(c)
	switch {
	case isPrefixCall(c):
		return voc.renderPrefixCall(c, true)
	case name == "years_since" && len(c.Arguments) == 2:
		return voc.render(c.Arguments[1], "") + "至评估日期的整年数"
	case name == "months_since" && len(c.Arguments) == 2:
		return voc.render(c.Arguments[1], "") + "至评估日期的整月数"
	case name == "size":
		variant, cut := sizeCallArgs(c.Arguments)
		return sizeVariantLabel(variant, cut, time.Time{})
	case slices.Contains(factFuncs, name) && len(c.Arguments) == 2:
		if key, ok := c.Arguments[1].(*ast.StringNode); ok {
			return voc.fieldLabel(key.Value)
		}
	}
	args := make([]string, len(c.Arguments))
	for i, a := range c.Arguments {
		args[i] = voc.render(a, "")
	}
	return name + "(" + strings.Join(args, ", ") + ")"
}

// maxListShown is how many items of a list a rendering shows before "等 N 项".
const maxListShown = 8

// formatValue shows a value the way a department writes it: money in 元/万元 when the field is
// money, enum values by their Chinese names, dates as 2006-01-02, true/false as 是/否.
func (voc *Vocabulary) formatValue(v any, hint string) string {
	unit := voc.fieldUnit(hint)
	switch x := v.(type) {
	case nil:
		return "（空）"
	case bool:
		if x {
			return "是"
		}
		return "否"
	case string:
		if x == "" {
			return "（空）"
		}
		if l, ok := enumLabels[hint][x]; ok {
			return l
		}
		return x
	case int:
		return formatNumber(float64(x), unit)
	case int64:
		return formatNumber(float64(x), unit)
	case float64:
		return formatNumber(x, unit)
	case time.Time:
		if x.IsZero() {
			return "（空）"
		}
		return x.Format(dateLayout)
	case []any:
		parts := make([]string, 0, min(len(x), maxListShown))
		for i, item := range x {
			if i == maxListShown {
				parts = append(parts, fmt.Sprintf("…等 %d 项", len(x)))
				break
			}
			parts = append(parts, voc.formatValue(item, hint))
		}
		return strings.Join(parts, "、")
	}
	return fmt.Sprint(v)
}

func formatNumber(x float64, unit string) string {
	if unit == "元" {
		return formatMoney(x)
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

// formatMoney writes whole multiples of 10,000 元 in 万元 (20000000 → 2000万元), the way policies
// state thresholds, and other amounts exactly in 元, so a value just below a threshold never reads
// as equal to it.
func formatMoney(x float64) string {
	if x != 0 && math.Mod(x, 10000) == 0 {
		return strconv.FormatFloat(x/10000, 'f', -1, 64) + "万元"
	}
	return strconv.FormatFloat(RoundFen(x), 'f', -1, 64) + "元"
}
