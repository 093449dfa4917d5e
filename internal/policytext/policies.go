package policytext

import (
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/policypush/policypush/store"
)

// Policy is one demo policy as its documents state it: the effective window, the conditions in the
// order the catalog writes its top-level conditions, how they combine, and the amount.
type Policy struct {
	ID         string
	From, To   time.Time
	Or         bool // the conditions combine with "or" (六税两费's three kinds of taxpayer)
	Conditions func(e *store.Enterprise, asOf time.Time) []bool
	Amount     func(e *store.Enterprise) *float64 // nil: the policy states no amount
}

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err) // constant dates below
	}
	return t
}

// Fen is decimal arithmetic as finance does it: the product of the decimal values of the factors
// (each float read as the shortest decimal that gives it back, which is how the registry and the
// documents write them), rounded half away from zero to the fen.
func Fen(factors ...float64) *float64 {
	p := big.NewRat(1, 1)
	for _, f := range factors {
		r, _ := new(big.Rat).SetString(strconv.FormatFloat(f, 'f', -1, 64))
		p.Mul(p, r)
	}
	p.Mul(p, big.NewRat(100, 1))
	q, m := new(big.Int).QuoRem(p.Num(), p.Denom(), new(big.Int))
	if m.Abs(m).Lsh(m, 1).Cmp(p.Denom()) >= 0 {
		q.Add(q, big.NewInt(int64(p.Sign())))
	}
	v, _ := new(big.Rat).SetFrac(q, big.NewInt(100)).Float64()
	return &v
}

// inSections reports whether a GB/T 4754-2017 code with its section letter belongs to one of the
// sections or (letter+digits) prefixes.
func inSections(code string, prefixes ...string) bool {
	code = strings.ToUpper(code)
	for _, p := range prefixes {
		if code != "" && strings.HasPrefix(code, p) {
			return true
		}
	}
	return false
}

