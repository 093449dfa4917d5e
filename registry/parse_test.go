package registry

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/store"
)

// goodRow is a valid record of every catalog column; tests override single cells.
var goodRow = map[string]string{
	"credit_code": "91310000MA1FL0007C", "name": "苏州市吴中区恒瑞精密机械有限公司", "region_code": "320506",
	"industry_code": "C3484", "status": "active", "registered_at": "2016-03-08", "employees": "48",
	"insured_employees": "45", "annual_revenue": "12500000.5", "total_assets": "9800000",
	"vat_sales": "11000000", "tax_credit_rating": "A", "taxpayer_type": "general", "is_high_tech": "true",
	"specialized_level": "province", "park_id": "", "layoff_rate": "0.02",
	"unemployment_insurance_paid": "41000.25", "graduates_hired": "3", "tax_violations_36m": "0",
	"refund_fraud_36m": "false", "immediate_refund_since_2019": "false", "contact_phone": "13812345678",
	"wechat_openid": "oAbCdEfGhIjKlMnOpQrStUvWxYz1",
}

func catalogHeader() []string {
	h := make([]string, len(Catalog))
	for i, f := range Catalog {
		h[i] = f.Key
	}
	return h
}

// row returns goodRow in catalog order with the given cells replaced.
func row(override map[string]string) []string {
	rec := make([]string, len(Catalog))
	for i, f := range Catalog {
		rec[i] = goodRow[f.Key]
		if v, ok := override[f.Key]; ok {
			rec[i] = v
		}
	}
	return rec
}

func TestParseRecordGood(t *testing.T) {
	e, issues, ok := ParseRecord(catalogHeader(), row(nil), 2)
	if !ok || len(issues) != 0 {
		t.Fatalf("ok=%v issues=%v", ok, issues)
	}
	reg := time.Date(2016, 3, 8, 0, 0, 0, 0, time.UTC)
	want := store.Enterprise{
		CreditCode: "91310000MA1FL0007C", Name: "苏州市吴中区恒瑞精密机械有限公司", RegionCode: "320506",
		IndustryCode: "C3484", Status: store.StatusActive, RegisteredAt: &reg, Employees: 48, InsuredEmployees: 45,
		AnnualRevenue: 12500000.5, TotalAssets: 9800000, VATSales: 11000000, TaxCreditRating: "A",
		TaxpayerType: "general", IsHighTech: true, SpecializedLevel: "province", LayoffRate: 0.02,
		UnemploymentInsurancePaid: 41000.25, GraduatesHired: 3, ContactPhone: "13812345678",
		WechatOpenID: "oAbCdEfGhIjKlMnOpQrStUvWxYz1", EntityType: EntityEnterprise, // derived from "91"
	}
	if !SameData(e, want) || !e.RegisteredAt.Equal(reg) {
		t.Errorf("got  %+v\nwant %+v", e, want)
	}
}

