package rules

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/ast"
	"gopkg.in/yaml.v3"
)

// Enterprise size (大中小微) is a function a rule calls, not a stored column, because policies define
// it differently: the standard of 工信部联企业〔2011〕300号 (size()), the 留抵退税 variant that reads VAT
// sales in place of revenue (size("vat")), or a local headcount cut (size("headcount", 300)). The
// thresholds live in sizedata/*.yaml, one file per revision of the standard.

// Size tiers size() returns.
const (
	SizeLarge  = "large"
	SizeMedium = "medium"
	SizeSmall  = "small"
	SizeMicro  = "micro"
	// SizeUndecided: an indicator the firm's row needs is not reported, or the industry is one the
	// standard does not size. Rules test for the tiers they mean, so undecided never qualifies as small.
	SizeUndecided = "undecided"
)

// SizeLabels are the tiers' Chinese names.
var SizeLabels = map[string]string{SizeLarge: "大型", SizeMedium: "中型", SizeSmall: "小型", SizeMicro: "微型", SizeUndecided: "未能判定"}

// Size variants a rule can name.
const (
	SizeVariantVAT       = "vat"
	SizeVariantHeadcount = "headcount"
)

//go:embed sizedata/*.yaml
var sizeFS embed.FS

// sizeBounds are lower bounds by indicator: employees (人), revenue and assets (万元).
type sizeBounds map[string]float64

type sizeTiers struct {
	Large  sizeBounds `yaml:"large"`
	Medium sizeBounds `yaml:"medium"`
	Small  sizeBounds `yaml:"small"`
}

type sizeRow struct {
	Name       string   `yaml:"name"`
	Industries []string `yaml:"industries"`
	// NotCovered names the standard that sizes this row's industries when this one does not (finance:
	// 银发〔2015〕309号); size() then answers undecided with that reason.
	NotCovered string `yaml:"not_covered"`
	sizeTiers  `yaml:",inline"`
}

// sizeVariant is a policy's own way of sizing firms with the standard's table.
type sizeVariant struct {
	Label   string `yaml:"label"`
	Revenue string `yaml:"revenue"` // the field read in place of 营业收入
	// Indicators are the only indicators of a row the variant uses (14号: revenue and assets).
	Indicators []string `yaml:"indicators"`
	// Fallback sizes rows that use none of Indicators (and industries the standard does not list).
	Fallback *sizeTiers `yaml:"fallback"`
}

// sizeStandard is one revision of the standard.
type sizeStandard struct {
	Standard      string                 `yaml:"standard"`
	Version       string                 `yaml:"version"`
	EffectiveFrom Date                   `yaml:"effective_from"`
	Sections      map[string][2]int      `yaml:"sections"`
	Rows          []sizeRow              `yaml:"rows"`
	Variants      map[string]sizeVariant `yaml:"variants"`

	// Lookups memoised for the matcher, which sizes every firm: industry code → row, and
	// (row, variant) → tiers.
	rows   sync.Map
	cached atomic.Int64
	tiers  sync.Map
}

type rowVariant struct {
	row     *sizeRow
	variant string
}

// sizeStandards are the embedded revisions, oldest first. Their data is part of the binary: a file
// that does not load is a build defect, which TestSizeDataLoads reports; size() then fails with
// the reason instead of classifying.
var sizeStandards = sync.OnceValues(func() ([]*sizeStandard, error) {
	files, err := fs.Glob(sizeFS, "sizedata/*.yaml")
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no size standard data embedded")
	}
	var out []*sizeStandard
	for _, f := range files {
		b, err := sizeFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s sizeStandard
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, &s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EffectiveFrom.Before(out[j].EffectiveFrom.Time) })
	return out, nil
})

