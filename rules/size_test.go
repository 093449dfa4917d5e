package rules

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bounds are the lower bounds of one tier as policies.md §3 (and 工信部联企业〔2011〕300号 for the
// large ceiling) states them: X employees (人), Y revenue and Z assets (万元); 0 = not used.
type bounds struct{ x, y, z float64 }

// sizeTable is transcribed from the domain brief independently of sizedata/, so a typo in the data
// file fails these tests. One industry code per row (several where the row spans divisions).
var sizeTable = []struct {
	row                  string
	codes                []string
	large, medium, small bounds
}{
	{"农、林、牧、渔业", []string{"A0111", "A0511"}, bounds{0, 20000, 0}, bounds{0, 500, 0}, bounds{0, 50, 0}},
	{"工业", []string{"B0610", "C3911", "D4420", "3911"}, bounds{1000, 40000, 0}, bounds{300, 2000, 0}, bounds{20, 300, 0}},
	{"建筑业", []string{"E4710"}, bounds{0, 80000, 80000}, bounds{0, 6000, 5000}, bounds{0, 300, 300}},
	{"批发业", []string{"F5123"}, bounds{200, 40000, 0}, bounds{20, 5000, 0}, bounds{5, 1000, 0}},
	{"零售业", []string{"F5211", "f5261"}, bounds{300, 20000, 0}, bounds{50, 500, 0}, bounds{10, 100, 0}},
	{"交通运输业", []string{"G5431", "G5523", "G5612", "G5710", "G5810", "G5910", "5910"}, bounds{1000, 30000, 0}, bounds{300, 3000, 0}, bounds{20, 200, 0}},
	{"仓储业", []string{"G5920", "G5990"}, bounds{200, 30000, 0}, bounds{100, 1000, 0}, bounds{20, 100, 0}},
	{"邮政业", []string{"G6010"}, bounds{1000, 30000, 0}, bounds{300, 2000, 0}, bounds{20, 100, 0}},
	{"住宿业", []string{"H6110"}, bounds{300, 10000, 0}, bounds{100, 2000, 0}, bounds{10, 100, 0}},
	{"餐饮业", []string{"H6210", "6220"}, bounds{300, 10000, 0}, bounds{100, 2000, 0}, bounds{10, 100, 0}},
	{"信息传输业", []string{"I6311", "I6410"}, bounds{2000, 100000, 0}, bounds{100, 1000, 0}, bounds{10, 100, 0}},
	{"软件和信息技术服务业", []string{"I6513", "I6520"}, bounds{300, 10000, 0}, bounds{100, 1000, 0}, bounds{10, 50, 0}},
	{"房地产开发经营", []string{"K7010"}, bounds{0, 200000, 10000}, bounds{0, 1000, 5000}, bounds{0, 100, 2000}},
	{"物业管理", []string{"K7020"}, bounds{1000, 5000, 0}, bounds{300, 1000, 0}, bounds{100, 500, 0}},
	{"租赁和商务服务业", []string{"L7111", "L7211", "L7271"}, bounds{300, 0, 120000}, bounds{100, 0, 8000}, bounds{10, 0, 100}},
	{"其他未列明行业", []string{"M7320", "N7850", "O8010", "Q8411", "R8710", "G5320", "K7090", "P8321", "S9221"},
		bounds{300, 0, 0}, bounds{100, 0, 0}, bounds{10, 0, 0}},
}

var tierOrder = []string{SizeLarge, SizeMedium, SizeSmall, SizeMicro}

// firmAt is a firm exactly at the bounds b (money in 元).
func firmAt(code string, b bounds) SizeInput {
	return SizeInput{IndustryCode: code, Employees: int64(b.x), Revenue: b.y * 10000, Assets: b.z * 10000}
}

type sizeCase struct {
	name string
	in   SizeInput
	want string
}

// boundaryCases: for every tier bound of every row, a firm exactly at the bound reaches the tier,
// and one person or one fen below any one indicator drops exactly one tier.
func boundaryCases() []sizeCase {
	var out []sizeCase
	for _, r := range sizeTable {
		for _, code := range r.codes {
			for t, b := range []bounds{r.large, r.medium, r.small} {
				tier, lower := tierOrder[t], tierOrder[t+1]
				at := firmAt(code, b)
				out = append(out, sizeCase{fmt.Sprintf("%s %s at %s bound", r.row, code, tier), at, tier})
				if b.x > 0 {
					in := at
					in.Employees--
					out = append(out, sizeCase{fmt.Sprintf("%s %s %s: X=%d", r.row, code, tier, in.Employees), in, lower})
				}
				if b.y > 0 {
					in := at
					in.Revenue -= 0.01
					out = append(out, sizeCase{fmt.Sprintf("%s %s %s: Y=%.2f元", r.row, code, tier, in.Revenue), in, lower})
				}
				if b.z > 0 {
					in := at
					in.Assets -= 0.01
					out = append(out, sizeCase{fmt.Sprintf("%s %s %s: Z=%.2f元", r.row, code, tier, in.Assets), in, lower})
				}
			}
		}
	}
	return out
}

func TestSizeBoundaries(t *testing.T) {
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	cases := boundaryCases()
	if len(cases) < 150 {
		t.Fatalf("only %d boundary cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ClassifySize(c.in, asOf, "", 0)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if got.Tier != c.want {
				t.Errorf("%s: %s (row %s), want %s", c.name, got.Tier, got.Row, c.want)
			}
		})
	}
}

