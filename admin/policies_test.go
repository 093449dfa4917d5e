package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/policypush/policypush/notify"
)

// TestRuleCheckPointsAtTheError: the editor's compile-as-you-type endpoint reports problems at the
// field, line and column the author typed.
func TestRuleCheckPointsAtTheError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	author := f.session("author")
	check := func(d map[string]any) checkResult {
		t.Helper()
		res := f.do(author, http.MethodPost, "/api/v1/rules/check", d)
		if res.status != http.StatusOK {
			t.Fatalf("check: %d %s", res.status, res.body)
		}
		var r checkResult
		res.json(t, &r)
		return r
	}
	base := func() map[string]any {
		return map[string]any{"id": "test-policy", "title": "测试政策", "effective_from": "2022-01-01",
			"eligibility": "insured_employees >= params.min\n  && layoff_rate <= 0.055", "params": "min: 10",
			"amount": "500 * insured_employees",
			"tests":  "- name: 十人可享受\n  firm: {insured_employees: 10}\n  eligible: true\n  amount: 5000\n"}
	}
	if r := check(base()); !r.OK || len(r.Problems) != 0 || r.Hash == "" {
		t.Fatalf("a good draft: %+v", r)
	}
	d := base()
	d["eligibility"] = "insured_employees >= params.min\n  && layof_rate <= 0.055"
	r := check(d)
	if r.OK || len(r.Problems) != 1 || r.Problems[0].Field != "eligibility" || r.Problems[0].Line != 2 || r.Problems[0].Column != 6 {
		t.Fatalf("unknown field on line 2, column 6: %+v", r.Problems)
	}
	for _, c := range []struct{ name, field, value string }{
		{"bad params YAML", "params", "min: [1, 2"},
		{"an amount that is not a number", "amount", `"五百"`},
		{"bad date", "effective_from", "2022-13-01"},
	} {
		d := base()
		d[c.field] = c.value
		if r := check(d); r.OK || r.Problems[0].Field != c.field {
			t.Fatalf("%s: %+v", c.name, r.Problems)
		}
	}
	d = base()
	d["tests"] = "- name: 九人不享受\n  firm: {insured_employees: 9}\n  eligible: true\n"
	d["run_tests"] = true
	r = check(d)
	if r.OK || len(r.Tests) != 1 || r.Tests[0].Passed || !strings.Contains(r.Tests[0].Problem, "eligible") {
		t.Fatalf("a failing test case: %+v", r)
	}
	if res := f.do(author, http.MethodPost, "/api/v1/rules/check", `{"eligibility": "true", "nonsense": 1}`); res.status != http.StatusBadRequest ||
		!strings.Contains(string(res.body), "nonsense") {
		t.Fatalf("unknown JSON field: %d %s", res.status, res.body)
	}
}

func TestPagesRender(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, c := range []struct {
		user, path, want string
	}{
		{"admin", "/", "推送漏斗"},
		{"admin", "/policies", f.sipPolicy},
		{"reviewer", "/policies/" + f.sipPolicy, "享受条件"},
		{"author", "/policies/new", "字段目录"},
		{"author", "/policies/new?from=wengang-fanhuan-2022", "unemployment_insurance_paid"},
		{"park_sip", "/firms", f.sip.CreditCode[:8]},
		{"park_sip", "/firms/" + f.sip.CreditCode, "时间线"},
		{"park_sip", "/deliveries/failed", f.sip.Name},
		{"auditor", "/audit", "审计日志"},
		{"admin", "/users", "park_njjb"},
	} {
		res := f.do(f.session(c.user), http.MethodGet, c.path, nil)
		if res.status != http.StatusOK || !strings.Contains(string(res.body), c.want) {
			t.Errorf("%s %s: %d, want %q in the page", c.user, c.path, res.status, c.want)
		}
		if csp := res.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'nonce-") {
			t.Errorf("%s: CSP %q", c.path, csp)
		}
	}
	// An author of another department cannot start a version of this policy.
	if res := f.do(f.session("author"), http.MethodGet, "/policies/new?from=liudi-tuishui-2022", nil); res.status != http.StatusForbidden {
		t.Errorf("author of another department: want 403, got %d", res.status)
	}
	// The park manager sees only the own park's failed delivery.
	res := f.do(f.session("park_sip"), http.MethodGet, "/api/v1/deliveries", nil)
	var dl struct {
		Items []notify.FailedDelivery `json:"items"`
	}
	res.json(t, &dl)
	if len(dl.Items) != 1 || dl.Items[0].CreditCode != f.sip.CreditCode || dl.Items[0].Recipient == f.sip.ContactPhone {
		t.Errorf("failed deliveries of park_sip: %+v", dl.Items)
	}
}

func TestChartsEscapeLabels(t *testing.T) {
	t.Parallel()
	out := string(barChart([]bar{{Label: `<script>alert(1)</script>`, Value: 3, Note: "3 家"}, {Label: "稳岗返还", Value: 1, Note: "1"}}))
	if strings.Contains(out, "<script>") || !strings.Contains(out, "&lt;script&gt;") || !strings.HasPrefix(out, "<svg") {
		t.Fatalf("chart: %s", out)
	}
	if out := string(funnelChart([]bar{{Label: "匹配", Value: 0}})); !strings.Contains(out, "暂无数据") {
		t.Fatalf("empty funnel: %s", out)
	}
	out = string(columnChart([]bar{{Label: "09-30", Value: 10}, {Label: "10-01", Value: 5}}))
	if strings.Count(out, "<rect") != 2 {
		t.Fatalf("columns: %s", out)
	}
}
