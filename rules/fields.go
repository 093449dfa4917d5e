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

	"github.com/policypush/policypush/registry"
)

// The rule language's vocabulary is the registry's field catalog, plus the extra fields a
// deployment declares in its config (fields.extra), plus as_of. Extra fields are stored per firm in
// store.EnterpriseFact rows, so a deployment can add one without a schema change; in a rule they are
// typed variables like any catalog field (`rd_staff >= 10`).

// asOfField describes the evaluation date, which every rule can read.
var asOfField = registry.Field{Key: "as_of", Label: "评估日期", Type: registry.TypeDate, Source: "系统",
	Description: "评估（匹配）日期；规则用它代替当前时间，同样的数据和日期总得出同样的结果"}

// MaxFactText is the longest value of an extra text field, in characters (the column holds 500).
const MaxFactText = 500

// reservedNames cannot be extra field keys: they are names of the language, its helpers or Env.
var reservedNames = []string{"params", "extra", "as_of", "true", "false", "nil", "and", "or", "not", "in",
	"matches", "contains", "startsWith", "endsWith", "let", "if", "else"}

var (
	extraMu     sync.RWMutex
	extraFields []registry.Field
)

var extraKeyPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// SetExtraFields declares the deployment's extra fields (config fields.extra). Call it at start-up,
// before rules are compiled: a rule that reads an extra field compiles only once it is declared.
// Errors name the offending entry the way config.yaml does (fields.extra[i]).
func SetExtraFields(fields []registry.Field) error {
	seen := map[string]bool{}
	for i, f := range fields {
		at := fmt.Sprintf("config key fields.extra[%d].key", i)
		switch {
		case !extraKeyPattern.MatchString(f.Key):
			return fmt.Errorf("%s: %q must be lowercase letters, digits or _, starting with a letter", at, f.Key)
		case seen[f.Key]:
			return fmt.Errorf("%s: %q is declared twice", at, f.Key)
		case slices.Contains(reservedNames, f.Key):
			return fmt.Errorf("%s: %q is a reserved word of the rule language; choose another key", at, f.Key)
		}
		if _, ok := registry.Lookup(f.Key); ok {
			return fmt.Errorf("%s: %q is already a catalog field (see `policypush fields`); extra fields add new keys", at, f.Key)
		}
		if _, ok := helperFuncs[f.Key]; ok {
			return fmt.Errorf("%s: %q is the name of a helper function; choose another key", at, f.Key)
		}
		switch f.Type {
		case registry.TypeString, registry.TypeInt, registry.TypeFloat, registry.TypeBool, registry.TypeDate, registry.TypeEnum:
		default:
			return fmt.Errorf("config key fields.extra[%d].type: %q is not one of string, int, float, bool, date, enum", i, f.Type)
		}
		seen[f.Key] = true
	}
	extraMu.Lock()
	extraFields = slices.Clone(fields)
	extraMu.Unlock()

	return nil
}

// ExtraFields returns the declared extra fields.
func ExtraFields() []registry.Field {
	extraMu.RLock()
	defer extraMu.RUnlock()
	return slices.Clone(extraFields)
}

func extraField(key string) (registry.Field, bool) {
	extraMu.RLock()
	defer extraMu.RUnlock()
	for _, f := range extraFields {
		if f.Key == key {
			return f, true
		}
	}
	return registry.Field{}, false
}

// Vocabulary lists every variable a rule can read, in the order `policypush fields` shows them:
// the registry catalog, the deployment's extra fields (source marked), then as_of.
func Vocabulary() []registry.Field {
	out := slices.Clone(registry.Catalog)
	for _, f := range ExtraFields() {
		if f.Source == "" {
			f.Source = "本地配置"
		}
		out = append(out, f)
	}
	return append(out, asOfField)
}

// LookupField finds a variable of the vocabulary by key.
func LookupField(key string) (registry.Field, bool) {
	if key == asOfField.Key {
		return asOfField, true
	}
	if f, ok := registry.Lookup(key); ok {
		return f, true
	}
	return extraField(key)
}

// factFunc is the typed accessor an extra field is rewritten to: `rd_staff` becomes
// fact_int(extra, "rd_staff"), so the checker knows its type and a missing value reads as zero, the
// way an empty catalog column does.
func factFunc(typ string) string {
	switch typ {
	case registry.TypeInt:
		return "fact_int"
	case registry.TypeFloat:
		return "fact_float"
	case registry.TypeBool:
		return "fact_bool"
	case registry.TypeDate:
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
func ParseFact(f registry.Field, raw string) (any, error) {
	raw = strings.TrimSpace(raw)
	switch f.Type {
	case registry.TypeInt:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", raw)
		}
		return n, nil
	case registry.TypeFloat:
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("%q is not a number (write a plain decimal such as 1234.5)", raw)
		}
		return x, nil
	case registry.TypeBool:
		switch strings.ToLower(raw) {
		case "true", "1", "是", "yes":
			return true, nil
		case "false", "0", "否", "no":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not true or false (是/否)", raw)
	case registry.TypeDate:
		d, err := ParseDate(raw)
		if err != nil {
			return nil, err
		}
		return d.Time, nil
	case registry.TypeEnum:
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
