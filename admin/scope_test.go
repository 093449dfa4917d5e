package admin

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"

	"github.com/policypush/policypush/store"
)

type matchPage struct {
	Items []matchRow `json:"items"`
	Total int64      `json:"total"`
}

func (f *fixture) matches(c caller, query string) matchPage {
	f.t.Helper()
	res := f.do(c, http.MethodGet, "/api/v1/matches?per_page=200&"+query, nil)
	if res.status != http.StatusOK {
		f.t.Fatalf("GET /api/v1/matches?%s as %s: %d %s", query, c.name, res.status, res.body)
	}
	var p matchPage
	res.json(f.t, &p)
	return p
}

func (f *fixture) countActive(where string, args ...any) int64 {
	var n int64
	if err := f.db.Table("matches AS m").Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.state = ?", store.MatchActive).Where(where, args...).Count(&n).Error; err != nil {
		f.t.Fatal(err)
	}
	return n
}

// TestScopeOfFirmData: park managers, district officials and scoped tokens see exactly their
// firms, by list, filter, search or id, and contact phones only where the role needs them.
func TestScopeOfFirmData(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sip, njjb, region, admin, auditor := f.session("park_sip"), f.session("park_njjb"), f.session("region_3205"), f.session("admin"), f.session("auditor")

	// The list holds every firm of the own park and nothing else, with the contact phone.
	all := f.matches(sip, "")
	if want := f.countActive("e.park_id = ?", "SIP"); all.Total != want || want == 0 {
		t.Fatalf("park_sip sees %d matches, SIP has %d", all.Total, want)
	}
	phones := map[string]string{}
	var firms []store.Enterprise
	f.db.Find(&firms)
	for _, e := range firms {
		phones[e.CreditCode] = e.ContactPhone
	}
	for _, m := range all.Items {
		if m.ParkID != "SIP" {
			t.Fatalf("park_sip sees a firm of park %q: %+v", m.ParkID, m)
		}
		if m.ContactPhone != phones[m.CreditCode] {
			t.Fatalf("park manager should see the contact phone of an own-park firm: %q vs %q", m.ContactPhone, phones[m.CreditCode])
		}
	}
	// Another park by filter: refused. By search or id: nothing.
	if res := f.do(sip, http.MethodGet, "/api/v1/matches?park_id=NJ-JB", nil); res.status != http.StatusForbidden {
		t.Fatalf("park_sip filtering on NJ-JB: want 403, got %d", res.status)
	}
	if p := f.matches(sip, "q="+f.njjb.CreditCode); p.Total != 0 {
		t.Fatalf("park_sip found an NJ-JB firm by credit code: %+v", p.Items)
	}
	if p := f.matches(sip, "q="+strings.Split(f.njjb.Name, "有限")[0]); len(p.Items) > 0 {
		for _, m := range p.Items {
			if m.ParkID != "SIP" {
				t.Fatalf("search by name leaked %+v", m)
			}
		}
	}
	for _, path := range []string{"/api/v1/firms/" + f.njjb.CreditCode, "/firms/" + f.njjb.CreditCode} {
		res := f.do(sip, http.MethodGet, path, nil)
		if res.status != http.StatusNotFound || bytes.Contains(res.body, []byte(f.njjb.Name)) {
			t.Fatalf("park_sip reading %s: want 404 without the firm's name, got %d", path, res.status)
		}
	}
	if res := f.do(sip, http.MethodPost, "/api/v1/firms/"+f.njjb.CreditCode+"/notes", `{"body":"x"}`); res.status != http.StatusNotFound {
		t.Fatalf("park_sip writing a note on an NJ-JB firm: want 404, got %d", res.status)
	}
	if p := f.matches(njjb, ""); p.Total != f.countActive("e.park_id = ?", "NJ-JB") {
		t.Fatalf("park_njjb total %d", p.Total)
	}

	// The district official sees the region prefix, masked.
	rp := f.matches(region, "")
	if want := f.countActive("e.region_code LIKE ?", "3205%"); rp.Total != want {
		t.Fatalf("region_3205 sees %d, want %d", rp.Total, want)
	}
	for _, m := range rp.Items {
		if !strings.HasPrefix(m.RegionCode, "3205") {
			t.Fatalf("region_3205 sees region %s", m.RegionCode)
		}
		if m.ContactPhone != "" && m.ContactPhone == phones[m.CreditCode] {
			t.Fatalf("district official sees an unmasked phone: %s", m.ContactPhone)
		}
	}
	if res := f.do(region, http.MethodGet, "/api/v1/matches?region=3201", nil); res.status != http.StatusForbidden {
		t.Fatalf("region_3205 filtering on 3201: want 403, got %d", res.status)
	}
	if res := f.do(region, http.MethodGet, "/api/v1/firms/"+f.njjb.CreditCode, nil); res.status != http.StatusNotFound {
		t.Fatalf("region_3205 reading a Nanjing firm: want 404, got %d", res.status)
	}

	// Firm page: phone only for the park manager of the firm's park; openid for nobody.
	for _, c := range []caller{sip, region, admin, auditor} {
		res := f.do(c, http.MethodGet, "/api/v1/firms/"+f.sip.CreditCode, nil)
		if res.status != http.StatusOK {
			t.Fatalf("%s firm page: %d %s", c.name, res.status, res.body)
		}
		var d firmDetail
		res.json(t, &d)
		full := d.Firm.ContactPhone == f.sip.ContactPhone
		if full != (c.name == "park_sip") {
			t.Errorf("%s: contact phone %q (unmasked=%t)", c.name, d.Firm.ContactPhone, full)
		}
		if f.sip.WechatOpenID != "" && strings.Contains(string(res.body), f.sip.WechatOpenID) {
			t.Errorf("%s: the openid is shown", c.name)
		}
		if len(d.Matches) == 0 || len(d.Timeline) == 0 {
			t.Errorf("%s: firm page without matches or timeline: %+v", c.name, d)
		}
	}

	// A token scoped to NJ-JB reads NJ-JB only, masked.
	tok := f.token("njjb-reader", NewAPIToken{Permissions: []Perm{PermFirmRead}, ParkID: "NJ-JB"})
	tp := f.matches(tok, "")
	if tp.Total != f.countActive("e.park_id = ?", "NJ-JB") {
		t.Fatalf("token total %d", tp.Total)
	}
	for _, m := range tp.Items {
		if m.ParkID != "NJ-JB" || (m.ContactPhone != "" && m.ContactPhone == phones[m.CreditCode]) {
			t.Fatalf("token sees %+v", m)
		}
	}
	// A bearer token does not open pages (no cookie, no CSRF there) and a revoked one nothing.
	if res := f.do(tok, http.MethodGet, "/firms", nil); res.status != http.StatusSeeOther {
		t.Fatalf("bearer token on a page: want redirect to login, got %d", res.status)
	}
	f.db.Model(&store.APIToken{}).Where("name = ?", "njjb-reader").Update("revoked_at", f.srv.now())
	if res := f.do(tok, http.MethodGet, "/api/v1/matches", nil); res.status != http.StatusUnauthorized {
		t.Fatalf("revoked token: want 401, got %d", res.status)
	}
}

