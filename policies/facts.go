package policies

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// AttachExtraFacts fills Env.Extra of each firm from the enterprise_facts table. It does nothing
// when the deployment declares no extra fields. Values that no longer parse (a field's type was
// changed in config after import) read as missing, the same as a firm without the fact.
func AttachExtraFacts(ctx context.Context, db *gorm.DB, envs []rules.Env, opts ...rules.Option) error {
	fields := rules.VocabularyOf(opts...).Extra()
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
			v, err := rules.ParseFact(byKey[f.Field], f.Value)
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
func ImportFacts(ctx context.Context, db *gorm.DB, r io.Reader, opts ...rules.Option) (FactsSummary, error) {
	voc := rules.VocabularyOf(opts...)
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
		for _, f := range voc.Extra() {
			if h == f.Key || h == f.Label {
				cols[i] = &f
				break
			}
		}
		if cols[i] == nil {
			return sum, fmt.Errorf("header column %d %q is not an extra field declared in config fields.extra (declared: %s)",
				i+1, h, strings.Join(extraKeys(voc), ", "))
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
			if _, err := rules.ParseFact(*f, raw); err != nil {
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

func extraKeys(voc *rules.Vocabulary) []string {
	var out []string
	for _, f := range voc.Extra() {
		out = append(out, f.Key)
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}
