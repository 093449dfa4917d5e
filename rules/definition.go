// Package rules owns what a policy is and how its rule is understood: the policy definition (YAML
// files or the console), compiling and type-checking its expressions against a vocabulary passed
// in (Vocabulary: the field catalog plus a deployment's extra fields), the sandboxed language and
// its helpers, evaluation for one firm, explanations, the calculator and test cases. It has no
// database and no package state: storing, reviewing and publishing versions is package policies.
// It does not decide who gets notified; the matcher does.
package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/policypush/policypush/registry/fields"
)

// Date is a calendar day (UTC midnight). YAML and JSON use 2006-01-02.
type Date struct{ time.Time }

const dateLayout = "2006-01-02"

// ParseDate reads 2006-01-02.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(dateLayout, strings.TrimSpace(s))
	if err != nil {
		return Date{}, fmt.Errorf("%q is not a date like 2022-06-30", s)
	}
	return Date{t}, nil
}

func (d Date) String() string { return d.Format(dateLayout) }

func (d *Date) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDate(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func (d Date) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Date) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseDate(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Definition is a policy as its department writes it. Everything that decides a match is here;
// its canonical JSON is what a version stores and hashes.
type Definition struct {
	ID             string         `yaml:"id" json:"id"`
	Title          string         `yaml:"title" json:"title"`
	DocNo          string         `yaml:"doc_no" json:"doc_no"`
	Department     string         `yaml:"department" json:"department"`
	Category       string         `yaml:"category" json:"category"`
	EffectiveFrom  Date           `yaml:"effective_from" json:"effective_from"`
	EffectiveTo    *Date          `yaml:"effective_to" json:"effective_to,omitempty"`
	Params         map[string]any `yaml:"params" json:"params,omitempty"`
	Eligibility    string         `yaml:"eligibility" json:"eligibility"`
	Amount         string         `yaml:"amount" json:"amount,omitempty"`
	Channels       []string       `yaml:"channels" json:"channels"`
	Summary        string         `yaml:"summary" json:"summary,omitempty"`
	Interpretation string         `yaml:"interpretation" json:"interpretation,omitempty"`
	Deadline       string         `yaml:"deadline" json:"deadline,omitempty"`
	Contact        string         `yaml:"contact" json:"contact,omitempty"`
	SourceURL      string         `yaml:"source_url" json:"source_url,omitempty"`
	Tests          []TestCase     `yaml:"tests" json:"tests,omitempty"`
	// Combination rules (可叠加 is the default). Excludes lists policies a firm cannot receive together
	// with this one (不得重复享受), in either direction; Priority decides which one it gets (higher
	// wins; ties go to the earlier effective_from, then the smaller id). OncePer is "firm" (每个单位一次:
	// a firm that received an earlier version is not matched again) or "person" (同一人员一次: shown
	// to firms and checked by the paying office, which holds the person-level data).
	Excludes []string `yaml:"excludes" json:"excludes,omitempty"`
	Priority int      `yaml:"priority" json:"priority,omitempty"`
	OncePer  string   `yaml:"once_per" json:"once_per,omitempty"`
	// Budget is the money (元) the policy may pay out in total; payout batches over what remains
	// are refused (package payout). Nil: no budget declared.
	Budget *float64 `yaml:"budget" json:"budget,omitempty"`

	// pos maps a field name to its position in the source file, for error messages.
	pos map[string]yamlPos
}

// TestCase: given these facts (catalog keys; unlisted ones are zero, status is active) on this
// date, the policy must say eligible or not, and this amount.
type TestCase struct {
	Name     string         `yaml:"name" json:"name"`
	AsOf     *Date          `yaml:"as_of" json:"as_of,omitempty"`
	Firm     map[string]any `yaml:"firm" json:"firm"`
	Eligible bool           `yaml:"eligible" json:"eligible"`
	Amount   *float64       `yaml:"amount" json:"amount,omitempty"`
}

// Categories (类别) of the provincial policy libraries.
var Categories = []string{"减免", "奖补", "权益", "资质"}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// FileError is a policy file that cannot be applied: which file, which policy, where, what.
type FileError struct {
	File     string
	PolicyID string
	Line     int
	Column   int
	Message  string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	if e.PolicyID != "" {
		fmt.Fprintf(&b, ": policy %s", e.PolicyID)
	}
	b.WriteString(": ")
	b.WriteString(e.Message)
	return b.String()
}

type yamlPos struct {
	line, col int
	style     yaml.Style
	indent    int // indentation of a block scalar's content
}

// ParseFile reads one policy from a YAML file.
func ParseFile(path string, opts ...Option) (*Definition, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{File: path, Message: err.Error()}
	}
	return Parse(path, b, opts...)
}