func TestSizeRowOfIndustry(t *testing.T) {
	for _, r := range sizeTable {
		t.Run(r.row, func(t *testing.T) {
			for _, code := range r.codes {
				got, err := ClassifySize(SizeInput{IndustryCode: code}, time.Now(), "", 0)
				if err != nil {
					t.Fatal(err)
				}
				want := r.row
				if r.row == "交通运输业" {
					want = "交通运输业（不含铁路运输业）"
				}
				if got.Row != want {
					t.Errorf("%q is classified under %s, want %s", code, got.Row, want)
				}
				if got.Standard != "工信部联企业〔2011〕300号" || got.Version != "2011" {
					t.Errorf("%q: standard %s %s", code, got.Standard, got.Version)
				}
			}
		})
	}
}

// The 留抵退税 variant (财政部 税务总局公告2022年第14号第八条): 300号's revenue and total-assets indicators
// only, with last year's VAT sales as revenue; headcount is not used; rows left without an indicator
// (其他未列明行业) use the VAT-sales bands 100万 / 2000万 / 1亿 (bounds exclusive).
func TestSizeVATVariant(t *testing.T) {
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	cases := []sizeCase{
		{"unlisted industry, VAT 1亿 is large", SizeInput{IndustryCode: "M7320", Employees: 5, VATSales: 1e8}, SizeLarge},
		{"unlisted industry, VAT just below 1亿", SizeInput{IndustryCode: "M7320", Employees: 5000, VATSales: 1e8 - 0.01}, SizeMedium},
		{"unlisted industry, VAT 2000万", SizeInput{IndustryCode: "M7320", Employees: 1, VATSales: 2e7}, SizeMedium},
		{"unlisted industry, VAT just below 2000万", SizeInput{IndustryCode: "M7320", Employees: 5000, VATSales: 2e7 - 0.01}, SizeSmall},
		{"unlisted industry, VAT 100万", SizeInput{IndustryCode: "K7090", VATSales: 1e6}, SizeSmall},
		{"unlisted industry, VAT just below 100万", SizeInput{IndustryCode: "K7090", Employees: 999, VATSales: 1e6 - 0.01}, SizeMicro},
		{"railway (not in 300号's transport row)", SizeInput{IndustryCode: "G5320", Employees: 2000, VATSales: 5e6}, SizeSmall},
		{"industry uses VAT, not revenue", SizeInput{IndustryCode: "C3911", Employees: 300, Revenue: 1e9, VATSales: 2e7}, SizeMedium},
		{"industry: VAT below the medium bound", SizeInput{IndustryCode: "C3911", Employees: 300, Revenue: 1e9, VATSales: 2e7 - 0.01}, SizeSmall},
		{"industry: 5 employees do not make it micro", SizeInput{IndustryCode: "C3911", Employees: 5, VATSales: 5e7}, SizeMedium},
		{"industry: 2000 employees do not make it large", SizeInput{IndustryCode: "C3911", Employees: 2000, VATSales: 4e8 - 0.01}, SizeMedium},
		{"industry: VAT 4亿 is large", SizeInput{IndustryCode: "C3911", Employees: 10, VATSales: 4e8}, SizeLarge},
		{"industry: VAT just below 300万", SizeInput{IndustryCode: "C3911", Employees: 900, VATSales: 3e6 - 0.01}, SizeMicro},
		{"wholesale: 3 employees, VAT 1000万 is small", SizeInput{IndustryCode: "F5123", Employees: 3, VATSales: 1e7}, SizeSmall},
		{"retail: 300 employees, VAT 2亿 - 1分 is medium", SizeInput{IndustryCode: "F5211", Employees: 300, VATSales: 2e8 - 0.01}, SizeMedium},
		{"leasing: 5 people, 2亿 assets is medium", SizeInput{IndustryCode: "L7111", Employees: 5, Assets: 2e8, VATSales: 1e5}, SizeMedium},
		{"leasing: assets just below 100万", SizeInput{IndustryCode: "L7211", Employees: 200, Assets: 1e6 - 0.01}, SizeMicro},
		{"construction keeps both indicators", SizeInput{IndustryCode: "E4710", Employees: 1, VATSales: 6e7, Assets: 5e7}, SizeMedium},
		{"construction: assets below 5000万", SizeInput{IndustryCode: "E4710", Employees: 1, VATSales: 6e7, Assets: 5e7 - 0.01}, SizeSmall},
		{"5910 装卸搬运 is transport", SizeInput{IndustryCode: "G5910", Employees: 1, VATSales: 3e7}, SizeMedium},
		{"finance is sized by 309号", SizeInput{IndustryCode: "J6620", Employees: 5, VATSales: 1e5, Assets: 1e6}, SizeUndecided},
		{"VAT sales not reported", SizeInput{IndustryCode: "C3911", Employees: 5, Revenue: 1e6}, SizeUndecided},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ClassifySize(c.in, asOf, SizeVariantVAT, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Tier != c.want {
				t.Errorf("%s: %s (row %s), want %s", c.name, got.Tier, got.Row, c.want)
			}
		})
	}
}

