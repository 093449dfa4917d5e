package rules

import (
	"fmt"
	"sort"
)

// Combination rules. Benefits are stackable (可叠加) unless a policy says otherwise:
//
//   - excludes: [other-id] — 不得重复享受. A firm whose rules hold for both gets one of them, the
//     same one every time: the policy with the higher priority, then the earlier effective_from,
//     then the smaller id (beats). The relation is symmetric: declaring it on either side is enough.
//     Chains resolve greedily in that order: a policy that lost to a third one does not exclude.
//   - once_per: firm — 每个单位一次. A firm that received an earlier version of the policy and no
//     longer holds an active match for it is not matched again by a later version (a firm still
//     matched moves to the new version silently, as any firm does).
//   - once_per: person — 同一人员一次. The registry has no person-level data, so matching cannot
//     check it; the constraint is shown to firms and the paying office checks it on confirmation.

// Exclusion says which combination rule took an otherwise eligible firm away from a policy.
type Exclusion struct {
	Rule     string `json:"rule"`                // excludes or once_per
	PolicyID string `json:"policy_id,omitempty"` // excludes: the policy the firm gets instead
	Title    string `json:"title,omitempty"`
	Version  int    `json:"version,omitempty"` // the winning policy's version, or once_per: the version received
	Reason   string `json:"reason"`            // in Chinese, for the explanation
}

// Combination rule names in Exclusion.Rule.
const (
	RuleExcludes = "excludes"
	RuleOncePer  = "once_per"
)

// beats reports whether a firm eligible for both a and b gets a: the deterministic tie-break of
// excludes.
func beats(a, b *Policy) bool {
	if a.Def.Priority != b.Def.Priority {
		return a.Def.Priority > b.Def.Priority
	}
	if !a.Def.EffectiveFrom.Equal(b.Def.EffectiveFrom.Time) {
		return a.Def.EffectiveFrom.Before(b.Def.EffectiveFrom.Time)
	}
	return a.Def.ID < b.Def.ID
}

// Link connects the exclusive policies of a set evaluated together (LoadPublished does it for the
// published catalog). A policy named in excludes but absent from the set excludes nothing.
func Link(policies []*Policy) {
	byID := make(map[string]*Policy, len(policies))
	for _, p := range policies {
		byID[p.Def.ID] = p
		p.partners = nil
	}
	add := func(a, b *Policy) {
		for _, x := range a.partners {
			if x == b {
				return
			}
		}
		a.partners = append(a.partners, b)
	}
	for _, p := range policies {
		for _, id := range p.Def.Excludes {
			if q, ok := byID[id]; ok && q != p {
				add(p, q)
				add(q, p)
			}
		}
	}
	for _, p := range policies {
		sort.Slice(p.partners, func(i, j int) bool { return beats(p.partners[i], p.partners[j]) })
	}
}

// Partners lists the policies this one cannot be combined with, best first.
func (p *Policy) Partners() []*Policy { return p.partners }

// SetReceived records, for a once_per: firm policy, the firms that received an earlier version
// (credit code → the version they received) and hold no active match now; package policies reads
// them from the matches table. Exclusion then keeps those firms out (每个单位一次).
func (p *Policy) SetReceived(received map[string]int) { p.received = received }

// HasCombination reports whether a combination rule can take an eligible firm away from this
// policy: a fast evaluation path must then ask Exclusion (or Evaluate) for each eligible firm.
func (p *Policy) HasCombination() bool {
	if len(p.received) > 0 {
		return true
	}
	for _, q := range p.partners {
		if beats(q, p) {
			return true
		}
	}
	return false
}

// Exclusion returns the combination rule that takes a firm whose rule holds away from this policy,
// or nil. Fast evaluation paths call it for the firms they find eligible.
func (p *Policy) Exclusion(env *Env) *Exclusion {
	if len(p.partners) == 0 && len(p.received) == 0 {
		return nil
	}
	return p.exclusion(env, map[*Policy]bool{})
}

func (p *Policy) exclusion(env *Env, granted map[*Policy]bool) *Exclusion {
	if p.Def.OncePer == OncePerFirm {
		if v, ok := p.received[env.CreditCode]; ok {
			return &Exclusion{Rule: RuleOncePer, Version: v,
				Reason: fmt.Sprintf("每个单位限享受一次：该企业已按第 %d 版享受过本政策", v)}
		}
	}
	for _, q := range p.partners {
		if !beats(q, p) {
			break // partners are sorted best first
		}
		if q.grants(env, granted) {
			return &Exclusion{Rule: RuleExcludes, PolicyID: q.Def.ID, Title: q.Def.Title, Version: q.Version,
				Reason: fmt.Sprintf("不得与「%s」重复享受，按优先顺序享受「%s」", q.Def.Title, q.Def.Title)}
		}
	}
	return nil
}

// grants reports whether the firm gets q: in effect, its rule holds and no better policy excludes
// it. Recursion only goes to policies that beat q, so it ends; granted memoises per firm.
func (q *Policy) grants(env *Env, granted map[*Policy]bool) bool {
	if v, ok := granted[q]; ok {
		return v
	}
	ok := q.Def.ActiveOn(env.AsOf)
	if ok {
		out, err := q.EvaluateRule(env)
		ok = err == nil && out.Eligible
	}
	if ok {
		ok = q.exclusion(env, granted) == nil
	}
	granted[q] = ok
	return ok
}