// Parse reads one policy from YAML bytes; name is used in errors. Test facts are checked against
// the options' vocabulary.
func Parse(name string, b []byte, opts ...Option) (*Definition, error) {
	var def Definition
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&def); err == nil {
		def.applyDefaults()
	} else {
		if errors.Is(err, io.EOF) {
			return nil, &FileError{File: name, Line: 1, Column: 1, Message: "file is empty"}
		}
		return nil, yamlFileError(name, b, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil {
		def.pos = positions(&root, b)
	}
	if err := def.Validate(opts...); err != nil {
		return &def, def.located(name, err)
	}
	return &def, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlFileError(name string, src []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	fe := &FileError{File: name, Message: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		fmt.Sscan(m[1], &fe.Line)
		fe.Column = 1
	}
	if id := peekID(src); id != "" {
		fe.PolicyID = id
	}
	return fe
}

// peekID finds the id of a file whose YAML does not decode, so the error can still name it.
func peekID(src []byte) string {
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "id:"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"'`)
		}
	}
	return ""
}

func positions(root *yaml.Node, src []byte) map[string]yamlPos {
	out := map[string]yamlPos{}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return out
	}
	lines := strings.Split(string(src), "\n")
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		p := yamlPos{line: v.Line, col: v.Column, style: v.Style}
		if v.Style == yaml.LiteralStyle || v.Style == yaml.FoldedStyle {
			for l := v.Line; l < len(lines); l++ { // v.Line is the indicator line; content follows
				if t := strings.TrimLeft(lines[l], " "); t != "" {
					p.indent = len(lines[l]) - len(t)
					break
				}
			}
		}
		out[k.Value] = p
	}
	return out
}

// Locate turns a validation or compile error of a definition read from file into a FileError that
// names the file, the policy and the line and column in the file.
func (d *Definition) Locate(file string, err error) error { return d.located(file, err) }

// located turns a validation or compile error into a FileError with the file position.
func (d *Definition) located(name string, err error) error {
	fe := &FileError{File: name, PolicyID: d.ID, Message: err.Error()}
	var ce *CompileError
	var ve *fieldError
	switch {
	case errors.As(err, &ce):
		fe.Message = fmt.Sprintf("%s: %s", ce.Field, ce.Message)
		if p, ok := d.pos[ce.Field]; ok {
			switch p.style {
			case yaml.LiteralStyle, yaml.FoldedStyle:
				fe.Line, fe.Column = p.line+ce.Line, p.indent+ce.Column
			case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
				fe.Line, fe.Column = p.line+ce.Line-1, p.col+ce.Column
			default:
				fe.Line, fe.Column = p.line+ce.Line-1, p.col+ce.Column-1
			}
			if ce.Line > 1 && p.style != yaml.LiteralStyle && p.style != yaml.FoldedStyle {
				fe.Column = ce.Column
			}
		} else {
			fe.Line, fe.Column = ce.Line, ce.Column
		}
	case errors.As(err, &ve):
		fe.Message = fmt.Sprintf("%s: %s", ve.field, ve.msg)
		key := strings.SplitN(ve.field, "[", 2)[0]
		key = strings.SplitN(key, ".", 2)[0]
		if p, ok := d.pos[key]; ok {
			fe.Line, fe.Column = p.line, p.col
		}
	}
	return fe
}