// TestReadsAndExportsAreAudited: every staff read of firm data leaves an audit row, exports carry
// exactly the filtered scope, and no audit row holds a phone number.
func TestReadsAndExportsAreAudited(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sip := f.session("park_sip")
	if res := f.do(sip, http.MethodGet, "/firms/"+f.sip.CreditCode, nil); res.status != http.StatusOK ||
		!bytes.Contains(res.body, []byte(f.sip.ContactPhone)) {
		t.Fatalf("firm page: %d", res.status)
	}
	if n := f.auditCount("park_sip", "firm.view", f.sip.CreditCode); n != 1 {
		t.Fatalf("firm.view audit rows: %d", n)
	}
	f.do(sip, http.MethodGet, "/firms?policy_id="+f.sipPolicy, nil)
	if n := f.auditCount("park_sip", "firm.list", "matches"); n != 1 {
		t.Fatalf("firm.list audit rows: %d", n)
	}

	res := f.do(sip, http.MethodGet, "/firms/export?format=csv&policy_id="+f.sipPolicy, nil)
	if res.status != http.StatusOK || !strings.HasPrefix(res.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv export: %d %s", res.status, res.body)
	}
	recs, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(res.body, []byte("\uFEFF")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := f.countActive("e.park_id = ? AND m.policy_id = ?", "SIP", f.sipPolicy)
	if int64(len(recs)-1) != want || recs[0][0] != "统一社会信用代码" {
		t.Fatalf("csv has %d rows, want %d (header %v)", len(recs)-1, want, recs[0])
	}
	for _, r := range recs[1:] {
		if r[4] != "SIP" || r[7] != f.sipPolicy {
			t.Fatalf("csv row outside the filter: %v", r)
		}
	}
	res = f.do(sip, http.MethodGet, "/api/v1/matches/export?format=xlsx", nil)
	x, err := excelize.OpenReader(bytes.NewReader(res.body))
	if err != nil {
		t.Fatalf("xlsx export (%d): %v", res.status, err)
	}
	rows, err := x.GetRows("匹配企业")
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(rows)-1) != f.countActive("e.park_id = ?", "SIP") {
		t.Fatalf("xlsx has %d rows", len(rows)-1)
	}
	if n := f.auditCount("park_sip", "firm.export", "matches"); n != 2 {
		t.Fatalf("firm.export audit rows: %d", n)
	}

	var logs []store.AuditLog
	f.db.Find(&logs)
	var firms []store.Enterprise
	f.db.Where("contact_phone <> ''").Find(&firms)
	for _, l := range logs {
		for _, e := range firms {
			if strings.Contains(l.Detail, e.ContactPhone) || strings.Contains(l.Object, e.ContactPhone) {
				t.Fatalf("audit row %d holds a phone number: %+v", l.ID, l)
			}
		}
	}
}

