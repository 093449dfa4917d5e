package registry

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// headerSynonyms are the column names departments' exports use besides the catalog key and label
// (the national enterprise credit publicity system, 一企一档 platforms, tax and HR extracts). A
// header is matched after trimming, lowercasing and dropping spaces; a trailing unit in brackets
// must be the catalog unit (营业收入（元）), any other unit needs a mapping file.
var headerSynonyms = map[string][]string{
	"credit_code":                 {"社会信用代码", "信用代码", "统一代码", "纳税人识别号（统一社会信用代码）"},
	"name":                        {"名称", "市场主体名称", "单位名称", "企业（机构）名称", "纳税人名称"},
	"region_code":                 {"区划代码", "行政区划", "所属区划", "所属区划代码", "登记机关区划代码"},
	"industry_code":               {"行业代码", "所属行业", "所属行业代码", "国民经济行业", "行业门类代码", "国标行业代码"},
	"status":                      {"经营状态", "企业状态", "登记状态（中文）"},
	"registered_at":               {"注册日期", "设立日期", "成立时间", "核准设立日期"},
	"employees":                   {"职工人数", "年末从业人数", "从业人员", "从业人员数"},
	"insured_employees":           {"失业保险参保人数", "参保职工人数", "社保参保人数"},
	"annual_revenue":              {"营业总收入", "主营业务收入", "上年度营业收入"},
	"total_assets":                {"总资产", "资产合计", "年末资产总额"},
	"vat_sales":                   {"增值税应税销售额", "上年度增值税销售额"},
	"tax_credit_rating":           {"纳税信用级别", "信用等级"},
	"taxpayer_type":               {"纳税人资格", "增值税纳税人类型"},
	"is_high_tech":                {"是否高新技术企业", "高企"},
	"specialized_level":           {"专精特新", "专精特新级别"},
	"park_id":                     {"园区", "园区编号", "园区代码"},
	"layoff_rate":                 {"上年度裁员率"},
	"unemployment_insurance_paid": {"实缴失业保险费", "失业保险缴费额", "上年度失业保险缴费"},
	"graduates_hired":             {"应届毕业生人数", "招用高校毕业生人数"},
	"tax_violations_36m":          {"税收违法次数"},
	"refund_fraud_36m":            {"骗取退税"},
	"immediate_refund_since_2019": {"享受即征即退"},
	"entity_type":                 {"主体类型", "市场主体类别"},
	"taxable_income":              {"上年度应纳税所得额", "企业所得税应纳税所得额"},
	"rents_state_property":        {"是否承租国有房屋", "承租国有资产类经营用房"},
	"insured_months":              {"参保月数", "连续缴费月数"},
	"contact_phone":               {"联系人电话", "联系人手机", "手机号码", "联系手机"},
	"wechat_openid":               {"openid", "微信openid"},
}

// unitRe splits a trailing unit in brackets off a header: 营业收入（万元）.
var unitRe = regexp.MustCompile(`^(.*?)\(([^()]*)\)$`)

var headerNorm = strings.NewReplacer("（", "(", "）", ")", " ", "", "\u3000", "", "\t", "")

// normHeader is the form headers are matched in.
func normHeader(h string) string {
	return strings.ToLower(headerNorm.Replace(strings.TrimSpace(strings.TrimPrefix(h, "\uFEFF"))))
}

// headerNames maps every accepted header spelling (normalised) to its column.
var headerNames = sync.OnceValue(func() map[string]*column {
	cols := columns()
	m := make(map[string]*column, 4*len(cols))
	for i := range cols {
		c := &cols[i]
		for _, n := range append([]string{c.Key, c.Label}, headerSynonyms[c.Key]...) {
			m[normHeader(n)] = c
		}
	}
	return m
})

