package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// TestRegistryWritesAreScoped drives a park-scoped and a district-scoped token's registry writes
// over HTTP: a write is allowed exactly where a read is, before and after the change, goes through
// the import's checks, and is audited firm by firm and field by field with contact data masked.
func TestRegistryWritesAreScoped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sipTok := f.token("sip-writer", NewAPIToken{Permissions: []Perm{PermRegistry, PermFirmRead}, ParkID: "SIP"})
	var outsider store.Enterprise // a Nanjing firm in no park
	if err := f.db.Where("park_id = '' AND region_code LIKE '3201%'").Order("credit_code").Take(&outsider).Error; err != nil {
		t.Fatal(err)
	}
	newCode := registry.Synth(901, 11)[900].CreditCode
	post := func(c caller, body any) (int, string) {
		t.Helper()
		res := f.do(c, http.MethodPost, "/api/v1/registry/changes", body)
		return res.status, string(res.body)
	}
	firm := func(code string) store.Enterprise {
		t.Helper()
		var e store.Enterprise
		f.db.Where("credit_code = ?", code).Limit(1).Find(&e)
		return e
	}

	refused := []struct {
		name string
		body map[string]any
	}{
		{"phone of a firm in another park", map[string]any{"credit_code": f.njjb.CreditCode, "contact_phone": "13900000000"}},
		{"move a firm into the park", map[string]any{"credit_code": outsider.CreditCode, "park_id": "SIP"}},
		{"move an own firm out", map[string]any{"credit_code": f.sip.CreditCode, "park_id": "NJ-JB"}},
		{"create outside the park", map[string]any{"credit_code": newCode, "name": "新设企业", "region_code": "320102"}},
	}
	for _, tt := range refused {
		before := firm(tt.body["credit_code"].(string))
		status, body := post(sipTok, tt.body)
		if status != http.StatusUnprocessableEntity || !strings.Contains(body, "数据范围") {
			t.Errorf("%s: %d %s, want 422 naming the scope", tt.name, status, body)
		}
		if after := firm(tt.body["credit_code"].(string)); !registry.SameData(before, after) {
			t.Errorf("%s: firm changed: %+v → %+v", tt.name, before, after)
		}
	}
	// The firm moved into the park stays unreadable to the token.
	if res := f.do(sipTok, http.MethodGet, "/api/v1/firms/"+outsider.CreditCode, nil); res.status != http.StatusNotFound {
		t.Errorf("outsider after refused move: %d, want 404", res.status)
	}

	// The importer's checks apply: no empty name or region, no negative counts, a new firm needs both.
	for _, body := range []map[string]any{
		{"credit_code": f.sip.CreditCode, "name": ""},
		{"credit_code": f.sip.CreditCode, "region_code": nil},
		{"credit_code": f.sip.CreditCode, "employees": -3},
		{"credit_code": newCode, "park_id": "SIP", "region_code": "320571"},
	} {
		if status, resp := post(sipTok, body); status != http.StatusUnprocessableEntity {
			t.Errorf("%v: %d %s, want 422", body, status, resp)
		}
	}

	// Inside its park the token writes, and the audit names the firm and the field, masked.
	status, body := post(sipTok, []map[string]any{
		{"credit_code": f.sip.CreditCode, "contact_phone": "13912345678", "employees": f.sip.Employees + 1},
		{"credit_code": newCode, "name": "苏州新设科技有限公司", "region_code": "320571", "park_id": "SIP", "industry_code": "6510"},
	})
	if status != http.StatusOK || !strings.Contains(body, `"139****5678"`) || strings.Contains(body, "13912345678") {
		t.Fatalf("in-scope write: %d %s", status, body)
	}
	if e := firm(newCode); e.IndustryCode != "I6510" || e.EntityType != registry.EntityTypeOf(newCode) || e.ParkID != "SIP" {
		t.Errorf("created firm %+v", e)
	}
	if f.auditCount("token:sip-writer", "registry.firm", "enterprise:"+f.sip.CreditCode) != 1 ||
		f.auditCount("token:sip-writer", "registry.firm", "enterprise:"+newCode) != 1 {
		t.Error("each written firm needs its own audit row")
	}
	var row store.AuditLog
	f.db.Where("action = ? AND object = ?", "registry.firm", "enterprise:"+f.sip.CreditCode).Take(&row)
	if !strings.Contains(row.Detail, `"key":"contact_phone"`) || !strings.Contains(row.Detail, MaskPhone(f.sip.ContactPhone)) ||
		!strings.Contains(row.Detail, "139****5678") || strings.Contains(row.Detail, "13912345678") ||
		!strings.Contains(row.Detail, `"key":"employees"`) {
		t.Errorf("audit detail %s", row.Detail)
	}

	// A district token writes by region prefix.
	nj := f.token("nj-writer", NewAPIToken{Permissions: []Perm{PermRegistry}, RegionPrefix: "3201"})
	if status, body := post(nj, map[string]any{"credit_code": outsider.CreditCode, "region_code": "320571"}); status != http.StatusUnprocessableEntity {
		t.Errorf("district token moving a firm out of its region: %d %s", status, body)
	}
	if status, body := post(nj, map[string]any{"credit_code": f.sip.CreditCode, "graduates_hired": 1}); status != http.StatusUnprocessableEntity {
		t.Errorf("district token writing a Suzhou firm: %d %s", status, body)
	}
	if status, body := post(nj, map[string]any{"credit_code": outsider.CreditCode, "graduates_hired": outsider.GraduatesHired + 1}); status != http.StatusOK {
		t.Errorf("district token writing its own firm: %d %s", status, body)
	}

	// A message without firms is refused and leaves no audit row.
	auditBefore := f.auditCount("token:sip-writer", "registry.change", "")
	for _, empty := range []string{`[]`, `null`, `{}`, `{"firms": []}`, ``} {
		if res := f.do(sipTok, http.MethodPost, "/api/v1/registry/changes", empty); res.status != http.StatusBadRequest {
			t.Errorf("%q: %d %s, want 400", empty, res.status, res.body)
		}
	}
	if n := f.auditCount("token:sip-writer", "registry.change", ""); n != auditBefore {
		t.Errorf("empty messages wrote %d audit rows", n-auditBefore)
	}
}