// NoStart is the effective_from of a policy that names none: it applies from the beginning.
var NoStart = Date{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)}

// applyDefaults fills what an author may leave out: no effective_from means no start, no channels
// means WeChat (with SMS as the fallback for firms WeChat cannot reach).
func (d *Definition) applyDefaults() {
	if d.EffectiveFrom.IsZero() {
		d.EffectiveFrom = NoStart
	}
	if len(d.Channels) == 0 {
		d.Channels = []string{"wechat"}
	}
}

type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// Validate checks the definition's fields (not its expressions: Compile does that); test facts are
// checked against the vocabulary of the options (the standard one without).
func (d *Definition) Validate(opts ...Option) error {
	voc := VocabularyOf(opts...)
	bad := func(field, format string, args ...any) error {
		return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
	}
	if !idPattern.MatchString(d.ID) {
		return bad("id", "%q must be 1-64 letters, digits, _, . or -, starting with a letter or digit", d.ID)
	}
	if strings.TrimSpace(d.Title) == "" {
		return bad("title", "is required")
	}
	if d.EffectiveTo != nil && d.EffectiveTo.Before(d.EffectiveFrom.Time) {
		return bad("effective_to", "%s is before effective_from %s", d.EffectiveTo, d.EffectiveFrom)
	}
	if len([]rune(d.Category)) > 16 {
		return bad("category", "%q is too long (use one of %s or another short word)", d.Category, strings.Join(Categories, ", "))
	}
	if strings.TrimSpace(d.Eligibility) == "" {
		return bad("eligibility", "is required (a condition that is true for eligible firms)")
	}
	if d.Budget != nil && (*d.Budget <= 0 || *d.Budget >= 1e13 || *d.Budget != *d.Budget) {
		return bad("budget", "%v must be a positive amount in 元 (below 10,000 亿)", *d.Budget)
	}
	if len(d.Channels) == 0 {
		return bad("channels", "list at least one of wechat, sms")
	}
	seen := map[string]bool{}
	for i, c := range d.Channels {
		if c != "wechat" && c != "sms" {
			return bad(fmt.Sprintf("channels[%d]", i), "%q is not wechat or sms", c)
		}
		if seen[c] {
			return bad(fmt.Sprintf("channels[%d]", i), "%q is listed twice", c)
		}
		seen[c] = true
	}
	for k, v := range d.Params {
		if !paramName.MatchString(k) {
			return bad("params."+k, "parameter names are letters, digits and _ (starting with a letter)")
		}
		if err := checkParamValue(v); err != nil {
			return bad("params."+k, "%v", err)
		}
	}
	for i, tc := range d.Tests {
		for k := range tc.Firm {
			if !voc.isFactKey(k) {
				return bad(fmt.Sprintf("tests[%d].firm.%s", i, k), "unknown field (see `policypush fields`)")
			}
		}
	}
	seenEx := map[string]bool{}
	for i, id := range d.Excludes {
		at := fmt.Sprintf("excludes[%d]", i)
		switch {
		case !idPattern.MatchString(id):
			return bad(at, "%q is not a policy id", id)
		case id == d.ID:
			return bad(at, "a policy cannot exclude itself")
		case seenEx[id]:
			return bad(at, "%q is listed twice", id)
		}
		seenEx[id] = true
	}
	switch d.OncePer {
	case "", OncePerFirm, OncePerPerson:
	default:
		return bad("once_per", "%q is not firm (每个单位一次) or person (同一人员一次)", d.OncePer)
	}
	return nil
}

// Once-per rules.
const (
	OncePerFirm   = "firm"
	OncePerPerson = "person"
)

// Limits on params: they are substituted into the rule as constants, outside the source-length
// limit, so their own size is bounded here (a list is scanned once per firm).
const (
	MaxParamItems = 1000 // items of a list parameter
	MaxParamText  = 500  // characters of a text parameter or list item
)

