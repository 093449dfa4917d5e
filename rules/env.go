package rules

import (
	"time"

	"github.com/policypush/policypush/store"
)

// Env is what a rule sees: the firm's catalog fields under their catalog keys, plus the evaluation
// date. Policy parameters are not here: `params.NAME` is replaced by its value when the rule is
// compiled, so a rule's parameters are type-checked like everything else.
type Env struct {
	CreditCode                string    `expr:"credit_code"`
	Name                      string    `expr:"name"`
	RegionCode                string    `expr:"region_code"`
	IndustryCode              string    `expr:"industry_code"`
	Status                    string    `expr:"status"`
	RegisteredAt              time.Time `expr:"registered_at"`
	Employees                 int64     `expr:"employees"`
	InsuredEmployees          int64     `expr:"insured_employees"`
	AnnualRevenue             float64   `expr:"annual_revenue"`
	TotalAssets               float64   `expr:"total_assets"`
	VATSales                  float64   `expr:"vat_sales"`
	TaxCreditRating           string    `expr:"tax_credit_rating"`
	TaxpayerType              string    `expr:"taxpayer_type"`
	IsHighTech                bool      `expr:"is_high_tech"`
	SpecializedLevel          string    `expr:"specialized_level"`
	ParkID                    string    `expr:"park_id"`
	LayoffRate                float64   `expr:"layoff_rate"`
	UnemploymentInsurancePaid float64   `expr:"unemployment_insurance_paid"`
	GraduatesHired            int64     `expr:"graduates_hired"`
	TaxViolations36m          int64     `expr:"tax_violations_36m"`
	RefundFraud36m            bool      `expr:"refund_fraud_36m"`
	ImmediateRefundSince2019  bool      `expr:"immediate_refund_since_2019"`
	ContactPhone              string    `expr:"contact_phone"`
	WechatOpenID              string    `expr:"wechat_openid"`
	// AsOf is the evaluation date (midnight UTC of the as-of day). Rules use it instead of now(),
	// which is disabled so that the same inputs always give the same answer.
	AsOf time.Time `expr:"as_of"`
}

// EnvOf builds the rule environment of a firm at an evaluation date.
func EnvOf(e *store.Enterprise, asOf time.Time) Env {
	env := Env{
		CreditCode:                e.CreditCode,
		Name:                      e.Name,
		RegionCode:                e.RegionCode,
		IndustryCode:              e.IndustryCode,
		Status:                    e.Status,
		Employees:                 e.Employees,
		InsuredEmployees:          e.InsuredEmployees,
		AnnualRevenue:             e.AnnualRevenue,
		TotalAssets:               e.TotalAssets,
		VATSales:                  e.VATSales,
		TaxCreditRating:           e.TaxCreditRating,
		TaxpayerType:              e.TaxpayerType,
		IsHighTech:                e.IsHighTech,
		SpecializedLevel:          e.SpecializedLevel,
		ParkID:                    e.ParkID,
		LayoffRate:                e.LayoffRate,
		UnemploymentInsurancePaid: e.UnemploymentInsurancePaid,
		GraduatesHired:            e.GraduatesHired,
		TaxViolations36m:          e.TaxViolations36m,
		RefundFraud36m:            e.RefundFraud36m,
		ImmediateRefundSince2019:  e.ImmediateRefundSince2019,
		ContactPhone:              e.ContactPhone,
		WechatOpenID:              e.WechatOpenID,
		AsOf:                      asOf,
	}
	if e.RegisteredAt != nil {
		env.RegisteredAt = e.RegisteredAt.UTC()
	}
	return env
}
