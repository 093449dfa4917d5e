package policies_test

import (
	"testing"

	"github.com/policypush/policypush/internal/policytext"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// The differential check against the texts: for each demo policy, cases taken from its documents'
// own examples and boundaries — written here from the documents, not from the YAML — are decided by
// the catalog (window and rule, as matching decides them) and by the plain-Go restatement of the
// texts (policytext). Both must give the documents' answer, so neither the YAML nor the oracle can
// lock in its own mistake.

type textCase struct {
	name     string
	asOf     string // "" is 2022-09-30
	firm     func(e *store.Enterprise)
	eligible bool
	amount   float64 // checked when the policy states an amount
}

var textCases = map[string][]textCase{
	// 人社部发〔2022〕23号第一条；人社部发〔2022〕31号（比例 90% / 50%）；大型按工信部联企业〔2011〕300号。
	"wengang-fanhuan-2022": {
		{"未裁员的中小企业，90%", "", func(e *store.Enterprise) {}, true, 9000},
		{"500 人、2 亿元营收的制造业企业是中型，90%", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 500, 2e8 }, true, 9000},
		{"1000 人、4 亿元营收的制造业企业是大型，50%", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 1000, 4e8 }, true, 5000},
		{"999 人仍是中型", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 999, 4e8 }, true, 9000},
		{"营收差 1 分不到 4 亿元仍是中型", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 1000, 4e8-0.01 }, true, 9000},
		{"以单位形式参保的个体工商户参照，按中小微企业", "", func(e *store.Enterprise) {
			e.EntityType, e.Employees, e.AnnualRevenue = "individual", 1000, 4e8
		}, true, 9000},
		{"裁员率等于 5.5%", "", func(e *store.Enterprise) { e.LayoffRate = 0.055 }, true, 9000},
		{"裁员率高于 5.5%", "", func(e *store.Enterprise) { e.LayoffRate = 0.0551 }, false, 0},
		{"30 人（含）以下裁员率 20%", "", func(e *store.Enterprise) { e.InsuredEmployees, e.LayoffRate = 30, 0.2 }, true, 9000},
		{"30 人以下裁员率超过 20%", "", func(e *store.Enterprise) { e.InsuredEmployees, e.LayoffRate = 30, 0.2001 }, false, 0},
		{"31 人按 5.5%", "", func(e *store.Enterprise) { e.InsuredEmployees, e.LayoffRate = 31, 0.2 }, false, 0},
		{"半分：165.85 × 90% = 149.265", "", func(e *store.Enterprise) { e.UnemploymentInsurancePaid = 165.85 }, true, 149.27},
		{"半分：385013.31 × 50% = 192506.655", "", func(e *store.Enterprise) {
			e.Employees, e.AnnualRevenue, e.UnemploymentInsurancePaid = 2000, 5e8, 385013.31
		}, true, 192506.66},
		{"规模无法判定", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 500, 0 }, false, 0},
		{"2022 年 1 月 1 日", "2022-01-01", func(e *store.Enterprise) {}, true, 9000},
		{"2023 年 1 月 1 日已到期", "2023-01-01", func(e *store.Enterprise) {}, false, 0},
	},
	// 人社部发〔2022〕23号第三条；人社部发〔2022〕31号：五个特困行业；每人 500 元。
	"liugong-peixun-2022": {
		{"苏州（中高风险地区所在县区）制造业企业", "", func(e *store.Enterprise) { e.RegionCode = "320571" }, true, 20000},
		{"南京制造业企业不在范围内", "", func(e *store.Enterprise) {}, false, 0},
		{"南京餐饮企业", "", func(e *store.Enterprise) { e.IndustryCode = "H6210" }, true, 20000},
		{"旅行社 727", "", func(e *store.Enterprise) { e.IndustryCode = "L7271" }, true, 20000},
		{"728 不是旅游业", "", func(e *store.Enterprise) { e.IndustryCode = "L7281" }, false, 0},
		{"游览景区管理 785", "", func(e *store.Enterprise) { e.IndustryCode = "N7850" }, true, 20000},
		{"铁路运输 53", "", func(e *store.Enterprise) { e.IndustryCode = "G5320" }, true, 20000},
		{"管道运输 57 不是特困行业", "", func(e *store.Enterprise) { e.IndustryCode = "G5710" }, false, 0},
		{"2022 年 5 月 1 日", "2022-05-01", func(e *store.Enterprise) { e.RegionCode = "320571" }, true, 20000},
		{"2022 年 4 月 30 日", "2022-04-30", func(e *store.Enterprise) { e.RegionCode = "320571" }, false, 0},
	},
	// 人社厅发〔2022〕41号：每招用 1 名毕业生 1500 元，为其缴纳失业保险。
	"kuogang-buzhu-2022": {
		{"招用 3 名", "", func(e *store.Enterprise) { e.GraduatesHired = 3 }, true, 4500},
		{"参保人数少于招用人数", "", func(e *store.Enterprise) { e.GraduatesHired, e.InsuredEmployees = 3, 2 }, false, 0},
		{"2022 年 7 月 1 日", "2022-07-01", func(e *store.Enterprise) { e.GraduatesHired = 1 }, true, 1500},
		{"2022 年 6 月 30 日", "2022-06-30", func(e *store.Enterprise) { e.GraduatesHired = 1 }, false, 0},
	},
	// 财政部 税务总局公告2022年第14号第一、二、三、八条；第21号。
	"liudi-tuishui-2022": {
		{"大型制造业企业（六行业）", "", func(e *store.Enterprise) { e.VATSales = 5e8 }, true, 0},
		{"纳税信用 M 级", "", func(e *store.Enterprise) { e.TaxCreditRating = "M" }, false, 0},
		{"36 个月内两次偷税处罚", "", func(e *store.Enterprise) { e.TaxViolations36m = 2 }, false, 0},
		{"即征即退", "", func(e *store.Enterprise) { e.ImmediateRefundSince2019 = true }, false, 0},
		{"大型批发企业 2022 年 5 月不在范围内", "2022-05-31", func(e *store.Enterprise) { e.IndustryCode, e.VATSales = "F5123", 5e8 }, false, 0},
		{"大型批发企业 2022 年 7 月 1 日起（第21号）", "2022-07-01", func(e *store.Enterprise) { e.IndustryCode, e.VATSales = "F5123", 5e8 }, true, 0},
		{"小型批发企业 4 月即可", "2022-04-01", func(e *store.Enterprise) { e.IndustryCode, e.VATSales = "F5123", 5e7-0.01 }, true, 0},
		{"未列明行业 VAT 2000 万元以下是小型", "", func(e *store.Enterprise) { e.IndustryCode, e.VATSales = "K7090", 2e7-0.01 }, true, 0},
		{"未列明行业 VAT 2000 万元是中型", "", func(e *store.Enterprise) { e.IndustryCode, e.VATSales = "K7090", 2e7 }, false, 0},
		{"未列明行业不看从业人员", "", func(e *store.Enterprise) { e.IndustryCode, e.Employees, e.VATSales = "K7090", 5, 1e8 }, false, 0},
		{"5 人租赁企业资产 2 亿元是中型", "", func(e *store.Enterprise) { e.IndustryCode, e.Employees, e.TotalAssets = "L7111", 5, 2e8 }, false, 0},
		{"租赁企业资产不足 100 万元是微型", "", func(e *store.Enterprise) { e.IndustryCode, e.Employees, e.TotalAssets = "L7111", 500, 1e6-0.01 }, true, 0},
		{"金融业按 309 号，本系统不判定", "", func(e *store.Enterprise) { e.IndustryCode, e.VATSales = "J6620", 1e5 }, false, 0},
		{"2022 年 3 月 31 日", "2022-03-31", func(e *store.Enterprise) {}, false, 0},
	},
	// 财政部 税务总局公告2022年第10号第一、二条。
	"liushui-liangfei-2022": {
		{"小型微利企业三项指标在上限", "", func(e *store.Enterprise) { e.TaxableIncome, e.Employees, e.TotalAssets = 3e6, 300, 5e7 }, true, 0},
		{"应纳税所得额超过 300 万元", "", func(e *store.Enterprise) { e.TaxableIncome = 3e6 + 0.01 }, false, 0},
		{"从业人数 301", "", func(e *store.Enterprise) { e.Employees = 301 }, false, 0},
		{"资产总额超过 5000 万元", "", func(e *store.Enterprise) { e.TotalAssets = 5e7 + 0.01 }, false, 0},
		{"小规模纳税人", "", func(e *store.Enterprise) { e.TaxpayerType, e.TaxableIncome = "small_scale", 1e8 }, true, 0},
		{"个体工商户", "", func(e *store.Enterprise) { e.EntityType, e.TaxableIncome = "individual", 1e8 }, true, 0},
		{"2021 年 12 月 31 日", "2021-12-31", func(e *store.Enterprise) { e.TaxableIncome = 0 }, false, 0},
		{"2024 年 12 月 31 日", "2024-12-31", func(e *store.Enterprise) { e.TaxableIncome = 0 }, true, 0},
	},
	// 发改财金〔2022〕271号；服务业按《三次产业划分规定》；小微按300号本行业。
	"fangzu-jianmian-2022": {
		{"150 人、1500 万元营收的餐馆是小型", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 150, 1.5e7 }, true, 0},
		{"100 人、2000 万元营收的餐馆是中型", "", func(e *store.Enterprise) { e.Employees, e.AnnualRevenue = 100, 2e7 }, false, 0},
		{"60 人、600 万元营收的零售企业是中型", "", func(e *store.Enterprise) { e.IndustryCode, e.Employees, e.AnnualRevenue = "F5211", 60, 6e6 }, false, 0},
		{"个体工商户不论规模", "", func(e *store.Enterprise) { e.EntityType, e.Employees, e.AnnualRevenue = "individual", 100, 2e7 }, true, 0},
		{"未承租国有房屋", "", func(e *store.Enterprise) { e.RentsStateProperty = false }, false, 0},
		{"制造业不是服务业", "", func(e *store.Enterprise) { e.IndustryCode = "C3911" }, false, 0},
		{"设备修理（C43）是服务业", "", func(e *store.Enterprise) { e.IndustryCode = "C4320" }, true, 0},
		{"农业服务（A05）是服务业", "", func(e *store.Enterprise) { e.IndustryCode = "A0511" }, true, 0},
		{"2022 年 2 月 28 日", "2022-02-28", func(e *store.Enterprise) {}, false, 0},
	},
}

