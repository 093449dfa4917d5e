package rules

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/policypush/policypush/registry"
)

func demoPolicies(t testing.TB) []*Policy {
	t.Helper()
	out, err := DemoPolicies()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range out {
		p.Version = i + 1
	}
	Link(out)
	return out
}

func keys(refs []FieldRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Key)
	}
	return out
}

func TestCalculatorThreeOutcomes(t *testing.T) {
	policies := demoPolicies(t)
	asOf := mustDate(t, "2022-09-30")
	cases := []struct {
		name    string
		facts   map[string]any
		policy  string
		outcome string
		amount  float64 // 0: none
		missing []string
	}{
		{"an or with one true member is decided", map[string]any{"region_code": "320571", "insured_employees": 40, "tax_credit_rating": "A"},
			"liugong-peixun-2022", CalcEligible, 20000, nil},
		{"nothing known", map[string]any{},
			"liugong-peixun-2022", CalcUndecided, 0, []string{"insured_employees", "tax_credit_rating", "region_code", "industry_code"}},
		{"an and with one false member is decided", map[string]any{"insured_employees": 0},
			"liugong-peixun-2022", CalcNotEligible, 0, nil},
		{"null is unknown", map[string]any{"insured_employees": nil, "tax_credit_rating": "A", "region_code": "320571"},
			"liugong-peixun-2022", CalcUndecided, 0, []string{"insured_employees"}},
		{"eligible but the amount needs a field", map[string]any{"taxpayer_type": "small_scale"},
			"liushui-liangfei-2022", CalcEligible, 0, nil},
		{"the or's third member needs its fields", map[string]any{"taxpayer_type": "general", "employees": 10},
			"liushui-liangfei-2022", CalcUndecided, 0, []string{"entity_type", "taxable_income", "total_assets", "industry_code"}},
		{"an individual business is eligible as such", map[string]any{"taxpayer_type": "general", "entity_type": "individual"},
			"liushui-liangfei-2022", CalcEligible, 0, nil},
		{"a restaurant with 150 staff and 1500万 is small (300号)", map[string]any{"rents_state_property": true, "industry_code": "H6210",
			"employees": 150, "annual_revenue": 1.5e7, "entity_type": "enterprise"}, "fangzu-jianmian-2022", CalcEligible, 0, nil},
		{"a retailer with 60 staff and 600万 is medium (300号)", map[string]any{"rents_state_property": true, "industry_code": "F5211",
			"employees": 60, "annual_revenue": 6e6, "entity_type": "enterprise"}, "fangzu-jianmian-2022", CalcNotEligible, 0, nil},
		{"a large wholesaler in September (第21号)", map[string]any{"industry_code": "F5123", "vat_sales": 5e8, "tax_credit_rating": "A",
			"taxpayer_type": "general", "refund_fraud_36m": false, "tax_violations_36m": 0, "immediate_refund_since_2019": false},
			"liudi-tuishui-2022", CalcEligible, 0, nil},
		{"amount known", map[string]any{"graduates_hired": 3, "insured_employees": 20, "tax_credit_rating": "B"},
			"kuogang-buzhu-2022", CalcEligible, 4500, nil},
		{"ternary needs its branch's fields", map[string]any{"unemployment_insurance_paid": 1000, "insured_employees": 20, "tax_credit_rating": "B"},
			"wengang-fanhuan-2022", CalcUndecided, 0, []string{"layoff_rate", "entity_type", "industry_code", "employees", "annual_revenue", "total_assets"}},
		{"the size needs the row's indicators", map[string]any{"unemployment_insurance_paid": 1000, "insured_employees": 20,
			"tax_credit_rating": "B", "layoff_rate": 0.1, "entity_type": "enterprise", "industry_code": "C3911"},
			"wengang-fanhuan-2022", CalcUndecided, 0, []string{"employees", "annual_revenue"}},
		{"an individual business is eligible; the amount formula reads the size", map[string]any{"unemployment_insurance_paid": 1000, "insured_employees": 20,
			"tax_credit_rating": "B", "layoff_rate": 0.1, "entity_type": "individual"}, "wengang-fanhuan-2022", CalcEligible, 0,
			[]string{"industry_code", "employees", "annual_revenue", "total_assets"}},
		{"a medium manufacturer gets 90%", map[string]any{"unemployment_insurance_paid": 165.85, "insured_employees": 20,
			"tax_credit_rating": "B", "layoff_rate": 0.1, "entity_type": "enterprise", "industry_code": "C3911", "employees": 500,
			"annual_revenue": 2e8}, "wengang-fanhuan-2022", CalcEligible, 149.27, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Calculate(policies, c.facts, asOf)
			if err != nil {
				t.Fatal(err)
			}
			var got *CalcResult
			for i := range rep.Results {
				if rep.Results[i].PolicyID == c.policy {
					got = &rep.Results[i]
				}
			}
			if got == nil {
				t.Fatalf("%s: %s not in the results", c.name, c.policy)
			}
			amount := 0.0
			if got.Amount != nil {
				amount = *got.Amount
			}
			if got.Outcome != c.outcome || amount != c.amount || !reflect.DeepEqual(keys(got.Missing), c.missing) {
				t.Errorf("%s: %s %v missing %v (%s); want %s %v missing %v", c.name, got.Outcome, amount, keys(got.Missing),
					got.Summary, c.outcome, c.amount, c.missing)
			}
		})
	}
}