// A tier is not guessed: a firm whose tier depends on an indicator that is not reported (0 in the
// registry), of no industry, or of finance (sized by 银发〔2015〕309号, not encoded) is undecided,
// with the reason. An indicator that does not matter is not needed: micro needs only one.
func TestSizeUndecided(t *testing.T) {
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		in      SizeInput
		variant string
		want    string
		reason  string
	}{
		{"industry, revenue missing", SizeInput{IndustryCode: "C3911", Employees: 500}, "", SizeUndecided, "缺少营业收入"},
		{"industry, 5 employees decide micro", SizeInput{IndustryCode: "C3911", Employees: 5}, "", SizeMicro, ""},
		{"industry, revenue below small decides micro", SizeInput{IndustryCode: "C3911", Revenue: 1e6}, "", SizeMicro, ""},
		{"industry, employees missing", SizeInput{IndustryCode: "C3911", Revenue: 5e8}, "", SizeUndecided, "缺少从业人员"},
		{"construction, assets missing", SizeInput{IndustryCode: "E4710", Revenue: 1e8}, "", SizeUndecided, "缺少资产总额"},
		{"real estate, revenue below small decides micro", SizeInput{IndustryCode: "K7010", Revenue: 5e5}, "", SizeMicro, ""},
		{"medium known, large needs the missing one", SizeInput{IndustryCode: "E4710", Revenue: 9e8, Assets: 0}, "", SizeUndecided, "缺少资产总额"},
		{"other row, no employees", SizeInput{IndustryCode: "M7320", Revenue: 1e8}, "", SizeUndecided, "缺少从业人员"},
		{"no industry code", SizeInput{Employees: 5, Revenue: 1e6}, "", SizeUndecided, "缺少行业代码"},
		{"finance", SizeInput{IndustryCode: "J6620", Employees: 5, Revenue: 1e6, Assets: 1e6}, "", SizeUndecided, "银发〔2015〕309号"},
		{"finance, letterless code", SizeInput{IndustryCode: "6621", Employees: 5000}, "", SizeUndecided, "银发〔2015〕309号"},
		{"headcount rule, no employees", SizeInput{IndustryCode: "M7320"}, SizeVariantHeadcount, SizeUndecided, "缺少从业人员"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cut := 0
			if c.variant == SizeVariantHeadcount {
				cut = 300
			}
			got, err := ClassifySize(c.in, asOf, c.variant, cut)
			if err != nil {
				t.Fatal(err)
			}
			if got.Tier != c.want || !strings.Contains(got.Reason, c.reason) || (c.reason == "") != (got.Reason == "") {
				t.Errorf("%s: %s (%q), want %s (%q)", c.name, got.Tier, got.Reason, c.want, c.reason)
			}
		})
	}
}

