package registry

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/policypush/policypush/store"
)

// The synthetic registry stands in for the provincial data-sharing platform in the demo, the tests
// and the benchmarks. It is deterministic (same n and seed, same firms, byte for byte) and shaped
// like Jiangsu: firms spread over the 13 cities weighted by economy, each development park holding
// a plausible share of its city (parkShareOfCity), industries weighted so that industry-scoped
// policies (catering, retail, transport, tourism) match hundreds of firms out of 20,000, sizes
// log-normal with micro firms the large majority of enterprises (as the national economic census
// finds, see docs/registry.md), 个体工商户 and 农民专业合作社 beside the enterprises, credit codes
// shaped like issued ones, and all the data flaws the rest of the system must handle (no WeChat
// binding, unfollowed accounts, revoked firms).

type county struct {
	code, name string
	parkOnly   bool // a development zone registered as its own division: every firm in it is a park firm
}

type city struct {
	name     string // 苏州市
	weight   float64
	counties []county
}

// cities are Jiangsu's 13 prefecture-level cities (GB/T 2260 3201–3213) with a selection of their
// county-level divisions; weight is roughly each city's share of the province's enterprises.
var cities = []city{
	{"南京市", 17, []county{{"320102", "玄武区", false}, {"320104", "秦淮区", false}, {"320105", "建邺区", false}, {"320106", "鼓楼区", false},
		{"320111", "浦口区", false}, {"320113", "栖霞区", false}, {"320114", "雨花台区", false}, {"320115", "江宁区", false}, {"320116", "六合区", false}}},
	{"无锡市", 12, []county{{"320205", "锡山区", false}, {"320206", "惠山区", false}, {"320211", "滨湖区", false}, {"320213", "梁溪区", false},
		{"320214", "新吴区", false}, {"320281", "江阴市", false}, {"320282", "宜兴市", false}}},
	{"徐州市", 7, []county{{"320303", "云龙区", false}, {"320311", "泉山区", false}, {"320312", "铜山区", false}, {"320381", "新沂市", false}}},
	{"常州市", 8, []county{{"320402", "天宁区", false}, {"320411", "新北区", false}, {"320412", "武进区", false}, {"320481", "溧阳市", false}}},
	{"苏州市", 22, []county{{"320505", "虎丘区", false}, {"320506", "吴中区", false}, {"320507", "相城区", false}, {"320508", "姑苏区", false},
		{"320509", "吴江区", false}, {"320571", "苏州工业园区", true}, {"320581", "常熟市", false}, {"320582", "张家港市", false},
		{"320583", "昆山市", false}, {"320585", "太仓市", false}}},
	{"南通市", 8, []county{{"320602", "崇川区", false}, {"320612", "通州区", false}, {"320614", "海门区", false}, {"320681", "启东市", false}}},
	{"连云港市", 3, []county{{"320706", "海州区", false}, {"320707", "赣榆区", false}}},
	{"淮安市", 3.5, []county{{"320803", "淮安区", false}, {"320812", "清江浦区", false}}},
	{"盐城市", 5, []county{{"320902", "亭湖区", false}, {"320903", "盐都区", false}}},
	{"扬州市", 5, []county{{"321002", "广陵区", false}, {"321003", "邗江区", false}, {"321012", "江都区", false}}},
	{"镇江市", 3.5, []county{{"321102", "京口区", false}, {"321111", "润州区", false}}},
	{"泰州市", 4, []county{{"321202", "海陵区", false}, {"321203", "高港区", false}}},
	{"宿迁市", 3, []county{{"321302", "宿城区", false}, {"321311", "宿豫区", false}}},
}

type park struct {
	id, name string
	// share is the fraction of its city's firms the park holds: a national-level zone is a large
	// part of a city's economy but far from all of it (SIP, the largest, holds about a tenth of
	// Suzhou's market entities).
	share   float64
	regions []string // a park firm's region_code is one of these
}

