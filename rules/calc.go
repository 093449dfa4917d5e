package rules

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// The policy calculator (政策计算器): a firm — or anyone on its behalf — states the facts it knows
// and learns, for every policy in effect, whether it qualifies, does not, or cannot be told yet for
// lack of which data. Unknown facts are not guessed: a condition that reads one is undecided, and
// the rule is decided by three-valued logic over its conditions (an "or" with one true member
// holds whatever the others are; an "and" with one false member fails). size() needs only the
// indicators its industry row uses, so a catering firm need not state its assets.

// Calculator outcomes.
const (
	CalcEligible    = "eligible"
	CalcNotEligible = "not_eligible"
	CalcUndecided   = "undecided"
)

// FieldRef names a field for people.
type FieldRef struct {
	Key   string `json:"key"`
	Label string `json:"label"`
}

// CalcResult is the calculator's answer for one policy.
type CalcResult struct {
	PolicyID   string      `json:"policy_id"`
	Version    int         `json:"version"`
	Title      string      `json:"title"`
	Outcome    string      `json:"outcome"` // eligible, not_eligible or undecided
	Amount     *float64    `json:"amount"`  // eligible and the amount's inputs known
	Missing    []FieldRef  `json:"missing"` // what to state to decide the outcome (or the amount)
	Summary    string      `json:"summary"`
	Conditions []Condition `json:"conditions"`
	Excluded   *Exclusion  `json:"excluded_by,omitempty"`
}

// CalcReport is the calculator's answer for a set of facts.
type CalcReport struct {
	AsOf    string       `json:"as_of"`
	Known   []string     `json:"known"` // the fields the answer used
	Results []CalcResult `json:"results"`
}

// Calculate evaluates the policies in effect on asOf for a partial set of facts (catalog key →
// value, as JSON gives them; absent or null means unknown). Policies are expected linked (Link) so
// that combination rules apply: a firm that qualifies for two exclusive policies is told which one
// it gets. Facts are read with the vocabulary of the options, or without options the one the
// policies were compiled against.
func Calculate(policies []*Policy, facts map[string]any, asOf time.Time, opts ...Option) (CalcReport, error) {
	voc := VocabularyOf(opts...)
	if len(opts) == 0 && len(policies) > 0 {
		voc = policies[0].Vocabulary()
	}
	// A firm checking itself is in business: status is known (active) unless stated.
	known := map[string]bool{asOfField.Key: true, "status": true}
	given := map[string]any{}
	for k, v := range facts {
		if v == nil {
			continue
		}
		if !voc.isFactKey(k) {
			return CalcReport{}, fmt.Errorf("unknown field %s (see `policypush fields`)", k)
		}
		known[k], given[k] = true, v
	}
	env, err := EnvFromFacts(given, asOf, WithVocabulary(voc))
	if err != nil {
		return CalcReport{}, err
	}
	rep := CalcReport{AsOf: asOf.Format(dateLayout)}
	for k := range known {
		rep.Known = append(rep.Known, k)
	}
	sort.Strings(rep.Known)
	active := make([]*Policy, 0, len(policies))
	for _, p := range policies {
		if p.Def.ActiveOn(asOf) {
			active = append(active, p)
		}
	}
	// Best first, so a policy's exclusive partners that beat it are decided before it.
	sort.SliceStable(active, func(i, j int) bool { return beats(active[i], active[j]) })
	decided := map[*Policy]*CalcResult{}
	for _, p := range active {
		r, err := calcOne(p, &env, known)
		if err != nil {
			return rep, fmt.Errorf("policy %s: %w", p.Def.ID, err)
		}
		applyCombination(p, &r, decided)
		r.Summary = calcSummary(&r)
		decided[p] = &r
		rep.Results = append(rep.Results, r)
	}
	sort.Slice(rep.Results, func(i, j int) bool { return rep.Results[i].PolicyID < rep.Results[j].PolicyID })
	return rep, nil
}

func calcOne(p *Policy, env *Env, known map[string]bool) (CalcResult, error) {
	r := CalcResult{PolicyID: p.Def.ID, Version: p.Version, Title: p.Def.Title}
	root, err := p.Eligibility.conditions()
	if err != nil {
		return r, err
	}
	c := decideKnown(root, env, known)
	r.Conditions = topConditions(c)
	switch {
	case c.Holds == nil:
		r.Outcome = CalcUndecided
		r.Missing = p.Vocabulary().fieldRefs(c.Missing)
	case !*c.Holds:
		r.Outcome = CalcNotEligible
	default:
		r.Outcome = CalcEligible
		if p.Amount == nil {
			break
		}
		all, direct, sizes := reads(p.Amount.Tree.Node)
		if missing := unknownNeeds(all, direct, sizes, env, known); len(missing) > 0 {
			r.Missing = p.Vocabulary().fieldRefs(missing)
			break
		}
		out, err := p.EvaluateRule(env)
		if err == nil && out.Eligible {
			r.Amount = out.Amount
		}
	}
	return r, nil
}