func (s *sizeStandard) validate() error {
	if s.Standard == "" || s.Version == "" || s.EffectiveFrom.IsZero() {
		return fmt.Errorf("standard, version and effective_from are required")
	}
	others := 0
	for _, r := range s.Rows {
		if len(r.Industries) == 0 {
			others++
		}
		if r.NotCovered != "" {
			continue
		}
		for _, b := range []sizeBounds{r.Large, r.Medium, r.Small} {
			if len(b) == 0 {
				return fmt.Errorf("row %s: every tier needs a bound", r.Name)
			}
			for k, v := range b {
				if k != "employees" && k != "revenue" && k != "assets" || v <= 0 {
					return fmt.Errorf("row %s: bound %s=%v is not a positive employees, revenue or assets", r.Name, k, v)
				}
			}
		}
	}
	if others != 1 {
		return fmt.Errorf("exactly one row must have no industries (其他未列明行业), found %d", others)
	}
	return nil
}

// standardOn is the revision in force on day (the oldest for days before any).
func standardOn(day time.Time) (*sizeStandard, error) {
	all, err := sizeStandards()
	if err != nil {
		return nil, err
	}
	s := all[0]
	for _, x := range all[1:] {
		if !x.EffectiveFrom.After(day) {
			s = x
		}
	}
	return s, nil
}

// row finds the row of an industry code: the most specific matching prefix wins. A code written
// without its section letter ("6210") gets it from the division ("H6210").
func (s *sizeStandard) row(industry string) *sizeRow {
	if r, ok := s.rows.Load(industry); ok {
		return r.(*sizeRow)
	}
	r := s.findRow(industry)
	if s.cached.Add(1) <= maxCachedRows { // codes come from users too (the calculator): bound the memo
		s.rows.Store(industry, r)
	}
	return r
}

// maxCachedRows bounds the industry-code memo; GB/T 4754-2017 has about 1,400 classes.
const maxCachedRows = 20000

func (s *sizeStandard) findRow(industry string) *sizeRow {
	code := s.withSection(industry)
	var best *sizeRow
	bestLen := 0
	for i := range s.Rows {
		r := &s.Rows[i]
		if len(r.Industries) == 0 && best == nil {
			best = r
		}
		for _, p := range r.Industries {
			if IndustryHasPrefix(code, p) && len(p) > bestLen {
				best, bestLen = r, len(p)
			}
		}
	}
	return best
}

// withSection normalises an industry code and adds its section letter when it has none.
func (s *sizeStandard) withSection(industry string) string {
	code := strings.ToUpper(strings.TrimSpace(industry))
	if letter, digits := splitSection(code); letter == "" && len(digits) >= 2 {
		if div, err := strconv.Atoi(digits[:2]); err == nil {
			for sec, r := range s.Sections {
				if div >= r[0] && div <= r[1] {
					return sec + digits
				}
			}
		}
	}
	return code
}

// SizeInput is what size classification reads: money in 元, as the registry stores it. A zero or
// negative indicator is not reported: the registry keeps a missing figure as 0.
type SizeInput struct {
	IndustryCode string
	Employees    int64
	Revenue      float64 // 营业收入
	Assets       float64 // 资产总额
	VATSales     float64 // 增值税销售额 (the vat variant)
}

// SizeResult is a classification and what produced it, for explanations.
type SizeResult struct {
	Tier     string `json:"tier"`     // large, medium, small, micro or undecided
	Standard string `json:"standard"` // 工信部联企业〔2011〕300号
	Version  string `json:"version"`
	Row      string `json:"row"`               // the industry row of the table
	Variant  string `json:"variant,omitempty"` // "", vat or headcount:N
	// Reason says why the tier is undecided: the indicator that is missing, or the standard that
	// covers the industry instead.
	Reason string `json:"reason,omitempty"`
}

// sizeIndicators are the indicators of the standard, in the order reasons name them.
var sizeIndicators = []string{"employees", "revenue", "assets"}

// indicatorLabels name the indicators in undecided reasons.
var indicatorLabels = map[string]string{"employees": "从业人员", "revenue": "营业收入", "assets": "资产总额"}

// tiersFor is the table a variant applies to a row: the standard's bounds, only the variant's
// indicators of them, or the variant's fallback bands when the row uses none of those.
func (s *sizeStandard) tiersFor(row *sizeRow, variant string) sizeTiers {
	key := rowVariant{row, variant}
	if t, ok := s.tiers.Load(key); ok {
		return t.(sizeTiers)
	}
	t := s.variantTiers(row, variant)
	s.tiers.Store(key, t)
	return t
}