// parks are the development zones of the demo's park managers; park_id values are their ids. A
// city has at most one demo park.
var parks = []park{
	{"SIP", "苏州工业园区", 0.12, []string{"320571"}},
	{"NJ-JB", "南京江北新区", 0.12, []string{"320111", "320116"}},
	{"WX-XD", "无锡新区", 0.12, []string{"320214"}},
	{"CZ-WJ", "常州武进国家高新区", 0.15, []string{"320412"}},
	{"NT-HM", "海门经济技术开发区", 0.10, []string{"320614"}},
}

// parkOf is the demo park of a city (by its 4-digit prefix), if any.
func parkOf(cityPrefix string) (park, bool) {
	for _, p := range parks {
		if p.regions[0][:4] == cityPrefix {
			return p, true
		}
	}
	return park{}, false
}

// Shares of the other market entities among the rows (the platform's registry holds them beside
// the enterprises; in Jiangsu 个体工商户 outnumber enterprises, the demo keeps them a minority so
// that the enterprise policies stay the bulk of the matches).
const (
	individualShare  = 0.15
	cooperativeShare = 0.01
)

// sizeShift moves every firm's log headcount: with it micro firms are about 85–90% of the
// enterprises, the census's mix (docs/registry.md), measured by rules.ClassifySize in the tests.
const sizeShift = -1.3

type industry struct {
	code   string // GB/T 4754-2017 class
	weight float64
	words  []string // business words of a firm name: 苏州恒瑞{精密机械}有限公司
	staff  float64  // shift of log(employees) against the median firm
	perCap float64  // revenue per employee, 元
	assets float64  // total assets ÷ revenue
}

// industries are weighted so manufacturing (C) is the largest section, as in Jiangsu, and the five
// hard-hit industries of the 2022 retention subsidy (catering, retail, tourism, aviation, road /
// water / rail transport) are each present in the hundreds per 20,000 firms.
var industries = []industry{
	{"C3911", 3, []string{"计算机", "智能终端", "电脑科技"}, 0.7, 450_000, 0.9},
	{"C3973", 2, []string{"半导体", "集成电路", "微电子"}, 0.9, 600_000, 1.4},
	{"C1711", 3, []string{"纺织", "棉纺", "纱业"}, 0.6, 300_000, 0.8},
	{"C1810", 4, []string{"服饰", "服装", "制衣"}, 0.7, 200_000, 0.6},
	{"C2614", 2, []string{"化工", "化学", "精细化工"}, 0.5, 750_000, 1.1},
	{"C2929", 4, []string{"塑业", "塑胶制品", "塑料科技"}, 0.5, 350_000, 0.8},
	{"C3311", 4, []string{"钢结构", "金属结构", "钢构工程"}, 0.5, 450_000, 0.9},
	{"C3484", 6, []string{"精密机械", "机械零部件", "精工机械"}, 0.6, 350_000, 0.9},
	{"C3670", 4, []string{"汽车零部件", "汽车配件", "汽配"}, 0.8, 450_000, 1.0},
	{"C3824", 3, []string{"电力电子", "电气", "电子元器件"}, 0.6, 400_000, 0.9},
	{"F5123", 6, []string{"农产品", "果蔬", "生鲜贸易"}, -0.4, 1_250_000, 0.4},
	{"F5211", 3, []string{"百货", "商贸", "购物广场"}, 0.1, 300_000, 0.5},
	{"F5221", 5, []string{"粮油", "食品商行", "粮油贸易"}, -0.5, 250_000, 0.4},
	{"F5261", 4, []string{"汽车销售", "汽车服务", "汽车贸易"}, 0.0, 1_000_000, 0.5},
	{"H6210", 4, []string{"餐饮管理", "酒家", "餐饮"}, 0.0, 125_000, 0.6},
	{"H6220", 2, []string{"快餐", "小吃", "餐饮服务"}, -0.2, 100_000, 0.5},
	{"H6110", 1, []string{"大酒店", "酒店管理", "宾馆"}, 0.5, 150_000, 2.0},
	{"G5431", 4, []string{"物流", "货运", "运输"}, 0.2, 300_000, 1.2},
	{"G5421", 1, []string{"客运", "汽车客运", "旅游客运"}, 0.4, 200_000, 1.5},
	{"G5320", 0.5, []string{"铁路物流", "铁路货运"}, 0.6, 400_000, 2.0},
	{"G5523", 1, []string{"航运", "船务", "水运"}, 0.1, 450_000, 2.5},
	{"G5612", 0.3, []string{"航空货运", "航空物流"}, 0.8, 750_000, 1.5},
	{"G5810", 1.2, []string{"国际货运代理", "供应链管理", "多式联运"}, -0.1, 750_000, 0.5},
	{"I6513", 3.5, []string{"软件", "信息技术", "网络科技"}, 0.3, 250_000, 0.8},
	{"I6520", 1.5, []string{"芯片设计", "集成电路设计", "微电子设计"}, 0.5, 400_000, 1.0},
	{"I6531", 2, []string{"信息系统", "智能科技", "数字科技"}, 0.2, 300_000, 0.8},
	{"L7211", 2, []string{"企业管理", "实业", "控股"}, -0.2, 200_000, 2.0},
	{"L7271", 1.5, []string{"国际旅行社", "旅行社", "旅游"}, -0.3, 250_000, 0.4},
	{"L7299", 2.5, []string{"商务服务", "会展服务", "企业服务"}, -0.3, 150_000, 0.6},
	{"M7320", 5, []string{"检测技术", "科技研发", "技术研究院"}, 0.1, 200_000, 1.2},
	{"E4710", 4, []string{"建设工程", "建筑工程", "建工"}, 0.6, 350_000, 1.0},
	{"K7010", 1.5, []string{"房地产开发", "置业", "地产"}, 0.0, 750_000, 4.0},
	{"K7020", 1.5, []string{"物业管理", "物业服务"}, 0.5, 75_000, 0.5},
	{"A0111", 2, []string{"农业科技", "生态农业", "农业发展"}, -0.3, 100_000, 1.5},
	{"N7850", 1, []string{"旅游开发", "景区管理", "文旅发展"}, 0.0, 100_000, 3.0},
	{"R8710", 1, []string{"文化传媒", "广播传媒", "影视传媒"}, -0.3, 150_000, 1.0},
	{"O8010", 2, []string{"家政服务", "保洁服务", "家庭服务"}, -0.2, 75_000, 0.5},
	{"D4420", 1, []string{"电力", "供电服务", "能源"}, 0.8, 1_500_000, 3.0},
}

