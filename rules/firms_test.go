package rules

import (
	"reflect"
	"time"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// envOf is the rule environment of a registry record, for tests that evaluate synthetic or odd
// firms. The production mapping is policies.EnvOf, which this package cannot import; Env and
// store.Enterprise name their fields alike, so the fields are copied by name, then text is cut to
// its column as policies.EnvOf does. No database is involved.
func envOf(e *store.Enterprise, asOf time.Time) Env {
	env := Env{AsOf: asOf}
	src := reflect.ValueOf(e).Elem()
	dst := reflect.ValueOf(&env).Elem()
	for _, i := range envFields {
		f := dst.Type().Field(i)
		sv := src.FieldByName(f.Name)
		switch {
		case !sv.IsValid():
			panic("store.Enterprise has no field " + f.Name)
		case sv.Kind() == reflect.Pointer:
			if !sv.IsNil() {
				dst.Field(i).Set(reflect.ValueOf(sv.Elem().Interface().(time.Time).UTC()))
			}
		default:
			dst.Field(i).Set(sv)
		}
	}
	env.ClampText()
	return env
}

func synthEnvs(n int, seed int64, asOf time.Time) []Env {
	firms := registry.Synth(n, seed)
	out := make([]Env, len(firms))
	for i := range firms {
		out[i] = envOf(&firms[i], asOf)
	}
	return out
}
