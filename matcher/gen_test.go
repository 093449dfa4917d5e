package matcher

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// ruleGen writes random rules over the whole field catalog, aimed at the corners of expr's
// semantics: int against float, integer division and %, `in` on mixed arrays, string ordering, nil,
// dates and durations, short-circuit around conditions that fail at run time.
type ruleGen struct {
	r      *rand.Rand
	params map[string]any
}

var (
	intFields   = []string{"employees", "insured_employees", "graduates_hired", "tax_violations_36m"}
	floatFields = []string{"annual_revenue", "total_assets", "vat_sales", "layoff_rate", "unemployment_insurance_paid"}
	textFields  = []string{"region_code", "industry_code", "status", "tax_credit_rating", "taxpayer_type", "specialized_level", "park_id"}
	boolFields  = []string{"is_high_tech", "refund_fraud_36m", "immediate_refund_since_2019"}
	textValues  = []string{"", "A", "B", "D", "M", "3205", "320571", "32", "C", "C39", "H62", "62", "general", "small_scale",
		"none", "national", "SIP", "NJ-JB", "active", "c3911", "Ｃ", "320211"}
)

func (g *ruleGen) pick(l []string) string { return l[g.r.IntN(len(l))] }

func (g *ruleGen) param(v any) string {
	name := fmt.Sprintf("x%d", len(g.params))
	g.params[name] = v
	return "params." + name
}

func (g *ruleGen) intLit() string {
	switch g.r.IntN(6) {
	case 0:
		return "0"
	case 1:
		return g.param([]int{0, 1, -1, 10, 300, math.MaxInt32}[g.r.IntN(6)])
	case 2:
		return "9223372036854775807"
	default:
		return fmt.Sprint(g.r.IntN(400))
	}
}

func (g *ruleGen) floatLit() string {
	switch g.r.IntN(5) {
	case 0:
		return g.param([]float64{0, 0.5, -0.0, 1e7, 2e7, 0.055, math.SmallestNonzeroFloat64}[g.r.IntN(7)])
	case 1:
		return "0.0"
	default:
		return fmt.Sprintf("%.3f", g.r.Float64()*1e6)
	}
}

// num returns a numeric expression.
func (g *ruleGen) num(depth int) string {
	if depth <= 0 || g.r.IntN(3) == 0 {
		switch g.r.IntN(7) {
		case 0, 1:
			return g.pick(intFields)
		case 2, 3:
			return g.pick(floatFields)
		case 4:
			return g.intLit()
		case 5:
			return g.floatLit()
		default:
			return []string{"len(" + g.pick(textFields) + ")", "years_since(registered_at)", "months_since(registered_at)",
				"(" + g.pick(boolFields) + " ? 1 : 0)", `(tax_credit_rating == "A" ? 0.9 : 0.5)`, `(status == "active" ? 2 : 1.5)`}[g.r.IntN(6)]
		}
	}
	a, b := g.num(depth-1), g.num(depth-1)
	switch g.r.IntN(14) {
	case 0, 1:
		return "(" + a + " + " + b + ")"
	case 2:
		return "(" + a + " - " + b + ")"
	case 3, 4:
		return "(" + a + " * " + b + ")"
	case 5:
		return "(" + a + " / " + b + ")"
	case 6:
		return "(" + g.pick(intFields) + " % " + []string{"7", "graduates_hired", "-3", "tax_violations_36m"}[g.r.IntN(4)] + ")"
	case 7:
		return "(-" + a + ")"
	case 8:
		return "(" + g.boolean(depth-1) + " ? " + a + " : " + b + ")"
	case 9:
		return []string{"abs", "float", "round", "floor", "ceil"}[g.r.IntN(5)] + "(" + a + ")"
	case 10:
		return []string{"min", "max"}[g.r.IntN(2)] + "(" + a + ", " + b + ")"
	case 11:
		return "(" + a + " ** " + []string{"2", "0.5", "-1"}[g.r.IntN(3)] + ")"
	case 12:
		return "int(" + []string{"region_code", "industry_code", g.pick(floatFields), "park_id"}[g.r.IntN(4)] + ")"
	default:
		return a
	}
}

