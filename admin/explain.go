package admin

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/policypush/policypush/core"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Explanations ("why / why not") come from rules: each condition of a rule decided for the firm,
// in business language with the firm's values ("参保人数 48 ≥ 10"). The console only presents them,
// and keeps contact data out of them.

// reason is one condition of an explanation as pages show it.
type reason struct {
	Text  string `json:"text"`
	Holds *bool  `json:"holds"` // nil: undecided
}

// explained is an explanation as pages show it.
type explained struct {
	Summary     string   `json:"summary"`
	Reasons     []reason `json:"conditions"`
	AmountLabel string   `json:"amount_label,omitempty"`
}

// contactFields are never shown with their values in an explanation.
var contactFields = []string{"contact_phone", "wechat_openid"}

// reasonText is the condition with the firm's values, or the rule alone when it reads contact data.
func reasonText(c rules.Condition) string {
	for k := range c.Values {
		if slices.Contains(contactFields, k) {
			return c.Rule
		}
	}
	return c.Label
}

// presentExplanation lists the conditions of an explanation; holdingOnly keeps those that hold
// (what a firm reads under "why you qualify": the alternative of an "or" it does not meet is noise
// there, while staff see every condition).
func presentExplanation(ex rules.Explanation, holdingOnly bool) explained {
	out := explained{Summary: ex.Summary, AmountLabel: ex.AmountLabel}
	for _, c := range ex.Conditions {
		if holdingOnly && (c.Holds == nil || !*c.Holds) {
			continue
		}
		out.Reasons = append(out.Reasons, reason{Text: reasonText(c), Holds: c.Holds})
	}
	return out
}

// explainMatch explains a stored match exactly as the matcher decided it (its version and as-of
// date). An explanation that cannot be made is said so; the page still shows everything else.
func (s *Server) explainMatch(ctx context.Context, matchID uint64, holdingOnly bool) explained {
	return s.explainMatches(ctx, []uint64{matchID}, holdingOnly)[0]
}

// explainMatches explains several stored matches (a firm's), reading the catalog once.
func (s *Server) explainMatches(ctx context.Context, ids []uint64, holdingOnly bool) []explained {
	exs, errs := policies.ExplainMatches(ctx, s.opts.DB, ids, s.vocab())
	out := make([]explained, len(ids))
	for i, id := range ids {
		if errs[i] != nil {
			s.opts.Log.Warn("explain match", "match", id, "err", errs[i])
			out[i] = explained{Summary: "暂时无法生成说明"}
			continue
		}
		out[i] = presentExplanation(exs[i], holdingOnly)
	}
	return out
}

func (r reason) Mark() string {
	switch {
	case r.Holds == nil:
		return "？"
	case *r.Holds:
		return "✓"
	}
	return "✗"
}

// nearMissView is the near-miss list: firms in scope that fail a policy by exactly one condition.
type nearMissView struct {
	PolicyID  string              `json:"policy_id"`
	Title     string              `json:"title"`
	AsOf      string              `json:"as_of"`
	Total     int                 `json:"total"`
	Items     []nearMissRow       `json:"items"`
	Policies  []store.PolicyTitle `json:"-"`
	Filter    nearMissFilter      `json:"-"`
	Scope     string              `json:"scope"`
	Truncated bool                `json:"truncated"` // more near misses than listed
	Firms     int                 `json:"firms_evaluated"`
}

type nearMissRow struct {
	CreditCode string `json:"credit_code"`
	Name       string `json:"name"`
	RegionCode string `json:"region_code"`
	ParkID     string `json:"park_id"`
	Failed     string `json:"failed"` // the one condition that does not hold, with the firm's value
}

type nearMissFilter struct {
	PolicyID, ParkID, Region string
}

// maxNearMissFirms caps the firms one near-miss request evaluates; larger scopes filter first.
const maxNearMissFirms = 300000

const nearMissLimit = 500

func parseNearMissFilter(r *http.Request, p *Principal) (nearMissFilter, error) {
	f, err := parseMatchFilter(r.URL.Query(), p)
	if err != nil {
		return nearMissFilter{}, err
	}
	if f.PolicyID == "" {
		return nearMissFilter{}, badRequest("请选择政策（policy_id）")
	}
	return nearMissFilter{PolicyID: f.PolicyID, ParkID: f.ParkID, Region: f.Region}, nil
}

// nearMisses evaluates the published policy on the firms in the principal's scope (and filter)
// through core.NearMisses, which records the read.
func (s *Server) nearMisses(r *http.Request, p *Principal, f nearMissFilter) (nearMissView, error) {
	ctx := r.Context()
	v := nearMissView{PolicyID: f.PolicyID, Filter: f, Scope: p.ScopeLabel()}
	asOf, err := s.evalDate(ctx)
	if err != nil {
		return v, err
	}
	v.AsOf = asOf.Format(time.DateOnly)
	res, err := s.core.NearMisses(ctx, core.NearMissRequest{Actor: p.Name, PolicyID: f.PolicyID, AsOf: asOf, Firms: p.firmScope().Apply,
		ParkID: f.ParkID, Region: f.Region, Limit: nearMissLimit, MaxFirms: maxNearMissFirms})
	var many *core.TooManyFirmsError
	switch {
	case errors.As(err, &many):
		return v, badRequest("范围内有 %d 家企业，超过一次计算上限 %d 家：请按园区或区划缩小范围", many.Firms, many.Max)
	case err != nil:
		return v, lifecycleError(err)
	}
	v.Title = res.Policy.Def.Title
	v.Firms, v.Total = res.Firms, res.Total
	for _, nm := range res.Items {
		v.Items = append(v.Items, nearMissRow{CreditCode: nm.CreditCode, Name: nm.Name, RegionCode: nm.RegionCode,
			ParkID: nm.ParkID, Failed: reasonText(nm.Failed)})
	}
	v.Truncated = res.Total > len(v.Items)
	return v, nil
}

