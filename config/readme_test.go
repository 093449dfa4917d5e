package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// keyPaths lists every leaf key of the configuration as a dotted path (database.dsn, …).
func keyPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if key == "" || key == "-" {
			continue
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			out = append(out, keyPaths(f.Type, path)...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// Every key is documented in config.yaml (with a comment) and in the README's configuration table.
func TestEveryKeyIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	yamlDoc, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range keyPaths(reflect.TypeOf(Config{}), "") {
		if !strings.Contains(string(readme), "`"+path+"`") {
			t.Errorf("README.md does not document config key `%s`", path)
		}
		leaf := path[strings.LastIndex(path, ".")+1:]
		if !strings.Contains(string(yamlDoc), leaf+":") {
			t.Errorf("config.yaml does not show key %s", path)
		}
	}
}
