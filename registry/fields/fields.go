// Package fields describes the enterprise registry's field catalog as plain data: each field's
// key (a column of store.Enterprise), Chinese label, type, unit, source department, allowed enum
// values and text size. It imports nothing of the project, so the rule language (package rules)
// can take its vocabulary from it without depending on the database; package registry binds the
// catalog to store.Enterprise and checks that the two agree.
package fields

// The values of the status field (store.StatusActive, …; registry's tests check they agree). Only
// firms in business (存续) are matched.
const (
	StatusActive       = "active"
	StatusRevoked      = "revoked"
	StatusDeregistered = "deregistered"
	StatusMovedOut     = "moved_out"
)

// Field types a catalog entry can have. Rules are type-checked against them, the importer parses
// cells by them.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeFloat  = "float"
	TypeBool   = "bool"
	TypeDate   = "date"
	TypeEnum   = "enum"
)

// Field describes one registry column for rule authors and the importer. Key is the column name of
// store.Enterprise; Label, Unit and Source are shown to authors in Chinese, as the departments name
// them; Enum lists the allowed stored values of an enum field.
type Field struct {
	Key, Label, Type, Unit, Source, Description string
	Enum                                        []string
	// MaxLen is the size in characters of a text field's database column (0: none). Values are cut
	// to it when a firm is loaded and checked against it when facts are stated; registry checks it
	// against store.Enterprise when it binds the columns. Not part of the JSON form.
	MaxLen int `json:"-"`
}

// Departments that feed the registry through the provincial data-sharing platform (policies.md §6).
const (
	srcMarket = "市场监管部门"
	srcTax    = "税务部门"
	srcHR     = "人社部门"
	srcTech   = "科技部门"
	srcMIIT   = "工信部门" // 专精特新 is certified by industry and IT departments, not science and technology
	srcPark   = "园区管委会"
	srcSelf   = "企业自行绑定" // the firm binds its WeChat account on the enterprise page; no department holds it
)