func (s *sizeStandard) variantTiers(row *sizeRow, variant string) sizeTiers {
	v, ok := s.Variants[variant]
	if !ok || len(v.Indicators) == 0 {
		return row.sizeTiers
	}
	keep := func(b sizeBounds) sizeBounds {
		out := sizeBounds{}
		for k, x := range b {
			if slices.Contains(v.Indicators, k) {
				out[k] = x
			}
		}
		return out
	}
	t := sizeTiers{Large: keep(row.Large), Medium: keep(row.Medium), Small: keep(row.Small)}
	if (len(t.Large) == 0 || len(t.Medium) == 0 || len(t.Small) == 0) && v.Fallback != nil {
		return *v.Fallback
	}
	return t
}

// ClassifySize sizes a firm by the standard in force on asOf. variant is "" (the standard), "vat"
// or "headcount" (then cut is the headcount from which a firm is large, and below it the standard
// applies but never says large). A firm whose tier depends on an indicator that is not reported, of
// an unknown industry, or of an industry the standard does not size (finance) is undecided — never
// micro by default. A missing indicator does not matter when the others decide: a manufacturer with
// 5 employees is micro whatever its revenue.
func ClassifySize(in SizeInput, asOf time.Time, variant string, cut int) (SizeResult, error) {
	s, err := standardOn(asOf)
	if err != nil {
		return SizeResult{}, err
	}
	res := SizeResult{Standard: s.Standard, Version: s.Version, Variant: variant}
	revenue := in.Revenue
	switch variant {
	case "":
	case SizeVariantVAT:
		if _, ok := s.Variants[SizeVariantVAT]; !ok {
			return res, fmt.Errorf("size standard %s has no vat variant", s.Standard)
		}
		revenue = in.VATSales
	case SizeVariantHeadcount:
		if cut <= 0 {
			return res, fmt.Errorf(`size("headcount", N) needs a positive headcount N`)
		}
		res.Variant = fmt.Sprintf("headcount:%d", cut)
	default:
		return res, fmt.Errorf("unknown size variant %q (use vat or headcount)", variant)
	}
	if strings.TrimSpace(in.IndustryCode) == "" {
		res.Tier, res.Reason = SizeUndecided, "缺少行业代码"
		return res, nil
	}
	row := s.row(in.IndustryCode)
	res.Row = row.Name
	if row.NotCovered != "" {
		res.Tier, res.Reason = SizeUndecided, "该行业按"+row.NotCovered+"划型，本系统未收录该标准"
		return res, nil
	}
	if variant == SizeVariantHeadcount {
		switch {
		case in.Employees <= 0:
			res.Tier, res.Reason = SizeUndecided, "缺少从业人员"
			return res, nil
		case in.Employees >= int64(cut):
			res.Tier = SizeLarge
			return res, nil
		}
	}
	var missing []string
	// meets is three-valued: a tier is reached (1), not reached (0), or unknown (-1) because an
	// indicator it needs is missing while the known ones all reach their bounds.
	meets := func(b sizeBounds) int {
		known := 1
		for _, k := range sizeIndicators {
			bound, used := b[k]
			if !used {
				continue
			}
			v := float64(in.Employees)
			switch k {
			case "revenue":
				v, bound = revenue, bound*10000
			case "assets":
				v, bound = in.Assets, bound*10000
			}
			switch {
			case v <= 0:
				known = -1
				if !slices.Contains(missing, k) {
					missing = append(missing, k)
				}
			case v < bound:
				return 0
			}
		}
		return known
	}
	// Bounds rise from small to large on the same indicators, so a tier not reached settles the
	// question for every tier above it.
	tiers := s.tiersFor(row, variant)
	res.Tier = SizeLarge
	for _, step := range []struct {
		b     sizeBounds
		below string
	}{{tiers.Small, SizeMicro}, {tiers.Medium, SizeSmall}, {tiers.Large, SizeMedium}} {
		m := meets(step.b)
		if m == 0 {
			res.Tier = step.below
			break
		}
		if m < 0 {
			var names []string
			for _, k := range missing {
				names = append(names, indicatorLabels[k])
			}
			res.Tier, res.Reason = SizeUndecided, "缺少"+strings.Join(names, "、")
			break
		}
	}
	if variant == SizeVariantHeadcount && res.Tier == SizeLarge {
		res.Tier = SizeMedium
	}
	return res, nil
}