// applyCombination lets an exclusive partner that beats p take the firm (decided) or leave the
// outcome open (undecided partner).
func applyCombination(p *Policy, r *CalcResult, done map[*Policy]*CalcResult) {
	if r.Outcome == CalcNotEligible {
		return
	}
	for _, q := range p.partners {
		if !beats(q, p) {
			break
		}
		qr, ok := done[q]
		if !ok {
			continue
		}
		switch qr.Outcome {
		case CalcEligible:
			r.Outcome, r.Amount = CalcNotEligible, nil
			r.Excluded = &Exclusion{Rule: RuleExcludes, PolicyID: q.Def.ID, Title: q.Def.Title, Version: q.Version,
				Reason: fmt.Sprintf("不得与「%s」重复享受，按优先顺序享受「%s」", q.Def.Title, q.Def.Title)}
			return
		case CalcUndecided:
			if r.Outcome == CalcEligible {
				r.Outcome, r.Amount = CalcUndecided, nil
			}
			for _, m := range qr.Missing {
				if !slices.Contains(r.Missing, m) {
					r.Missing = append(r.Missing, m)
				}
			}
		}
	}
}

// decideKnown is decide with unknown facts: a condition that needs an unknown field is undecided.
func decideKnown(n *condNode, env *Env, known map[string]bool) Condition {
	if n.op != "" {
		c := Condition{Text: n.text, Rule: n.rule, Op: n.op, Values: map[string]any{}}
		for _, ch := range n.children {
			c.Children = append(c.Children, decideKnown(ch, env, known))
		}
		c.Holds = combine(n.op, c.Children)
		if c.Holds == nil {
			for _, ch := range c.Children {
				if ch.Holds == nil {
					for _, m := range ch.Missing {
						if !slices.Contains(c.Missing, m) {
							c.Missing = append(c.Missing, m)
						}
					}
				}
			}
		}
		c.Label = groupLabel(c)
		for _, ch := range c.Children {
			for k, v := range ch.Values {
				c.Values[k] = v
			}
		}
		return c
	}
	missing := unknownNeeds(n.reads, n.direct, n.sizes, env, known)
	if len(missing) == 0 {
		return decide(n, env)
	}
	var have []string
	for _, k := range n.reads {
		if known[k] {
			have = append(have, k)
		}
	}
	labels := make([]string, len(missing))
	for i, k := range missing {
		labels[i] = n.voc.fieldLabel(k)
	}
	return Condition{Text: n.text, Rule: n.rule, Values: n.voc.valuesOf(env, have), Missing: missing,
		Label: n.rule + "：无法判断，缺少" + strings.Join(labels, "、")}
}

// unknownNeeds lists the unknown fields a node needs: what it reads directly, and for each size()
// call the indicators of the firm's industry row.
func unknownNeeds(all, direct []string, sizes []sizeCall, env *Env, known map[string]bool) []string {
	need := slices.Clone(direct)
	for _, s := range sizes {
		for _, k := range sizeNeeds(env.IndustryCode, known["industry_code"], s.variant, env.AsOf) {
			if !slices.Contains(need, k) {
				need = append(need, k)
			}
		}
	}
	var missing []string
	for _, k := range all { // keep the order of appearance
		if slices.Contains(need, k) && !known[k] {
			missing = append(missing, k)
		}
	}
	return missing
}

func (voc *Vocabulary) fieldRefs(keys []string) []FieldRef {
	out := make([]FieldRef, len(keys))
	for i, k := range keys {
		out[i] = FieldRef{Key: k, Label: voc.fieldLabel(k)}
	}
	return out
}

func calcSummary(r *CalcResult) string {
	labels := make([]string, len(r.Missing))
	for i, m := range r.Missing {
		labels[i] = m.Label
	}
	switch r.Outcome {
	case CalcEligible:
		if r.Amount != nil {
			return fmt.Sprintf("符合，预计金额 %.2f 元", *r.Amount)
		}
		if len(labels) > 0 {
			return "符合；金额需补充：" + strings.Join(labels, "、")
		}
		return "符合"
	case CalcUndecided:
		return "暂无法判断，请补充：" + strings.Join(labels, "、")
	}
	if r.Excluded != nil {
		return "不符合：" + r.Excluded.Reason
	}
	var failed []string
	collectFailed(r.Conditions, &failed)
	return "不符合：" + strings.Join(failed, "；")
}
