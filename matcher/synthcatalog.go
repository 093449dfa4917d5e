package matcher

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// SynthCatalog returns n synthetic policies shaped like a provincial catalog, for the benchmark:
// about 60% scoped to a city, districts or a park, 20% to industries, 20% province-wide on numbers;
// about 30% with an amount formula and 10% with a condition on the founding date. Conditions and
// parameters are drawn from the kinds real 免申即享 items use (headcount, revenue, assets, tax
// rating, taxpayer type, layoffs, graduates, high-tech and 专精特新 status). Regions, industries and
// parks are those of registry.Synth. The same n and seed give the same catalog.
func SynthCatalog(n int, seed int64) []*rules.Definition {
	g := newCatalogGen(seed)
	out := make([]*rules.Definition, n)
	for i := range out {
		out[i] = g.policy(i)
	}
	return out
}

type catalogGen struct {
	r                        *rand.Rand
	cities, districts, parks []string
	divisions, sections      []string
}

func newCatalogGen(seed int64) *catalogGen {
	g := &catalogGen{r: rand.New(rand.NewPCG(uint64(seed), 0x5eed))}
	for _, f := range registry.Synth(3000, seed) {
		g.districts = appendNew(g.districts, f.RegionCode)
		g.cities = appendNew(g.cities, f.RegionCode[:4])
		if f.ParkID != "" {
			g.parks = appendNew(g.parks, f.ParkID)
		}
		g.divisions = appendNew(g.divisions, f.IndustryCode[1:3])
		g.sections = appendNew(g.sections, f.IndustryCode[:1])
	}
	for _, l := range [][]string{g.cities, g.districts, g.parks, g.divisions, g.sections} {
		slices.Sort(l)
	}
	return g
}

func appendNew(l []string, v string) []string {
	if slices.Contains(l, v) {
		return l
	}
	return append(l, v)
}

// condition is one clause with its parameters.
type condition struct {
	expr   string
	params map[string]any
}

func (g *catalogGen) pick(l []string, k int) []any {
	idx := g.r.Perm(len(l))[:min(k, len(l))]
	slices.Sort(idx)
	out := make([]any, len(idx))
	for i, j := range idx {
		out[i] = l[j]
	}
	return out
}

// clause draws one of the common conditions; i makes parameter names unique within the policy.
func (g *catalogGen) clause(i int) condition {
	p := func(name string) string { return fmt.Sprintf("params.%s_%d", name, i) }
	key := func(name string) string { return fmt.Sprintf("%s_%d", name, i) }
	r := g.r
	switch r.IntN(17) {
	case 0:
		return condition{"employees >= " + p("min_staff"), map[string]any{key("min_staff"): []int{5, 10, 20, 50, 100}[r.IntN(5)]}}
	case 1:
		return condition{"employees < " + p("max_staff"), map[string]any{key("max_staff"): []int{50, 100, 300, 1000}[r.IntN(4)]}}
	case 2:
		return condition{"insured_employees >= " + p("min_insured"), map[string]any{key("min_insured"): []int{1, 5, 10, 30}[r.IntN(4)]}}
	case 3:
		return condition{"annual_revenue < " + p("max_revenue"), map[string]any{key("max_revenue"): []float64{3e6, 1e7, 2e7, 5e7}[r.IntN(4)]}}
	case 4:
		return condition{"annual_revenue >= " + p("min_revenue"), map[string]any{key("min_revenue"): []int{1_000_000, 5_000_000, 20_000_000}[r.IntN(3)]}}
	case 5:
		return condition{"total_assets <= " + p("max_assets"), map[string]any{key("max_assets"): []int{5_000_000, 50_000_000}[r.IntN(2)]}}
	case 6:
		return condition{"tax_credit_rating in " + p("ratings"), map[string]any{key("ratings"): [][]any{{"A"}, {"A", "B"}, {"A", "B", "M"}}[r.IntN(3)]}}
	case 7:
		return condition{`tax_credit_rating != "D" && !refund_fraud_36m`, nil}
	case 8:
		return condition{`taxpayer_type == "` + []string{"general", "small_scale"}[r.IntN(2)] + `"`, nil}
	case 9:
		return condition{"is_high_tech", nil}
	case 10:
		return condition{`specialized_level != "none"`, nil}
	case 11:
		return condition{"tax_violations_36m <= " + p("max_violations"), map[string]any{key("max_violations"): r.IntN(2)}}
	case 12:
		return condition{"layoff_rate <= " + p("max_layoff"), map[string]any{key("max_layoff"): []float64{0.02, 0.055, 0.1}[r.IntN(3)]}}
	case 13:
		return condition{"graduates_hired > 0 && insured_employees >= graduates_hired", nil}
	case 14:
		return condition{"insured_employees >= employees * " + p("insured_share"), map[string]any{key("insured_share"): []float64{0.5, 0.8, 0.9}[r.IntN(3)]}}
	case 15:
		return condition{"annual_revenue / max(employees, 1) >= " + p("min_productivity"), map[string]any{key("min_productivity"): []int{200_000, 500_000, 1_000_000}[r.IntN(3)]}}
	default:
		return condition{"(insured_employees <= " + p("small_cut") + " ? layoff_rate <= " + p("small_cap") + " : layoff_rate <= " + p("cap") + ")",
			map[string]any{key("small_cut"): 30, key("small_cap"): 0.2, key("cap"): 0.055}}
	}
}

