package rules

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/policypush/policypush/store"
)

// Fuzzing the two halves of the sandbox. Their seeds — every expression of the hostile corpus and
// the demo catalog — run in plain `go test`; `go test -fuzz FuzzCompile ./rules` explores further.

var fuzzParams = map[string]any{"rate": 0.9, "cut": 30, "names": []any{"甲", "乙"}, "regions": []any{"3205", "320211"}}

// seedExpressions reads the eligibility and amount expressions of the hostile corpus and the demo
// catalog.
func seedExpressions(t testing.TB) []string {
	var out []string
	demoDir, err := WriteDemoCatalog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{hostileDir, demoDir} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct{ Eligibility, Amount string }
			if yaml.Unmarshal(b, &doc) != nil {
				continue
			}
			for _, s := range []string{doc.Eligibility, doc.Amount} {
				if s != "" {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

func fuzzFirms(asOf time.Time) []Env {
	reg := time.Date(2019, 7, 1, 0, 0, 0, 0, time.UTC)
	firms := append(oddFirms(asOf), envOf(&store.Enterprise{CreditCode: "91320571MA1FL0007C", Name: "苏州餐饮有限公司",
		RegionCode: "320571", IndustryCode: "H6210", Status: store.StatusActive, RegisteredAt: &reg, Employees: 12,
		InsuredEmployees: 9, AnnualRevenue: 3e6, TotalAssets: 1e6, VATSales: 2.5e6, TaxCreditRating: "B",
		TaxpayerType: "small_scale", SpecializedLevel: "none", GraduatesHired: 2, UnemploymentInsurancePaid: 8000}, asOf))
	return firms
}

// FuzzCompile: whatever the text, compiling returns a located CompileError or a program within
// the cost limit, and running and explaining that program never panics.
func FuzzCompile(f *testing.F) {
	for _, s := range seedExpressions(f) {
		f.Add(s)
	}
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	firms := fuzzFirms(asOf)
	f.Fuzz(func(t *testing.T, src string) {
		for _, kind := range []reflect.Kind{reflect.Bool, reflect.Float64} {
			p, err := Compile("eligibility", src, fuzzParams, kind)
			if err != nil {
				var ce *CompileError
				if !errors.As(err, &ce) {
					t.Fatalf("%q: error is not a CompileError: %v", src, err)
				}
				if ce.Line < 1 || ce.Column < 1 || ce.Message == "" {
					t.Fatalf("%q: error without a position or message: %+v", src, ce)
				}
				continue
			}
			if p.Cost < 1 || p.Cost > MaxCost {
				t.Fatalf("%q: accepted with cost %d", src, p.Cost)
			}
			for i := range firms {
				_, _ = p.Run(&firms[i])
			}
			if kind != reflect.Bool {
				continue
			}
			pol := &Policy{Def: &Definition{ID: "fuzz", Title: "fuzz", EffectiveFrom: Date{asOf}}, Eligibility: p}
			for i := range firms {
				ex, err := Explain(pol, &firms[i])
				if err != nil {
					t.Fatalf("%q: explain: %v", src, err)
				}
				checkExplanation(t, src, pol, &firms[i], ex)
			}
		}
	})
}

// checkExplanation: the explanation's verdict is the rule's own, and where every condition was
// decided their combination is too.
func checkExplanation(t *testing.T, src string, p *Policy, env *Env, ex Explanation) {
	t.Helper()
	out, err := p.EvaluateRule(env)
	switch {
	case err != nil && ex.RuleHolds != nil:
		t.Fatalf("%q: rule fails (%v) but the explanation says %v", src, err, *ex.RuleHolds)
	case err == nil && (ex.RuleHolds == nil || *ex.RuleHolds != out.Eligible):
		t.Fatalf("%q: rule says %v, explanation %v", src, out.Eligible, ex.RuleHolds)
	}
	root, cerr := p.Eligibility.conditions()
	if cerr != nil {
		t.Fatalf("%q: conditions: %v", src, cerr)
	}
	top := ex.Conditions[0]
	if root.op != "" {
		top = Condition{Op: root.op, Children: ex.Conditions}
	}
	if h := treeHolds(top); h != nil && err == nil && *h != out.Eligible {
		t.Fatalf("%q: conditions combine to %v, the rule says %v", src, *h, out.Eligible)
	}
}

// treeHolds recombines a condition tree's leaves; nil when a leaf is undecided.
func treeHolds(c Condition) *bool {
	if c.Op == "" {
		return c.Holds
	}
	kids := make([]Condition, len(c.Children))
	for i, ch := range c.Children {
		kids[i] = Condition{Holds: treeHolds(ch)}
	}
	return combine(c.Op, kids)
}

// FuzzEvaluate: whatever a firm's data, evaluating the demo catalog and every accepted hostile
// rule never panics, and explanations agree with evaluation.
func FuzzEvaluate(f *testing.F) {
	f.Add("苏州餐饮有限公司", "320571", "H6210", "B", "small_scale", int64(12), int64(9), 3e6, 0.05, int64(2))
	f.Add("", "", "", "", "", int64(0), int64(0), 0.0, 0.0, int64(0))
	f.Add("啊啊啊", "3205", "K7010", "D", "general", int64(math.MaxInt64), int64(-1), math.Inf(1), math.NaN(), int64(math.MinInt64))
	f.Add("x", "999999", "C", "A", "general", int64(300), int64(301), 2e7, 1.0, int64(300))
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	demoDir, err := WriteDemoCatalog(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	demo, errs := LoadDir(demoDir)
	hostile, _ := LoadDir(hostileDir)
	if len(errs) > 0 || len(demo) != 6 {
		f.Fatalf("demo catalog: %v", errs)
	}
	var policies []*Policy
	for _, d := range append(demo, hostile...) {
		p, err := d.Compile()
		if err != nil {
			f.Fatal(err)
		}
		policies = append(policies, p)
	}
	Link(policies)
	f.Fuzz(func(t *testing.T, name, region, industry, rating, taxpayer string, employees, insured int64, revenue, layoff float64, grads int64) {
		e := store.Enterprise{CreditCode: "91320571MA1FL0007C", Name: name, RegionCode: region, IndustryCode: industry,
			Status: store.StatusActive, TaxCreditRating: rating, TaxpayerType: taxpayer, Employees: employees,
			InsuredEmployees: insured, AnnualRevenue: revenue, TotalAssets: revenue / 2, VATSales: revenue,
			LayoffRate: layoff, UnemploymentInsurancePaid: revenue / 100, GraduatesHired: grads}
		env := envOf(&e, asOf)
		for _, p := range policies {
			out, err := p.Evaluate(&env)
			ex, xerr := Explain(p, &env)
			if xerr != nil {
				t.Fatalf("%s: explain: %v", p.Def.ID, xerr)
			}
			if err == nil && ex.Eligible != out.Eligible {
				t.Fatalf("%s: evaluate says %v, explain %v", p.Def.ID, out.Eligible, ex.Eligible)
			}
			checkExplanation(t, p.Def.Eligibility, p, &env, ex)
		}
	})
}
