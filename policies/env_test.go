package policies_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// EnvOf fills every catalog field of the rule environment from the registry row of the same name
// (rules' own tests build environments by that correspondence), and cuts text to its column.
func TestEnvOfMapsEveryField(t *testing.T) {
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	firms := registry.Synth(200, 3)
	long := store.Enterprise{CreditCode: "91320571MA1FL0007C", Name: strings.Repeat("啊", 500), Status: store.StatusActive}
	for _, e := range append(firms, long) {
		env := policies.EnvOf(&e, asOf)
		ev, sv := reflect.ValueOf(env), reflect.ValueOf(e)
		for i := range ev.NumField() {
			f := ev.Type().Field(i)
			switch f.Name {
			case "AsOf":
				if !env.AsOf.Equal(asOf) {
					t.Fatalf("as_of %v", env.AsOf)
				}
				continue
			case "Extra":
				continue
			}
			src := sv.FieldByName(f.Name)
			if !src.IsValid() {
				t.Fatalf("Env.%s has no store.Enterprise field of that name", f.Name)
			}
			want := src.Interface()
			if p, ok := want.(*time.Time); ok {
				want = time.Time{}
				if p != nil {
					want = p.UTC()
				}
			}
			if s, ok := want.(string); ok && f.Name == "Name" && len([]rune(s)) > 200 {
				want = string([]rune(s)[:200])
			}
			if got := ev.Field(i).Interface(); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: Env.%s = %v, store has %v", e.CreditCode, f.Name, got, want)
			}
		}
	}
}
