package rules

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustDate(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := ParseDate(s)
	if err != nil {
		t.Fatal(err)
	}
	return d.Time
}

func TestCompileAndRun(t *testing.T) {
	params := map[string]any{"rate": 0.9, "per_head": 500, "industries": []any{"52", "62"}, "cut": 30}
	asOf := mustDate(t, "2022-06-30")
	env := Env{RegionCode: "320571", IndustryCode: "H6210", InsuredEmployees: 12, UnemploymentInsurancePaid: 10000,
		RegisteredAt: mustDate(t, "2019-07-01"), AsOf: asOf, Status: "active"}
	cases := []struct {
		src  string
		kind reflect.Kind
		want any
	}{
		{`in_region("3205")`, reflect.Bool, true},
		{`in_region("3201")`, reflect.Bool, false},
		{`in_industry("52", "62")`, reflect.Bool, true},
		{`in_industry("C")`, reflect.Bool, false},
		{`in_industry("C", params.industries)`, reflect.Bool, true},
		{`in_region(params.industries, "32")`, reflect.Bool, true},
		{`in_industry("H62")`, reflect.Bool, true},
		{`in_industry("H")`, reflect.Bool, true},
		{`industry_code[1:3] in params.industries`, reflect.Bool, true},
		{`years_since(registered_at) >= 2`, reflect.Bool, true},
		{`years_since(registered_at) >= 3`, reflect.Bool, false},
		{`months_since(registered_at)`, reflect.Float64, 35.0},
		{`registered_at >= date("2019-07-01") && registered_at < as_of`, reflect.Bool, true},
		{`params.rate * unemployment_insurance_paid`, reflect.Float64, 9000.0},
		{`params.per_head * insured_employees`, reflect.Float64, 6000.0},
		{`insured_employees <= params.cut ? 1 : 2`, reflect.Float64, 1.0},
	}
	for _, c := range cases {
		t.Run(c.src, func(t *testing.T) {
			p, err := Compile("eligibility", c.src, params, c.kind)
			if err != nil {
				t.Fatalf("%s: %v", c.src, err)
			}
			got, err := p.Run(&env)
			if err != nil {
				t.Fatalf("%s: run: %v", c.src, err)
			}
			if got != c.want {
				t.Errorf("%s = %v (%T), want %v", c.src, got, got, c.want)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	cases := []struct {
		src, want string
		line, col int
	}{
		{`insured_employes > 10`, "unknown name insured_employes", 1, 1},
		{"employees > 1 &&\n  params.nope > 2", "unknown parameter params.nope", 2, 10},
		{`now() > date("2020-01-01")`, "now", 1, 1},
		{`repeat("a", 10) == "a"`, "repeat", 1, 1},
		{`name == "x" && employees > "ten"`, "mismatched types", 1, 26},
		{`employees + 1`, "bool", 1, 1},
		{`len(1..1000000) > 0`, "ranges", 1, 6},
		{strings.Repeat("(", 1000) + "1" + strings.Repeat(")", 1000) + " > 0", "nesting", 1, 25},
		{`"unterminated`, "literal not terminated", 1, 14},
		{`all(1..3, # > 0)`, "not allowed", 1, 6},
		{`let x = 1; x > 0`, "let", 1, 5},
		{`filter([1,2], # > 1)`, "not allowed", 1, 15},
		{`os_exec("rm")`, "not available", 1, 1},
	}
	for _, c := range cases {
		t.Run(c.src, func(t *testing.T) {
			_, err := Compile("eligibility", c.src, map[string]any{"rate": 1}, reflect.Bool)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Errorf("%q: expected CompileError, got %v", c.src, err)
				return
			}
			if !strings.Contains(ce.Message, c.want) {
				t.Errorf("%q: message %q does not mention %q", c.src, ce.Message, c.want)
			}
			if ce.Line != c.line || (c.col != 0 && ce.Column != c.col) {
				t.Errorf("%q: at %d:%d, want %d:%d (%s)", c.src, ce.Line, ce.Column, c.line, c.col, ce.Message)
			}
		})
	}
}

func TestProgramTreeIsPatched(t *testing.T) {
	p, err := Compile("eligibility", `in_region("3205") && insured_employees >= params.cut`, map[string]any{"cut": 10}, reflect.Bool)
	if err != nil {
		t.Fatal(err)
	}
	got := p.Tree.Node.String()
	if !strings.Contains(got, "in_region(region_code, \"3205\")") || !strings.Contains(got, ">= 10") {
		t.Fatalf("tree not patched: %s", got)
	}
}
