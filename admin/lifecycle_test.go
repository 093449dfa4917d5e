package admin

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// TestReviewLifecycle: an author drafts a new version and submits it; only a reviewer approves and
// publishes; the preview and the diff show what changes; after matching, the park manager sees the
// firms that newly qualify.
func TestReviewLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	author, reviewer, sip := f.session("author"), f.session("reviewer"), f.session("park_sip")
	pol := authorPolicy
	before := f.matches(sip, "policy_id="+pol).Total

	// The author starts from the published version and loosens the layoff cap for small firms.
	var d policyDetail
	f.do(author, http.MethodGet, "/api/v1/policies/"+pol, nil).json(t, &d)
	in := draftOf(d.Current.Def)
	in.Params = strings.Replace(in.Params, "small_layoff_cap: 0.2", "small_layoff_cap: 0.35", 1)
	if !strings.Contains(in.Params, "0.35") {
		t.Fatalf("params of the demo policy changed: %s", in.Params)
	}
	res := f.do(author, http.MethodPost, "/api/v1/policies/drafts", in)
	var v store.PolicyVersion
	res.json(t, &v)
	if res.status != http.StatusCreated || v.State != store.VersionDraft || v.Version != 2 || v.Author != "author" {
		t.Fatalf("save draft: %d %s", res.status, res.body)
	}
	vpath := "/api/v1/policies/" + pol + "/versions/2"

	// Another department's author cannot save a draft of this policy.
	other := f.session("author")
	f.db.Model(&store.User{}).Where("username = ?", "author").Update("department", "省税务局")
	if res := f.do(other, http.MethodPost, "/api/v1/policies/drafts", in); res.status != http.StatusForbidden {
		t.Fatalf("author of another department: want 403, got %d %s", res.status, res.body)
	}
	f.db.Model(&store.User{}).Where("username = ?", "author").Update("department", "省人力资源和社会保障厅")

	// Not yet submitted: nothing to approve.
	if res := f.do(reviewer, http.MethodPost, vpath+"/approve", nil); res.status != http.StatusConflict {
		t.Fatalf("approve a draft: want 409, got %d %s", res.status, res.body)
	}
	if res := f.do(author, http.MethodPost, vpath+"/submit", nil); res.status != http.StatusOK {
		t.Fatalf("submit: %d %s", res.status, res.body)
	}
	// The author cannot approve (route permission) and a rejection needs a reason.
	if res := f.do(author, http.MethodPost, vpath+"/approve", nil); res.status != http.StatusForbidden {
		t.Fatalf("author approving: want 403, got %d", res.status)
	}
	if res := f.do(reviewer, http.MethodPost, vpath+"/reject", map[string]string{"reason": ""}); res.status != http.StatusBadRequest {
		t.Fatalf("reject without reason: want 400, got %d", res.status)
	}

	// The reviewer sees the change and its effect before approving.
	var vd versionDetail
	f.do(reviewer, http.MethodGet, vpath, nil).json(t, &vd)
	if vd.Diff == nil || len(vd.Diff.Changes) == 0 || !strings.Contains(vd.Diff.Changes[0].Field, "small_layoff_cap") {
		t.Fatalf("diff from the published version: %+v", vd.Diff)
	}
	var queue struct {
		Items []store.PolicyVersion `json:"items"`
	}
	f.do(reviewer, http.MethodGet, "/api/v1/review", nil).json(t, &queue)
	if len(queue.Items) != 1 || queue.Items[0].Version != 2 {
		t.Fatalf("review queue: %+v", queue.Items)
	}
	var prev rules.PreviewReport
	res = f.do(reviewer, http.MethodGet, vpath+"/preview", nil)
	res.json(t, &prev)
	if res.status != http.StatusOK || prev.New == 0 || prev.Dropped != 0 || prev.CurrentVersion != 1 || len(prev.ByPark) == 0 {
		t.Fatalf("preview: %d new=%d dropped=%d", res.status, prev.New, prev.Dropped)
	}
	if f.auditCount("reviewer", "policy.preview", pol) != 1 {
		t.Fatal("the preview (sample firms) is not audited")
	}
	if res := f.do(reviewer, http.MethodPost, vpath+"/approve", nil); res.status != http.StatusOK {
		t.Fatalf("approve: %d %s", res.status, res.body)
	}
	if res := f.do(reviewer, http.MethodPost, vpath+"/publish", nil); res.status != http.StatusOK {
		t.Fatalf("publish: %d %s", res.status, res.body)
	}
	var p store.Policy
	f.db.Where("id = ?", pol).Take(&p)
	if p.PublishedVersion != 2 {
		t.Fatalf("published version %d", p.PublishedVersion)
	}

	// The matcher evaluates the new version; the park manager sees the newly qualified firms.
	day, _ := rules.ParseDate(demoAsOf)
	if _, err := matcher.Run(context.Background(), f.db, day.Time, pol, matcher.Options{Workers: 2}); err != nil {
		t.Fatal(err)
	}
	after := f.matches(sip, "policy_id="+pol).Total
	if after <= before {
		t.Fatalf("park SIP matches of %s: %d before, %d after publishing a looser version", pol, before, after)
	}

	// Retire: a reason is required; the matches are revoked.
	form := url.Values{"reason": {""}}
	if res := f.do(reviewer, http.MethodPost, "/policies/"+pol+"/retire", form); res.status != http.StatusBadRequest {
		t.Fatalf("retire without reason: want 400, got %d", res.status)
	}
	form.Set("reason", "政策到期")
	if res := f.do(reviewer, http.MethodPost, "/policies/"+pol+"/retire", form); res.status != http.StatusSeeOther {
		t.Fatalf("retire: %d %s", res.status, res.body)
	}
	if n := f.matches(sip, "policy_id="+pol).Total; n != 0 {
		t.Fatalf("retired policy still has %d active matches", n)
	}
	for _, action := range []string{"policy.draft", "policy.submit", "policy.approve", "policy.publish", "policy.retire"} {
		var n int64
		f.db.Model(&store.AuditLog{}).Where("action = ? AND object = ? AND actor IN ?", action, pol, []string{"author", "reviewer"}).Count(&n)
		if n != 1 {
			t.Errorf("audit %s: %d rows", action, n)
		}
	}
}