// Catalog lists the registry fields in the order of an export file's columns. Every key is a column
// of store.Enterprise, with its type and text size (registry checks both when it binds the columns).
// The entries are alike on purpose: the catalog is data, one literal per field, read as a table.
var Catalog = []Field{
	{Key: "credit_code", Label: "统一社会信用代码", Type: TypeString, Source: srcMarket,
		Description: "18 位统一社会信用代码（GB 32100-2015），企业在本系统中的唯一标识",
		MaxLen:      18},
	{Key: "name", Label: "企业名称", Type: TypeString, Source: srcMarket,
		Description: "登记的企业全称",
		MaxLen:      200},
	{Key: "region_code", Label: "行政区划代码", Type: TypeString, Source: srcMarket,
		Description: "登记机关所在县级行政区划代码（GB/T 2260，6 位），如 320571 苏州工业园区；按前缀筛选市、区",
		MaxLen:      6},
	{Key: "industry_code", Label: "国民经济行业代码", Type: TypeString, Source: srcMarket,
		Description: "GB/T 4754-2017 行业代码：门类字母加 2–4 位数字，如 C3911、H6210",
		MaxLen:      8},
	{Key: "status", Label: "登记状态", Type: TypeEnum, Source: srcMarket,
		Description: "active 存续/在业，revoked 吊销，deregistered 注销，moved_out 迁出；只有存续企业可匹配和推送",
		Enum:        []string{StatusActive, StatusRevoked, StatusDeregistered, StatusMovedOut},
		MaxLen:      16},
	{Key: "registered_at", Label: "成立日期", Type: TypeDate, Source: srcMarket,
		Description: "营业执照登记的成立日期"},
	{Key: "employees", Label: "从业人数", Type: TypeInt, Unit: "人", Source: srcMarket,
		Description: "企业年报的从业人数，用于划分企业规模"},
	{Key: "insured_employees", Label: "参保人数", Type: TypeInt, Unit: "人", Source: srcHR,
		Description: "当前参加失业保险的职工人数"},
	{Key: "annual_revenue", Label: "营业收入", Type: TypeFloat, Unit: "元", Source: srcTax,
		Description: "上年度营业收入"},
	{Key: "total_assets", Label: "资产总额", Type: TypeFloat, Unit: "元", Source: srcTax,
		Description: "上年末资产总额"},
	{Key: "vat_sales", Label: "增值税销售额", Type: TypeFloat, Unit: "元", Source: srcTax,
		Description: "上年度增值税销售额；留抵退税以它代替营业收入划分规模"},
	{Key: "tax_credit_rating", Label: "纳税信用等级", Type: TypeEnum, Source: srcTax,
		Description: "A、B、M、C、D；空表示尚未评价",
		Enum:        []string{"A", "B", "M", "C", "D"},
		MaxLen:      1},
	{Key: "taxpayer_type", Label: "纳税人类型", Type: TypeEnum, Source: srcTax,
		Description: "general 一般纳税人，small_scale 小规模纳税人",
		Enum:        []string{"general", "small_scale"},
		MaxLen:      16},
	{Key: "is_high_tech", Label: "高新技术企业", Type: TypeBool, Source: srcTech,
		Description: "持有有效期内的高新技术企业证书"},
	{Key: "specialized_level", Label: "专精特新等级", Type: TypeEnum, Source: srcMIIT,
		Description: "none 无，province 省级专精特新中小企业，national 国家级专精特新“小巨人”",
		Enum:        []string{"none", "province", "national"},
		MaxLen:      16},
	{Key: "park_id", Label: "所在园区", Type: TypeString, Source: srcPark,
		Description: "园区编号，如 SIP 苏州工业园区；空表示不在园区内",
		MaxLen:      32},
	{Key: "layoff_rate", Label: "裁员率", Type: TypeFloat, Source: srcHR,
		Description: "上年度裁员率，0 到 1 之间的小数（0.055 即 5.5%）；计算口径由各地规定"},
	{Key: "unemployment_insurance_paid", Label: "上年度实缴失业保险费", Type: TypeFloat, Unit: "元", Source: srcHR,
		Description: "上年度单位和职工实际缴纳的失业保险费合计，稳岗返还按其比例计算"},
	{Key: "graduates_hired", Label: "招用应届高校毕业生人数", Type: TypeInt, Unit: "人", Source: srcHR,
		Description: "本年度招用、签订劳动合同并参保的应届高校毕业生人数"},
	{Key: "tax_violations_36m", Label: "36个月内税收违法处罚次数", Type: TypeInt, Unit: "次", Source: srcTax,
		Description: "近 36 个月因偷税受到税务机关处罚的次数"},
	{Key: "refund_fraud_36m", Label: "36个月内骗取退税", Type: TypeBool, Source: srcTax,
		Description: "近 36 个月有骗取留抵退税、出口退税或虚开增值税专用发票情形"},
	{Key: "immediate_refund_since_2019", Label: "2019年4月起享受即征即退", Type: TypeBool, Source: srcTax,
		Description: "2019 年 4 月 1 日起享受过增值税即征即退或先征后返（退）政策"},
	{Key: "entity_type", Label: "市场主体类型", Type: TypeEnum, Source: srcMarket,
		Description: "enterprise 企业，individual 个体工商户，cooperative 农民专业合作社，other 其他（机关、事业单位、社会组织等）；未给出时按统一社会信用代码前两位推定（如 92 为个体工商户）",
		Enum:        []string{"enterprise", "individual", "cooperative", "other"},
		MaxLen:      16},
	{Key: "taxable_income", Label: "应纳税所得额", Type: TypeFloat, Unit: "元", Source: srcTax,
		Description: "上年度企业所得税应纳税所得额；小型微利企业须不超过 300 万元"},
	{Key: "rents_state_property", Label: "承租国有房屋", Type: TypeBool, Source: "国资部门",
		Description: "承租国有企业、行政事业单位的经营用房（房租减免的前提）"},
	{Key: "insured_months", Label: "连续参保月数", Type: TypeInt, Unit: "月", Source: srcHR,
		Description: "截至评估日连续足额缴纳失业保险的月数"},
	{Key: "contact_phone", Label: "联系电话", Type: TypeString, Source: srcMarket,
		Description: "登记的联系人手机号，短信通知的收件号码；列表中掩码显示",
		MaxLen:      32},
	{Key: "wechat_openid", Label: "微信 OpenID", Type: TypeString, Source: srcSelf,
		Description: "企业绑定的公众号 OpenID；为空时改发短信",
		MaxLen:      64},
}

// Lookup returns the catalog entry of key.
func Lookup(key string) (Field, bool) {
	for _, f := range Catalog {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}