// size() needs only the indicators its industry row uses.
func TestCalculatorSizeNeeds(t *testing.T) {
	p := policyOf(t, `size() in ["small", "micro"]`, "", nil)
	asOf := mustDate(t, "2022-06-30")
	cases := []struct {
		facts   map[string]any
		outcome string
		missing []string
	}{
		{map[string]any{"industry_code": "H6210", "employees": 12, "annual_revenue": 3e6}, CalcEligible, nil},
		{map[string]any{"industry_code": "H6210", "employees": 12}, CalcUndecided, []string{"annual_revenue"}},
		{map[string]any{"industry_code": "M7320", "employees": 300}, CalcNotEligible, nil},
		{map[string]any{"employees": 12}, CalcUndecided, []string{"industry_code", "annual_revenue", "total_assets"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.facts), func(t *testing.T) {
			rep, err := Calculate([]*Policy{p}, c.facts, asOf)
			if err != nil {
				t.Fatal(err)
			}
			r := rep.Results[0]
			if r.Outcome != c.outcome || !reflect.DeepEqual(keys(r.Missing), c.missing) {
				t.Errorf("%v: %s missing %v, want %s %v", c.facts, r.Outcome, keys(r.Missing), c.outcome, c.missing)
			}
		})
	}
}

func TestCalculatorRejectsUnknownFields(t *testing.T) {
	_, err := Calculate(demoPolicies(t), map[string]any{"employes": 3}, mustDate(t, "2022-06-30"))
	if err == nil || !strings.Contains(err.Error(), "unknown field employes") {
		t.Fatal(err)
	}
}

// The calculator agrees with evaluation whenever every fact is known.
func TestCalculatorAgreesWhenAllKnown(t *testing.T) {
	policies := demoPolicies(t)
	asOf := mustDate(t, "2022-09-30")
	for _, e := range registry.Synth(300, 5) {
		facts := map[string]any{}
		env := envOf(&e, asOf)
		for _, f := range StandardVocabulary().Fields() {
			if f.Key != "as_of" {
				facts[f.Key] = StandardVocabulary().fieldValue(&env, f.Key)
			}
		}
		rep, err := Calculate(policies, facts, asOf)
		if err != nil {
			t.Fatal(err)
		}
		sorted := slices.Clone(policies)
		slices.SortFunc(sorted, func(a, b *Policy) int { return strings.Compare(a.Def.ID, b.Def.ID) })
		for i, p := range sorted {
			r := rep.Results[i]
			out, err := p.Evaluate(&env)
			if err != nil {
				t.Fatal(err)
			}
			if (r.Outcome == CalcEligible) != out.Eligible || r.Outcome == CalcUndecided || !equalAmount(r.Amount, out.Amount) {
				t.Fatalf("%s / %s: calculator %s %v, evaluation %v %v", e.CreditCode, p.Def.ID, r.Outcome, r.Amount, out.Eligible, out.Amount)
			}
		}
	}
}

func equalAmount(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}
