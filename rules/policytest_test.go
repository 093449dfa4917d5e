package rules

import (
	"strings"
	"testing"
)

// A test case is decided as matching decides it on its date: outside the effective window the
// policy matches nobody, and a rule may depend on as_of.
func TestRunTestsHonoursTime(t *testing.T) {
	const policy = `id: window
title: 窗口
effective_from: 2022-04-01
effective_to: 2022-12-31
eligibility: insured_employees > 0 && (in_industry("C") || as_of >= date("2022-07-01"))
amount: 0.9 * unemployment_insurance_paid
channels: [wechat]
tests:
`
	cases := []struct {
		name, test string
		pass       bool
		problem    string
	}{
		{"default date is the first day", `{firm: {insured_employees: 1, industry_code: C3911}, eligible: true}`, true, ""},
		{"default date is before July", `{firm: {insured_employees: 1, industry_code: F5211}, eligible: false}`, true, ""},
		{"rule reads as_of", `{as_of: 2022-07-01, firm: {insured_employees: 1, industry_code: F5211}, eligible: true}`, true, ""},
		{"day before July", `{as_of: 2022-06-30, firm: {insured_employees: 1, industry_code: F5211}, eligible: false}`, true, ""},
		{"after the window expects eligible", `{as_of: 2023-01-01, firm: {insured_employees: 1, industry_code: C3911}, eligible: true}`, false, "outside the effective window 2022-04-01 至 2022-12-31"},
		{"after the window not eligible", `{as_of: 2023-01-01, firm: {insured_employees: 1, industry_code: C3911}, eligible: false}`, true, ""},
		{"before the window", `{as_of: 2022-03-31, firm: {insured_employees: 1, industry_code: C3911}, eligible: false}`, true, ""},
		{"last day in window", `{as_of: 2022-12-31, firm: {insured_employees: 1, industry_code: C3911}, eligible: true}`, true, ""},
		{"half-fen amount", `{firm: {insured_employees: 1, industry_code: C3911, unemployment_insurance_paid: 165.85}, eligible: true, amount: 149.27}`, true, ""},
		{"amount off by a fen", `{firm: {insured_employees: 1, industry_code: C3911, unemployment_insurance_paid: 165.85}, eligible: true, amount: 149.26}`, false, "expected amount 149.26, got 149.27"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := Parse("window.yaml", []byte(policy+"  - "+c.test+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			p, err := d.Compile()
			if err != nil {
				t.Fatal(err)
			}
			r := p.RunTests()[0]
			if r.Passed != c.pass || !strings.Contains(r.Problem, c.problem) {
				t.Fatalf("passed %t, problem %q; want %t, %q", r.Passed, r.Problem, c.pass, c.problem)
			}
		})
	}
}

func TestTestDateIsInsideTheWindow(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"effective_from: 2022-04-01\neffective_to: 2022-12-31\n", "2022-04-01"},
		{"effective_to: 2022-12-31\n", "2022-12-31"},
		{"", "2022-01-01"},
	} {
		t.Run(c.want, func(t *testing.T) {
			d, err := Parse("d.yaml", []byte("id: d\ntitle: d\neligibility: true\n"+c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := d.TestDate(); got.Format(dateLayout) != c.want || !d.ActiveOn(got) {
				t.Errorf("%q: test date %s, want %s inside the window", c.yaml, got.Format(dateLayout), c.want)
			}
		})
	}
}
