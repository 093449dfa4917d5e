package rules

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"

	"github.com/policypush/policypush/registry/fields"
)

// The rule language's vocabulary is the registry's field catalog (package fields, the variables of
// Env), plus the extra fields a deployment declares in its config (fields.extra), plus as_of. Extra
// fields are stored per firm in store.EnterpriseFact rows, so a deployment can add one without a
// schema change; in a rule they are typed variables like any catalog field (`rd_staff >= 10`).
//
// The vocabulary is a value, not package state: NewVocabulary builds it (the standard catalog plus
// the given extra fields), Compile takes it as an option (WithVocabulary), and a compiled Program
// keeps the one it was checked against, so evaluation and explanation read the same field labels.

// asOfField describes the evaluation date, which every rule can read.
var asOfField = fields.Field{Key: "as_of", Label: "评估日期", Type: fields.TypeDate, Source: "系统",
	Description: "评估（匹配）日期；规则用它代替当前时间，同样的数据和日期总得出同样的结果"}

// MaxFactText is the longest value of an extra text field, in characters (the column holds 500).
const MaxFactText = 500

// reservedNames cannot be extra field keys: they are names of the language, its helpers or Env.
var reservedNames = []string{"params", "extra", "as_of", "true", "false", "nil", "and", "or", "not", "in",
	"matches", "contains", "startsWith", "endsWith", "let", "if", "else"}

var extraKeyPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// Vocabulary is the set of variables rules are compiled against. It is immutable; the zero of a
// *Vocabulary (nil) stands for the standard one.
type Vocabulary struct {
	extra []fields.Field          // the deployment's extra fields, as declared
	all   []fields.Field          // catalog, extra (source marked), as_of: `policypush fields` order
	byKey map[string]fields.Field // every variable by key
	facts map[string]fields.Field // the extra fields by key
	key   string                  // identity of the content, for caches of compiled versions
}

// NewVocabulary builds the vocabulary of a deployment: the standard field catalog plus its extra
// fields (config fields.extra; none for the standard vocabulary). Errors name the offending entry
// the way config.yaml does (fields.extra[i]).
func NewVocabulary(extra ...fields.Field) (*Vocabulary, error) {
	seen := map[string]bool{}
	for i, f := range extra {
		at := fmt.Sprintf("config key fields.extra[%d].key", i)
		switch {
		case !extraKeyPattern.MatchString(f.Key):
			return nil, fmt.Errorf("%s: %q must be lowercase letters, digits or _, starting with a letter", at, f.Key)
		case seen[f.Key]:
			return nil, fmt.Errorf("%s: %q is declared twice", at, f.Key)
		case slices.Contains(reservedNames, f.Key):
			return nil, fmt.Errorf("%s: %q is a reserved word of the rule language; choose another key", at, f.Key)
		}
		if _, ok := fields.Lookup(f.Key); ok {
			return nil, fmt.Errorf("%s: %q is already a catalog field (see `policypush fields`); extra fields add new keys", at, f.Key)
		}
		if _, ok := helperFuncs[f.Key]; ok {
			return nil, fmt.Errorf("%s: %q is the name of a helper function; choose another key", at, f.Key)
		}
		switch f.Type {
		case fields.TypeString, fields.TypeInt, fields.TypeFloat, fields.TypeBool, fields.TypeDate, fields.TypeEnum:
		default:
			return nil, fmt.Errorf("config key fields.extra[%d].type: %q is not one of string, int, float, bool, date, enum", i, f.Type)
		}
		seen[f.Key] = true
	}
	v := &Vocabulary{extra: slices.Clone(extra), byKey: map[string]fields.Field{}, facts: map[string]fields.Field{}}
	v.all = slices.Clone(fields.Catalog)
	for _, f := range extra {
		v.facts[f.Key] = f
		if f.Source == "" {
			f.Source = "本地配置"
		}
		v.all = append(v.all, f)
	}
	v.all = append(v.all, asOfField)
	for _, f := range v.all {
		v.byKey[f.Key] = f
	}
	v.key = fmt.Sprint(v.extra)
	return v, nil
}

// standardVocabulary is the catalog without extra fields, built once.
var standardVocabulary = sync.OnceValue(func() *Vocabulary {
	v, err := NewVocabulary()
	if err != nil { // no extra fields: nothing to reject
		panic(err)
	}
	return v
})

// StandardVocabulary is the field catalog and as_of, without extra fields: what Compile uses when
// no vocabulary is given.
func StandardVocabulary() *Vocabulary { return standardVocabulary() }

