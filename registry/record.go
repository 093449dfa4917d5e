package registry

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/policypush/policypush/store"
)

// Record is one firm record as it came through a door (a CSV or XLSX line, an object of a change
// message, a row of the SQL source), every cell parsed and checked. It carries only the fields the
// source gave: Apply lays them over the stored firm, so a department that sends its own columns
// does not wipe the others'. An empty cell (JSON null, SQL NULL) sets the field's default.
type Record struct {
	CreditCode  string
	CodeWarning bool // the credit code fails only its checksum (kept, flagged)
	At          Position
	cols        []*column
	vals        []any // parsed values by cols; nil for an empty cell
}

// Position says where a record came from, for messages: "line 12" of a file, "firm 3" of a change
// message, "row 7" of a SQL sync.
type Position struct {
	Unit string // "line" (files; the default), "firm" (change messages) or "row" (SQL source)
	N    int    // 1-based
}

// Units of Position.
const (
	UnitLine = "line"
	UnitFirm = "firm"
	UnitRow  = "row"
)

func (p Position) String() string { return fmt.Sprintf("%s %d", p.word(), p.N) }

func (p Position) word() string {
	if p.Unit == "" {
		return UnitLine
	}
	return p.Unit
}

// cellWord is what a field of a record at this position is called: a JSON object has keys, files
// and tables have columns.
func (p Position) cellWord() string {
	if p.Unit == UnitFirm {
		return "key"
	}
	return "column"
}

// Gives reports whether the record carries a value (possibly empty) for key.
func (r *Record) Gives(key string) bool {
	for _, c := range r.cols {
		if c.Key == key {
			return true
		}
	}
	return false
}

// recordRequired are the fields every stored firm must have, however it arrived: the upsert key,
// the name every notice shows, and the region that district scopes and regional policies read.
var recordRequired = []string{"credit_code", "name", "region_code"}

// Apply lays the record over the stored firm (nil: a new firm, starting from the catalog defaults)
// and checks the result as a whole: a new firm needs every required field, an update may not
// empty one. entity_type not given (or emptied) is derived from the credit code. ok is false when
// the result must not be stored; issues say why, at the record's position.
func (r *Record) Apply(stored *store.Enterprise) (e store.Enterprise, issues []Issue, ok bool) {
	if stored != nil {
		e = *stored
	} else {
		e = defaultFirm()
	}
	ev := reflect.ValueOf(&e).Elem()
	for i, c := range r.cols {
		if r.vals[i] == nil {
			c.reset(ev)
		} else {
			c.set(ev, r.vals[i])
		}
	}
	e.CreditCode = r.CreditCode
	e.CodeWarning = r.CodeWarning
	if e.EntityType == "" {
		e.EntityType = EntityTypeOf(e.CreditCode)
	}
	for _, k := range recordRequired {
		c := columnByKey(k)
		if c.format(ev) != "" {
			continue
		}
		reason := "is required but empty"
		switch {
		case stored == nil && !r.Gives(k):
			reason = "is required for a new firm but not given"
		case stored != nil:
			reason = "cannot be emptied"
		}
		issues = append(issues, Issue{Line: r.At.N, Unit: r.At.Unit, Column: k, Code: r.CreditCode, Reason: reason})
	}
	return e, issues, len(issues) == 0
}

// defaultFirm is a new firm before any field is given: active, not 专精特新.
func defaultFirm() store.Enterprise {
	return store.Enterprise{Status: store.StatusActive, SpecializedLevel: "none"}
}

// reset sets the bound field to its default: the one a new firm starts with.
func (c *column) reset(e reflect.Value) {
	def := reflect.ValueOf(defaultFirm()).FieldByIndex(c.index)
	e.FieldByIndex(c.index).Set(def)
}

func columnByKey(key string) *column {
	cols := columns()
	for i := range cols {
		if cols[i].Key == key {
			return &cols[i]
		}
	}
	return nil
}

// RecordOf turns a complete firm (as Go code holds it: tests, the synthetic registry, callers of
// the matcher's ApplyChanges) into a Record by writing every catalog field out and reading it back
// through the same checks as a file cell.
func RecordOf(e store.Enterprise, at Position) (Record, []Issue, bool) {
	cols := columns()
	ev := reflect.ValueOf(&e).Elem()
	l := layout{cols: make([]binding, len(cols))}
	rec := make([]string, len(cols))
	for i := range cols {
		l.cols[i] = binding{column: &cols[i]}
		rec[i] = cols[i].format(ev)
	}
	return l.parse(rec, at)
}

// FieldChange is one field a write changed, in the import file's text form (dates 2006-01-02).
type FieldChange struct {
	Key string `json:"key"`
	Old string `json:"old"`
	New string `json:"new"`
}

// Diff lists the catalog fields that differ between the stored firm (nil: none) and its new state.
func Diff(old *store.Enterprise, next store.Enterprise) []FieldChange {
	var base store.Enterprise
	if old != nil {
		base = *old
	}
	ov, nv := reflect.ValueOf(&base).Elem(), reflect.ValueOf(&next).Elem()
	var out []FieldChange
	for i := range columns() {
		c := &columns()[i]
		a, b := c.format(ov), c.format(nv)
		if old == nil && b == "" {
			continue
		}
		if a != b {
			out = append(out, FieldChange{Key: c.Key, Old: a, New: b})
		}
	}
	return out
}

// Entity types (entity_type), from GB 32100's registration authority and type characters.
const (
	EntityEnterprise  = "enterprise"
	EntityIndividual  = "individual"
	EntityCooperative = "cooperative"
	EntityOther       = "other"
)

// EntityTypeOf derives the entity type from the credit code's first two characters (GB 32100-2015
// 表 1): under authority 9 (工商/市场监管), type 1 is an enterprise, 2 a 个体工商户, 3 a 农民专业合作社;
// every other authority (机构编制, 民政, 司法行政, …) registers other kinds of unit.
func EntityTypeOf(code string) string {
	switch {
	case strings.HasPrefix(code, "91"):
		return EntityEnterprise
	case strings.HasPrefix(code, "92"):
		return EntityIndividual
	case strings.HasPrefix(code, "93"):
		return EntityCooperative
	case code == "":
		return ""
	}
	return EntityOther
}

// ErrBadChange marks a change message that can never be applied: not JSON, no firm in it, or no
// firm with a credit code.
var ErrBadChange = errors.New("bad registry change")

// Text is a catalog field of a firm as an import file writes it (dates 2006-01-02, plain
// decimals); "" for an unknown key.
func Text(e store.Enterprise, key string) string {
	c := columnByKey(key)
	if c == nil {
		return ""
	}
	return c.format(reflect.ValueOf(&e).Elem())
}
