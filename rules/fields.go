package rules

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
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
	compiledVersions.Clear()
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

// AttachExtraFacts fills Env.Extra of each firm from the enterprise_facts table. It does nothing
// when the deployment declares no extra fields. Values that no longer parse (a field's type was
// changed in config after import) read as missing, the same as a firm without the fact.
func AttachExtraFacts(ctx context.Context, db *gorm.DB, envs []Env) error {
	fields := ExtraFields()
	if len(fields) == 0 || len(envs) == 0 {
		return nil
	}
	byKey := make(map[string]registry.Field, len(fields))
	keys := make([]string, len(fields))
	for i, f := range fields {
		byKey[f.Key], keys[i] = f, f.Key
	}
	index := make(map[string]int, len(envs))
	for i := range envs {
		index[envs[i].CreditCode] = i
	}
	const page = 5000
	after := store.EnterpriseFact{}
	for {
		var batch []store.EnterpriseFact
		err := db.WithContext(ctx).Where("field IN ? AND (credit_code > ? OR (credit_code = ? AND field > ?))",
			keys, after.CreditCode, after.CreditCode, after.Field).
			Order("credit_code, field").Limit(page).Find(&batch).Error
		if err != nil {
			return fmt.Errorf("load extra fields: %w", err)
		}
		for _, f := range batch {
			i, ok := index[f.CreditCode]
			if !ok {
				continue
			}
			v, err := ParseFact(byKey[f.Field], f.Value)
			if err != nil {
				continue
			}
			if envs[i].Extra == nil {
				envs[i].Extra = map[string]any{}
			}
			envs[i].Extra[f.Field] = v
		}
		if len(batch) < page {
			return nil
		}
		after = batch[len(batch)-1]
	}
}

// FactsSummary says what a facts import did.
type FactsSummary struct {
	Rows, Stored, Cleared int
	Problems              []string // line N, column K: what is wrong
}

// ImportFacts reads a CSV file of extra field values (header: credit_code, then extra field keys
// or their Chinese labels) and upserts them. An empty cell removes the firm's value, so the file
// can also correct mistakes. Malformed cells are reported by line and column and skipped; the rest
// is imported.
func ImportFacts(ctx context.Context, db *gorm.DB, r io.Reader) (FactsSummary, error) {
	var sum FactsSummary
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return sum, fmt.Errorf("read header: %w", err)
	}
	cols := make([]*registry.Field, len(header))
	codeCol := -1
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\uFEFF"))
		if h == "credit_code" || h == "统一社会信用代码" {
			codeCol = i
			continue
		}
		for _, f := range ExtraFields() {
			if h == f.Key || h == f.Label {
				cols[i] = &f
				break
			}
		}
		if cols[i] == nil {
			return sum, fmt.Errorf("header column %d %q is not an extra field declared in config fields.extra (declared: %s)",
				i+1, h, strings.Join(extraKeys(), ", "))
		}
	}
	if codeCol < 0 {
		return sum, errors.New("the header has no credit_code column")
	}
	now := time.Now().UTC()
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return sum, nil
		}
		if err != nil {
			return sum, fmt.Errorf("line %d: %w", line, err)
		}
		if len(rec) != len(header) {
			sum.Problems = append(sum.Problems, fmt.Sprintf("line %d: has %d fields, the header has %d", line, len(rec), len(header)))
			continue
		}
		sum.Rows++
		code := strings.ToUpper(strings.TrimSpace(rec[codeCol]))
		if _, err := registry.CheckCreditCode(code); err != nil {
			sum.Problems = append(sum.Problems, fmt.Sprintf("line %d, column credit_code: %v", line, err))
			continue
		}
		var rows []store.EnterpriseFact
		var clear []string
		for i, f := range cols {
			if f == nil {
				continue
			}
			raw := strings.TrimSpace(rec[i])
			if raw == "" {
				clear = append(clear, f.Key)
				continue
			}
			if _, err := ParseFact(*f, raw); err != nil {
				sum.Problems = append(sum.Problems, fmt.Sprintf("line %d, column %s: %v", line, f.Key, err))
				continue
			}
			rows = append(rows, store.EnterpriseFact{CreditCode: code, Field: f.Key, Value: raw, UpdatedAt: now})
		}
		err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if len(clear) > 0 {
				res := tx.Where("credit_code = ? AND field IN ?", code, clear).Delete(&store.EnterpriseFact{})
				if res.Error != nil {
					return res.Error
				}
				sum.Cleared += int(res.RowsAffected)
			}
			if len(rows) == 0 {
				return nil
			}
			return tx.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "credit_code"}, {Name: "field"}},
				DoUpdates: clause.AssignmentColumns([]string{"value", "updated_at"}),
			}).Create(&rows).Error
		})
		if err != nil {
			return sum, fmt.Errorf("line %d: store facts of %s: %w", line, code, err)
		}
		sum.Stored += len(rows)
	}
}

func extraKeys() []string {
	var out []string
	for _, f := range ExtraFields() {
		out = append(out, f.Key)
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}