// binding is how one file column feeds a catalog column: directly, or (by a mapping file) with
// a unit to convert and thousands separators to drop.
type binding struct {
	*column
	shift     int               // powers of ten to multiply by (万元 → 元: 4)
	thousands bool              // "1,234.5" is accepted
	words     map[string]string // extra enum words of the mapping file
}

// layout is a parsed header: which catalog column each file column feeds.
type layout struct {
	cols    []binding // by file column; column nil for a column the catalog does not know
	unknown []Issue   // one warning per unknown header cell
	missing []string  // required keys the header lacks
	err     error     // the header itself is unusable (a key appears twice)
}

// Keys a file header cannot do without: the upsert key and the name every notice shows.
var requiredKeys = []string{"credit_code", "name"}

func newLayout(header []string, m *Mapping) layout {
	l := layout{cols: make([]binding, len(header))}
	seen := map[string]int{}
	for i, h := range header {
		b, reason := m.bind(h)
		if b.column == nil {
			l.unknown = append(l.unknown, Issue{Line: 1, Column: strings.TrimSpace(strings.TrimPrefix(h, "\uFEFF")), Reason: fmt.Sprintf("header column %d %s; its values are ignored", i+1, reason), Warning: true})
			continue
		}
		if j, dup := seen[b.Key]; dup && l.err == nil {
			l.err = fmt.Errorf("header columns %d and %d both map to %s; remove one", j+1, i+1, b.Key)
		}
		seen[b.Key] = i
		l.cols[i] = b
	}
	for _, k := range requiredKeys {
		if _, ok := seen[k]; !ok {
			l.missing = append(l.missing, k)
		}
	}
	return l
}

// Mapping is a --mapping file: source headers the catalog does not know, each bound to a catalog
// key, with a unit to convert from and whether thousands separators are used; and extra words for
// enum fields. Nothing is converted unless the mapping says so.
//
//	columns:
//	  纳税人识别号: credit_code
//	  营业收入（万元）: {key: annual_revenue, unit: 万元, thousands: true}
//	values:
//	  status: {正常: active, 停业: revoked}
type Mapping struct {
	Columns map[string]MappedColumn      `yaml:"columns"`
	Values  map[string]map[string]string `yaml:"values"`
	norm    map[string]MappedColumn
}

// MappedColumn is one entry of a mapping file's columns.
type MappedColumn struct {
	Key       string `yaml:"key"`
	Unit      string `yaml:"unit"`
	Thousands bool   `yaml:"thousands"`
}

// UnmarshalYAML accepts the short form `header: key` as well as the full one.
func (c *MappedColumn) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		c.Key = n.Value
		return nil
	}
	type plain MappedColumn
	return n.Decode((*plain)(c))
}

// unitShifts are the units a mapping may convert from, by catalog unit: powers of ten to the
// stored unit.
var unitShifts = map[string]map[string]int{
	"元": {"元": 0, "万元": 4, "亿元": 8},
	"":  {"%": -2}, // rates stored as fractions
}

// LoadMapping reads and checks a mapping file: every key a catalog key, every unit convertible.
func LoadMapping(path string) (*Mapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	var m Mapping
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return &m, nil
}

