package registry_test

import (
	"testing"
	"time"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
)

// TestSynthSizeMix: micro firms are 85–90% of the synthetic enterprises by the 300号 standard (the
// census's mix, docs/registry.md), and large firms are rare but present at demo scale.
func TestSynthSizeMix(t *testing.T) {
	asOf := time.Date(2022, 6, 1, 0, 0, 0, 0, time.UTC)
	tiers := map[string]int{}
	enterprises := 0
	for _, e := range registry.Synth(20000, 1) {
		if e.EntityType != registry.EntityEnterprise {
			continue
		}
		enterprises++
		r, err := rules.ClassifySize(rules.SizeInput{IndustryCode: e.IndustryCode, Employees: e.Employees,
			Revenue: e.AnnualRevenue, Assets: e.TotalAssets, VATSales: e.VATSales}, asOf, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		tiers[r.Tier]++
	}
	if f := float64(tiers[rules.SizeMicro]) / float64(enterprises); f < 0.85 || f > 0.90 {
		t.Errorf("micro share %.3f of %d enterprises (%v), want 0.85–0.90", f, enterprises, tiers)
	}
	if tiers[rules.SizeMedium]+tiers[rules.SizeLarge] == 0 {
		t.Errorf("no medium or large enterprise: %v", tiers)
	}
}