// TestFiltersNarrowTheList: each filter returns only rows that satisfy it.
func TestFiltersNarrowTheList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := f.session("admin")
	total := f.matches(admin, "").Total
	cases := []struct {
		query string
		ok    func(m matchRow) bool
	}{
		{"policy_id=" + f.sipPolicy, func(m matchRow) bool { return m.PolicyID == f.sipPolicy }},
		{"industry=H62", func(m matchRow) bool {
			return strings.HasPrefix(strings.TrimLeft(m.IndustryCode, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "62")
		}},
		{"industry=62", func(m matchRow) bool {
			return strings.HasPrefix(strings.TrimLeft(m.IndustryCode, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "62")
		}},
		{"industry=C", func(m matchRow) bool { return strings.HasPrefix(m.IndustryCode, "C") }},
		{"size=micro", func(m matchRow) bool { return m.Size == "micro" }},
		{"size=medium", func(m matchRow) bool { return m.Size == "medium" }},
		{"region=3201", func(m matchRow) bool { return strings.HasPrefix(m.RegionCode, "3201") }},
		{"notify=failed", func(m matchRow) bool { return m.Notify == "failed" }},
		{"notify=pending", func(m matchRow) bool { return m.Notify == "pending" }},
		{"response=none", func(m matchRow) bool { return m.Response == "" }},
		{"park_id=NJ-JB&size=small", func(m matchRow) bool { return m.ParkID == "NJ-JB" && m.Size == "small" }},
	}
	for _, c := range cases {
		p := f.matches(admin, c.query)
		if p.Total == 0 || p.Total >= total && !strings.HasPrefix(c.query, "response") && !strings.HasPrefix(c.query, "notify=pending") {
			t.Errorf("%s: %d of %d rows: the filter does not narrow", c.query, p.Total, total)
		}
		for _, m := range p.Items {
			if !c.ok(m) {
				t.Errorf("%s: row does not satisfy the filter: %+v", c.query, m)
				break
			}
		}
	}
	if p := f.matches(admin, "notify=failed"); p.Total != 2 {
		t.Errorf("notify=failed: want the 2 failed deliveries, got %d", p.Total)
	}
	for _, bad := range []string{"size=huge", "park_id=%27%20OR%201=1", "industry=62%25", "page=0", "per_page=1000", "notify=x", "policy_id=..%2F"} {
		res := f.do(admin, http.MethodGet, "/api/v1/matches?"+bad, nil)
		var e apiError
		res.json(t, &e)
		if res.status != http.StatusBadRequest || e.Error.Code != "invalid_request" || e.Error.Message == "" {
			t.Errorf("%s: want a 400 with a message, got %d %s", bad, res.status, res.body)
		}
	}
}

func TestOpenAPIDocumentsEveryAPIRoute(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	res := f.do(caller{}, http.MethodGet, "/api/v1/openapi.json", nil)
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	res.json(t, &doc)
	n := 0
	for _, rt := range f.srv.routes {
		if !rt.api() {
			continue
		}
		n++
		op := doc.Paths[rt.path][strings.ToLower(rt.method)]
		if op == nil || op["summary"] == "" || op["x-permission"] != string(rt.perm) {
			t.Errorf("%s %s missing or wrong in the OpenAPI document: %v", rt.method, rt.path, op)
		}
	}
	if doc.OpenAPI != "3.1.0" || n < 20 {
		t.Fatalf("openapi %q with %d API routes", doc.OpenAPI, n)
	}
	if q := fmt.Sprint(doc.Paths["/api/v1/matches"]["get"]["parameters"]); !strings.Contains(q, "park_id") {
		t.Fatalf("matches parameters not documented: %s", q)
	}
}

// What a park manager sees is decided by the registry, not by a match's copy of its firm's place:
// a match of a firm outside the park whose copy says the park (a writer around the store left it
// so) shows in neither the park manager's list nor export; the recount finds it.
func TestStalePlaceDoesNotWidenTheScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var outside store.Match
	if err := f.db.Table("matches AS m").Select("m.*").Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.state = ? AND e.park_id <> 'SIP'", store.MatchActive).Take(&outside).Error; err != nil {
		t.Fatalf("no active match of a firm outside the park: %v", err)
	}
	if err := f.db.Exec("UPDATE matches SET region_code = ?, park_id = 'SIP' WHERE id = ?", f.sip.RegionCode, outside.ID).Error; err != nil {
		t.Fatal(err)
	}
	sip := f.session("park_sip")
	res := f.do(sip, http.MethodGet, "/api/v1/matches/export?format=csv", nil)
	if res.status != http.StatusOK {
		t.Fatalf("export: %d %s", res.status, res.body)
	}
	if bytes.Contains(res.body, []byte(outside.CreditCode)) {
		t.Fatalf("the park manager's export holds %s, a firm outside the park", outside.CreditCode)
	}
	var page struct {
		Items []struct {
			CreditCode string `json:"credit_code"`
		} `json:"items"`
		NextCursor string `json:"next_cursor"`
	}
	path := "/api/v1/matches?per_page=200"
	for range 100 {
		r := f.do(sip, http.MethodGet, path, nil)
		r.json(t, &page)
		for _, it := range page.Items {
			if it.CreditCode == outside.CreditCode {
				t.Fatalf("the park manager's list shows %s, a firm outside the park", outside.CreditCode)
			}
		}
		if page.NextCursor == "" {
			break
		}
		path = "/api/v1/matches?per_page=200&after=" + url.QueryEscape(page.NextCursor)
	}
	if rep, err := store.Recount(t.Context(), f.db, false); err != nil || rep.Misplaced != 1 {
		t.Fatalf("recount: %d misplaced (%v), want 1", rep.Misplaced, err)
	}
}
