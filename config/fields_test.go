package config

import (
	"strings"
	"testing"
)

// Extra fields (fields.extra) are checked when the config loads, naming the entry at fault.
func TestExtraFieldsValidation(t *testing.T) {
	good := "fields:\n  extra:\n    - {key: rd_staff, label: 研发人员数, type: int, unit: 人}\n    - {key: park_rating, label: 园区评级, type: enum, enum: [A, B]}\n"
	c, err := loadYAML(t, good)
	if err != nil || len(c.Fields.Extra) != 2 || c.Fields.Extra[1].Enum[1] != "B" {
		t.Fatalf("good extra fields: %+v %v", c.Fields, err)
	}
	cases := map[string]string{
		"{key: RD, label: x, type: int}":                                       "fields.extra[0].key",
		"{key: rd, type: int}":                                                 "fields.extra[0].label",
		"{key: rd, label: x, type: money}":                                     "fields.extra[0].type",
		"{key: rd, label: x, type: enum}":                                      "fields.extra[0].enum",
		"{key: rd, label: x, type: int, enum: [a]}":                            "fields.extra[0].enum",
		"{key: rd, label: x, type: int}\n    - {key: rd, label: y, type: int}": "fields.extra[1].key",
	}
	for entry, key := range cases {
		if _, err := loadYAML(t, "fields:\n  extra:\n    - "+entry+"\n"); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v, want it to name %s", entry, err, key)
		}
	}
}