// textBase is a firm each policy's cases start from.
func textBase(policy string) store.Enterprise {
	e := store.Enterprise{CreditCode: "91320100MA1FL0007C", Status: store.StatusActive, RegionCode: "320102",
		IndustryCode: "C3911", EntityType: "enterprise", TaxCreditRating: "B", TaxpayerType: "general",
		Employees: 50, InsuredEmployees: 40, AnnualRevenue: 3e7, TotalAssets: 2e7, VATSales: 2.5e7,
		TaxableIncome: 1e6, UnemploymentInsurancePaid: 10000}
	if policy == "fangzu-jianmian-2022" {
		e.IndustryCode, e.Employees, e.AnnualRevenue, e.RentsStateProperty = "H6210", 12, 3e6, true
	}
	return e
}

func TestCatalogAgainstTheTexts(t *testing.T) {
	byID := map[string]*rules.Policy{}
	for _, p := range demoCatalog(t) {
		byID[p.Def.ID] = p
	}
	oracle := map[string]*policytext.Policy{}
	for i := range policytext.Policies {
		oracle[policytext.Policies[i].ID] = &policytext.Policies[i]
	}
	if len(textCases) != len(byID) || len(oracle) != len(byID) {
		t.Fatalf("%d policies, %d with text cases, %d in the oracle", len(byID), len(textCases), len(oracle))
	}
	for id, cases := range textCases {
		p, text := byID[id], oracle[id]
		for _, c := range cases {
			t.Run(id+"/"+c.name, func(t *testing.T) {
				asOf := demoAsOf
				if c.asOf != "" {
					d, err := rules.ParseDate(c.asOf)
					if err != nil {
						t.Fatal(err)
					}
					asOf = d.Time
				}
				e := textBase(id)
				c.firm(&e)
				env := policies.EnvOf(&e, asOf)
				out, err := p.EvaluateRule(&env)
				if err != nil {
					t.Fatal(err)
				}
				got := out.Eligible && p.Def.ActiveOn(asOf)
				if got != c.eligible {
					t.Errorf("catalog: eligible %t, the text says %t", got, c.eligible)
				}
				if o := text.Holds(&e, asOf); o != c.eligible {
					t.Errorf("policytext: eligible %t, the text says %t", o, c.eligible)
				}
				if !c.eligible || p.Amount == nil {
					return
				}
				if out.Amount == nil || *out.Amount != c.amount {
					t.Errorf("catalog: amount %v, the text says %.2f", out.Amount, c.amount)
				}
				if a := text.Amount(&e); *a != c.amount {
					t.Errorf("policytext: amount %.2f, the text says %.2f", *a, c.amount)
				}
			})
		}
	}
}

func demoCatalog(t *testing.T) []*rules.Policy {
	t.Helper()
	demo, err := rules.DemoPolicies()
	if err != nil {
		t.Fatal(err)
	}
	return demo
}