// or returns v, or the standard vocabulary for nil.
func (v *Vocabulary) or() *Vocabulary {
	if v == nil {
		return standardVocabulary()
	}
	return v
}

// Fields lists every variable a rule can read, in the order `policypush fields` shows them: the
// registry catalog, the deployment's extra fields (source marked), then as_of.
func (v *Vocabulary) Fields() []fields.Field { return slices.Clone(v.or().all) }

// Extra returns the declared extra fields.
func (v *Vocabulary) Extra() []fields.Field { return slices.Clone(v.or().extra) }

// Lookup finds a variable of the vocabulary by key.
func (v *Vocabulary) Lookup(key string) (fields.Field, bool) {
	f, ok := v.or().byKey[key]
	return f, ok
}

// extraField finds a declared extra field by key.
func (v *Vocabulary) extraField(key string) (fields.Field, bool) {
	f, ok := v.or().facts[key]
	return f, ok
}

// Key identifies the vocabulary's content: two vocabularies with the same key compile every rule
// the same way (caches of compiled versions include it).
func (v *Vocabulary) Key() string { return v.or().key }

// Option configures Compile (and the functions of package policies that compile).
type Option func(*options)

type options struct {
	voc *Vocabulary
}

// WithVocabulary compiles against v (nil: the standard vocabulary).
func WithVocabulary(v *Vocabulary) Option { return func(o *options) { o.voc = v } }

// VocabularyOf returns the vocabulary the options select: the standard one when none does.
func VocabularyOf(opts ...Option) *Vocabulary {
	var o options
	for _, op := range opts {
		if op != nil {
			op(&o)
		}
	}
	return o.voc.or()
}

// factFunc is the typed accessor an extra field is rewritten to: `rd_staff` becomes
// fact_int(extra, "rd_staff"), so the checker knows its type and a missing value reads as zero, the
// way an empty catalog column does.
func factFunc(typ string) string {
	switch typ {
	case fields.TypeInt:
		return "fact_int"
	case fields.TypeFloat:
		return "fact_float"
	case fields.TypeBool:
		return "fact_bool"
	case fields.TypeDate:
		return "fact_date"
	}
	return "fact_string"
}

var factFuncs = []string{"fact_int", "fact_float", "fact_bool", "fact_date", "fact_string"}

func factOptions() []expr.Option {
	get := func(a []any) any { return a[0].(map[string]any)[a[1].(string)] }
	return []expr.Option{
		expr.Function("fact_int", func(a ...any) (any, error) {
			v, _ := get(a).(int)
			return v, nil
		}, new(func(map[string]any, string) int)),
		expr.Function("fact_float", func(a ...any) (any, error) {
			v, _ := get(a).(float64)
			return v, nil
		}, new(func(map[string]any, string) float64)),
		expr.Function("fact_bool", func(a ...any) (any, error) {
			v, _ := get(a).(bool)
			return v, nil
		}, new(func(map[string]any, string) bool)),
		expr.Function("fact_date", func(a ...any) (any, error) {
			v, _ := get(a).(time.Time)
			return v, nil
		}, new(func(map[string]any, string) time.Time)),
		expr.Function("fact_string", func(a ...any) (any, error) {
			v, _ := get(a).(string)
			return v, nil
		}, new(func(map[string]any, string) string)),
	}
}

// ParseFact reads the text form of an extra field's value (as imported or stored) into the Go
// value rules see: int, float64, bool, time.Time or string.
func ParseFact(f fields.Field, raw string) (any, error) {
	raw = strings.TrimSpace(raw)
	switch f.Type {
	case fields.TypeInt:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", raw)
		}
		return n, nil
	case fields.TypeFloat:
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("%q is not a number (write a plain decimal such as 1234.5)", raw)
		}
		return x, nil
	case fields.TypeBool:
		switch strings.ToLower(raw) {
		case "true", "1", "是", "yes":
			return true, nil
		case "false", "0", "否", "no":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not true or false (是/否)", raw)
	case fields.TypeDate:
		d, err := ParseDate(raw)
		if err != nil {
			return nil, err
		}
		return d.Time, nil
	case fields.TypeEnum:
		if !slices.Contains(f.Enum, raw) {
			return nil, fmt.Errorf("%q is not one of %s", raw, strings.Join(f.Enum, ", "))
		}
		return raw, nil
	}
	if n := utf8.RuneCountInString(raw); n > MaxFactText {
		return nil, fmt.Errorf("has %d characters, at most %d fit", n, MaxFactText)
	}
	return raw, nil
}