func TestParseRecordRejects(t *testing.T) {
	tests := []struct {
		column, value, reason string
	}{
		{"insured_employees", "abc", "is not a whole number"},
		{"employees", "50人", "is not a whole number"},
		{"employees", "1,234", "without thousands separators"},
		{"employees", "-3", "is negative"},
		{"employees", "12.5", "is not a whole number"},
		{"graduates_hired", "99999999999999999999", "is too large"},
		{"annual_revenue", "1,234,567.89", "without thousands separators"},
		{"annual_revenue", "-100", "is negative"},
		{"annual_revenue", "NaN", "is not a number"},
		{"annual_revenue", "0x1p4", "is not a number"},
		{"total_assets", "1e999", "is out of range"},
		{"vat_sales", "￥300", "is not a number"},
		{"layoff_rate", "1.7", "is above 1"},
		{"layoff_rate", "5.5%", "is a percentage"},
		{"is_high_tech", "maybe", "is not a yes/no value"},
		{"registered_at", "2019-02-30", "is not a date"},
		{"registered_at", "08/03/2016", "is not a date"},
		{"registered_at", "2999-01-01", "is in the future"},
		{"registered_at", "0201-05-01", "is before 1900"},
		{"registered_at", "12", "is not a date"},
		{"status", "歇业", "is not one of active, revoked, deregistered, moved_out"},
		{"tax_credit_rating", "E", "is not one of A, B, M, C, D"},
		{"taxpayer_type", "个体", "is not one of general, small_scale"},
		{"specialized_level", "city", "is not one of none, province, national"},
		{"region_code", "32057", "6-digit"},
		{"region_code", "32O571", "6-digit"},
		{"industry_code", "9911", "does not define"},
		{"industry_code", "F3911", "belongs to section C"},
		{"industry_code", "Z3911", "GB/T 4754-2017"},
		{"industry_code", "39111", "GB/T 4754-2017"},
		{"credit_code", "91320500MA1OK2A12X", "character 12 'O'"},
		{"credit_code", "9132050", "has 7 characters"},
		{"credit_code", "9.13201001347603E+17", "rounded by Excel"},
		{"credit_code", "", "is required"},
		{"name", "  ", "is required"},
		{"name", strings.Repeat("长", 201), "at most 200"},
		{"park_id", "\xff\xfe", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.column+"="+tt.value, func(t *testing.T) {
			_, issues, ok := ParseRecord(catalogHeader(), row(map[string]string{tt.column: tt.value}), 12)
			if ok {
				t.Fatalf("accepted; issues %v", issues)
			}
			if len(issues) != 1 {
				t.Fatalf("want 1 issue, got %v", issues)
			}
			is := issues[0]
			if is.Line != 12 || is.Column != tt.column || is.Value != strings.TrimSpace(tt.value) || is.Warning {
				t.Errorf("issue %+v, want line 12 column %s value %q", is, tt.column, tt.value)
			}
			if !strings.Contains(is.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", is.Reason, tt.reason)
			}
		})
	}
}

func TestParseRecordReportsEveryBadCell(t *testing.T) {
	_, issues, ok := ParseRecord(catalogHeader(), row(map[string]string{
		"employees": "x", "status": "歇业", "layoff_rate": "2", "credit_code": "91350100M0001TGQXM",
	}), 7)
	if ok {
		t.Fatal("row with three bad cells accepted")
	}
	var cols []string
	for _, is := range issues {
		cols = append(cols, is.Column)
	}
	// catalog order; the checksum warning is listed too
	if got, want := strings.Join(cols, ","), "credit_code,status,employees,layoff_rate"; got != want {
		t.Errorf("issue columns %s, want %s (%v)", got, want, issues)
	}
}

func TestParseRecordChecksumWarning(t *testing.T) {
	e, issues, ok := ParseRecord(catalogHeader(), row(map[string]string{"credit_code": " 91350100m0001tgqxm "}), 5)
	if !ok {
		t.Fatalf("checksum-only failure rejected: %v", issues)
	}
	if len(issues) != 1 || !issues[0].Warning || issues[0].Column != "credit_code" || issues[0].Line != 5 {
		t.Fatalf("issues %+v, want one credit_code warning on line 5", issues)
	}
	if !strings.Contains(issues[0].Reason, "checksum") || !strings.Contains(issues[0].Reason, "would be") {
		t.Errorf("reason %q", issues[0].Reason)
	}
	if e.CreditCode != "91350100M0001TGQXM" || !e.CodeWarning {
		t.Errorf("code %q warning %v: want uppercased code flagged", e.CreditCode, e.CodeWarning)
	}
}