// sizeNeeds lists the fields size() reads for a firm of this industry under a variant: what the
// calculator must know before it can decide a condition that calls size(). An unknown industry
// needs everything; an industry the standard does not size needs nothing more.
func sizeNeeds(industry string, industryKnown bool, variant string, asOf time.Time) []string {
	revenueKey := "annual_revenue"
	if variant == SizeVariantVAT {
		revenueKey = "vat_sales"
	}
	all := []string{"industry_code", "employees", revenueKey, "total_assets"}
	s, err := standardOn(asOf)
	if !industryKnown || err != nil {
		return all
	}
	row := s.row(industry)
	need := map[string]bool{"industry_code": true, "employees": variant == SizeVariantHeadcount}
	if row.NotCovered != "" {
		return []string{"industry_code"}
	}
	tiers := s.tiersFor(row, variant)
	for _, b := range []sizeBounds{tiers.Large, tiers.Medium, tiers.Small} {
		for k := range b {
			switch k {
			case "employees":
				need["employees"] = true
			case "revenue":
				need[revenueKey] = true
			case "assets":
				need["total_assets"] = true
			}
		}
	}
	var out []string
	for _, k := range all {
		if need[k] {
			out = append(out, k)
		}
	}
	return out
}

// sizeCallArgs reads the variant of a size() call from its arguments in the syntax tree, implicit
// ones included, for describing a rule (conditions, rendering). It ignores an argument error: the
// compiler reports those (checkSizeArgs).
func sizeCallArgs(args []ast.Node) (variant string, cut int) {
	implicit := len(helperFuncs["size"].implicit)
	var vals []any
	for _, a := range args[min(implicit, len(args)):] {
		v, _ := constValue(a)
		vals = append(vals, v)
	}
	variant, cut, _ = sizeArgs(vals)
	return variant, cut
}

// sizeArgs reads the variant arguments of a size() call (after the implicit ones).
func sizeArgs(args []any) (variant string, cut int, err error) {
	if len(args) == 0 {
		return "", 0, nil
	}
	variant, ok := args[0].(string)
	if !ok {
		return "", 0, fmt.Errorf("size(): the variant must be text such as \"vat\"")
	}
	if variant == SizeVariantHeadcount {
		if len(args) != 2 {
			return "", 0, fmt.Errorf(`size("headcount", N) needs the headcount N`)
		}
		switch x := args[1].(type) {
		case int:
			cut = x
		case int64:
			cut = int(x)
		case float64:
			cut = int(x)
			if float64(cut) != x {
				return "", 0, fmt.Errorf(`size("headcount", N): N must be a whole number`)
			}
		default:
			return "", 0, fmt.Errorf(`size("headcount", N): N must be a number`)
		}
		return variant, cut, nil
	}
	if len(args) != 1 {
		return "", 0, fmt.Errorf("size(%q) takes no further arguments", variant)
	}
	return variant, 0, nil
}

// sizeVariantLabel names a variant in Chinese for explanations.
func sizeVariantLabel(variant string, cut int, asOf time.Time) string {
	s, err := standardOn(asOf)
	std := "工信部联企业〔2011〕300号"
	if err == nil {
		std = s.Standard
	}
	switch variant {
	case SizeVariantVAT:
		if err == nil {
			if v, ok := s.Variants[SizeVariantVAT]; ok && v.Label != "" {
				return "企业规模（" + v.Label + "）"
			}
		}
		return "企业规模（以增值税销售额代替营业收入）"
	case SizeVariantHeadcount:
		return fmt.Sprintf("企业规模（本地口径：从业人数 %d 人及以上为大型，其余按%s）", cut, std)
	}
	return "企业规模（" + std + "）"
}