func (s *Server) nearMissPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	v := nearMissView{Scope: p.ScopeLabel()}
	var err error
	if r.URL.Query().Get("policy_id") != "" {
		f, ferr := parseNearMissFilter(r, p)
		if ferr != nil {
			s.failErr(w, r, ferr)
			return
		}
		v, err = s.nearMisses(r, p, f)
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if v.Policies, err = store.PolicyTitles(r.Context(), s.opts.DB, store.PoliciesInForce); err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "nearmiss", "差一点符合的企业", v)
}

func (s *Server) apiNearMisses(w http.ResponseWriter, r *http.Request, p *Principal) {
	f, err := parseNearMissFilter(r, p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	v, err := s.nearMisses(r, p, f)
	s.answer(w, r, v, err)
}

// calcField is one input of the calculator form: a text or date input, or a choice.
type calcField struct {
	Key, Label, Unit, Description, Value string
	Input                                string // text, number, date or select
	Options                              []choice
}

func newCalcField(f registry.Field, value string) calcField {
	cf := calcField{Key: f.Key, Label: f.Label, Unit: f.Unit, Description: f.Description, Value: value, Input: "text"}
	switch {
	case len(f.Enum) > 0:
		cf.Input = "select"
		for _, e := range f.Enum {
			cf.Options = append(cf.Options, choice{Value: e, Label: e, Checked: e == value})
		}
	case f.Type == registry.TypeBool:
		cf.Input = "select"
		cf.Options = []choice{{"true", "是", value == "true"}, {"false", "否", value == "false"}}
	case f.Type == registry.TypeDate:
		cf.Input = "date"
	case f.Type == registry.TypeInt || f.Type == registry.TypeFloat:
		cf.Input = "number"
	}
	return cf
}

// calcHidden are catalog fields a firm does not state in the calculator: identity and contact data.
var calcHidden = []string{"credit_code", "name", "contact_phone", "wechat_openid", "status", "as_of"}

type calcView struct {
	Fields []calcField
	Report *rules.CalcReport
	Error  string
}

// calcFacts reads the facts a firm stated: empty fields are unknown, not zero.
func calcFacts(voc *rules.Vocabulary, get func(string) string) (map[string]any, []calcField, error) {
	facts := map[string]any{}
	var fields []calcField
	for _, f := range voc.Fields() {
		if slices.Contains(calcHidden, f.Key) {
			continue
		}
		raw := strings.TrimSpace(get(f.Key))
		fields = append(fields, newCalcField(f, raw))
		if raw == "" {
			continue
		}
		v, err := rules.ParseFact(f, raw)
		if err != nil {
			return nil, fields, badRequest("%s（%s）：%v", f.Label, f.Key, err)
		}
		facts[f.Key] = v
	}
	return facts, fields, nil
}

// calcPage is the 政策计算器: anyone states what they know about a firm and learns, for every
// policy in effect, whether it would qualify, and what is missing to tell. Nothing is stored.
func (s *Server) calcPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	facts, fields, err := calcFacts(s.opts.Vocabulary, r.URL.Query().Get)
	v := calcView{Fields: fields}
	if err != nil {
		v.Error = err.Error()
	} else if len(facts) > 0 {
		asOf, err := s.evalDate(r.Context())
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		rep, err := policies.CalculateActive(r.Context(), s.opts.DB, facts, asOf, s.vocab())
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		v.Report = &rep
	}
	s.page(w, r, nil, http.StatusOK, "enterprise_calc", "政策计算器", v)
}

// calcInput is the calculator's API body: catalog key → value (numbers, text, true/false, dates
// as 2006-01-02); absent means unknown.
type calcInput struct {
	Facts map[string]any `json:"facts"`
}

func (s *Server) apiCalc(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in calcInput
	if !s.readJSON(w, r, &in) {
		return
	}
	for k := range in.Facts {
		if _, ok := s.opts.Vocabulary.Lookup(k); !ok || (slices.Contains(calcHidden, k) && k != "status") {
			s.fail(w, r, http.StatusBadRequest, "facts."+k+"：不是计算器可用的字段（见 GET /api/v1/fields）", nil)
			return
		}
	}
	asOf, err := s.evalDate(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	rep, err := policies.CalculateActive(r.Context(), s.opts.DB, in.Facts, asOf, s.vocab())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "无法计算："+err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// vocab is the compile option of the deployment's vocabulary (Options.Vocabulary), for rules and
// policies calls.
func (s *Server) vocab() rules.Option { return rules.WithVocabulary(s.opts.Vocabulary) }
