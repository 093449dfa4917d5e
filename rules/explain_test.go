package rules

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/registry/fields"
)

func policyOf(t *testing.T, eligibility, amount string, params map[string]any, opts ...Option) *Policy {
	t.Helper()
	d := &Definition{ID: "p", Title: "测试政策", EffectiveFrom: Date{mustDate(t, "2022-01-01")}, Params: params,
		Eligibility: eligibility, Amount: amount, Channels: []string{"wechat"}}
	p, err := d.Compile(opts...)
	if err != nil {
		t.Fatalf("%s: %v", eligibility, err)
	}
	return p
}

func TestConditionLabels(t *testing.T) {
	asOf := mustDate(t, "2022-09-30")
	reg := mustDate(t, "2020-03-01")
	params := map[string]any{"max_revenue": 20000000, "ratings": []any{"A", "B"}}
	cases := []struct {
		src   string
		env   Env
		label string
		holds bool
	}{
		{`insured_employees >= 10`, Env{InsuredEmployees: 9}, "参保人数 9 < 10", false},
		{`insured_employees >= 10`, Env{InsuredEmployees: 12}, "参保人数 12 ≥ 10", true},
		{`annual_revenue < params.max_revenue`, Env{AnnualRevenue: 19999999.99}, "营业收入 19999999.99元 < 2000万元", true},
		{`annual_revenue < params.max_revenue`, Env{AnnualRevenue: 20000000}, "营业收入 2000万元 ≥ 2000万元", false},
		{`taxpayer_type == "general"`, Env{TaxpayerType: "small_scale"}, "纳税人类型 小规模纳税人 ≠ 一般纳税人", false},
		{`taxpayer_type == "general"`, Env{TaxpayerType: "general"}, "纳税人类型 = 一般纳税人", true},
		{`tax_credit_rating in params.ratings`, Env{TaxCreditRating: "M"}, "纳税信用等级 M 不属于 A、B", false},
		{`tax_credit_rating != "D"`, Env{TaxCreditRating: ""}, "纳税信用等级 （空） ≠ D", true},
		{`!refund_fraud_36m`, Env{RefundFraud36m: true}, "36个月内骗取退税：是（要求为否）", false},
		{`is_high_tech`, Env{}, "高新技术企业：否（要求为是）", false},
		{`in_region("3205", "320211")`, Env{RegionCode: "320102"}, "行政区划代码 320102 不以 3205、320211 开头", false},
		{`!in_industry("A", "B")`, Env{IndustryCode: "A0111"}, "国民经济行业代码 A0111 属于行业 A、B", false},
		{`!in_industry("A", "B")`, Env{IndustryCode: "C3911"}, "国民经济行业代码 C3911 不属于行业 A、B", true},
		{`size() in ["small", "micro"]`, Env{IndustryCode: "H6210", Employees: 150, AnnualRevenue: 3e7},
			"企业规模（工信部联企业〔2011〕300号） 中型 不属于 小型、微型", false},
		{`years_since(registered_at) >= 3`, Env{RegisteredAt: reg}, "成立日期至评估日期的整年数 2 < 3", false},
		{`insured_employees >= graduates_hired`, Env{InsuredEmployees: 4, GraduatesHired: 5}, "参保人数 4 < 招用应届高校毕业生人数 5", false},
		{`layoff_rate <= 0.055`, Env{LayoffRate: 0.056}, "裁员率 0.056 > 0.055", false},
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			p := policyOf(t, c.src, "", params)
			c.env.AsOf, c.env.Status = asOf, fields.StatusActive
			ex, err := Explain(p, &c.env)
			if err != nil {
				t.Fatal(err)
			}
			if len(ex.Conditions) != 1 {
				t.Fatalf("%s: %d conditions", c.src, len(ex.Conditions))
			}
			got := ex.Conditions[0]
			if got.Label != c.label || got.Holds == nil || *got.Holds != c.holds || got.Text != c.src {
				t.Errorf("%s:\n got %q holds=%v text=%q\nwant %q holds=%v", c.src, got.Label, got.Holds, got.Text, c.label, c.holds)
			}
		})
	}
}

