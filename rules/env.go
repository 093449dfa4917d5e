package rules

import (
	"reflect"
	"time"
	"unicode/utf8"

	"github.com/policypush/policypush/registry/fields"
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
	EntityType                string    `expr:"entity_type"`
	TaxableIncome             float64   `expr:"taxable_income"`
	RentsStateProperty        bool      `expr:"rents_state_property"`
	InsuredMonths             int64     `expr:"insured_months"`
	// AsOf is the evaluation date (midnight UTC of the as-of day). Rules use it instead of now(),
	// which is disabled so that the same inputs always give the same answer.
	AsOf time.Time `expr:"as_of"`
	// Extra holds the deployment's extra fields (config fields.extra) by key. Rules do not read it
	// directly: an extra field's name is rewritten to a typed accessor on it (see factFunc).
	Extra map[string]any `expr:"extra"`
}

// textLimits is the size in characters of each text field of the catalog (its database column),
// by key.
var textLimits = func() map[string]int {
	out := map[string]int{}
	for _, f := range fields.Catalog {
		if f.MaxLen > 0 {
			out[f.Key] = f.MaxLen
		}
	}
	return out
}()

// ClampText cuts every text field to its column size (MySQL enforces the size, SQLite does not):
// the sandbox's static bounds on string work assume these sizes. Whoever builds an Env from stored
// or outside data calls it (policies.EnvOf does).
func (env *Env) ClampText() {
	v := reflect.ValueOf(env).Elem()
	for key, i := range envFields {
		f := v.Field(i)
		if f.Kind() != reflect.String {
			continue
		}
		if limit := textLimits[key]; limit > 0 && utf8.RuneCountInString(f.String()) > limit {
			f.SetString(string([]rune(f.String())[:limit]))
		}
	}
}
