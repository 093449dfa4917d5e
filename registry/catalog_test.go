package registry

import (
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode"

	"gorm.io/gorm/schema"

	"github.com/policypush/policypush/registry/fields"
	"github.com/policypush/policypush/store"
)

func TestCatalogOrder(t *testing.T) {
	want := []string{"credit_code", "name", "region_code", "industry_code", "status", "registered_at",
		"employees", "insured_employees", "annual_revenue", "total_assets", "vat_sales", "tax_credit_rating",
		"taxpayer_type", "is_high_tech", "specialized_level", "park_id", "layoff_rate",
		"unemployment_insurance_paid", "graduates_hired", "tax_violations_36m", "refund_fraud_36m",
		"immediate_refund_since_2019", "entity_type", "taxable_income", "rents_state_property", "insured_months",
		"contact_phone", "wechat_openid"}
	var got []string
	for _, f := range Catalog {
		got = append(got, f.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("catalog keys\n got %v\nwant %v", got, want)
	}
}

// TestCatalogMatchesEnterprise checks, through gorm's own schema parser, that every catalog key is a
// column of store.Enterprise whose Go type can hold the catalog type, and that every data column of
// the model is in the catalog.
func TestCatalogMatchesEnterprise(t *testing.T) {
	sch, err := schema.Parse(&store.Enterprise{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string][]reflect.Type{
		TypeString: {reflect.TypeFor[string]()},
		TypeEnum:   {reflect.TypeFor[string]()},
		TypeInt:    {reflect.TypeFor[int](), reflect.TypeFor[int64](), reflect.TypeFor[int32]()},
		TypeFloat:  {reflect.TypeFor[float64]()},
		TypeBool:   {reflect.TypeFor[bool]()},
		TypeDate:   {reflect.TypeFor[time.Time](), reflect.TypeFor[*time.Time]()},
	}
	inCatalog := map[string]bool{}
	for _, f := range Catalog {
		inCatalog[f.Key] = true
		sf := sch.LookUpField(f.Key)
		if sf == nil || sf.DBName != f.Key {
			t.Errorf("%s: not a gorm column of store.Enterprise", f.Key)
			continue
		}
		allowed, ok := kinds[f.Type]
		if !ok {
			t.Errorf("%s: unknown type %q", f.Key, f.Type)
			continue
		}
		if !slices.Contains(allowed, sf.FieldType) {
			t.Errorf("%s: catalog type %s, but Enterprise.%s is %s", f.Key, f.Type, sf.Name, sf.FieldType)
		}
	}
	for _, sf := range sch.Fields {
		switch sf.DBName {
		case "code_warning", "created_at", "updated_at":
			continue
		}
		if !inCatalog[sf.DBName] {
			t.Errorf("column %s of store.Enterprise is missing from the catalog", sf.DBName)
		}
	}
	if _, err := bindColumns(); err != nil {
		t.Fatal(err)
	}
}

// The status values the field catalog spells out (package fields imports nothing of the project)
// are the store's.
func TestCatalogStatusValues(t *testing.T) {
	f, _ := Lookup("status")
	want := []string{store.StatusActive, store.StatusRevoked, store.StatusDeregistered, store.StatusMovedOut}
	if !slices.Equal(f.Enum, want) {
		t.Fatalf("status enum %v, store has %v", f.Enum, want)
	}
	if fields.StatusActive != store.StatusActive {
		t.Fatalf("fields.StatusActive %q, store.StatusActive %q", fields.StatusActive, store.StatusActive)
	}
}

func TestCatalogEntriesAreDescribed(t *testing.T) {
	for _, f := range Catalog {
		if !slices.ContainsFunc([]rune(f.Label), func(r rune) bool { return unicode.Is(unicode.Han, r) }) {
			t.Errorf("%s: label %q is not Chinese", f.Key, f.Label)
		}
		if f.Source == "" || f.Description == "" {
			t.Errorf("%s: source or description missing", f.Key)
		}
		if (f.Type == TypeEnum) != (len(f.Enum) > 0) {
			t.Errorf("%s: type %s with enum %v", f.Key, f.Type, f.Enum)
		}
	}
	f, ok := Lookup("insured_employees")
	if !ok || f.Label != "参保人数" || f.Unit != "人" || f.Source != "人社部门" || f.Type != TypeInt {
		t.Errorf("Lookup(insured_employees) = %+v, %v", f, ok)
	}
	if f, ok := Lookup("annual_revenue"); !ok || f.Unit != "元" || f.Type != TypeFloat {
		t.Errorf("Lookup(annual_revenue) = %+v, %v", f, ok)
	}
	if _, ok := Lookup("code_warning"); ok {
		t.Error("code_warning is bookkeeping, not a catalog field")
	}
}
