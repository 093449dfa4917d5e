package rules

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"

	"github.com/policypush/policypush/registry/fields"
)

// Condition is one condition of a rule, decided for one firm.
type Condition struct {
	Text     string         `json:"text"`              // the rule's source text of the condition
	Rule     string         `json:"rule"`              // Chinese rendering with catalog labels, e.g. 参保人数 ≥ 10
	Label    string         `json:"label"`             // with this firm's values, e.g. 参保人数 9 < 10
	Holds    *bool          `json:"holds"`             // nil when undecided (an error, or unknown data in the calculator)
	Values   map[string]any `json:"values"`            // the firm's values of the fields the condition reads
	Missing  []string       `json:"missing,omitempty"` // calculator: unknown fields it needs
	Error    string         `json:"error,omitempty"`
	Op       string         `json:"op,omitempty"`       // and / or: a group of the Children
	Children []Condition    `json:"children,omitempty"` // the conditions of a group
}

// Explanation is why a firm does or does not get a policy (version) on a date.
type Explanation struct {
	PolicyID   string   `json:"policy_id"`
	Version    int      `json:"version"`
	Title      string   `json:"title"`
	CreditCode string   `json:"credit_code"`
	FirmName   string   `json:"firm_name,omitempty"`
	AsOf       string   `json:"as_of"`
	Eligible   bool     `json:"eligible"`
	Amount     *float64 `json:"amount"`
	// AmountLabel shows the formula with the firm's values: 500 × 参保人数 40 = 20000.00元.
	AmountLabel string `json:"amount_label,omitempty"`
	Summary     string `json:"summary"`
	InEffect    bool   `json:"in_effect"`   // the as-of date lies in the policy's effective window
	FirmActive  bool   `json:"firm_active"` // only firms in business (存续) can match
	// RuleHolds is the eligibility rule's own verdict (nil: evaluation error), before combination
	// rules, window and firm status.
	RuleHolds  *bool       `json:"rule_holds"`
	Conditions []Condition `json:"conditions"`
	Excluded   *Exclusion  `json:"excluded_by,omitempty"`
	OncePer    string      `json:"once_per,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Explain decides one firm the way the matcher does (effective window, firm status, rule,
// combination rules) and says why, condition by condition. env.AsOf is the evaluation date.
func Explain(p *Policy, env *Env) (Explanation, error) {
	ex := Explanation{PolicyID: p.Def.ID, Version: p.Version, Title: p.Def.Title, CreditCode: env.CreditCode,
		FirmName: env.Name, AsOf: env.AsOf.Format(dateLayout), InEffect: p.Def.ActiveOn(env.AsOf),
		FirmActive: env.Status == fields.StatusActive, OncePer: p.Def.OncePer}
	root, err := p.Eligibility.conditions()
	if err != nil {
		return ex, err
	}
	ex.Conditions = topConditions(decide(root, env))

	rule, err := p.EvaluateRule(env)
	switch {
	case err != nil:
		ex.Error = err.Error()
	default:
		holds := rule.Eligible
		ex.RuleHolds = &holds
		if holds {
			ex.Excluded = p.Exclusion(env)
		}
	}
	ex.Eligible = ex.InEffect && ex.FirmActive && ex.RuleHolds != nil && *ex.RuleHolds && ex.Excluded == nil
	if ex.Eligible {
		ex.Amount = rule.Amount
		if p.Amount != nil {
			ex.AmountLabel = amountLabel(p.Amount, env, rule.Amount)
		}
	}
	ex.Summary = summarize(&ex, p)
	return ex, nil
}

// topConditions lists a rule's conditions: the members of its top-level group, or the rule itself
// when it is a single condition.
func topConditions(c Condition) []Condition {
	if c.Op != "" {
		return c.Children
	}
	return []Condition{c}
}

// decide evaluates a condition tree for one firm. A group's verdict is three-valued: an "and" with
// one false member is false even if another errs.
func decide(n *condNode, env *Env) Condition {
	c := Condition{Text: n.text, Rule: n.rule}
	if n.op != "" {
		c.Op = n.op
		for _, ch := range n.children {
			c.Children = append(c.Children, decide(ch, env))
		}
		c.Holds = combine(n.op, c.Children)
		c.Label = groupLabel(c)
		c.Values = map[string]any{}
		for _, ch := range c.Children {
			for k, v := range ch.Values {
				c.Values[k] = v
			}
		}
		return c
	}
	c.Values = n.voc.valuesOf(env, n.reads)
	out, err := run(n.prog, env)
	if err != nil {
		c.Error = err.Error()
		c.Label = n.rule + "：无法判断（" + c.Error + "）"
		return c
	}
	holds, _ := out.(bool)
	c.Holds = &holds
	c.Label = leafLabel(n, env, holds, c.Values)
	return c
}

func combine(op string, children []Condition) *bool {
	unknown := false
	for _, ch := range children {
		switch {
		case ch.Holds == nil:
			unknown = true
		case op == "and" && !*ch.Holds:
			return ptr(false)
		case op == "or" && *ch.Holds:
			return ptr(true)
		}
	}
	if unknown {
		return nil
	}
	return ptr(op == "and")
}

func ptr[T any](v T) *T { return &v }

func groupLabel(c Condition) string {
	sep := "，且 "
	if c.Op == "or" {
		sep = "，或 "
	}
	parts := make([]string, len(c.Children))
	for i, ch := range c.Children {
		parts[i] = ch.Label
		if ch.Op != "" {
			parts[i] = "（" + parts[i] + "）"
		}
	}
	return strings.Join(parts, sep)
}

// leafLabel states a decided condition with the firm's values: 参保人数 9 < 10.
func leafLabel(n *condNode, env *Env, holds bool, values map[string]any) string {
	voc := n.voc
	if key, ok := voc.isBoolField(n.node); ok {
		if holds {
			return voc.fieldLabel(key) + "：是"
		}
		return voc.fieldLabel(key) + "：否（要求为是）"
	}
	if s, ok := negatedBoolLabel(n, holds); ok {
		return s
	}
	if call, negated, ok := prefixCallOf(n.node); ok {
		field := fieldOf(call.Arguments[0])
		return strings.Replace(voc.renderPrefixCall(call, holds != negated), voc.fieldLabel(field),
			voc.fieldLabel(field)+" "+voc.formatValue(values[field], field)+" ", 1)
	}
	if n.cmp != nil {
		if s, err := n.cmp.label(env, holds); err == nil {
			return s + sizeReasons(n.sizes, env)
		}
	}
	verdict := "满足"
	if !holds {
		verdict = "不满足"
	}
	return n.rule + "：" + verdict + voc.valuesText(n.reads, values)
}

// sizeReasons says why a size() call of the condition could not size the firm: （规模未能判定：缺少营业收入）.
func sizeReasons(calls []sizeCall, env *Env) string {
	var out string
	for _, c := range calls {
		res, err := ClassifySize(SizeInput{IndustryCode: env.IndustryCode, Employees: env.Employees, Revenue: env.AnnualRevenue,
			Assets: env.TotalAssets, VATSales: env.VATSales}, env.AsOf, c.variant, c.cut)
		if err == nil && res.Tier == SizeUndecided && res.Reason != "" && !strings.Contains(out, res.Reason) {
			out += "（规模未能判定：" + res.Reason + "）"
		}
	}
	return out
}

// prefixCallOf finds an in_region / in_industry condition, possibly negated.
func prefixCallOf(n ast.Node) (call *ast.CallNode, negated, ok bool) {
	if u, isUnary := n.(*ast.UnaryNode); isUnary && (u.Operator == "!" || u.Operator == "not") {
		n, negated = u.Node, true
	}
	call, ok = n.(*ast.CallNode)
	if !ok || !isPrefixCall(call) {
		return nil, false, false
	}
	return call, negated, true
}

// negatedBoolLabel handles !field: 36个月内骗取退税：否.
func negatedBoolLabel(n *condNode, holds bool) (string, bool) {
	u, ok := n.node.(*ast.UnaryNode)
	if !ok || (u.Operator != "!" && u.Operator != "not") {
		return "", false
	}
	voc := n.voc
	key, ok := voc.isBoolField(u.Node)
	if !ok {
		return "", false
	}
	if holds {
		return voc.fieldLabel(key) + "：否", true
	}
	return voc.fieldLabel(key) + "：是（要求为否）", true
}

func (voc *Vocabulary) valuesText(keys []string, values map[string]any) string {
	if len(keys) == 0 {
		return ""
	}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, voc.fieldLabel(k)+" "+voc.formatValue(values[k], k))
	}
	return "（" + strings.Join(parts, "；") + "）"
}

// label states a comparison with the operands' values; a failed one with the opposite operator.
func (c *comparison) label(env *Env, holds bool) (string, error) {
	voc := c.voc
	side := func(o operand) (string, bool, error) {
		if o.prog == nil {
			return voc.formatValue(o.value, o.hint), true, nil
		}
		v, err := run(o.prog, env)
		if err != nil {
			return "", false, err
		}
		return o.text + " " + voc.formatValue(v, o.hint), false, nil
	}
	l, lConst, err := side(c.left)
	if err != nil {
		return "", err
	}
	r, rConst, err := side(c.right)
	if err != nil {
		return "", err
	}
	sym := opSymbols[c.op]
	if !holds {
		sym = negatedSymbols[c.op]
	}
	if c.op == "==" && holds && (lConst || rConst) {
		if lConst {
			return c.right.text + " = " + l, nil
		}
		return c.left.text + " = " + r, nil
	}
	return l + " " + sym + " " + r, nil
}

// valuesOf reads the firm's values of fields (dates as 2006-01-02, for JSON).
func (voc *Vocabulary) valuesOf(env *Env, keys []string) map[string]any {
	out := make(map[string]any, len(keys))
	for _, k := range keys {
		v := voc.fieldValue(env, k)
		if t, ok := v.(time.Time); ok {
			if t.IsZero() {
				v = nil
			} else {
				v = t.Format(dateLayout)
			}
		}
		out[k] = v
	}
	return out
}

// fieldValue is the value of a field in env: a catalog field, an extra field or as_of.
func (voc *Vocabulary) fieldValue(env *Env, key string) any {
	if key == asOfField.Key {
		return env.AsOf
	}
	if i, ok := envFields[key]; ok {
		return reflect.ValueOf(env).Elem().Field(i).Interface()
	}
	if v, ok := env.Extra[key]; ok {
		return v
	}
	if f, ok := voc.extraField(key); ok { // a firm without the fact reads the type's zero value
		switch f.Type {
		case "int":
			return 0
		case "float":
			return 0.0
		case "bool":
			return false
		case "date":
			return time.Time{}
		}
		return ""
	}
	return nil
}

// amountLabel shows an amount formula with the firm's values.
func amountLabel(prog *Program, env *Env, amount *float64) string {
	all, _, _ := reads(prog.Tree.Node)
	voc := prog.voc
	s := voc.render(prog.Tree.Node, "")
	if len(all) > 0 {
		s += voc.valuesText(all, voc.valuesOf(env, all))
	}
	if amount != nil {
		s += fmt.Sprintf(" = %.2f元", *amount)
	}
	return s
}

// summarize says the decision in one Chinese sentence.
func summarize(ex *Explanation, p *Policy) string {
	switch {
	case !ex.InEffect:
		return fmt.Sprintf("不符合：政策有效期为 %s 至 %s，评估日期 %s 不在有效期内", p.Def.EffectiveFrom, windowEndText(p.Def), ex.AsOf)
	case !ex.FirmActive:
		return "不符合：企业登记状态不是存续（在业），不参与匹配"
	case ex.Error != "":
		return "无法判断：规则对该企业求值出错（" + ex.Error + "），已记录，请核对数据或规则"
	case ex.Excluded != nil:
		return "不符合：" + ex.Excluded.Reason
	case ex.Eligible:
		if ex.Amount != nil {
			return fmt.Sprintf("符合，金额 %.2f 元", *ex.Amount)
		}
		return "符合"
	}
	var failed []string
	collectFailed(ex.Conditions, &failed)
	if len(failed) == 0 {
		return "不符合"
	}
	return "不符合：" + strings.Join(failed, "；")
}

func windowEndText(d *Definition) string {
	if d.EffectiveTo == nil {
		return "长期"
	}
	return d.EffectiveTo.String()
}

// collectFailed lists the labels of failed conditions, descending into failed groups.
func collectFailed(cs []Condition, out *[]string) {
	for _, c := range cs {
		if c.Holds == nil || *c.Holds {
			continue
		}
		if c.Op == "and" {
			collectFailed(c.Children, out)
			continue
		}
		*out = append(*out, c.Label)
	}
}

// NearMiss is a firm that fails a policy by exactly one condition.
type NearMiss struct {
	CreditCode string    `json:"credit_code"`
	Name       string    `json:"name"`
	RegionCode string    `json:"region_code"`
	ParkID     string    `json:"park_id"`
	Failed     Condition `json:"failed"` // the condition that would have to hold
}

// NearMisses lists the firms (in business, policy in effect on their as-of date) for which the
// rule fails by exactly one condition: where one condition flipping would make it hold (in an "or",
// the closest alternative counts). Firms come back in credit-code order; total counts all of them,
// limit caps the list (0: no cap).
func NearMisses(p *Policy, firms []Env, limit int) (total int, out []NearMiss, err error) {
	root, err := p.Eligibility.conditions()
	if err != nil {
		return 0, nil, err
	}
	for i := range firms {
		env := &firms[i]
		if env.Status != fields.StatusActive || !p.Def.ActiveOn(env.AsOf) {
			continue
		}
		c := decide(root, env)
		if c.Holds == nil || *c.Holds {
			continue
		}
		dist, failed := distance(c)
		if dist != 1 {
			continue
		}
		total++
		if limit == 0 || len(out) < limit {
			out = append(out, NearMiss{CreditCode: env.CreditCode, Name: env.Name, RegionCode: env.RegionCode,
				ParkID: env.ParkID, Failed: *failed})
		}
	}
	slices.SortFunc(out, func(a, b NearMiss) int { return strings.Compare(a.CreditCode, b.CreditCode) })
	return total, out, nil
}

// distance is how many conditions must flip for a decided tree to hold (-1: undecided parts), and
// the failing condition when it is one.
func distance(c Condition) (int, *Condition) {
	if c.Holds == nil {
		return -1, nil
	}
	if *c.Holds {
		return 0, nil
	}
	switch c.Op {
	case "and":
		sum := 0
		var one *Condition
		for i := range c.Children {
			d, f := distance(c.Children[i])
			if d < 0 {
				return -1, nil
			}
			if d > 0 {
				sum += d
				one = f
			}
		}
		if sum != 1 {
			one = nil
		}
		return sum, one
	case "or":
		best, bestF := -1, (*Condition)(nil)
		for i := range c.Children {
			d, f := distance(c.Children[i])
			if d > 0 && (best < 0 || d < best) {
				best, bestF = d, f
			}
		}
		return best, bestF
	}
	return 1, &c
}