// TestNearMissesAndCalculator: near misses stay in scope; the public calculator answers from facts.
func TestNearMissesAndCalculator(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sip := f.session("park_sip")
	var v nearMissView
	res := f.do(sip, http.MethodGet, "/api/v1/near-misses?policy_id="+authorPolicy, nil)
	res.json(t, &v)
	if res.status != http.StatusOK || v.Firms == 0 || v.Total == 0 || len(v.Items) == 0 {
		t.Fatalf("near misses: %d %s", res.status, res.body)
	}
	for _, it := range v.Items {
		if it.ParkID != "SIP" || it.Failed == "" {
			t.Fatalf("near miss outside the scope or without its condition: %+v", it)
		}
	}
	if res := f.do(sip, http.MethodGet, "/api/v1/near-misses?policy_id="+authorPolicy+"&park_id=NJ-JB", nil); res.status != http.StatusForbidden {
		t.Fatalf("near misses of another park: want 403, got %d", res.status)
	}
	if f.auditCount("park_sip", "firm.near_miss", authorPolicy) != 1 {
		t.Fatal("near-miss read not audited")
	}

	// 稳岗返还 sizes the firm by 300号: the calculator needs its industry and the row's indicators.
	facts := map[string]any{"facts": map[string]any{"employees": 50, "insured_employees": 48, "layoff_rate": 0,
		"unemployment_insurance_paid": 20000, "tax_credit_rating": "B", "entity_type": "enterprise",
		"industry_code": "C3911", "annual_revenue": 30000000, "total_assets": 20000000}}
	res = f.do(caller{}, http.MethodPost, "/api/v1/calc", facts)
	var rep rules.CalcReport
	res.json(t, &rep)
	found := false
	for _, r := range rep.Results {
		if r.PolicyID == authorPolicy {
			found = true
			if r.Outcome != rules.CalcEligible || r.Amount == nil || *r.Amount != 18000 {
				t.Fatalf("calculator for %s: %+v", authorPolicy, r)
			}
		}
	}
	if res.status != http.StatusOK || !found {
		t.Fatalf("calculator: %d %s", res.status, res.body)
	}
	if res := f.do(caller{}, http.MethodPost, "/api/v1/calc", `{"facts":{"contact_phone":"13800000000"}}`); res.status != http.StatusBadRequest {
		t.Fatalf("calculator with contact data: want 400, got %d", res.status)
	}
	page := f.do(caller{}, http.MethodGet, "/calc?employees=50&insured_employees=48&layoff_rate=0&unemployment_insurance_paid=20000&tax_credit_rating=B&entity_type=enterprise&industry_code=C3911&annual_revenue=30000000&total_assets=20000000", nil)
	if page.status != http.StatusOK || !strings.Contains(string(page.body), "18,000.00元") {
		t.Fatalf("calculator page: %d", page.status)
	}
}

// TestRegistryChanges: the data platform's token pushes firm changes; the engine re-matches them and
// the park manager's list follows.
func TestRegistryChanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	platform := f.token("data-platform", NewAPIToken{Permissions: []Perm{PermRegistry}})
	sip := f.session("park_sip")
	before := f.matches(sip, "q="+f.sip.CreditCode).Total
	// The firm lays off everyone insured: it no longer qualifies for what needs insured staff.
	res := f.do(platform, http.MethodPost, "/api/v1/registry/changes", map[string]any{"firms": []map[string]any{
		{"credit_code": f.sip.CreditCode, "insured_employees": 0, "unemployment_insurance_paid": 0, "employees": 1},
		{"insured_employees": 3},
	}})
	var out matcher.ChangeResult
	res.json(t, &out)
	if res.status != http.StatusOK || out.Firms != 2 || out.Changed != 1 || out.Revoked == 0 || len(out.Rejected) != 1 {
		t.Fatalf("change: %d %s", res.status, res.body)
	}
	if after := f.matches(sip, "q="+f.sip.CreditCode).Total; after != before-int64(out.Revoked) {
		t.Fatalf("park list: %d before, %d after, %d revoked", before, after, out.Revoked)
	}
	if f.auditCount("token:data-platform", "registry.change", "enterprises") != 1 {
		t.Fatal("registry change not audited")
	}
	if res := f.do(platform, http.MethodPost, "/api/v1/registry/changes", `not json`); res.status != http.StatusBadRequest {
		t.Fatalf("malformed change: want 400, got %d", res.status)
	}
	// The token can do nothing else.
	if res := f.do(platform, http.MethodGet, "/api/v1/matches", nil); res.status != http.StatusForbidden {
		t.Fatalf("registry token reading matches: want 403, got %d", res.status)
	}
}