func (g *ruleGen) text() string {
	if g.r.IntN(4) == 0 {
		return []string{"upper", "lower", "trim"}[g.r.IntN(3)] + "(" + g.pick(textFields) + ")"
	}
	return g.pick(textFields)
}

func (g *ruleGen) quoted() string {
	if g.r.IntN(3) == 0 {
		return g.param(g.pick(textValues))
	}
	return fmt.Sprintf("%q", g.pick(textValues))
}

// boolean returns a condition.
func (g *ruleGen) boolean(depth int) string {
	if depth <= 0 || g.r.IntN(3) == 0 {
		ops := []string{"<", "<=", ">", ">=", "==", "!="}
		switch g.r.IntN(16) {
		case 0, 1, 2, 3:
			return g.num(depth-1) + " " + ops[g.r.IntN(6)] + " " + g.num(depth-1)
		case 4:
			return g.text() + " " + ops[g.r.IntN(6)] + " " + g.quoted()
		case 5:
			list := []any{g.pick(textValues), g.pick(textValues)}
			if g.r.IntN(3) == 0 {
				list = append(list, 1, 2.5)
			}
			return g.text() + " in " + g.param(list)
		case 6:
			return g.text() + ` in ["A", "B", "` + g.pick(textValues) + `"]`
		case 7:
			return "in_region(" + g.quoted() + ", " + g.param([]any{g.pick(textValues), "3201"}) + ")"
		case 8:
			return "in_industry(" + g.param([]any{g.pick(textValues), "G5", 52}) + ")"
		case 9:
			return []string{"hasPrefix", "hasSuffix"}[g.r.IntN(2)] + "(" + g.text() + ", " + g.quoted() + ")"
		case 10:
			return g.pick(boolFields)
		case 11:
			return []string{"registered_at < date(\"2015-10-01\")", "registered_at == date(\"0001-01-01\")", "as_of - registered_at > duration(\"87600h\")",
				"years_since(registered_at) >= 3", "registered_at >= as_of", "registered_at != nil", `date("2022-09-30") == as_of`}[g.r.IntN(7)]
		case 12:
			return g.pick(textFields) + []string{" == nil", " != nil"}[g.r.IntN(2)]
		case 13:
			return []string{"true", "false"}[g.r.IntN(2)]
		case 14:
			return g.pick(intFields) + " in " + g.param([]any{0, 1, 5.0, "5"})
		default:
			return g.text() + " contains " + g.quoted()
		}
	}
	a, b := g.boolean(depth-1), g.boolean(depth-1)
	switch g.r.IntN(7) {
	case 0, 1, 2:
		return "(" + a + " && " + b + ")"
	case 3, 4:
		return "(" + a + " || " + b + ")"
	case 5:
		return "!(" + a + ")"
	default:
		return "(" + g.boolean(depth-1) + " ? " + a + " : " + b + ")"
	}
}

// definition draws a compiling policy definition.
func (g *ruleGen) definition(id int) *rules.Definition {
	for {
		g.params = map[string]any{}
		d := &rules.Definition{ID: fmt.Sprintf("gen-%d", id), Title: "generated", EffectiveFrom: rules.Date{Time: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)},
			Channels: []string{"wechat"}, Eligibility: g.boolean(3), Params: g.params}
		if g.r.IntN(2) == 0 {
			d.Amount = g.num(3)
		}
		if _, err := d.Compile(); err == nil {
			return d
		}
	}
}

// oddFirms are synthetic firms with the values real data sometimes has: zeros, extremes, NaN and
// infinities (which the database would not hold but the engine must still agree on), empty and
// lowercase codes, no founding date, a founding date in year 1.
func oddFirms(n int, seed uint64) []store.Enterprise {
	firms := registry.Synth(n, int64(seed%1000))
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range firms {
		e := &firms[i]
		if r.IntN(4) != 0 {
			continue
		}
		switch r.IntN(12) {
		case 0:
			e.Employees, e.InsuredEmployees, e.GraduatesHired = 0, 0, 0
		case 1:
			e.Employees = math.MaxInt64
		case 2:
			e.AnnualRevenue = []float64{math.NaN(), math.Inf(1), math.Inf(-1), -0.0, 1e308}[r.IntN(5)]
		case 3:
			e.IndustryCode = strings.ToLower(e.IndustryCode)
		case 4:
			e.RegionCode, e.IndustryCode, e.TaxCreditRating = "", "", ""
		case 5:
			e.RegisteredAt = nil
		case 6:
			d := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
			e.RegisteredAt = &d
		case 7:
			e.LayoffRate = -0.5
		case 8:
			e.TaxViolations36m = -1
		case 9:
			e.GraduatesHired = 0
		case 10:
			e.RegionCode = "320571"
			e.ParkID = "SIP"
		default:
			e.Status = store.StatusRevoked
		}
	}
	return firms
}

