package rules

import (
	"fmt"
	"reflect"
	"time"
)

// Policy is a compiled policy version, ready to evaluate.
type Policy struct {
	Def         *Definition
	Version     int
	Eligibility *Program
	Amount      *Program // nil when the policy has no amount formula

	// Combination rules, set by Link and LoadPublished: the policies this one cannot be combined
	// with (in either direction), and for once_per: firm the firms that received an earlier version.
	partners []*Policy
	received map[string]int
}

// Outcome is the decision for one firm.
type Outcome struct {
	Eligible bool
	Amount   *float64
	// Excluded is set when the rule holds but a combination rule gives the firm another policy
	// (不得重复享受) or it already received this one (每个单位一次); Eligible is then false.
	Excluded *Exclusion
}

// Compile type-checks both expressions against the options' vocabulary (the standard one without).
// The error is a *CompileError naming the expression.
func (d *Definition) Compile(opts ...Option) (*Policy, error) {
	if err := d.Validate(opts...); err != nil {
		return nil, err
	}
	p := &Policy{Def: d}
	var err error
	if p.Eligibility, err = Compile("eligibility", d.Eligibility, d.Params, reflect.Bool, opts...); err != nil {
		return nil, err
	}
	if d.Amount != "" {
		if p.Amount, err = Compile("amount", d.Amount, d.Params, reflect.Float64, opts...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Vocabulary returns the vocabulary the policy was compiled against.
func (p *Policy) Vocabulary() *Vocabulary { return p.Eligibility.voc }

// Evaluate decides one firm: the rule, then the combination rules of a linked policy (see Link).
// The amount is computed only for eligible firms and rounded to the fen. This is the decision the
// matcher stores; a faster evaluation path must agree with it.
func (p *Policy) Evaluate(env *Env) (Outcome, error) {
	out, err := p.EvaluateRule(env)
	if err != nil || !out.Eligible {
		return out, err
	}
	if ex := p.Exclusion(env); ex != nil {
		return Outcome{Excluded: ex}, nil
	}
	return out, nil
}

// EvaluateRule decides one firm by the policy's own rule, without combination rules: what its test
// cases check, and what a fast path computes before calling Exclusion for the eligible firms.
func (p *Policy) EvaluateRule(env *Env) (Outcome, error) {
	out, err := p.Eligibility.Run(env)
	if err != nil {
		return Outcome{}, fmt.Errorf("eligibility: %w", err)
	}
	ok, _ := out.(bool)
	if !ok {
		return Outcome{}, nil
	}
	res := Outcome{Eligible: true}
	if p.Amount != nil {
		v, err := p.Amount.Run(env)
		if err != nil {
			return Outcome{}, fmt.Errorf("amount: %w", err)
		}
		f, _ := v.(float64)
		a, err := RoundAmount(f)
		if err != nil {
			return Outcome{}, fmt.Errorf("amount: %w", err)
		}
		res.Amount = &a
	}
	return res, nil
}

// TestResult is the outcome of one test case.
type TestResult struct {
	Name    string
	Passed  bool
	Problem string // what differed, when it failed
}

// RunTests evaluates the policy's own test cases as matching would on the case's date: a case sets
// as_of, or gets TestDate; on a date outside the effective window the policy matches nobody, so such
// a case must expect eligible: false.
func (p *Policy) RunTests() []TestResult {
	out := make([]TestResult, 0, len(p.Def.Tests))
	for i, tc := range p.Def.Tests {
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("tests[%d]", i)
		}
		asOf := p.Def.TestDate()
		if tc.AsOf != nil {
			asOf = tc.AsOf.Time
		}
		r := TestResult{Name: name}
		env, err := EnvFromFacts(tc.Firm, asOf, WithVocabulary(p.Vocabulary()))
		if err != nil {
			r.Problem = err.Error()
			out = append(out, r)
			continue
		}
		var got Outcome
		inWindow := p.Def.ActiveOn(asOf)
		if inWindow {
			got, err = p.EvaluateRule(&env)
		}
		switch {
		case err != nil:
			r.Problem = "evaluation error: " + err.Error()
		case got.Eligible != tc.Eligible && !inWindow:
			r.Problem = fmt.Sprintf("expected eligible=true, but as_of %s is outside the effective window %s", asOf.Format(dateLayout), p.Def.windowText())
		case got.Eligible != tc.Eligible:
			r.Problem = fmt.Sprintf("expected eligible=%t, got %t (as_of %s)", tc.Eligible, got.Eligible, asOf.Format(dateLayout))
		case tc.Amount != nil && got.Amount == nil:
			r.Problem = fmt.Sprintf("expected amount %.2f, got none", *tc.Amount)
		case tc.Amount != nil && RoundFen(*tc.Amount) != *got.Amount:
			r.Problem = fmt.Sprintf("expected amount %.2f, got %.2f", *tc.Amount, *got.Amount)
		default:
			r.Passed = true
		}
		out = append(out, r)
	}
	return out
}

// TestDate is the date a test case without as_of is evaluated on: a day inside the effective
// window — its first day, or for a policy without a start its last day, or without either the first
// day of 2022 (any fixed day would do; a fixed one keeps the tests repeatable).
func (d *Definition) TestDate() time.Time {
	switch {
	case !d.EffectiveFrom.Equal(NoStart.Time) && !d.EffectiveFrom.IsZero():
		return d.EffectiveFrom.Time
	case d.EffectiveTo != nil:
		return d.EffectiveTo.Time
	}
	return time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
}

// windowText shows the effective window, e.g. 2022-01-01 至 2022-12-31.
func (d *Definition) windowText() string {
	from, to := "不限", "不限"
	if !d.EffectiveFrom.Equal(NoStart.Time) {
		from = d.EffectiveFrom.String()
	}
	if d.EffectiveTo != nil {
		to = d.EffectiveTo.String()
	}
	return from + " 至 " + to
}

// Day truncates t to its calendar day in loc and returns it as UTC midnight, the form every
// date in rules uses.
func Day(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}
