package registry

import (
	"bytes"
	"context"
	"encoding/csv"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/store"
)

func TestSynthDeterministic(t *testing.T) {
	csvOf := func(n int, seed int64) []byte {
		var b bytes.Buffer
		if err := WriteCSV(&b, Synth(n, seed)); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a, b := csvOf(3000, 42), csvOf(3000, 42)
	if !bytes.Equal(a, b) {
		t.Fatal("same n and seed gave different CSV bytes")
	}
	if bytes.Equal(a, csvOf(3000, 43)) {
		t.Fatal("different seeds gave the same registry")
	}
	if !bytes.HasPrefix(a, csvOf(100, 42)) {
		t.Fatal("Synth(100, seed) is not a prefix of Synth(3000, seed)")
	}
}

func TestWriteCSVFormat(t *testing.T) {
	firms := Synth(3000, 8)
	firms[0].AnnualRevenue = 1.5e12 // %v would write 1.5e+12
	firms[0].RegisteredAt = nil
	var b bytes.Buffer
	if err := WriteCSV(&b, firms); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	formats := map[string]*regexp.Regexp{
		TypeFloat: regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`),
		TypeInt:   regexp.MustCompile(`^[0-9]+$`),
		TypeBool:  regexp.MustCompile(`^(true|false)$`),
		TypeDate:  regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2})?$`),
	}
	for i, f := range Catalog {
		if recs[0][i] != f.Key {
			t.Fatalf("header column %d is %q, want %q", i+1, recs[0][i], f.Key)
		}
		re := formats[f.Type]
		for _, rec := range recs[1:] {
			if re != nil && !re.MatchString(rec[i]) {
				t.Fatalf("%s written as %q", f.Key, rec[i])
			}
		}
	}
	if recs[1][slices.IndexFunc(Catalog, func(f Field) bool { return f.Key == "annual_revenue" })] != "1500000000000" {
		t.Errorf("large amount written as %v", recs[1])
	}
}

