package rules

import (
	"sort"

	"github.com/policypush/policypush/registry/fields"
)

// A preview shows, before a version is published, what it would do on the live registry: how many
// firms would newly qualify, keep qualifying and drop out compared with the published version, by
// city, park and industry, with sample firms — and whether the policy's own tests pass. It decides
// each firm exactly as `match` would (window, firm status, rule, combination rules), and writes
// nothing.

// PreviewFirm is a sample firm of a preview.
type PreviewFirm struct {
	CreditCode   string   `json:"credit_code"`
	Name         string   `json:"name"`
	RegionCode   string   `json:"region_code"`
	ParkID       string   `json:"park_id"`
	IndustryCode string   `json:"industry_code"`
	AmountBefore *float64 `json:"amount_before"`
	AmountAfter  *float64 `json:"amount_after"`
	Why          string   `json:"why,omitempty"` // dropped firms: why the new version says no
}

// PreviewGroup counts one city, park or industry.
type PreviewGroup struct {
	Key     string `json:"key"`
	New     int    `json:"new"`
	Kept    int    `json:"kept"`
	Dropped int    `json:"dropped"`
}

// PreviewSamples are the first firms (by credit code) of each kind.
type PreviewSamples struct {
	New     []PreviewFirm `json:"new"`
	Kept    []PreviewFirm `json:"kept"`
	Dropped []PreviewFirm `json:"dropped"`
}

// PreviewReport is what publishing a candidate version would change.
type PreviewReport struct {
	PolicyID       string         `json:"policy_id"`
	Title          string         `json:"title"`
	AsOf           string         `json:"as_of"`
	CurrentVersion int            `json:"current_version"` // 0: nothing published yet
	Version        int            `json:"version"`         // the candidate's version number
	InEffect       bool           `json:"in_effect"`       // the candidate's window contains as_of
	Firms          int            `json:"firms"`           // firms in business evaluated
	New            int            `json:"new"`
	Kept           int            `json:"kept"`
	Dropped        int            `json:"dropped"`
	Errors         int            `json:"errors"` // firms the candidate rule fails to evaluate for
	FirstError     string         `json:"first_error,omitempty"`
	AmountBefore   float64        `json:"amount_before"` // total of the published version's amounts
	AmountAfter    float64        `json:"amount_after"`
	ByRegion       []PreviewGroup `json:"by_region"`   // city: first 4 digits of region_code
	ByPark         []PreviewGroup `json:"by_park"`     // park_id ("" outside parks)
	ByIndustry     []PreviewGroup `json:"by_industry"` // GB/T 4754 section letter
	ByDivision     []PreviewGroup `json:"by_division"` // section letter + 2-digit division
	Samples        PreviewSamples `json:"samples"`
	Tests          []TestResult   `json:"tests"`
	TestsPassed    bool           `json:"tests_passed"`
}

// PreviewFirms compares two versions (cur nil: not published yet) on a set of firms.
func PreviewFirms(cur, cand *Policy, firms []Env, samples int) PreviewReport {
	rep := PreviewReport{PolicyID: cand.Def.ID, Title: cand.Def.Title, Version: cand.Version, Firms: len(firms)}
	if len(firms) > 0 {
		rep.AsOf = firms[0].AsOf.Format(dateLayout)
		rep.InEffect = cand.Def.ActiveOn(firms[0].AsOf)
	}
	if cur != nil {
		rep.CurrentVersion = cur.Version
	}
	rep.Tests = cand.RunTests()
	rep.TestsPassed = true
	for _, t := range rep.Tests {
		rep.TestsPassed = rep.TestsPassed && t.Passed
	}
	groups := map[string]map[string]*PreviewGroup{"region": {}, "park": {}, "industry": {}, "division": {}}
	count := func(kind, key string, bump func(g *PreviewGroup)) {
		g, ok := groups[kind][key]
		if !ok {
			g = &PreviewGroup{Key: key}
			groups[kind][key] = g
		}
		bump(g)
	}
	decide := func(p *Policy, env *Env) (Outcome, error) {
		if p == nil || !p.Def.ActiveOn(env.AsOf) || env.Status != fields.StatusActive {
			return Outcome{}, nil
		}
		return p.Evaluate(env)
	}
	sorted := make([]int, len(firms))
	for i := range sorted {
		sorted[i] = i
	}
	sort.Slice(sorted, func(a, b int) bool { return firms[sorted[a]].CreditCode < firms[sorted[b]].CreditCode })
	for _, i := range sorted {
		env := &firms[i]
		before, _ := decide(cur, env)
		after, err := decide(cand, env)
		if err != nil {
			rep.Errors++
			if rep.FirstError == "" {
				rep.FirstError = env.CreditCode + ": " + err.Error()
			}
		}
		if before.Amount != nil {
			rep.AmountBefore += *before.Amount
		}
		if after.Amount != nil {
			rep.AmountAfter += *after.Amount
		}
		var bump func(g *PreviewGroup)
		var list *[]PreviewFirm
		switch {
		case after.Eligible && !before.Eligible:
			rep.New++
			bump, list = func(g *PreviewGroup) { g.New++ }, &rep.Samples.New
		case after.Eligible && before.Eligible:
			rep.Kept++
			bump, list = func(g *PreviewGroup) { g.Kept++ }, &rep.Samples.Kept
		case before.Eligible:
			rep.Dropped++
			bump, list = func(g *PreviewGroup) { g.Dropped++ }, &rep.Samples.Dropped
		default:
			continue
		}
		section, division := industryGroups(env.IndustryCode)
		count("region", cityOf(env.RegionCode), bump)
		count("park", env.ParkID, bump)
		count("industry", section, bump)
		count("division", division, bump)
		if len(*list) < samples {
			f := PreviewFirm{CreditCode: env.CreditCode, Name: env.Name, RegionCode: env.RegionCode, ParkID: env.ParkID,
				IndustryCode: env.IndustryCode, AmountBefore: before.Amount, AmountAfter: after.Amount}
			if list == &rep.Samples.Dropped {
				if ex, err := Explain(cand, env); err == nil {
					f.Why = ex.Summary
				}
			}
			*list = append(*list, f)
		}
	}
	sorted2 := func(kind string) []PreviewGroup {
		out := make([]PreviewGroup, 0, len(groups[kind]))
		for _, g := range groups[kind] {
			out = append(out, *g)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
		return out
	}
	rep.ByRegion, rep.ByPark, rep.ByIndustry, rep.ByDivision = sorted2("region"), sorted2("park"), sorted2("industry"), sorted2("division")
	return rep
}

func cityOf(region string) string {
	if len(region) >= 4 {
		return region[:4]
	}
	return region
}

// industryGroups returns the section letter and the letter with its 2-digit division of a GB/T 4754
// code; a code without its letter gets it from the size standard's division table.
func industryGroups(code string) (section, division string) {
	if all, err := sizeStandards(); err == nil {
		code = all[len(all)-1].withSection(code)
	}
	letter, digits := splitSection(code)
	if len(digits) >= 2 {
		return letter, letter + digits[:2]
	}
	return letter, letter
}