// Firm names take their 字号 from two characters of these pools, which gives enough combinations that
// names rarely repeat.
const (
	nameChars1 = "恒华天中金鼎宏远永瑞盛汇博嘉新海德信正万和东长润安凯精明同智宝亿隆旭晨星云启锦卓"
	nameChars2 = "瑞新成联诚盛达大信丰泰通远禾泽纳润阳康方江华辉创宇程越美昌日光辰帆航源升益腾茂杰"
)

// Date range of synthetic registrations, and when the "MA" style organisation codes replaced the
// numeric ones (credit codes became mandatory on 2015-10-01).
var (
	synthFrom  = time.Date(1995, 1, 1, 0, 0, 0, 0, time.UTC)
	synthTo    = time.Date(2022, 6, 1, 0, 0, 0, 0, time.UTC)
	maCodeFrom = time.Date(2015, 10, 1, 0, 0, 0, 0, time.UTC)
	ma2From    = time.Date(2019, 7, 1, 0, 0, 0, 0, time.UTC)
)

const openIDChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// Synth returns n synthetic Jiangsu firms. The same n and seed give the same firms, and Synth(m,
// seed) is a prefix of Synth(n, seed) for m < n. Credit codes are unique and carry valid check
// characters (and valid GB 11714 organisation-code check characters inside them).
func Synth(n int, seed int64) []store.Enterprise {
	g := newSynth(seed)
	firms := make([]store.Enterprise, n)
	for i := range firms {
		firms[i] = g.firm(i)
	}
	return firms
}

type synth struct {
	r     *rand.Rand
	names map[string]bool
	// Unique identifiers come from an affine bijection i → (a·i + b) mod m, so they never repeat
	// and need no lookup table; b is drawn from the seed so different seeds give different codes.
	numOffset, maOffset, phoneOffset uint64
	cityW, industryW, tradeW         []float64
}

