// Package policytext restates the six 2022 demo policies in plain Go, read from their documents, as
// an oracle for tests: it shares no code or data with package rules (no expr, no size table), so a
// mistake in the YAML catalog, in size() or in amount rounding shows up as a disagreement. Only
// tests use it; nothing in the running system may.
package policytext

import (
	"strconv"
	"strings"
)

// Size tiers, as rules.size() names them.
const (
	Large     = "large"
	Medium    = "medium"
	Small     = "small"
	Micro     = "micro"
	Undecided = "undecided"
)

// indicator bounds of one tier: X 从业人员 (人), Y 营业收入 and Z 资产总额 (万元); 0 = not used.
type xyz struct{ x, y, z float64 }

// table300 returns the rows of 工信部联企业〔2011〕300号 第四条 for a GB/T 4754-2017 code, as the
// statistical method (国统字〔2017〕213号) maps it: the bounds of 中型, 小型, and the SME ceiling above
// which a firm is 大型. ok is false for finance (银发〔2015〕309号, not 300号).
func table300(code string) (large, medium, small xyz, ok bool) {
	d := strings.TrimLeft(strings.ToUpper(code), "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	div, _ := strconv.Atoi(d[:min(2, len(d))])
	switch {
	case div >= 1 && div <= 5: // 农、林、牧、渔业：营业收入
		return xyz{0, 20000, 0}, xyz{0, 500, 0}, xyz{0, 50, 0}, true
	case div >= 6 && div <= 46: // 工业
		return xyz{1000, 40000, 0}, xyz{300, 2000, 0}, xyz{20, 300, 0}, true
	case div >= 47 && div <= 50: // 建筑业：营业收入、资产总额
		return xyz{0, 80000, 80000}, xyz{0, 6000, 5000}, xyz{0, 300, 300}, true
	case div == 51: // 批发业
		return xyz{200, 40000, 0}, xyz{20, 5000, 0}, xyz{5, 1000, 0}, true
	case div == 52: // 零售业
		return xyz{300, 20000, 0}, xyz{50, 500, 0}, xyz{10, 100, 0}, true
	case div >= 54 && div <= 58, strings.HasPrefix(d, "591"): // 交通运输业（不含铁路），含装卸搬运
		return xyz{1000, 30000, 0}, xyz{300, 3000, 0}, xyz{20, 200, 0}, true
	case div == 59: // 仓储业
		return xyz{200, 30000, 0}, xyz{100, 1000, 0}, xyz{20, 100, 0}, true
	case div == 60: // 邮政业
		return xyz{1000, 30000, 0}, xyz{300, 2000, 0}, xyz{20, 100, 0}, true
	case div == 61, div == 62: // 住宿业、餐饮业
		return xyz{300, 10000, 0}, xyz{100, 2000, 0}, xyz{10, 100, 0}, true
	case div == 63, div == 64: // 信息传输业
		return xyz{2000, 100000, 0}, xyz{100, 1000, 0}, xyz{10, 100, 0}, true
	case div == 65: // 软件和信息技术服务业
		return xyz{300, 10000, 0}, xyz{100, 1000, 0}, xyz{10, 50, 0}, true
	case div >= 66 && div <= 69: // 金融业
		return xyz{}, xyz{}, xyz{}, false
	case strings.HasPrefix(d, "7010"): // 房地产开发经营：营业收入、资产总额
		return xyz{0, 200000, 10000}, xyz{0, 1000, 5000}, xyz{0, 100, 2000}, true
	case strings.HasPrefix(d, "702"): // 物业管理
		return xyz{1000, 5000, 0}, xyz{300, 1000, 0}, xyz{100, 500, 0}, true
	case div == 71, div == 72: // 租赁和商务服务业：从业人员、资产总额
		return xyz{300, 0, 120000}, xyz{100, 0, 8000}, xyz{10, 0, 100}, true
	}
	return xyz{300, 0, 0}, xyz{100, 0, 0}, xyz{10, 0, 0}, true // 其他未列明行业
}

// tier applies 300号 第四条's reading: 微型 needs one indicator below the 小型 bound; 中型 and 小型 need
// every indicator at or above the bound. v holds the firm's X, Y, Z (Y, Z in 元); a figure ≤ 0 is
// not reported, and a tier that depends on one is undecided.
func tier(large, medium, small xyz, v xyz) string {
	type ind struct{ bound, value float64 }
	pick := func(b xyz) []ind {
		var out []ind
		if b.x > 0 {
			out = append(out, ind{b.x, v.x})
		}
		if b.y > 0 {
			out = append(out, ind{b.y * 10000, v.y})
		}
		if b.z > 0 {
			out = append(out, ind{b.z * 10000, v.z})
		}
		return out
	}
	for _, i := range pick(small) {
		if i.value > 0 && i.value < i.bound {
			return Micro
		}
	}
	for _, i := range pick(small) {
		if i.value <= 0 {
			return Undecided
		}
	}
	all := func(b xyz) bool {
		for _, i := range pick(b) {
			if i.value < i.bound {
				return false
			}
		}
		return true
	}
	switch {
	case all(large):
		return Large
	case all(medium):
		return Medium
	}
	return Small
}

// Size300 sizes a firm by 工信部联企业〔2011〕300号 (money in 元).
func Size300(code string, employees int64, revenue, assets float64) string {
	large, medium, small, ok := table300(code)
	if code == "" || !ok {
		return Undecided
	}
	return tier(large, medium, small, xyz{float64(employees), revenue, assets})
}

// SizeVAT sizes a firm for 留抵退税 by 财政部 税务总局公告2022年第14号第八条: 300号's 营业收入 (read as last
// year's VAT sales) and 资产总额 indicators only; a row left with neither uses 增值税销售额 bands —
// 微型 < 100万元, 小型 < 2000万元, 中型 < 1亿元.
func SizeVAT(code string, vatSales, assets float64) string {
	large, medium, small, ok := table300(code)
	if code == "" || !ok {
		return Undecided
	}
	drop := func(b xyz) xyz { return xyz{0, b.y, b.z} }
	large, medium, small = drop(large), drop(medium), drop(small)
	if small == (xyz{}) {
		large, medium, small = xyz{0, 10000, 0}, xyz{0, 2000, 0}, xyz{0, 100, 0}
	}
	return tier(large, medium, small, xyz{0, vatSales, assets})
}
