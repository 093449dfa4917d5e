package admin

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Policy library and editor. The editor works on a draftInput: the policy's fields as an author
// types them (params and tests as YAML, the same notation as policy files). Checking a draft
// compiles it against the field catalog and reports each problem at its field, line and column.

// draftInput is a policy as the editor form (or an API client) sends it.
type draftInput struct {
	ID             string   `json:"id"`
	Title          string   `json:"title"`
	DocNo          string   `json:"doc_no"`
	Department     string   `json:"department"`
	Category       string   `json:"category"`
	EffectiveFrom  string   `json:"effective_from"`
	EffectiveTo    string   `json:"effective_to"`
	Channels       []string `json:"channels"`
	Summary        string   `json:"summary"`
	Interpretation string   `json:"interpretation"`
	Deadline       string   `json:"deadline"`
	Contact        string   `json:"contact"`
	SourceURL      string   `json:"source_url"`
	Params         string   `json:"params"` // YAML mapping, e.g. "rate: 0.9"
	Eligibility    string   `json:"eligibility"`
	Amount         string   `json:"amount"`
	Tests          string   `json:"tests"` // YAML list of test cases
	RunTests       bool     `json:"run_tests,omitempty"`
}

// problem is one thing wrong with a draft, where the editor can point at it.
type problem struct {
	Field   string `json:"field"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
	Snippet string `json:"snippet,omitempty"`
}

type testOutcome struct {
	Name    string `json:"name"`
	Passed  bool   `json:"passed"`
	Problem string `json:"problem,omitempty"`
}

type checkResult struct {
	OK       bool          `json:"ok"`
	Problems []problem     `json:"problems"`
	Tests    []testOutcome `json:"tests,omitempty"`
	Hash     string        `json:"content_hash,omitempty"`
}

var yamlLineNo = regexp.MustCompile(`line (\d+)`)

func yamlProblem(field string, err error) problem {
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), "unmarshal errors:\n  ")
	p := problem{Field: field, Message: msg, Line: 1, Column: 1}
	if m := yamlLineNo.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
	}
	return p
}

// definition builds the policy from the form. It returns every problem it can find before
// compiling: bad YAML in params or tests, bad dates.
func (in draftInput) definition() (*rules.Definition, []problem) {
	def := &rules.Definition{ID: strings.TrimSpace(in.ID), Title: strings.TrimSpace(in.Title), DocNo: strings.TrimSpace(in.DocNo),
		Department: strings.TrimSpace(in.Department), Category: strings.TrimSpace(in.Category), Channels: in.Channels,
		Summary: strings.TrimSpace(in.Summary), Interpretation: strings.TrimSpace(in.Interpretation),
		Deadline: strings.TrimSpace(in.Deadline), Contact: strings.TrimSpace(in.Contact), SourceURL: strings.TrimSpace(in.SourceURL),
		Eligibility: in.Eligibility, Amount: strings.TrimSpace(in.Amount)}
	var probs []problem
	if in.EffectiveFrom != "" {
		d, err := rules.ParseDate(in.EffectiveFrom)
		if err != nil {
			probs = append(probs, problem{Field: "effective_from", Message: err.Error()})
		}
		def.EffectiveFrom = d
	} else {
		def.EffectiveFrom = rules.NoStart
	}
	if in.EffectiveTo != "" {
		d, err := rules.ParseDate(in.EffectiveTo)
		if err != nil {
			probs = append(probs, problem{Field: "effective_to", Message: err.Error()})
		}
		def.EffectiveTo = &d
	}
	if len(def.Channels) == 0 {
		def.Channels = []string{"wechat"}
	}
	if strings.TrimSpace(in.Params) != "" {
		if err := yaml.Unmarshal([]byte(in.Params), &def.Params); err != nil {
			probs = append(probs, yamlProblem("params", err))
		}
	}
	if strings.TrimSpace(in.Tests) != "" {
		dec := yaml.NewDecoder(strings.NewReader(in.Tests))
		dec.KnownFields(true)
		if err := dec.Decode(&def.Tests); err != nil {
			probs = append(probs, yamlProblem("tests", err))
		}
	}
	return def, probs
}

// draftOf turns a stored definition back into the form.
func draftOf(def *rules.Definition) draftInput {
	in := draftInput{ID: def.ID, Title: def.Title, DocNo: def.DocNo, Department: def.Department, Category: def.Category,
		Channels: def.Channels, Summary: def.Summary, Interpretation: def.Interpretation, Deadline: def.Deadline,
		Contact: def.Contact, SourceURL: def.SourceURL, Eligibility: def.Eligibility, Amount: def.Amount}
	if def.EffectiveFrom != rules.NoStart && !def.EffectiveFrom.IsZero() {
		in.EffectiveFrom = def.EffectiveFrom.String()
	}
	if def.EffectiveTo != nil {
		in.EffectiveTo = def.EffectiveTo.String()
	}
	if len(def.Params) > 0 {
		in.Params = yamlText(def.Params)
	}
	if len(def.Tests) > 0 {
		in.Tests = yamlText(def.Tests)
	}
	return in
}

func yamlText(v any) string {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	_ = enc.Encode(v)
	return b.String()
}

// check compiles a draft (against the options' vocabulary) and, when asked, runs its test cases.
func check(in draftInput, opts ...rules.Option) (*rules.Definition, checkResult) {
	def, probs := in.definition()
	res := checkResult{Problems: append([]problem{}, probs...)} // [] rather than null: clients iterate it
	if len(probs) > 0 {
		return def, res
	}
	p, err := def.Compile(opts...)
	var ce *rules.CompileError
	switch {
	case errors.As(err, &ce):
		res.Problems = append(res.Problems, problem{Field: ce.Field, Line: ce.Line, Column: ce.Column, Message: ce.Message, Snippet: ce.Snippet})
		return def, res
	case err != nil:
		field, msg, ok := strings.Cut(err.Error(), ": ")
		if !ok {
			field, msg = "", err.Error()
		}
		res.Problems = append(res.Problems, problem{Field: strings.SplitN(strings.SplitN(field, "[", 2)[0], ".", 2)[0], Message: msg})
		return def, res
	}
	res.OK, res.Hash = true, def.Hash()
	if in.RunTests {
		for _, t := range p.RunTests() {
			res.Tests = append(res.Tests, testOutcome{Name: t.Name, Passed: t.Passed, Problem: t.Problem})
			res.OK = res.OK && t.Passed
		}
	}
	return def, res
}

// apiCheck compiles (and tests) a draft as the author types: POST /api/v1/rules/check.
func (s *Server) apiCheck(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in draftInput
	if !s.readJSON(w, r, &in) {
		return
	}
	if p.Role == store.RoleAuthor {
		in.Department = p.Department
	}
	_, res := check(in, s.vocab())
	writeJSON(w, http.StatusOK, res)
}

// fieldInfo is one variable of the rule vocabulary, for the editor's catalog panel.
type fieldInfo struct {
	Key         string   `json:"key"`
	Label       string   `json:"label"`
	Type        string   `json:"type"`
	Unit        string   `json:"unit,omitempty"`
	Source      string   `json:"source"`
	Description string   `json:"description"`
	Enum        []string `json:"enum,omitempty"`
}

type vocabulary struct {
	Fields  []fieldInfo       `json:"fields"`
	Helpers map[string]string `json:"helpers"`
}

func readVocabulary(voc *rules.Vocabulary) vocabulary {
	v := vocabulary{Helpers: rules.Helpers()}
	for _, f := range voc.Fields() {
		v.Fields = append(v.Fields, fieldInfo(registryField(f)))
	}
	return v
}

// registryField copies a catalog entry into the field shape the API documents.
func registryField(f registry.Field) fieldInfo {
	return fieldInfo{Key: f.Key, Label: f.Label, Type: f.Type, Unit: f.Unit, Source: f.Source, Description: f.Description, Enum: f.Enum}
}

func (s *Server) apiFields(w http.ResponseWriter, r *http.Request, p *Principal) {
	writeJSON(w, http.StatusOK, readVocabulary(s.opts.Vocabulary))
}

// policyRow is one policy of the library.
type policyRow struct{ store.PolicyListRow }

func (r policyRow) LatestStateLabel() string { return stateLabels[r.LatestState] }

// readPolicies lists the catalog with each policy's active matches (store.PolicyLibrary).
func (s *Server) readPolicies(r *http.Request) ([]policyRow, error) {
	lib, err := store.PolicyLibrary(r.Context(), s.opts.DB)
	rows := make([]policyRow, len(lib))
	for i, p := range lib {
		rows[i].PolicyListRow = p
	}
	return rows, err
}

func (s *Server) policiesPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	rows, err := s.readPolicies(r)
	s.show(w, r, p, err, "policies", "政策库", map[string]any{"Rows": rows, "CanAuthor": p.Can(PermPolicyAuthor)})
}

func (s *Server) apiPolicies(w http.ResponseWriter, r *http.Request, p *Principal) {
	rows, err := s.readPolicies(r)
	s.answer(w, r, map[string]any{"items": rows}, err)
}

// versionView is one version of a policy with its definition.
type versionView struct {
	store.PolicyVersion
	Def     *rules.Definition `json:"definition"`
	Reviews []store.PolicyReview
}

func (v versionView) StateLabel() string { return stateLabels[v.State] }

type policyDetail struct {
	Policy   store.Policy  `json:"policy"`
	Versions []versionView `json:"versions"`
	Current  *versionView  `json:"published,omitempty"`
}

func (s *Server) readPolicy(r *http.Request, id string) (policyDetail, error) {
	ctx := r.Context()
	var d policyDetail
	var err error
	d.Policy, err = store.PolicyByID(ctx, s.opts.DB, id)
	if errors.Is(err, store.ErrNotFound) {
		return d, notFound("没有编号为 %s 的政策", id)
	}
	if err != nil {
		return d, err
	}
	vs, err := store.VersionsOf(ctx, s.opts.DB, id)
	if err != nil {
		return d, err
	}
	reviews, err := store.ReviewsOf(ctx, s.opts.DB, id, 0)
	if err != nil {
		return d, err
	}
	for _, v := range vs {
		def, err := rules.FromCanonical([]byte(v.Source))
		if err != nil {
			return d, fmt.Errorf("policy %s v%d: %w", id, v.Version, err)
		}
		vv := versionView{PolicyVersion: v, Def: def}
		for _, rv := range reviews {
			if rv.Version == v.Version {
				vv.Reviews = append(vv.Reviews, rv)
			}
		}
		d.Versions = append(d.Versions, vv)
	}
	if i := slices.IndexFunc(d.Versions, func(v versionView) bool { return v.Version == d.Policy.PublishedVersion }); i >= 0 {
		d.Current = &d.Versions[i]
	}
	return d, nil
}

func (s *Server) policyPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readPolicy(r, r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "policy", d.Policy.Title, map[string]any{"D": d, "CanAuthor": p.Can(PermPolicyAuthor) && p.Department == d.Policy.Department,
		"CanReview": p.Can(PermPolicyReview)})
}

func (s *Server) apiPolicy(w http.ResponseWriter, r *http.Request, p *Principal) {
	d, err := s.readPolicy(r, r.PathValue("id"))
	s.answer(w, r, d, err)
}

// editorView is what the editor page shows.
type editorView struct {
	Draft      draftInput
	Existing   bool // editing a new version of an existing policy (the id is fixed)
	Categories []string
	Vocabulary vocabulary
	Check      checkResult
	Channels   []choice
	Error      string // why the last save was refused
}

// choice is a checkbox of a form.
type choice struct {
	Value, Label string
	Checked      bool
}

func (s *Server) newEditorView(p *Principal, in draftInput) editorView {
	in.Department = p.Department
	v := editorView{Draft: in, Categories: rules.Categories, Vocabulary: readVocabulary(s.opts.Vocabulary)}
	for _, ch := range []string{"wechat", "sms"} {
		v.Channels = append(v.Channels, choice{Value: ch, Label: channelLabels[ch], Checked: slices.Contains(in.Channels, ch)})
	}
	return v
}

func (s *Server) editorPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	in := draftInput{Channels: []string{"wechat"}}
	existing := false
	if id := r.URL.Query().Get("from"); id != "" {
		d, err := s.readPolicy(r, id)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		if d.Policy.Department != p.Department {
			s.fail(w, r, http.StatusForbidden, fmt.Sprintf("只能编辑本部门（%s）的政策；该政策属于 %s", p.Department, d.Policy.Department), nil)
			return
		}
		in, existing = draftOf(d.Versions[0].Def), true
	}
	v := s.newEditorView(p, in)
	v.Existing = existing
	if existing {
		v.Draft.RunTests = true
		_, v.Check = check(v.Draft, s.vocab())
	}
	s.render(w, r, p, "editor", "编写政策", v)
}