var paramName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

func checkParamValue(v any) error {
	text := func(s string) error {
		if n := len([]rune(s)); n > MaxParamText {
			return fmt.Errorf("text of %d characters; at most %d are allowed", n, MaxParamText)
		}
		return nil
	}
	switch x := v.(type) {
	case string:
		return text(x)
	case int, int64, float64, bool:
		return nil
	case []any:
		if len(x) > MaxParamItems {
			return fmt.Errorf("a list of %d items; at most %d are allowed", len(x), MaxParamItems)
		}
		for _, e := range x {
			switch y := e.(type) {
			case string:
				if err := text(y); err != nil {
					return err
				}
			case int, int64, float64, bool:
			default:
				return fmt.Errorf("list items must be numbers, text or true/false")
			}
		}
		return nil
	}
	return fmt.Errorf("must be a number, text, true/false or a list of them, not %T", v)
}

// Canonical is the stored form of a definition: JSON with sorted map keys.
func (d *Definition) Canonical() []byte {
	b, err := json.Marshal(d)
	if err != nil { // only maps of plain values reach here, validated above
		return nil
	}
	return b
}

// Hash identifies the content: a version is created only when it changes.
func (d *Definition) Hash() string {
	sum := sha256.Sum256(d.Canonical())
	return hex.EncodeToString(sum[:])
}

// FromCanonical reads a stored definition.
func FromCanonical(b []byte) (*Definition, error) {
	var d Definition
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("stored policy definition: %w", err)
	}
	for k, v := range d.Params { // JSON numbers come back as float64; keep whole numbers integers
		d.Params[k] = normalizeJSON(v)
	}
	return &d, nil
}

func normalizeJSON(v any) any {
	switch x := v.(type) {
	case float64:
		if x == float64(int64(x)) && !strings.ContainsAny(fmt.Sprint(x), ".e") {
			return int(x)
		}
	case []any:
		for i := range x {
			x[i] = normalizeJSON(x[i])
		}
	}
	return v
}

// ActiveOn reports whether day lies in the effective window (both ends inclusive).
func (d *Definition) ActiveOn(day time.Time) bool {
	if day.Before(d.EffectiveFrom.Time) {
		return false
	}
	return d.EffectiveTo == nil || !day.After(d.EffectiveTo.Time)
}

// envFields maps catalog keys to Env struct fields.
var envFields = func() map[string]int {
	out := map[string]int{}
	t := reflect.TypeOf(Env{})
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("expr"); tag != "" && tag != "as_of" && tag != "extra" {
			out[tag] = i
		}
	}
	return out
}()

// isFactKey reports whether a firm fact can be given under key: a catalog field or a declared
// extra field.
func (voc *Vocabulary) isFactKey(k string) bool {
	if _, ok := envFields[k]; ok {
		return true
	}
	_, ok := voc.extraField(k)
	return ok
}

// EnvFromFacts builds an Env from catalog key → value (as written in YAML or JSON; extra fields of
// the options' vocabulary too). Unlisted keys keep their zero value; status defaults to active.
// Values are checked like an import checks them: enum values must be listed, text must fit its
// column.
func EnvFromFacts(facts map[string]any, asOf time.Time, opts ...Option) (Env, error) {
	voc := VocabularyOf(opts...)
	env := Env{Status: "active", SpecializedLevel: "none", AsOf: asOf}
	v := reflect.ValueOf(&env).Elem()
	keys := make([]string, 0, len(facts))
	for k := range facts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if f, ok := voc.extraField(k); ok {
			raw, isText := facts[k].(string)
			if !isText {
				raw = fmt.Sprint(facts[k])
			}
			val, err := ParseFact(f, raw)
			if err != nil {
				return env, fmt.Errorf("field %s: %w", k, err)
			}
			if env.Extra == nil {
				env.Extra = map[string]any{}
			}
			env.Extra[k] = val
			continue
		}
		i, ok := envFields[k]
		if !ok {
			return env, fmt.Errorf("unknown field %s (see `policypush fields`)", k)
		}
		if err := setFact(v.Field(i), facts[k]); err != nil {
			return env, fmt.Errorf("field %s: %w", k, err)
		}
		if err := checkText(k, v.Field(i)); err != nil {
			return env, fmt.Errorf("field %s: %w", k, err)
		}
	}
	return env, nil
}