// decision is what a policy decided for a firm.
type decision struct {
	eligible bool
	amount   string
	err      string
}

type decKey struct{ policy, firm string }

func describe(eligible bool, amount *float64, err error) decision {
	d := decision{eligible: eligible}
	if amount != nil {
		d.amount = fmt.Sprintf("%b", *amount)
	}
	if err != nil {
		d.err = err.Error()
	}
	return d
}

// plainDecisions evaluates with expr alone.
func plainDecisions(firms []store.Enterprise, compiled []*rules.Policy, asOf time.Time) map[decKey]decision {
	out := map[decKey]decision{}
	for i := range firms {
		if firms[i].Status != store.StatusActive {
			continue
		}
		env := policies.EnvOf(&firms[i], asOf)
		for _, p := range compiled {
			res, err := p.Evaluate(&env)
			if err != nil || res.Eligible {
				out[decKey{p.Def.ID, firms[i].CreditCode}] = describe(err == nil, res.Amount, err)
			}
		}
	}
	return out
}

// engineDecisions evaluates with the engine, over the whole snapshot and row by row.
func engineDecisions(t testing.TB, firms []store.Enterprise, policies []*rules.Policy, asOf time.Time) (all, byRow map[decKey]decision) {
	snap, err := NewSnapshot(firms, nil)
	if err != nil {
		t.Fatal(err)
	}
	pl := newPlanner(snap, asOf)
	plans := pl.prepared(policies, 2)
	decs, err := evaluateAll(context.Background(), snap, plans, 2)
	if err != nil {
		t.Fatal(err)
	}
	collect := func(out map[decKey]decision, decs []decisions) {
		for i, p := range policies {
			for k, oc := range decs[i].outcomes(snap) {
				_ = k
				out[decKey{p.Def.ID, oc.CreditCode}] = describe(true, oc.Amount, nil)
			}
			for _, e := range decs[i].evalErrors(snap) {
				out[decKey{p.Def.ID, e.CreditCode}] = describe(false, nil, e.Err)
			}
		}
	}
	all, byRow = map[decKey]decision{}, map[decKey]decision{}
	collect(all, decs)
	f := &frame{}
	idx := pl.index(plans)
	for row := range snap.n {
		decs := make([]decisions, len(plans))
		for _, pd := range evaluateRow(snap, idx, row, f) {
			decs[pd.plan] = pd.d
		}
		collect(byRow, decs)
	}
	return all, byRow
}

// compareDecisions reports the first differences between two decision sets.
func compareDecisions(t testing.TB, what string, want, got map[decKey]decision, policies map[string]*rules.Definition) {
	t.Helper()
	var bad []string
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			bad = append(bad, fmt.Sprintf("%s %s: expr %+v, engine %+v (found %t)", k.policy, k.firm, w, g, ok))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s %s: expr not eligible, engine %+v", k.policy, k.firm, g))
		}
	}
	if len(bad) > 0 {
		d := policies[strings.Fields(bad[0])[0]]
		t.Fatalf("%s: %d differences, e.g.\n%s\nrule: %s\namount: %s\nparams: %v", what, len(bad), strings.Join(bad[:min(5, len(bad))], "\n"),
			d.Eligibility, d.Amount, d.Params)
	}
}

func compile(t testing.TB, defs []*rules.Definition) ([]*rules.Policy, map[string]*rules.Definition) {
	t.Helper()
	byID := map[string]*rules.Definition{}
	out := make([]*rules.Policy, len(defs))
	for i, d := range defs {
		p, err := d.Compile()
		if err != nil {
			t.Fatalf("%s: %v", d.ID, err)
		}
		p.Version = 1
		out[i] = p
		byID[d.ID] = d
	}
	return out, byID
}