func TestParseRecordDefaultsAndAliases(t *testing.T) {
	empty := map[string]string{}
	for _, f := range Catalog {
		if f.Key != "credit_code" && f.Key != "name" && f.Key != "region_code" {
			empty[f.Key] = ""
		}
	}
	e, issues, ok := ParseRecord(catalogHeader(), row(empty), 3)
	if !ok || len(issues) != 0 {
		t.Fatalf("empty cells: ok=%v %v", ok, issues)
	}
	if e.Status != store.StatusActive || e.SpecializedLevel != "none" || e.RegisteredAt != nil ||
		e.Employees != 0 || e.IsHighTech || e.TaxCreditRating != "" || e.EntityType != EntityEnterprise {
		t.Errorf("empty cells gave %+v", e)
	}

	serial := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		cell, value string
		check       func(store.Enterprise) bool
	}{
		{"status", "吊销，未注销", func(e store.Enterprise) bool { return e.Status == store.StatusRevoked }},
		{"status", "存续（在营、开业、在册）", func(e store.Enterprise) bool { return e.Status == store.StatusActive }},
		{"status", "注销", func(e store.Enterprise) bool { return e.Status == store.StatusDeregistered }},
		{"status", "迁出", func(e store.Enterprise) bool { return e.Status == store.StatusMovedOut }},
		{"status", "Moved_Out", func(e store.Enterprise) bool { return e.Status == store.StatusMovedOut }},
		{"taxpayer_type", "小规模纳税人", func(e store.Enterprise) bool { return e.TaxpayerType == "small_scale" }},
		{"taxpayer_type", "一般纳税人", func(e store.Enterprise) bool { return e.TaxpayerType == "general" }},
		{"specialized_level", "国家级", func(e store.Enterprise) bool { return e.SpecializedLevel == "national" }},
		{"tax_credit_rating", "b", func(e store.Enterprise) bool { return e.TaxCreditRating == "B" }},
		{"is_high_tech", "是", func(e store.Enterprise) bool { return e.IsHighTech }},
		{"is_high_tech", "Y", func(e store.Enterprise) bool { return e.IsHighTech }},
		{"is_high_tech", "YES", func(e store.Enterprise) bool { return e.IsHighTech }},
		{"is_high_tech", "1", func(e store.Enterprise) bool { return e.IsHighTech }},
		{"is_high_tech", "否", func(e store.Enterprise) bool { return !e.IsHighTech }},
		{"is_high_tech", "n", func(e store.Enterprise) bool { return !e.IsHighTech }},
		{"registered_at", "2016/3/8", func(e store.Enterprise) bool { return e.RegisteredAt.Format(time.DateOnly) == "2016-03-08" }},
		{"registered_at", "20160308", func(e store.Enterprise) bool { return e.RegisteredAt.Format(time.DateOnly) == "2016-03-08" }},
		{"registered_at", "44562", func(e store.Enterprise) bool { return e.RegisteredAt.Equal(serial) }},
		{"industry_code", " c3911 ", func(e store.Enterprise) bool { return e.IndustryCode == "C3911" }},
		{"industry_code", "1810", func(e store.Enterprise) bool { return e.IndustryCode == "C1810" }},
		{"industry_code", "5261", func(e store.Enterprise) bool { return e.IndustryCode == "F5261" }},
		{"industry_code", "62", func(e store.Enterprise) bool { return e.IndustryCode == "H62" }},
		{"industry_code", "0111", func(e store.Enterprise) bool { return e.IndustryCode == "A0111" }},
		{"industry_code", "9700", func(e store.Enterprise) bool { return e.IndustryCode == "T9700" }},
		{"entity_type", "individual", func(e store.Enterprise) bool { return e.EntityType == EntityIndividual }},
		{"entity_type", "", func(e store.Enterprise) bool { return e.EntityType == EntityEnterprise }},
		{"registered_at", "2016年3月8日", func(e store.Enterprise) bool { return e.RegisteredAt.Format(time.DateOnly) == "2016-03-08" }},
		{"registered_at", "2016-03-08T23:30:00+08:00", func(e store.Enterprise) bool { return e.RegisteredAt.Format(time.DateOnly) == "2016-03-08" }},
		{"annual_revenue", "1.5E7", func(e store.Enterprise) bool { return e.AnnualRevenue == 15_000_000 }},
		{"annual_revenue", ".5", func(e store.Enterprise) bool { return e.AnnualRevenue == 0.5 }},
		{"layoff_rate", "1", func(e store.Enterprise) bool { return e.LayoffRate == 1 }},
		{"name", "\t江苏恒瑞科技有限公司 ", func(e store.Enterprise) bool { return e.Name == "江苏恒瑞科技有限公司" }},
	}
	for _, tt := range tests {
		e, issues, ok := ParseRecord(catalogHeader(), row(map[string]string{tt.cell: tt.value}), 4)
		if !ok || len(issues) != 0 || !tt.check(e) {
			t.Errorf("%s=%q: ok=%v issues=%v enterprise %+v", tt.cell, tt.value, ok, issues, e)
		}
	}
}

