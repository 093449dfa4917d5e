package registry

import (
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"

	"gorm.io/gorm/schema"

	"github.com/policypush/policypush/registry/fields"
	"github.com/policypush/policypush/store"
)

// The catalog itself is data in package fields (so the rule language can read it without the
// database); these names keep registry's API.
type Field = fields.Field

// Field types, see fields.TypeString.
const (
	TypeString = fields.TypeString
	TypeInt    = fields.TypeInt
	TypeFloat  = fields.TypeFloat
	TypeBool   = fields.TypeBool
	TypeDate   = fields.TypeDate
	TypeEnum   = fields.TypeEnum
)

// Catalog lists the registry fields in the order of an export file's columns (fields.Catalog).
var Catalog = fields.Catalog

// Lookup returns the catalog entry of key.
func Lookup(key string) (Field, bool) { return fields.Lookup(key) }

// column binds a catalog field to its store.Enterprise struct field, so parsing and writing go
// through one generic path instead of a hand-written switch per field that could drift from Catalog.
type column struct {
	Field
	index   []int // struct field index in store.Enterprise
	maxLen  int   // character limit of the database column, 0 = none
	pointer bool  // the Go field is a pointer (a date that may be unknown)
}

// columns holds the bindings in Catalog order. It is built once; a catalog key without a matching
// Enterprise column of a compatible type is a programming error that must fail at start-up, not
// mid-import, hence the panic.
var columns = sync.OnceValue(func() []column {
	cols, err := bindColumns()
	if err != nil {
		panic(err)
	}
	return cols
})

func bindColumns() ([]column, error) {
	sch, err := schema.Parse(&store.Enterprise{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		return nil, fmt.Errorf("parse store.Enterprise: %w", err)
	}
	cols := make([]column, 0, len(Catalog))
	for _, f := range Catalog {
		sf := sch.LookUpField(f.Key)
		if sf == nil || sf.DBName != f.Key {
			return nil, fmt.Errorf("catalog key %s is not a column of store.Enterprise", f.Key)
		}
		t := sf.FieldType
		ptr := t.Kind() == reflect.Pointer
		if ptr {
			t = t.Elem()
		}
		if !typeFits(f.Type, t) {
			return nil, fmt.Errorf("catalog key %s has type %s but store.Enterprise.%s is %s", f.Key, f.Type, sf.Name, sf.FieldType)
		}
		if t.Kind() == reflect.String && f.MaxLen != sf.Size {
			return nil, fmt.Errorf("catalog key %s has MaxLen %d but store.Enterprise.%s holds %d characters", f.Key, f.MaxLen, sf.Name, sf.Size)
		}
		cols = append(cols, column{Field: f, index: sf.StructField.Index, maxLen: sf.Size, pointer: ptr})
	}
	return cols, nil
}

// typeFits reports whether a Go field type can hold values of a catalog type.
func typeFits(catalogType string, t reflect.Type) bool {
	switch catalogType {
	case TypeString, TypeEnum:
		return t.Kind() == reflect.String
	case TypeInt:
		switch t.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64:
			return true
		}
	case TypeFloat:
		return t.Kind() == reflect.Float64
	case TypeBool:
		return t.Kind() == reflect.Bool
	case TypeDate:
		return t == reflect.TypeFor[time.Time]()
	}
	return false
}

// set stores a parsed value (string, int64, float64, bool or time.Time) into the bound field.
func (c *column) set(e reflect.Value, v any) {
	fv := e.FieldByIndex(c.index)
	switch x := v.(type) {
	case string:
		fv.SetString(x)
	case int64:
		fv.SetInt(x)
	case float64:
		fv.SetFloat(x)
	case bool:
		fv.SetBool(x)
	case time.Time:
		if c.pointer {
			fv.Set(reflect.ValueOf(&x))
		} else {
			fv.Set(reflect.ValueOf(x))
		}
	}
}

// format renders the bound field the way parse reads it back: dates as 2006-01-02, floats in plain
// decimal (never an exponent, so any spreadsheet or script reads them), an unknown date as empty.
func (c *column) format(e reflect.Value) string {
	fv := e.FieldByIndex(c.index)
	if c.pointer {
		if fv.IsNil() {
			return ""
		}
		fv = fv.Elem()
	}
	switch c.Type {
	case TypeInt:
		return strconv.FormatInt(fv.Int(), 10)
	case TypeFloat:
		return strconv.FormatFloat(fv.Float(), 'f', -1, 64)
	case TypeBool:
		return strconv.FormatBool(fv.Bool())
	case TypeDate:
		return fv.Interface().(time.Time).Format(time.DateOnly)
	}
	return fv.String()
}