func newSynth(seed int64) *synth {
	r := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	g := &synth{r: r, names: map[string]bool{}}
	g.numOffset, g.maOffset, g.phoneOffset = r.Uint64N(1e8), r.Uint64N(ma5Space), r.Uint64N(1e9)
	for _, c := range cities {
		g.cityW = append(g.cityW, c.weight)
	}
	for _, t := range individualTrades {
		g.tradeW = append(g.tradeW, t.weight)
	}
	for _, in := range industries {
		g.industryW = append(g.industryW, in.weight)
	}
	return g
}

// ma5Space is the number of 5-character strings over the credit-code alphabet: the serial part of
// an MA code after its series character. A code is unique as long as n stays below it (28 million).
const ma5Space = 31 * 31 * 31 * 31 * 31

func (g *synth) firm(i int) store.Enterprise {
	r := g.r
	var e store.Enterprise

	// Where: a city weighted by economy; within it the demo park (region fixed by the park) with its
	// share, else one of the city's counties.
	ct := cities[pick(r, g.cityW)]
	cityName := ct.name
	var c county
	if p, ok := parkOf(ct.counties[0].code[:4]); ok && r.Float64() < p.share {
		e.ParkID = p.id
		c, _ = countyOf(p.regions[r.IntN(len(p.regions))])
	} else {
		for {
			c = ct.counties[r.IntN(len(ct.counties))]
			if !c.parkOnly {
				break
			}
		}
	}
	e.RegionCode = c.code

	kind := EntityEnterprise
	switch u := r.Float64(); {
	case u < individualShare:
		kind = EntityIndividual
	case u < individualShare+cooperativeShare:
		kind = EntityCooperative
	}
	in := industries[pick(r, g.industryW)]
	switch kind {
	case EntityIndividual:
		in = individualTrades[pick(r, g.tradeW)]
	case EntityCooperative:
		in = cooperativeTrade
	}
	e.IndustryCode = in.code
	section := in.code[:1]

	days := int(float64(synthTo.Sub(synthFrom).Hours()/24) * math.Pow(r.Float64(), 0.6)) // more young firms than old
	reg := synthFrom.AddDate(0, 0, days)
	e.RegisteredAt = &reg
	e.CreditCode = g.creditCode(i, kind, c.code, reg)
	e.EntityType = kind

	e.Employees = int64(clamp(math.Round(math.Exp(2.2+sizeShift+in.staff+1.3*r.NormFloat64())), 1, 60000))
	if kind == EntityIndividual {
		e.Employees = 1 + int64(r.IntN(6)) // the owner and a few helpers
	}
	switch u := r.Float64(); {
	case u < 0.03:
		e.InsuredEmployees = 0
	case u < 0.15:
		e.InsuredEmployees = int64(math.Round(float64(e.Employees) * (0.3 + 0.5*r.Float64())))
	default:
		e.InsuredEmployees = int64(math.Round(float64(e.Employees) * (0.85 + 0.15*r.Float64())))
	}

	e.AnnualRevenue = yuan(float64(e.Employees) * in.perCap * math.Exp(0.5*r.NormFloat64()))
	e.TotalAssets = yuan(e.AnnualRevenue * in.assets * math.Exp(0.4*r.NormFloat64()))
	e.VATSales = yuan(e.AnnualRevenue * (0.8 + 0.2*r.Float64()))
	e.TaxpayerType = "general"
	if e.AnnualRevenue < 5_000_000 { // the 500万元 threshold of 一般纳税人 registration
		e.TaxpayerType = "small_scale"
	}
	e.TaxCreditRating = g.rating(reg)

	e.IsHighTech = r.Float64() < highTechShare(section)
	e.SpecializedLevel = "none"
	national, province := 0.001, 0.008
	if section == "C" {
		national, province = 0.012, 0.07
	}
	switch u := r.Float64(); {
	case u < national:
		e.SpecializedLevel = "national"
	case u < national+province:
		e.SpecializedLevel = "province"
	}

	if r.Float64() >= 0.6 {
		e.LayoffRate = max(math.Round(0.3*math.Pow(r.Float64(), 2)*1e4)/1e4, 0.0001)
	}
	e.UnemploymentInsurancePaid = yuan(float64(e.InsuredEmployees) * (600 + 600*r.Float64()))
	if e.Employees >= 3 && r.Float64() < 0.17 {
		e.GraduatesHired = 1 + int64(10*math.Pow(r.Float64(), 2))
	}
	switch u := r.Float64(); {
	case u < 0.92:
	case u < 0.97:
		e.TaxViolations36m = 1
	case u < 0.99:
		e.TaxViolations36m = 2
	default:
		e.TaxViolations36m = 3
	}
	e.RefundFraud36m = r.Float64() < 0.01
	e.ImmediateRefundSince2019 = r.Float64() < 0.03

	switch u := r.Float64(); {
	case u < 0.95:
		e.Status = store.StatusActive
	case u < 0.97:
		e.Status = store.StatusRevoked
	case u < 0.99:
		e.Status = store.StatusDeregistered
	default:
		e.Status = store.StatusMovedOut
	}

	e.TaxableIncome = max(yuan(e.AnnualRevenue*(0.12*r.NormFloat64()+0.04)), 0) // a loss is taxable income 0
	e.RentsStateProperty = r.Float64() < rentsStateShare(section, kind)
	if e.InsuredEmployees > 0 {
		age := int64(synthTo.Sub(reg).Hours() / 24 / 30.4)
		e.InsuredMonths = min(max(age, 1), int64(3+r.IntN(118)))
	}
	if kind != EntityEnterprise {
		e.IsHighTech, e.SpecializedLevel, e.GraduatesHired = false, "none", 0
	}

	e.Name = g.name(cityName, c, in, e.Employees, kind)
	e.ContactPhone = fmt.Sprintf("13%09d", (uint64(i)*387_420_489+g.phoneOffset)%1e9) // 3^18, coprime to 10
	switch u := r.Float64(); {
	case u < 0.80:
		e.WechatOpenID = "o" + g.chars(openIDChars, 27)
	case u < 0.95:
		// no WeChat binding: notices go by SMS
	default:
		// the sandbox answers 43004 (user unfollowed) for these: the demo's WeChat → SMS fallback
		e.WechatOpenID = "ounfollow" + g.chars(openIDChars, 19)
	}
	return e
}