func digitsOf(code string) string {
	return strings.TrimLeft(strings.ToUpper(code), "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
}

func hasPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Policies are the six policies of the demo catalog.
var Policies = []Policy{
	{
		// 人社部发〔2022〕23号第一条；比例按人社部发〔2022〕31号：中小微企业 90%，大型企业 50%，以单位形式
		// 参保的个体工商户参照（按中小微企业）；大型按300号。
		ID: "wengang-fanhuan-2022", From: day("2022-01-01"), To: day("2022-12-31"),
		Conditions: func(e *store.Enterprise, _ time.Time) []bool {
			cap := 0.055
			if e.InsuredEmployees <= 30 {
				cap = 0.20
			}
			sized := e.EntityType == "individual" || Size300(e.IndustryCode, e.Employees, e.AnnualRevenue, e.TotalAssets) != Undecided
			return []bool{e.UnemploymentInsurancePaid > 0, e.InsuredEmployees > 0, e.TaxCreditRating != "D", e.LayoffRate <= cap, sized}
		},
		Amount: func(e *store.Enterprise) *float64 {
			if e.EntityType != "individual" && Size300(e.IndustryCode, e.Employees, e.AnnualRevenue, e.TotalAssets) == Large {
				return Fen(0.5, e.UnemploymentInsurancePaid)
			}
			return Fen(0.9, e.UnemploymentInsurancePaid)
		},
	},
	{
		// 人社部发〔2022〕23号第三条：中高风险地区所在县区的参保企业；31号：五个特困行业。每人 500 元。
		ID: "liugong-peixun-2022", From: day("2022-05-01"), To: day("2022-12-31"),
		Conditions: func(e *store.Enterprise, _ time.Time) []bool {
			risk := hasPrefix(e.RegionCode, "3205", "320211", "320214")
			hardHit := hasPrefix(digitsOf(e.IndustryCode), "62", "52", "727", "785", "56", "53", "54", "55")
			return []bool{e.InsuredEmployees > 0, e.TaxCreditRating != "D", risk || hardHit}
		},
		Amount: func(e *store.Enterprise) *float64 { return Fen(500, float64(e.InsuredEmployees)) },
	},
	{
		// 人社厅发〔2022〕41号：招用毕业生并为其参保，每人 1500 元。
		ID: "kuogang-buzhu-2022", From: day("2022-07-01"), To: day("2022-12-31"),
		Conditions: func(e *store.Enterprise, _ time.Time) []bool {
			return []bool{e.GraduatesHired > 0, e.InsuredEmployees >= e.GraduatesHired, e.TaxCreditRating != "D"}
		},
		Amount: func(e *store.Enterprise) *float64 { return Fen(1500, float64(e.GraduatesHired)) },
	},
	{
		// 财政部 税务总局公告2022年第14号第一、二、三、八条；第21号：七个行业自 2022 年 7 月。
		ID: "liudi-tuishui-2022", From: day("2022-04-01"), To: day("2022-12-31"),
		Conditions: func(e *store.Enterprise, asOf time.Time) []bool {
			smallMicro := SizeVAT(e.IndustryCode, e.VATSales, e.TotalAssets)
			six := inSections(e.IndustryCode, "C", "M", "D", "I65", "N77", "G")
			seven := inSections(e.IndustryCode, "F", "A", "H", "O", "P", "Q", "R") && !asOf.Before(day("2022-07-01"))
			return []bool{e.TaxCreditRating == "A" || e.TaxCreditRating == "B", !e.RefundFraud36m, e.TaxViolations36m < 2,
				!e.ImmediateRefundSince2019, e.TaxpayerType == "general", smallMicro == Small || smallMicro == Micro || six || seven}
		},
	},
	{
		// 财政部 税务总局公告2022年第10号第一、二条：小规模纳税人、个体工商户，或小型微利企业（应纳税所得额
		// ≤ 300万元、从业人数 ≤ 300、资产总额 ≤ 5000万元、非限制和禁止行业——目录为空）。
		ID: "liushui-liangfei-2022", From: day("2022-01-01"), To: day("2024-12-31"), Or: true,
		Conditions: func(e *store.Enterprise, _ time.Time) []bool {
			smallProfit := e.TaxableIncome <= 3_000_000 && e.Employees <= 300 && e.TotalAssets <= 50_000_000
			return []bool{e.TaxpayerType == "small_scale", e.EntityType == "individual", smallProfit}
		},
	},
	{
		// 发改财金〔2022〕271号：承租国有房屋的服务业（《三次产业划分规定》第三产业）小微企业（300号，本行业）
		// 和个体工商户。
		ID: "fangzu-jianmian-2022", From: day("2022-03-01"), To: day("2022-12-31"),
		Conditions: func(e *store.Enterprise, _ time.Time) []bool {
			service := !inSections(e.IndustryCode, "A", "B", "C", "D", "E") || inSections(e.IndustryCode, "A05", "B11", "C43")
			size := Size300(e.IndustryCode, e.Employees, e.AnnualRevenue, e.TotalAssets)
			return []bool{e.RentsStateProperty, e.IndustryCode != "", service,
				e.EntityType == "individual" || size == Small || size == Micro}
		},
	},
}

// Holds combines a policy's conditions for a firm on a day, the window and the firm's status
// included: what matching must decide.
func (p *Policy) Holds(e *store.Enterprise, asOf time.Time) bool {
	if asOf.Before(p.From) || asOf.After(p.To) || e.Status != store.StatusActive {
		return false
	}
	conds := p.Conditions(e, asOf)
	holds := !p.Or
	for _, c := range conds {
		if p.Or {
			holds = holds || c
		} else {
			holds = holds && c
		}
	}
	return holds
}

// Decide lists the policies a firm qualifies for on a day, with their amounts (nil when a policy
// states none). Combination rules are not modelled: the demo policies stack.
func Decide(e *store.Enterprise, asOf time.Time) map[string]*float64 {
	out := map[string]*float64{}
	for i := range Policies {
		p := &Policies[i]
		if !p.Holds(e, asOf) {
			continue
		}
		var amount *float64
		if p.Amount != nil {
			amount = p.Amount(e)
		}
		out[p.ID] = amount
	}
	return out
}
