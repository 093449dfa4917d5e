package matcher

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
)

var testAsOf = time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)

// The engine gives plain expr's answer — eligibility, amount to the bit, the error text — for
// every firm and every generated rule, over the whole snapshot and firm by firm.
func TestEngineMatchesExprOnGeneratedRules(t *testing.T) {
	g := &ruleGen{r: rand.New(rand.NewPCG(42, 1))}
	defs := make([]*rules.Definition, 400)
	for i := range defs {
		defs[i] = g.definition(i)
	}
	policies, byID := compile(t, defs)
	firms := oddFirms(1500, 9)
	want := plainDecisions(firms, policies, testAsOf)
	all, byRow := engineDecisions(t, firms, policies, testAsOf)
	compareDecisions(t, "whole snapshot", want, all, byID)
	compareDecisions(t, "row by row", want, byRow, byID)
}

// The benchmark's catalog and the demo's real 2022 policies, on a synthetic province.
func TestEngineMatchesExprOnCatalogs(t *testing.T) {
	demo := fixture.DemoDefinitions(t)
	policies, byID := compile(t, append(SynthCatalog(300, 5), demo...))
	firms := registry.Synth(12000, 5)
	want := plainDecisions(firms, policies, testAsOf)
	all, _ := engineDecisions(t, firms, policies, testAsOf)
	compareDecisions(t, "catalog", want, all, byID)
	if len(want) < 20000 {
		t.Fatalf("only %d decisions: the catalog no longer matches a realistic share of firms", len(want))
	}
}

// FuzzEngineMatchesExpr: for any rule that compiles (and any amount formula), on firms with odd
// values, the engine decides every firm as plain expr does. The seeds run in plain `go test`.
func FuzzEngineMatchesExpr(f *testing.F) {
	seeds := []struct{ elig, amount string }{
		{`employees > 10 && in_region("3205")`, ``},
		{`employees / 3 > 2.5 || insured_employees % 7 == 1`, `employees / 4`},
		{`annual_revenue >= 20000000 == (employees > 5)`, `annual_revenue * 0.0001`},
		{`employees % graduates_hired == 0 || tax_credit_rating == "A"`, ``},
		{`tax_credit_rating == "A" || employees % graduates_hired == 0`, ``},
		{`false && employees % graduates_hired == 0`, ``},
		{`employees % graduates_hired == 0 && false`, ``},
		{`tax_credit_rating in ["A", "B", 1]`, `len(industry_code) * 1.5`},
		{`industry_code < "D" && region_code >= "3205"`, ``},
		{`registered_at < date("2015-10-01") && years_since(registered_at) >= 3`, `months_since(registered_at) * 10`},
		{`as_of - registered_at > duration("87600h")`, ``},
		{`industry_code == nil || park_id != nil`, ``},
		{`int(industry_code) > 0`, ``},
		{`int(region_code) >= 320500 && int(region_code) < 320600`, `float(int(region_code) - 320000)`},
		{`employees * 9223372036854775807 > 0`, `employees * 2`},
		{`layoff_rate <= (insured_employees <= 30 ? 0.2 : 0.055)`, `(employees >= 300 ? 0.5 : 0.9) * unemployment_insurance_paid`},
		{`-employees < -10 && abs(layoff_rate - 0.1) < 0.05`, `max(annual_revenue, vat_sales) - min(total_assets, 0.0)`},
		{`employees ** 0.5 > 3`, `annual_revenue / employees`},
		{`is_high_tech ? employees > 10 : !refund_fraud_36m`, `is_high_tech ? 1000 : 500`},
		{`!in_industry("C", "G5") && industry_code != ""`, `-annual_revenue`},
		{`size() in ["small", "micro"] || size() == "undecided"`, `(size() == "large" ? 0.5 : 0.9) * unemployment_insurance_paid`},
		{`size("vat") not in ["large", "medium"] && size("headcount", 300) != "large"`, ``},
		{`size("headcount", 0) == "large" || size() != "undecided"`, ``},
		{`upper(industry_code) contains "C3" && hasPrefix(region_code, "32")`, ``},
		{`employees == 10.0 || insured_employees != 3.5`, ``},
		{`round(annual_revenue / 1000) > 50 && floor(layoff_rate * 10) == 0`, `ceil(vat_sales)`},
		{`(employees > 5 ? 1 : 2.5) > 1`, `employees > 5 ? 1 : 2.5`},
	}
	g := &ruleGen{r: rand.New(rand.NewPCG(7, 7))}
	for i, s := range seeds {
		f.Add(s.elig, s.amount, uint64(i))
	}
	for i := range 40 {
		d := g.definition(i)
		f.Add(d.Eligibility, d.Amount, uint64(100+i))
	}
	f.Fuzz(func(t *testing.T, elig, amount string, seed uint64) {
		d := &rules.Definition{ID: "fuzz", Title: "fuzz", EffectiveFrom: rules.Date{Time: testAsOf}, Channels: []string{"wechat"},
			Eligibility: elig, Amount: amount}
		if _, err := d.Compile(); err != nil {
			t.Skip()
		}
		policies, byID := compile(t, []*rules.Definition{d})
		data := oddFirms(300, seed)
		want := plainDecisions(data, policies, testAsOf)
		all, byRow := engineDecisions(t, data, policies, testAsOf)
		compareDecisions(t, fmt.Sprintf("seed %d", seed), want, all, byID)
		compareDecisions(t, fmt.Sprintf("seed %d row by row", seed), want, byRow, byID)
	})
}

// The plans decide the benchmark's catalog and the demo's policies without the VM: conditions and
// amounts of real policies are within what the kernels and tables cover.
func TestCatalogsNeedNoVM(t *testing.T) {
	demo := fixture.DemoDefinitions(t)
	policies, _ := compile(t, append(SynthCatalog(300, 5), demo...))
	snap, err := NewSnapshot(registry.Synth(5000, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	plans := newPlanner(snap, testAsOf).prepared(policies, 2)
	decs, err := evaluateAll(t.Context(), snap, plans, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range decs {
		if decs[i].vm > 0 {
			t.Errorf("%s: %d firms went to the VM\nrule: %s\namount: %s", policies[i].Def.ID, decs[i].vm, policies[i].Def.Eligibility, policies[i].Def.Amount)
		}
	}
}