func (m *Mapping) check() error {
	m.norm = map[string]MappedColumn{}
	heads := make([]string, 0, len(m.Columns))
	for h := range m.Columns {
		heads = append(heads, h)
	}
	sort.Strings(heads)
	for _, h := range heads {
		mc := m.Columns[h]
		c := columnByKey(mc.Key)
		if c == nil {
			return fmt.Errorf("columns.%s: %q is not a catalog key (see `policypush fields`)", h, mc.Key)
		}
		if mc.Unit != "" {
			if _, ok := unitShifts[c.Unit][mc.Unit]; !ok || (c.Unit == "" && c.Type != TypeFloat) {
				return fmt.Errorf("columns.%s: unit %q cannot be converted to %s's unit %q", h, mc.Unit, c.Key, c.Unit)
			}
		}
		if mc.Thousands && c.Type != TypeInt && c.Type != TypeFloat {
			return fmt.Errorf("columns.%s: thousands separators apply to numbers, %s is a %s", h, c.Key, c.Type)
		}
		m.norm[normHeader(h)] = mc
	}
	for k, words := range m.Values {
		c := columnByKey(k)
		if c == nil || c.Type != TypeEnum {
			return fmt.Errorf("values.%s: not an enum field of the catalog", k)
		}
		for w, v := range words {
			if !contains(c.Enum, v) {
				return fmt.Errorf("values.%s.%s: %q is not one of %s", k, w, v, strings.Join(c.Enum, ", "))
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bind finds the column a header cell feeds; reason says why there is none. The mapping (m may be
// nil) is consulted first, so it can also rebind a header the catalog knows.
func (m *Mapping) bind(h string) (binding, string) {
	n := normHeader(h)
	if m != nil {
		if mc, ok := m.norm[n]; ok {
			c := columnByKey(mc.Key)
			return binding{column: c, shift: unitShifts[c.Unit][mc.Unit], thousands: mc.Thousands, words: m.Values[c.Key]}, ""
		}
	}
	var words map[string]string
	if c := headerNames()[n]; c != nil {
		if m != nil {
			words = m.Values[c.Key]
		}
		return binding{column: c, words: words}, ""
	}
	if sm := unitRe.FindStringSubmatch(n); sm != nil {
		if c := headerNames()[sm[1]]; c != nil {
			if sm[2] == c.Unit {
				if m != nil {
					words = m.Values[c.Key]
				}
				return binding{column: c, words: words}, ""
			}
			return binding{}, fmt.Sprintf("is %s in %s, but %s is stored in %s; convert it with a --mapping file (unit: %s)",
				c.Key, sm[2], c.Key, unitOrNone(c.Unit), sm[2])
		}
	}
	return binding{}, "is not a catalog field"
}

func unitOrNone(u string) string {
	if u == "" {
		return "no unit"
	}
	return u
}

// thousandsRe is a number written with comma thousands separators: 1,234,567.89.
var thousandsRe = regexp.MustCompile(`^-?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$`)

// parse checks one trimmed cell through the binding's conversions, then the column's rules.
func (b binding) parse(raw string) (any, string, bool) {
	if fx, ok := strings.CutPrefix(raw, formulaMark); ok {
		return nil, fmt.Sprintf("is the formula =%s saved without its computed value; open the workbook in Excel or WPS and save it (or paste the values) so the value is stored", fx), false
	}
	if b.thousands && thousandsRe.MatchString(raw) {
		raw = strings.ReplaceAll(raw, ",", "")
	}
	if w, ok := b.words[raw]; ok {
		raw = w
	}
	if b.shift != 0 && raw != "" {
		shifted, ok := shiftDecimal(raw, b.shift)
		if !ok {
			return nil, "is not a number: write a plain decimal such as 1234.56", false
		}
		raw = shifted
	}
	return b.column.parse(raw)
}

// shiftDecimal multiplies a plain decimal by 10^n by moving the point, so 1234.5678 万元 becomes
// exactly 12345678 元 (float multiplication would not).
func shiftDecimal(raw string, n int) (string, bool) {
	neg := strings.HasPrefix(raw, "-")
	digits := strings.TrimPrefix(raw, "-")
	if !decimalRe.MatchString(digits) || strings.ContainsAny(digits, "eE") {
		return "", false
	}
	intPart, frac, _ := strings.Cut(digits, ".")
	all := intPart + frac
	point := len(intPart) + n
	for point > len(all) {
		all += "0"
	}
	for point < 0 {
		all = "0" + all
		point++
	}
	out := strings.TrimLeft(all[:point], "0")
	if out == "" {
		out = "0"
	}
	if f := strings.TrimRight(all[point:], "0"); f != "" {
		out += "." + f
	}
	if neg {
		out = "-" + out
	}
	return out, true
}