func TestParseRecordHeader(t *testing.T) {
	header := []string{"\uFEFF Credit_Code", "企业名称", "参保人数", "备注", "STATUS", "所属区划"}
	e, issues, ok := ParseRecord(header, []string{"91310000MA1FL0007C", "恒瑞", "9", "whatever", "revoked", "320506"}, 2)
	if !ok || len(issues) != 0 {
		t.Fatalf("ok=%v issues=%v", ok, issues)
	}
	if e.CreditCode != "91310000MA1FL0007C" || e.Name != "恒瑞" || e.InsuredEmployees != 9 || e.Status != store.StatusRevoked {
		t.Errorf("got %+v", e)
	}
	l := newLayout(header, nil)
	if len(l.unknown) != 1 || l.unknown[0].Column != "备注" || !l.unknown[0].Warning || l.unknown[0].Line != 1 {
		t.Errorf("unknown columns %+v", l.unknown)
	}

	_, issues, ok = ParseRecord([]string{"credit_code", "name", "企业名称"}, []string{"91310000MA1FL0007C", "a", "b"}, 2)
	if ok {
		t.Error("header naming name twice (key and label) accepted")
	}
	if len(issues) != 1 || !strings.Contains(issues[0].Reason, "columns 2 and 3") {
		t.Errorf("duplicate header issues %v", issues)
	}

	_, issues, ok = ParseRecord([]string{"credit_code", "employees"}, []string{"91310000MA1FL0007C", "3"}, 2)
	if ok || len(issues) != 1 || issues[0].Column != "name" || !strings.Contains(issues[0].Reason, "header has no such column") {
		t.Errorf("missing name column: ok=%v %v", ok, issues)
	}
}

func TestParseRecordFieldCount(t *testing.T) {
	rec := row(nil)
	for _, r := range [][]string{rec[:20], append(rec, "extra")} {
		_, issues, ok := ParseRecord(catalogHeader(), r, 9)
		if ok || len(issues) != 1 || issues[0].Column != "" || issues[0].Line != 9 ||
			!strings.Contains(issues[0].Reason, fmt.Sprintf("fields but the header has %d", len(Catalog))) {
			t.Errorf("%d fields: ok=%v %v", len(r), ok, issues)
		}
	}
}

func TestIssueString(t *testing.T) {
	tests := []struct {
		is   Issue
		want string
	}{
		{Issue{Line: 12, Column: "insured_employees", Value: "abc", Reason: "is not a whole number"},
			`line 12, column insured_employees: "abc" is not a whole number`},
		{Issue{Line: 3, Column: "name", Reason: "is required but empty"},
			`line 3, column name: is required but empty`},
		{Issue{Line: 40, Reason: "has 3 fields but the header has 24; line skipped"},
			`line 40: has 3 fields but the header has 24; line skipped`},
		{Issue{Line: 7, Column: "credit_code", Value: "91350100M0001TGQXM", Reason: "fails the GB 32100 checksum", Warning: true},
			`warning: line 7, column credit_code: "91350100M0001TGQXM" fails the GB 32100 checksum`},
	}
	for _, tt := range tests {
		if got := tt.is.String(); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

// What WriteCSV writes, ParseRecord reads back unchanged.
func TestWriteCSVRoundTrip(t *testing.T) {
	firms := Synth(2000, 11)
	var buf bytes.Buffer
	if err := WriteCSV(&buf, firms); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(firms)+1 {
		t.Fatalf("%d records for %d firms", len(recs), len(firms))
	}
	for i, rec := range recs[1:] {
		e, issues, ok := ParseRecord(recs[0], rec, i+2)
		if !ok || len(issues) != 0 || !SameData(e, firms[i]) {
			t.Fatalf("line %d: ok=%v issues=%v\n got  %+v\nwant %+v", i+2, ok, issues, e, firms[i])
		}
	}
}