// TestSynthRealism checks the properties the demo and the policies rely on.
func TestSynthRealism(t *testing.T) {
	const n = 20000
	firms := Synth(n, 1)
	codes := map[string]bool{}
	phones := map[string]bool{}
	count := map[string]int{}
	parkRegions := map[string][]string{}
	for _, p := range parks {
		parkRegions[p.id] = p.regions
		for _, code := range p.regions {
			if _, city := countyOf(code); city == "" {
				t.Errorf("park %s: region %s is not in the division table", p.id, code)
			}
		}
	}
	for _, e := range firms {
		ok, err := CheckCreditCode(e.CreditCode)
		if err != nil || !ok {
			t.Fatalf("%s: checksumOK=%v err=%v", e.CreditCode, ok, err)
		}
		if e.CreditCode[2:8] != e.RegionCode || EntityTypeOf(e.CreditCode) != e.EntityType || e.EntityType == EntityOther {
			t.Fatalf("%s: does not encode region %s and entity type %s", e.CreditCode, e.RegionCode, e.EntityType)
		}
		// Codes issued since 2015-10 carry an MA organisation code, series 1 until mid-2019, then 2.
		switch body := e.CreditCode[8:11]; {
		case e.RegisteredAt.Before(maCodeFrom) && body[:2] == "MA",
			!e.RegisteredAt.Before(maCodeFrom) && e.RegisteredAt.Before(ma2From) && body != "MA1",
			!e.RegisteredAt.Before(ma2From) && body != "MA2":
			t.Fatalf("%s registered %s: organisation code %s…", e.CreditCode, e.RegisteredAt.Format(time.DateOnly), body)
		}
		if codes[e.CreditCode] {
			t.Fatalf("credit code %s repeats", e.CreditCode)
		}
		codes[e.CreditCode] = true
		phones[e.ContactPhone] = true
		suffixOK := map[string]bool{EntityEnterprise: strings.HasSuffix(e.Name, "有限公司"),
			EntityCooperative: strings.HasSuffix(e.Name, "专业合作社"),
			EntityIndividual:  !strings.Contains(e.Name, "公司") && !strings.Contains(e.Name, "合作社")}[e.EntityType]
		if !strings.HasPrefix(e.RegionCode, "32") || !suffixOK {
			t.Fatalf("%s %s %s: not a Jiangsu name/region of its entity type", e.RegionCode, e.EntityType, e.Name)
		}
		if e.EntityType == EntityIndividual && (e.Employees > 6 || e.IsHighTech || e.SpecializedLevel != "none") {
			t.Fatalf("implausible 个体工商户 %+v", e)
		}
		if e.TaxableIncome < 0 || e.TaxableIncome > e.AnnualRevenue || e.InsuredMonths < 0 || e.InsuredMonths > 120 ||
			(e.InsuredEmployees == 0) != (e.InsuredMonths == 0) {
			t.Fatalf("implausible tax or insurance data %+v", e)
		}
		count["entity "+e.EntityType]++
		if e.ParkID != "" {
			count["park "+e.ParkID]++
		}
		if e.ParkID != "" && !slices.Contains(parkRegions[e.ParkID], e.RegionCode) {
			t.Fatalf("park %s firm in region %s", e.ParkID, e.RegionCode)
		}
		if e.RegionCode == "320571" && e.ParkID != "SIP" {
			t.Fatalf("firm in 苏州工业园区 outside park SIP")
		}
		if e.InsuredEmployees > e.Employees || e.Employees < 1 || e.LayoffRate < 0 || e.LayoffRate > 0.3 {
			t.Fatalf("implausible staff data %+v", e)
		}
		if e.VATSales < 0.8*e.AnnualRevenue-0.01 || e.VATSales > e.AnnualRevenue+0.01 {
			t.Fatalf("vat_sales %.2f outside 0.8–1.0 × revenue %.2f", e.VATSales, e.AnnualRevenue)
		}
		if (e.AnnualRevenue < 5_000_000) != (e.TaxpayerType == "small_scale") {
			t.Fatalf("taxpayer type %s for revenue %.2f", e.TaxpayerType, e.AnnualRevenue)
		}
		if y := e.RegisteredAt.Year(); y < 1995 || e.RegisteredAt.After(synthTo) {
			t.Fatalf("registered %v", e.RegisteredAt)
		}
		count["section "+e.IndustryCode[:1]]++
		count["division "+e.IndustryCode[1:3]]++
		count["status "+e.Status]++
		count["specialized "+e.SpecializedLevel]++
		count["rating "+e.TaxCreditRating]++
		count["city "+e.RegionCode[:4]]++
		if e.ParkID != "" {
			count["park"]++
		}
		switch {
		case e.WechatOpenID == "":
			count["no openid"]++
		case strings.Contains(e.WechatOpenID, "unfollow"):
			count["unfollowed"]++
		case len(e.WechatOpenID) != 28 || e.WechatOpenID[0] != 'o':
			t.Fatalf("openid %q", e.WechatOpenID)
		}
		for _, b := range []struct {
			key string
			on  bool
		}{{"high tech", e.IsHighTech}, {"no layoffs", e.LayoffRate == 0}, {"graduates", e.GraduatesHired > 0},
			{"refund fraud", e.RefundFraud36m}, {"immediate refund", e.ImmediateRefundSince2019},
			{"tax violations", e.TaxViolations36m > 0}, {"over 50 staff", e.Employees > 50}, {"over 100 staff", e.Employees > 100},
			{"rents state property", e.RentsStateProperty}, {"taxable income", e.TaxableIncome > 0}} {
			if b.on {
				count[b.key]++
			}
		}
	}
	if len(phones) < n*99/100 {
		t.Errorf("only %d distinct phone numbers", len(phones))
	}
	share := func(key string, lo, hi float64) {
		t.Helper()
		if f := float64(count[key]) / n; f < lo || f > hi {
			t.Errorf("%s: %.3f of firms, want %.3f–%.3f", key, f, lo, hi)
		}
	}
	share("status active", 0.94, 0.96)
	share("status revoked", 0.015, 0.025)
	share("status moved_out", 0.005, 0.015)
	share("park", 0.06, 0.10)
	share("entity individual", 0.13, 0.17)
	share("entity cooperative", 0.005, 0.015)
	share("rents state property", 0.02, 0.06)
	share("taxable income", 0.5, 0.8)
	share("high tech", 0.05, 0.11)
	share("specialized province", 0.02, 0.04)
	share("specialized national", 0.002, 0.008)
	share("no layoffs", 0.58, 0.62)
	share("graduates", 0.06, 0.12)
	share("refund fraud", 0.005, 0.015)
	share("immediate refund", 0.02, 0.04)
	share("tax violations", 0.06, 0.10)
	share("no openid", 0.13, 0.17)
	share("unfollowed", 0.04, 0.06)
	share("over 50 staff", 0.01, 0.03)
	share("over 100 staff", 0.001, 0.02)
	share("rating A", 0.2, 0.35)
	share("rating B", 0.4, 0.6)
	share("section C", 0.25, 0.35)
	// Each park holds about its configured share of its city, not the city.
	for _, p := range parks {
		city := count["city "+p.regions[0][:4]]
		if f := float64(count["park "+p.id]) / float64(city); f < p.share-0.03 || f > p.share+0.03 {
			t.Errorf("park %s holds %.3f of its city, want about %.2f", p.id, f, p.share)
		}
	}
	// Industry-scoped 2022 policies must each find hundreds of firms: catering, retail, road transport,
	// travel agencies (L727 sits in division 72).
	for _, div := range []string{"62", "52", "54", "72"} {
		if c := count["division "+div]; c < 200 {
			t.Errorf("division %s: only %d firms", div, c)
		}
	}
	// Suzhou, Nanjing and Wuxi are the largest.
	big := []int{count["city 3205"], count["city 3201"], count["city 3202"]}
	for city, c := range count {
		if strings.HasPrefix(city, "city ") && !slices.Contains([]string{"city 3205", "city 3201", "city 3202"}, city) && c >= slices.Min(big) {
			t.Errorf("%s has %d firms, more than one of the three largest cities %v", city, c, big)
		}
	}
	if !(big[0] > big[1] && big[1] > big[2]) {
		t.Errorf("city sizes %v: want Suzhou > Nanjing > Wuxi", big)
	}
	for prefix := 3201; prefix <= 3213; prefix++ {
		if count["city "+strconv.Itoa(prefix)] == 0 {
			t.Errorf("no firm in city %d", prefix)
		}
	}
}

// The demo file: Synth plus WriteBadRows imports with exactly the flaws WriteBadRows documents.
func TestSynthCSVFileImports(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.csv")
	if err := SynthCSVFile(path, 500, 3, true); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, store.Options{Driver: "sqlite", DSN: filepath.Join(dir, "t.db")})
	s, err := ImportFile(context.Background(), db, path, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSummary(t, s, Summary{Rows: 507, Inserted: 502, Warned: 2, Rejected: 5})
	var pilot store.Enterprise
	if err := db.Take(&pilot, "credit_code = ?", "91350100M0001TGQXM").Error; err != nil || !pilot.CodeWarning {
		t.Errorf("pilot code: %+v, %v", pilot, err)
	}
}

func BenchmarkSynth(b *testing.B) {
	for b.Loop() {
		Synth(20000, 1)
	}
}