// creditCode builds the registration authority and type ("91" enterprise, "92" 个体工商户, "93"
// 农民专业合作社) + region + organisation code (GB 11714, 8 characters and its check) + the GB 32100
// check. Firms registered before credit codes became mandatory kept their old numeric organisation
// code; later ones got an "MA" code, whose next character the issuing system moved from 1 to 2 as
// the first series filled (MA1… until about mid-2019, MA2… after).
func (g *synth) creditCode(i int, kind, region string, registered time.Time) string {
	var body string
	if registered.Before(maCodeFrom) {
		body = fmt.Sprintf("%08d", (uint64(i)*7_919_317+g.numOffset)%1e8) // multiplier coprime to 10
	} else {
		v := (uint64(i)*1_000_003 + g.maOffset) % ma5Space // multiplier coprime to 31
		var b [5]byte
		for k := 4; k >= 0; k-- {
			b[k] = creditCodeAlphabet[v%31]
			v /= 31
		}
		series := "1"
		if !registered.Before(ma2From) {
			series = "2"
		}
		body = "MA" + series + string(b[:])
	}
	prefix := map[string]string{EntityEnterprise: "91", EntityIndividual: "92", EntityCooperative: "93"}[kind]
	first17 := prefix + region + body + string(orgCodeCheckChar(body))
	check, _ := CreditCodeCheckChar(first17) // built from the alphabet only, cannot fail
	return first17 + string(check)
}