func (g *catalogGen) dateClause() condition {
	switch g.r.IntN(3) {
	case 0:
		return condition{"years_since(registered_at) >= params.min_years", map[string]any{"min_years": 1 + g.r.IntN(5)}}
	case 1:
		return condition{"months_since(registered_at) < params.max_months", map[string]any{"max_months": []int{24, 36, 60}[g.r.IntN(3)]}}
	default:
		return condition{"registered_at >= date(params.since)", map[string]any{"since": []string{"2015-01-01", "2018-06-30", "2020-01-01"}[g.r.IntN(3)]}}
	}
}

func (g *catalogGen) amount() condition {
	switch g.r.IntN(5) {
	case 0:
		return condition{"params.per_head * insured_employees", map[string]any{"per_head": []int{300, 500, 1000}[g.r.IntN(3)]}}
	case 1:
		return condition{"(employees >= params.large ? params.large_rate : params.sme_rate) * unemployment_insurance_paid",
			map[string]any{"large": 300, "large_rate": 0.5, "sme_rate": 0.9}}
	case 2:
		return condition{"min(params.cap, params.rate * vat_sales)", map[string]any{"cap": 500000.0, "rate": []float64{0.01, 0.03}[g.r.IntN(2)]}}
	case 3:
		return condition{"params.per_graduate * graduates_hired", map[string]any{"per_graduate": 1500}}
	default:
		return condition{"params.fixed", map[string]any{"fixed": []int{10000, 50000, 200000}[g.r.IntN(3)]}}
	}
}

func (g *catalogGen) policy(i int) *rules.Definition {
	r := g.r
	var parts []condition
	scope := "全省"
	switch u := r.Float64(); {
	case u < 0.6:
		switch v := r.Float64(); {
		case v < 0.15:
			park := g.parks[r.IntN(len(g.parks))]
			parts = append(parts, condition{"park_id == params.park", map[string]any{"park": park}})
			scope = "园区 " + park
		case v < 0.55:
			regions := g.pick(g.cities, 1)
			parts = append(parts, condition{"in_region(params.regions)", map[string]any{"regions": regions}})
			scope = fmt.Sprint(regions...)
		default:
			regions := g.pick(g.districts, 1+r.IntN(3))
			parts = append(parts, condition{"in_region(params.regions)", map[string]any{"regions": regions}})
			scope = fmt.Sprint(regions...)
		}
		for k := range 1 + r.IntN(3) {
			parts = append(parts, g.clause(k))
		}
	case u < 0.8:
		var inds []any
		if r.IntN(3) == 0 {
			inds = g.pick(g.sections, 1+r.IntN(2))
		} else {
			inds = g.pick(g.divisions, 1+r.IntN(4))
		}
		parts = append(parts, condition{"in_industry(params.industries)", map[string]any{"industries": inds}})
		scope = "行业 " + fmt.Sprint(inds...)
		for k := range 1 + r.IntN(3) {
			parts = append(parts, g.clause(k))
		}
	default:
		for k := range 2 + r.IntN(3) {
			parts = append(parts, g.clause(k))
		}
	}
	if r.Float64() < 0.1 {
		parts = append(parts, g.dateClause())
	}
	params := map[string]any{}
	exprs := make([]string, len(parts))
	for k, c := range parts {
		exprs[k] = c.expr
		for name, v := range c.params {
			params[name] = v
		}
	}
	d := &rules.Definition{
		ID:            fmt.Sprintf("synth-%04d", i),
		Title:         fmt.Sprintf("合成政策 %d（%s）", i, scope),
		Department:    "合成",
		Category:      rules.Categories[r.IntN(len(rules.Categories))],
		EffectiveFrom: rules.Date{Time: time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)},
		Params:        params,
		Eligibility:   "(" + strings.Join(exprs, ")\n&& (") + ")",
		Channels:      []string{"wechat"},
	}
	if r.Float64() < 0.3 {
		a := g.amount()
		d.Amount = a.expr
		for name, v := range a.params {
			d.Params[name] = v
		}
	}
	return d
}

// SynthFirmChange returns a firm's record with one change such as a department sends through the
// data-sharing platform: social insurance (headcount, insured staff, layoffs, graduates hired),
// tax (revenue, VAT sales, rating), science and technology (high-tech status), or market
// registration (a deregistration, now and then).
func SynthFirmChange(e store.Enterprise, r *rand.Rand) store.Enterprise {
	switch u := r.IntN(100); {
	case u < 40:
		e.Employees = max(1, e.Employees+int64(r.IntN(21))-10)
		e.InsuredEmployees = min(e.Employees, max(0, e.InsuredEmployees+int64(r.IntN(11))-5))
		e.LayoffRate = float64(r.IntN(300)) / 1000
	case u < 55:
		e.GraduatesHired += 1 + int64(r.IntN(3))
	case u < 80:
		e.AnnualRevenue = float64(int64(e.AnnualRevenue*(0.8+0.4*r.Float64())*100)) / 100
		e.VATSales = float64(int64(e.AnnualRevenue*(0.8+0.2*r.Float64())*100)) / 100
	case u < 92:
		e.TaxCreditRating = []string{"A", "B", "M", "C", "D"}[r.IntN(5)]
	case u < 98:
		e.IsHighTech = !e.IsHighTech
	default:
		e.Status = store.StatusDeregistered
	}
	return e
}