// A local headcount rule: from the cut on a firm is large; below it the standard applies, capped
// at medium.
func TestSizeHeadcountVariant(t *testing.T) {
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	cases := []sizeCase{
		{"300 employees", SizeInput{IndustryCode: "M7320", Employees: 300}, SizeLarge},
		{"299 employees", SizeInput{IndustryCode: "M7320", Employees: 299}, SizeMedium},
		{"9 employees", SizeInput{IndustryCode: "M7320", Employees: 9}, SizeMicro},
		{"large by the standard, but under the cut", SizeInput{IndustryCode: "K7010", Employees: 10, Revenue: 3e9, Assets: 2e9}, SizeMedium},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ClassifySize(c.in, asOf, SizeVariantHeadcount, 300)
			if err != nil {
				t.Fatal(err)
			}
			if got.Tier != c.want || got.Variant != "headcount:300" {
				t.Errorf("%s: %s (%s), want %s", c.name, got.Tier, got.Variant, c.want)
			}
		})
	}
	if _, err := ClassifySize(SizeInput{}, asOf, SizeVariantHeadcount, 0); err == nil {
		t.Error("a headcount rule without a cut was accepted")
	}
	if _, err := ClassifySize(SizeInput{}, asOf, "turnover", 0); err == nil {
		t.Error("an unknown variant was accepted")
	}
}

// size() in a rule: the helper passes the firm's fields, variants are checked when the rule is
// saved, and the tier strings are checked against the tiers.
func TestSizeInRules(t *testing.T) {
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	env := Env{IndustryCode: "H6210", Employees: 99, AnnualRevenue: 2e7, VATSales: 5e6, AsOf: asOf}
	params := map[string]any{"cut": 300, "tiers": []any{"small", "micro"}}
	cases := []struct {
		src  string
		want bool
	}{
		{`size() == "small"`, true},
		{`size() in params.tiers`, true},
		{`size("vat") == "small"`, true},
		{`size("headcount", params.cut) == "small"`, true},
		{`size("headcount", 99) == "large"`, true},
		{`size() != "medium"`, true},
	}
	for _, c := range cases {
		t.Run(c.src, func(t *testing.T) {
			p, err := Compile("eligibility", c.src, params, reflect.Bool)
			if err != nil {
				t.Fatalf("%s: %v", c.src, err)
			}
			got, err := p.Run(&env)
			if err != nil || got != c.want {
				t.Errorf("%s = %v, %v; want %v", c.src, got, err, c.want)
			}
		})
	}
	for src, want := range map[string]string{
		`size("turnover") == "small"`:     "unknown size variant",
		`size("headcount") == "small"`:    "needs the headcount",
		`size("vat", 3) == "small"`:       "no further arguments",
		`size(name) == "small"`:           "fixed values",
		`size() == "smal"`:                "is never \"smal\"",
		`size() in ["micro", "大型"]`:       "is never \"大型\"",
		`size("headcount", 1.5) == "x"`:   "whole number",
		`size("headcount", "300") == "x"`: "must be a number",
	} {
		t.Run(src, func(t *testing.T) {
			_, err := Compile("eligibility", src, params, reflect.Bool)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %v, want it to mention %q", src, err, want)
			}
		})
	}
}

func TestSizeDataLoads(t *testing.T) {
	all, err := sizeStandards()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		for sec, r := range s.Sections {
			if r[0] > r[1] || r[0] < 1 || r[1] > 97 {
				t.Errorf("section %s divisions %v", sec, r)
			}
		}
	}
	if s, _ := standardOn(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)); s == nil || s.Version != "2011" {
		t.Error("a date before every standard must use the oldest one")
	}
}

func TestSizeNeeds(t *testing.T) {
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		industry string
		known    bool
		variant  string
		want     string
	}{
		{"H6210", true, "", "industry_code employees annual_revenue"},
		{"A0111", true, "", "industry_code annual_revenue"},
		{"E4710", true, "", "industry_code annual_revenue total_assets"},
		{"M7320", true, "", "industry_code employees"},
		{"M7320", true, SizeVariantVAT, "industry_code vat_sales"},
		{"C3911", true, SizeVariantVAT, "industry_code vat_sales"},
		{"L7111", true, SizeVariantVAT, "industry_code total_assets"},
		{"E4710", true, SizeVariantVAT, "industry_code vat_sales total_assets"},
		{"J6620", true, "", "industry_code"},
		{"M7320", true, SizeVariantHeadcount, "industry_code employees"},
		{"", false, "", "industry_code employees annual_revenue total_assets"},
	}
	for _, c := range cases {
		t.Run(c.industry+"/"+c.variant, func(t *testing.T) {
			got := fmt.Sprint(sizeNeeds(c.industry, c.known, c.variant, asOf))
			if got != "["+c.want+"]" {
				t.Errorf("%s %q: needs %s, want [%s]", c.industry, c.variant, got, c.want)
			}
		})
	}
}

func BenchmarkClassifySize(b *testing.B) {
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	in := SizeInput{IndustryCode: "C3911", Employees: 500, Revenue: 2e8, Assets: 1e8, VATSales: 1.8e8}
	for b.Loop() {
		if _, err := ClassifySize(in, asOf, SizeVariantVAT, 0); err != nil {
			b.Fatal(err)
		}
	}
}