// checkText enforces what an import enforces on a text value: enum fields take a listed value (or
// empty), other text fits its database column.
func checkText(key string, f reflect.Value) error {
	if f.Kind() != reflect.String || f.String() == "" {
		return nil
	}
	cat, _ := fields.Lookup(key)
	if len(cat.Enum) > 0 && !slices.Contains(cat.Enum, f.String()) {
		return fmt.Errorf("%q is not one of %s", f.String(), strings.Join(cat.Enum, ", "))
	}
	if limit := textLimits[key]; limit > 0 && len([]rune(f.String())) > limit {
		return fmt.Errorf("has %d characters, at most %d fit", len([]rune(f.String())), limit)
	}
	return nil
}

func setFact(f reflect.Value, val any) error {
	switch f.Kind() {
	case reflect.String:
		s, ok := val.(string)
		if !ok {
			s = fmt.Sprint(val)
		}
		f.SetString(s)
	case reflect.Int64:
		switch x := val.(type) {
		case int:
			f.SetInt(int64(x))
		case int64:
			f.SetInt(x)
		case float64:
			if x != float64(int64(x)) {
				return fmt.Errorf("%v is not a whole number", x)
			}
			f.SetInt(int64(x))
		default:
			return fmt.Errorf("%v is not a whole number", val)
		}
	case reflect.Float64:
		switch x := val.(type) {
		case int:
			f.SetFloat(float64(x))
		case int64:
			f.SetFloat(float64(x))
		case float64:
			f.SetFloat(x)
		default:
			return fmt.Errorf("%v is not a number", val)
		}
	case reflect.Bool:
		b, ok := val.(bool)
		if !ok {
			return fmt.Errorf("%v is not true or false", val)
		}
		f.SetBool(b)
	case reflect.Struct: // time.Time
		switch x := val.(type) {
		case time.Time:
			f.Set(reflect.ValueOf(x.UTC()))
		case string:
			d, err := ParseDate(x)
			if err != nil {
				return err
			}
			f.Set(reflect.ValueOf(d.Time))
		default:
			return fmt.Errorf("%v is not a date like 2022-06-30", val)
		}
	}
	return nil
}

// LoadDir parses every *.yaml / *.yml file of a directory (or one file). It returns the policies
// that parsed and one error per file that did not; a bad file never hides the good ones. Rules are
// compiled against the options' vocabulary.
func LoadDir(path string, opts ...Option) ([]*Definition, []error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, []error{&FileError{File: path, Message: err.Error()}}
	}
	files := []string{path}
	if info.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, []error{&FileError{File: path, Message: err.Error()}}
		}
		for _, e := range entries {
			if ext := strings.ToLower(filepath.Ext(e.Name())); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		if len(files) == 0 {
			return nil, []error{&FileError{File: path, Message: "no .yaml or .yml policy files in this directory"}}
		}
	}
	var defs []*Definition
	var errs []error
	ids := map[string]string{}
	for _, f := range files {
		d, err := ParseFile(f, opts...)
		if err == nil {
			_, err = d.Compile(opts...)
			if err != nil {
				err = d.located(f, err)
			}
		}
		if err == nil {
			if prev, dup := ids[d.ID]; dup {
				err = &FileError{File: f, PolicyID: d.ID, Message: "the same policy id is also defined in " + prev}
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids[d.ID] = f
		defs = append(defs, d)
	}
	return defs, errs
}

// MarshalYAML writes the day as 2006-01-02 (not a timestamp), so a definition written back as YAML
// (the console's draft editor) reads again.
func (d Date) MarshalYAML() (any, error) { return d.String(), nil }
