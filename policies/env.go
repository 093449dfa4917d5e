package policies

import (
	"time"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// EnvOf builds the rule environment of a firm at an evaluation date. Text longer than its
// database column (MySQL enforces the size, SQLite does not) is cut to it: the sandbox's static
// bounds on string work assume these sizes.
func EnvOf(e *store.Enterprise, asOf time.Time) rules.Env {
	env := rules.Env{
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
		EntityType:                e.EntityType,
		TaxableIncome:             e.TaxableIncome,
		RentsStateProperty:        e.RentsStateProperty,
		InsuredMonths:             e.InsuredMonths,
		AsOf:                      asOf,
	}
	if e.RegisteredAt != nil {
		env.RegisteredAt = e.RegisteredAt.UTC()
	}
	env.ClampText()
	return env
}