// orgCodeCheckChar is the GB 11714 check character of an 8-character organisation code.
func orgCodeCheckChar(body string) byte {
	weights := [8]int{3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for k := range 8 {
		ch := body[k]
		v := int(ch - '0')
		if ch >= 'A' {
			v = int(ch-'A') + 10
		}
		sum += v * weights[k]
	}
	switch c := 11 - sum%11; c {
	case 10:
		return 'X'
	case 11:
		return '0'
	default:
		return byte('0' + c)
	}
}

// rating draws a tax credit rating; firms in their first year are mostly M (new, not yet rated on
// a full year).
func (g *synth) rating(registered time.Time) string {
	if registered.After(synthTo.AddDate(-1, 0, 0)) && g.r.Float64() < 0.6 {
		return "M"
	}
	switch u := g.r.Float64(); {
	case u < 0.30:
		return "A"
	case u < 0.82:
		return "B"
	case u < 0.90:
		return "M"
	case u < 0.96:
		return "C"
	}
	return "D"
}

// name builds a plausible firm name, e.g. 苏州市吴中区恒瑞精密机械有限公司, retrying a few times
// when it is taken so names rarely repeat.
func (g *synth) name(cityName string, c county, in industry, employees int64, kind string) string {
	short := strings.TrimSuffix(cityName, "市")
	var n string
	for range 8 {
		if kind != EntityEnterprise {
			// 个体工商户: 苏州市吴中区恒瑞粮油店; 合作社: 海门区恒瑞果蔬种植专业合作社
			place := c.name
			if strings.HasSuffix(c.name, "区") && c.name != "苏州工业园区" {
				place = cityName + c.name
			}
			n = place + g.pickRune(nameChars1) + g.pickRune(nameChars2) + in.words[g.r.IntN(len(in.words))]
			if !g.names[n] {
				break
			}
			continue
		}
		brand := g.pickRune(nameChars1) + g.pickRune(nameChars2)
		word := in.words[g.r.IntN(len(in.words))]
		suffix := "有限公司"
		if employees >= 300 && g.r.Float64() < 0.5 {
			suffix = "股份有限公司"
		}
		switch u := g.r.Float64(); {
		case u < 0.50:
			n = short + brand + word + suffix
		case u < 0.80 && strings.HasSuffix(c.name, "区") && c.name != "苏州工业园区":
			n = cityName + c.name + brand + word + suffix
		case u < 0.80:
			n = c.name + brand + word + suffix // county-level city or zone stands on its own
		case u < 0.95:
			n = "江苏" + brand + word + suffix
		default:
			n = brand + "（" + short + "）" + word + suffix // the foreign-invested style
		}
		if !g.names[n] {
			break
		}
	}
	g.names[n] = true
	return n
}

func (g *synth) pickRune(pool string) string {
	rs := []rune(pool)
	return string(rs[g.r.IntN(len(rs))])
}

func (g *synth) chars(alphabet string, n int) string {
	b := make([]byte, n)
	for k := range b {
		b[k] = alphabet[g.r.IntN(len(alphabet))]
	}
	return string(b)
}

// countyOf finds a division and its city by code.
func countyOf(code string) (county, string) {
	for _, ct := range cities {
		for _, c := range ct.counties {
			if c.code == code {
				return c, ct.name
			}
		}
	}
	return county{code: code}, ""
}

// pick draws an index with probability proportional to its weight.
func pick(r *rand.Rand, weights []float64) int {
	total := 0.0
	for _, w := range weights {
		total += w
	}
	u := r.Float64() * total
	for i, w := range weights {
		if u < w {
			return i
		}
		u -= w
	}
	return len(weights) - 1
}

func clamp(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }

// yuan rounds to the fen, as amounts are booked.
func yuan(v float64) float64 { return math.Round(v*100) / 100 }

// individualTrades are what 个体工商户 do: shops, eateries, repairs, small transport; the words end
// the way such names do (店, 经营部, 工作室, 馆).
var individualTrades = []industry{
	{"F5221", 4, []string{"粮油店", "副食品店", "便利店"}, 0, 150_000, 0.3},
	{"F5261", 1, []string{"汽车用品店", "车品经营部"}, 0, 200_000, 0.3},
	{"F5211", 3, []string{"百货店", "日用品经营部", "小卖部"}, 0, 120_000, 0.3},
	{"H6210", 4, []string{"饭店", "小吃店", "面馆"}, 0, 100_000, 0.4},
	{"H6220", 2, []string{"快餐店", "早餐店"}, 0, 90_000, 0.4},
	{"O8010", 2, []string{"家政服务部", "保洁服务部"}, 0, 60_000, 0.2},
	{"O8040", 2, []string{"理发店", "美容美发工作室", "美发店"}, 0, 70_000, 0.3},
	{"G5431", 2, []string{"货运部", "运输经营部"}, 0, 150_000, 0.8},
}

// cooperativeTrade is what a 农民专业合作社 does in the demo: farming.
var cooperativeTrade = industry{"A0111", 1, []string{"果蔬种植专业合作社", "粮食种植专业合作社", "农机专业合作社"}, 0.5, 120_000, 1.5}

// rentsStateShare is the fraction renting state-owned premises (承租国有房屋): shops and service
// firms on street frontage more than factories.
func rentsStateShare(section, kind string) float64 {
	switch {
	case kind == EntityIndividual:
		return 0.10
	case strings.Contains("FHLMOR", section):
		return 0.06
	}
	return 0.02
}

// highTechShare is the fraction of high-tech certified firms per GB/T 4754 section: about 8%
// overall, concentrated in manufacturing, IT and research.
func highTechShare(section string) float64 {
	switch section {
	case "C":
		return 0.12
	case "I":
		return 0.25
	case "M":
		return 0.30
	}
	return 0.02
}

// WriteCSV writes firms as an import file: a header of catalog keys in Catalog order, then one line
// per firm in the format ParseRecord reads back (dates 2006-01-02, bools true/false, plain decimals).
func WriteCSV(w io.Writer, firms []store.Enterprise) error {
	header := make([]string, len(Catalog))
	for i, f := range Catalog {
		header[i] = f.Key
	}
	return writeRecords(w, header, firms, nil)
}

// writeRecords writes an optional header, then each firm as a record; edit, when set, may alter the
// k-th record before it is written.
func writeRecords(w io.Writer, header []string, firms []store.Enterprise, edit func(k int, rec []string)) error {
	cw := csv.NewWriter(w)
	if header != nil {
		if err := cw.Write(header); err != nil {
			return fmt.Errorf("write csv header: %w", err)
		}
	}
	cols := columns()
	rec := make([]string, len(cols))
	for k, e := range firms {
		ev := reflect.ValueOf(e)
		for i := range cols {
			rec[i] = cols[i].format(ev)
		}
		if edit != nil {
			edit(k, rec)
		}
		if err := cw.Write(rec); err != nil {
			return fmt.Errorf("write csv row %d: %w", k+1, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// badRowsSeed draws the firms WriteBadRows corrupts; it is fixed so the flawed rows are the same in
// every demo file.
const badRowsSeed = 20220601

// WriteBadRows appends, after a WriteCSV header and rows, the flaws an import must survive: five
// rows to reject (a count written with its unit, an unknown status, an impossible date, a malformed
// credit code, a layoff rate of 1.7) and two rows to keep with a warning because their credit codes
// fail only the checksum (one of them the real pilot code 91350100M0001TGQXM).
func WriteBadRows(w io.Writer) error {
	index := func(key string) int {
		return slices.IndexFunc(Catalog, func(f Field) bool { return f.Key == key })
	}
	flaws := []struct{ key, value string }{
		{"employees", "50人"},
		{"status", "歇业"},
		{"registered_at", "2019-02-30"},
		{"credit_code", "91320500MA1OK2A12X"}, // position 12 is the letter O
		{"layoff_rate", "1.7"},
		{"credit_code", "91350100M0001TGQXM"},
		{"credit_code", ""}, // filled below: a generated code with a wrong check character
	}
	return writeRecords(w, nil, Synth(len(flaws), badRowsSeed), func(k int, rec []string) {
		i := index(flaws[k].key)
		v := flaws[k].value
		if v == "" {
			code := rec[i]
			good := strings.IndexByte(creditCodeAlphabet, code[creditCodeLen-1])
			v = code[:creditCodeLen-1] + string(creditCodeAlphabet[(good+1)%31])
		}
		rec[i] = v
	})
}

// SynthCSVFile writes Synth(n, seed) to path as an import file, with WriteBadRows appended when
// badRows is set.
func SynthCSVFile(path string, n int, seed int64, badRows bool) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
	}()
	bw := bufio.NewWriter(f)
	if err := WriteCSV(bw, Synth(n, seed)); err != nil {
		return err
	}
	if badRows {
		if err := WriteBadRows(bw); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