// A rule's conditions are its top-level && / || operands, with their source text as written and
// the values of the fields each reads.
func TestConditionsSplitAndValues(t *testing.T) {
	src := "tax_credit_rating in params.ratings\n  && !refund_fraud_36m\n  && (vat_sales < params.small || in_industry(params.industries))"
	p := policyOf(t, src, "", map[string]any{"ratings": []any{"A", "B"}, "small": 20000000, "industries": []any{"C", "M"}})
	env := Env{TaxCreditRating: "B", VATSales: 3e7, IndustryCode: "K7010", AsOf: mustDate(t, "2022-06-30"), Status: fields.StatusActive}
	ex, err := Explain(p, &env)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, c := range ex.Conditions {
		texts = append(texts, c.Text)
	}
	want := []string{"tax_credit_rating in params.ratings", "!refund_fraud_36m", "vat_sales < params.small || in_industry(params.industries)"}
	if !reflect.DeepEqual(texts, want) {
		t.Fatalf("texts %q, want %q", texts, want)
	}
	last := ex.Conditions[2]
	if last.Op != "or" || len(last.Children) != 2 || *last.Holds || ex.Eligible {
		t.Fatalf("the or group: %+v", last)
	}
	if !reflect.DeepEqual(last.Values, map[string]any{"vat_sales": 3e7, "industry_code": "K7010"}) {
		t.Errorf("values %v", last.Values)
	}
	if !strings.HasPrefix(ex.Summary, "不符合：增值税销售额 3000万元 ≥ 2000万元") {
		t.Errorf("summary %q", ex.Summary)
	}
}

func TestExplainWindowStatusAndAmount(t *testing.T) {
	p := policyOf(t, "insured_employees > 0", "500 * insured_employees", nil)
	p.Def.EffectiveTo = &Date{mustDate(t, "2022-12-31")}
	env := Env{CreditCode: "X", InsuredEmployees: 40, Status: fields.StatusActive, AsOf: mustDate(t, "2022-06-30")}
	ex, _ := Explain(p, &env)
	if !ex.Eligible || ex.Amount == nil || *ex.Amount != 20000 || ex.AmountLabel != "500 × 参保人数（参保人数 40） = 20000.00元" {
		t.Fatalf("eligible firm: %+v", ex)
	}
	env.AsOf = mustDate(t, "2023-01-01")
	if ex, _ = Explain(p, &env); ex.Eligible || ex.Amount != nil || !strings.Contains(ex.Summary, "不在有效期内") || !*ex.RuleHolds {
		t.Errorf("outside the window: %+v", ex)
	}
	env.AsOf, env.Status = mustDate(t, "2022-06-30"), fields.StatusRevoked
	if ex, _ = Explain(p, &env); ex.Eligible || !strings.Contains(ex.Summary, "登记状态") {
		t.Errorf("revoked firm: %+v", ex)
	}
	bad := policyOf(t, "insured_employees % (employees - employees) == 0", "", nil)
	env.Status = fields.StatusActive
	if ex, _ = Explain(bad, &env); ex.Eligible || ex.Error == "" || ex.RuleHolds != nil || ex.Conditions[0].Error == "" {
		t.Errorf("runtime error: %+v", ex)
	}
}

