package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
)

// TestHalfFenAmountsThroughTheCLI: amounts on the half-fen boundary are what finance's spreadsheet
// gives (decimal arithmetic, ROUND(x, 2)) in the stored matches and their export, in explain and in
// calc: 165.85 × 0.9 = 149.265 → 149.27, 385013.31 × 0.5 = 192506.655 → 192506.66.
func TestHalfFenAmountsThroughTheCLI(t *testing.T) {
	c := newCLI(t)
	firms := registry.Synth(2, 9)
	firms[0].Employees, firms[0].UnemploymentInsurancePaid = 10, 165.85
	firms[1].Employees, firms[1].UnemploymentInsurancePaid = 500, 385013.31
	want := map[string]float64{firms[0].CreditCode: 149.27, firms[1].CreditCode: 192506.66}
	for i := range firms {
		firms[i].Status = "active"
	}
	var csvText strings.Builder
	if err := registry.WriteCSV(&csvText, firms); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	csvPath, polPath := filepath.Join(dir, "firms.csv"), filepath.Join(dir, "rate.yaml")
	writeTestFile(t, csvPath, csvText.String())
	writeTestFile(t, polPath, `id: rate-2022
title: 比例返还
effective_from: 2022-01-01
effective_to: 2022-12-31
params: {sme_rate: 0.9, large_rate: 0.5}
eligibility: unemployment_insurance_paid > 0
amount: |
  (employees >= 300 ? params.large_rate : params.sme_rate) * unemployment_insurance_paid
channels: [wechat]
tests:
  - firm: {employees: 10, unemployment_insurance_paid: 165.85}
    eligible: true
    amount: 149.27
`)
	c.run("import", "enterprises", csvPath)
	c.run("policy", "apply", polPath)
	c.run("match", "--as-of", DemoAsOf)
	exportPath := filepath.Join(dir, "m.csv")
	c.run("matches", "export", "-o", exportPath)
	got := readExport(t, exportPath)
	for code, w := range want {
		if a := got[key{"rate-2022", code}]; a == nil || *a != w {
			t.Errorf("export %s: %v, want %.2f", code, fmtAmt(a), w)
		}
		var ex explainJSON
		if err := json.Unmarshal([]byte(c.run("explain", "--policy", "rate-2022", "--firm", code, "--as-of", DemoAsOf, "--json")), &ex); err != nil {
			t.Fatal(err)
		}
		if ex.Amount == nil || *ex.Amount != w {
			t.Errorf("explain %s: %v, want %.2f", code, fmtAmt(ex.Amount), w)
		}
	}
	facts := filepath.Join(dir, "facts.json")
	writeTestFile(t, facts, `{"as_of": "2022-09-30", "employees": 10, "unemployment_insurance_paid": 165.85}`)
	var rep rules.CalcReport
	if err := json.Unmarshal([]byte(c.run("calc", facts, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || rep.Results[0].Amount == nil || *rep.Results[0].Amount != 149.27 {
		t.Errorf("calc: %+v", rep.Results)
	}
}

func writeTestFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