func TestNearMisses(t *testing.T) {
	p := policyOf(t, `insured_employees >= 10 && tax_credit_rating != "D" && (in_region("3205") || graduates_hired > 0)`, "", nil)
	asOf := mustDate(t, "2022-06-30")
	firm := func(code string, insured int64, rating, region string, grads int64) Env {
		return Env{CreditCode: code, InsuredEmployees: insured, TaxCreditRating: rating, RegionCode: region,
			GraduatesHired: grads, Status: fields.StatusActive, AsOf: asOf}
	}
	firms := []Env{
		firm("A", 12, "B", "320571", 0), // eligible
		firm("B", 9, "B", "320571", 0),  // near miss: headcount
		firm("C", 9, "D", "320571", 0),  // two conditions
		firm("D", 12, "B", "320102", 0), // near miss: the or group, by either alternative
		firm("E", 9, "B", "320102", 0),  // two
		firm("F", 12, "D", "320102", 3), // near miss: rating
	}
	inactive := firm("G", 9, "B", "320571", 0)
	inactive.Status = fields.StatusRevoked
	firms = append(firms, inactive)
	total, list, err := NearMisses(p, firms, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range list {
		got[m.CreditCode] = m.Failed.Label
	}
	want := map[string]string{"B": "参保人数 9 < 10", "D": "行政区划代码 320102 不以 3205 开头", "F": "纳税信用等级 D = D"}
	if total != 3 || !reflect.DeepEqual(got, want) {
		t.Fatalf("near misses %d %v, want %v", total, got, want)
	}
	if _, list, _ = NearMisses(p, firms, 1); len(list) != 1 || list[0].CreditCode != "B" {
		t.Errorf("limit 1: %+v", list)
	}
}

// Deployment-declared extra fields are typed variables: they compile, type-check, explain with
// their labels and read as zero for a firm without the fact.
func TestExtraFields(t *testing.T) {
	for _, bad := range [][]fields.Field{
		{{Key: "employees", Label: "x", Type: "int"}},
		{{Key: "params", Label: "x", Type: "int"}},
		{{Key: "size", Label: "x", Type: "int"}},
		{{Key: "Bad-Key", Label: "x", Type: "int"}},
		{{Key: "a", Label: "x", Type: "money"}},
		{{Key: "a", Label: "x", Type: "int"}, {Key: "a", Label: "y", Type: "int"}},
	} {
		if _, err := NewVocabulary(bad...); err == nil || !strings.Contains(err.Error(), "fields.extra[") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	voc, err := NewVocabulary(
		fields.Field{Key: "rd_staff", Label: "研发人员数", Type: "int", Unit: "人"},
		fields.Field{Key: "park_rating", Label: "园区信用评级", Type: "enum", Enum: []string{"A", "B", "C"}},
		fields.Field{Key: "subsidy_paid", Label: "已获补贴", Type: "float", Unit: "元"},
	)
	if err != nil {
		t.Fatal(err)
	}
	withVoc := WithVocabulary(voc)
	p := policyOf(t, `rd_staff >= 5 && park_rating != "C"`, "subsidy_paid * 0 + 1000 * rd_staff", nil, withVoc)
	env, err := EnvFromFacts(map[string]any{"rd_staff": 3, "park_rating": "A"}, mustDate(t, "2022-06-30"), withVoc)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Explain(p, &env)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Eligible || ex.Conditions[0].Label != "研发人员数 3 < 5" || ex.Conditions[0].Values["rd_staff"] != 3 {
		t.Fatalf("extra field explanation: %+v", ex.Conditions[0])
	}
	env.Extra["rd_staff"] = 6
	if out, err := p.Evaluate(&env); err != nil || !out.Eligible || *out.Amount != 6000 {
		t.Fatalf("evaluate with extra fields: %+v %v", out, err)
	}
	delete(env.Extra, "rd_staff")
	if out, _ := p.Evaluate(&env); out.Eligible {
		t.Error("a missing extra fact must read as zero")
	}
	for src, want := range map[string]string{
		`rd_staff > "five"`:         "mismatched types",
		`park_rating == "D"`:        `park_rating is never "D"`,
		`rd_staff(1) > 0`:           "is a field, not a function",
		`extra["rd_staff"] > 0`:     "extra is not available",
		`rd_staf >= 1`:              "did you mean rd_staff?",
		`fact_int(extra, "a") > 0`:  "not available",
		`subsidy_paid < "1000元"`:    "mismatched types",
		`len(park_rating) > 0 && 1`: "mismatched types",
	} {
		t.Run(src, func(t *testing.T) {
			if _, err := Compile("eligibility", src, nil, reflect.Bool, withVoc); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want %q", src, err, want)
			}
		})
	}
	if _, err := EnvFromFacts(map[string]any{"park_rating": "Z"}, time.Now(), withVoc); err == nil {
		t.Error("an enum value outside the declared list was accepted")
	}
	// The vocabulary is a value: the standard one, and a program compiled without it, do not know
	// the extra fields.
	if _, ok := StandardVocabulary().Lookup("rd_staff"); ok {
		t.Error("the standard vocabulary has an extra field")
	}
	if _, err := Compile("eligibility", "rd_staff >= 5", nil, reflect.Bool); err == nil || !strings.Contains(err.Error(), "unknown name rd_staff") {
		t.Errorf("compiled an extra field without its vocabulary: %v", err)
	}
	if got := voc.Fields(); got[len(got)-2].Key != "subsidy_paid" || got[len(got)-1].Key != "as_of" {
		t.Errorf("vocabulary order: %v", got[len(got)-4:])
	}
}

// Catalog enums and text sizes are checked where facts come in (tests, the calculator).
func TestEnvFromFactsChecks(t *testing.T) {
	for facts, want := range map[string]map[string]any{
		"is not one of":  {"taxpayer_type": "generl"},
		"at most 18 fit": {"credit_code": strings.Repeat("9", 19)},
		"unknown field":  {"insured_employes": 1},
		"whole number":   {"employees": 1.5},
	} {
		t.Run(facts, func(t *testing.T) {
			if _, err := EnvFromFacts(want, time.Now()); err == nil || !strings.Contains(err.Error(), facts) {
				t.Errorf("%v: %v, want %q", want, err, facts)
			}
		})
	}
}

// An undecided size says why: the missing indicator, or the standard that covers the industry.
func TestExplainSaysWhySizeIsUndecided(t *testing.T) {
	p := policyOf(t, `size() in ["small", "micro"]`, "", nil)
	for facts, want := range map[string]string{
		"C3911": "（规模未能判定：缺少营业收入）",
		"J6620": "银发〔2015〕309号",
	} {
		t.Run(facts, func(t *testing.T) {
			env, err := EnvFromFacts(map[string]any{"industry_code": facts, "employees": 500}, mustDate(t, "2022-06-30"))
			if err != nil {
				t.Fatal(err)
			}
			ex, err := Explain(p, &env)
			if err != nil {
				t.Fatal(err)
			}
			if len(ex.Conditions) != 1 || !strings.Contains(ex.Conditions[0].Label, want) {
				t.Errorf("%s: %+v, want a label with %q", facts, ex.Conditions, want)
			}
		})
	}
}
