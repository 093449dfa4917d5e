package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/store"
)

// TestAuthorizationMatrix sends every route of the table as every demo role, an API token and an
// anonymous caller, and checks the answer against the route's permission: allowed callers are
// served (or told "not found" when the firm is outside their scope), others get 403 (401, or a
// redirect to the login page, when not signed in).
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	type who struct {
		name string
		call func() caller
		p    *Principal // nil: anonymous
	}
	var callers []who
	for _, du := range DemoUsers {
		u := du
		var su store.User
		if err := f.db.Where("username = ?", u.Username).Take(&su).Error; err != nil {
			t.Fatal(err)
		}
		callers = append(callers, who{u.Username, func() caller { return f.session(u.Username) }, userPrincipal(&su, "")})
	}
	tok := NewAPIToken{Permissions: []Perm{PermFirmRead, PermPolicyRead, PermDashboard}, ParkID: "SIP"}
	tokCaller := f.token("matrix", tok)
	callers = append(callers,
		who{"token", func() caller { return tokCaller }, tokenPrincipal(&store.APIToken{Permissions: joinPerms(tok.Permissions), ParkID: "SIP"})},
		who{"anonymous", func() caller { return caller{name: "anonymous"} }, nil})

	seq := 0
	statuses := map[int]int{}
	defer func() { t.Logf("%d requests, answers by status: %v", seq, statuses) }()
	for _, rt := range f.srv.routes {
		for _, w := range callers {
			seq++
			path, body := f.requestFor(rt, w.name, seq)
			name := fmt.Sprintf("%s %s as %s", rt.method, rt.path, w.name)
			// The sign-in form's double-submit cookie (the login page sets it).
			res := f.do(w.call(), rt.method, path, body, &http.Cookie{Name: loginCookie, Value: "matrix-login"})
			statuses[res.status]++
			// A bearer token counts only on API paths; elsewhere its holder is anonymous.
			p := w.p
			if w.name == "token" && !rt.api() {
				p = nil
			}
			switch {
			case rt.perm == permPublic:
				if res.status == http.StatusUnauthorized || res.status == http.StatusForbidden || res.status >= 500 {
					t.Errorf("%s: public route answered %d: %s", name, res.status, res.body)
				}
			case p == nil && rt.api():
				if res.status != http.StatusUnauthorized {
					t.Errorf("%s: want 401, got %d", name, res.status)
				}
			case p == nil && rt.method == http.MethodGet:
				if res.status != http.StatusSeeOther || !strings.HasPrefix(res.header.Get("Location"), "/login?next=") {
					t.Errorf("%s: want a redirect to the login page, got %d %s", name, res.status, res.header.Get("Location"))
				}
			case p == nil:
				if res.status != http.StatusUnauthorized {
					t.Errorf("%s: want 401, got %d", name, res.status)
				}
			case !p.Can(rt.perm):
				if res.status != http.StatusForbidden {
					t.Errorf("%s: role lacks %s, want 403, got %d: %.200s", name, rt.perm, res.status, res.body)
				}
			case strings.Contains(rt.path, "{code}") && !p.sees(&f.sip):
				if res.status != http.StatusNotFound {
					t.Errorf("%s: firm outside the scope, want 404, got %d: %.200s", name, res.status, res.body)
				}
			default:
				if res.status == http.StatusUnauthorized || res.status == http.StatusForbidden || res.status >= 500 {
					t.Errorf("%s: allowed, got %d: %.300s", name, res.status, res.body)
				}
			}
		}
	}
}

// authorPolicy is a demo policy of the demo author's department.
const authorPolicy = "wengang-fanhuan-2022"

// otherPolicy is a published policy neither demo firm of the fixture needs (retiring it in the
// matrix leaves their matches alone).
func (f *fixture) otherPolicy() string {
	var ids []string
	f.db.Model(&store.Policy{}).Where("id NOT IN ?", []string{f.sipPolicy, f.njjbPolicy, authorPolicy}).Order("id").Pluck("id", &ids)
	return ids[0]
}

// requestFor fills a route's path parameters and body with valid values for the fixture.
func (f *fixture) requestFor(rt route, caller string, seq int) (string, any) {
	tokenID := func() string {
		t := f.token(fmt.Sprintf("revoke-%d", seq), NewAPIToken{Permissions: []Perm{PermPolicyRead}})
		var row store.APIToken
		f.db.Where("token_hash = ?", sha256Hex(t.bearer)).Take(&row)
		return fmt.Sprint(row.ID)
	}
	path := rt.path
	path = strings.ReplaceAll(path, "{$}", "")
	path = strings.ReplaceAll(path, "{code}", f.sip.CreditCode)
	path = strings.ReplaceAll(path, "{token}", f.link(f.sip.CreditCode, f.sipPolicy, time.Hour))
	path = strings.ReplaceAll(path, "{version}", "1")
	switch {
	case strings.Contains(path, "tokens/{id}"):
		path = strings.ReplaceAll(path, "{id}", tokenID())
	case strings.Contains(path, "deliveries/{id}"):
		path = strings.ReplaceAll(path, "{id}", fmt.Sprint(f.sipDelivery))
	case strings.HasSuffix(path, "/retire"):
		path = strings.ReplaceAll(path, "{id}", f.otherPolicy())
	case strings.HasPrefix(path, "/p/"):
		path = strings.ReplaceAll(path, "{id}", f.sipPolicy)
	}
	// Policy routes use a policy of the demo author's department, so that the author's calls pass
	// the department check and reach the lifecycle.
	path = strings.ReplaceAll(path, "{id}", authorPolicy)
	if strings.HasSuffix(path, "/near-misses") {
		path += "?policy_id=" + f.sipPolicy
	}
	user := fmt.Sprintf("matrix%d", seq)
	login := caller
	if caller == "token" || caller == "anonymous" {
		login = "admin"
	}
	switch rt.method + " " + rt.path {
	case "POST /login":
		return path, url.Values{"username": {login}, "password": {testPassword}, csrfField: {"matrix-login"}}
	case "POST /e/{token}/respond":
		return path, url.Values{"policy_id": {f.sipPolicy}, "kind": {"object"}, "reason": {"参保人数与实际不符，请核实"}}
	case "POST /e/{token}/channels":
		return path, url.Values{"channel": {"sms"}, "subscribed": {"false"}}
	case "POST /firms/{code}/notes":
		return path, url.Values{"body": {"已电话联系企业财务"}}
	case "POST /users":
		return path, url.Values{"username": {user}, "password": {testPassword}, "role": {"auditor"}}
	case "POST /tokens":
		return path, url.Values{"name": {user}, "permissions": {"policy:read"}, "ttl_days": {"30"}}
	case "POST /api/v1/session":
		return path, map[string]string{"username": login, "password": testPassword}
	case "POST /api/v1/rules/check":
		return path, map[string]any{"id": "t-1", "title": "测试", "eligibility": "insured_employees >= 10", "run_tests": true}
	case "POST /api/v1/firms/{code}/notes":
		return path, map[string]string{"body": "企业确认对公账户"}
	case "POST /api/v1/users":
		return path, map[string]string{"username": user, "password": testPassword, "role": "auditor"}
	case "POST /api/v1/tokens":
		return path, map[string]any{"name": user, "permissions": []string{"policy:read"}}
	case "POST /api/v1/e/{token}/responses":
		return path, map[string]any{"policy_id": f.sipPolicy, "kind": "object", "reason": "营业收入数据有误"}
	case "POST /api/v1/e/{token}/channels":
		return path, map[string]any{"channel": "wechat", "subscribed": true}
	case "POST /policies/drafts":
		return path, url.Values{"id": {authorPolicy}, "title": {"失业保险稳岗返还"}, "eligibility": {"insured_employees > 0"}}
	case "POST /api/v1/policies/drafts":
		return path, map[string]any{"id": authorPolicy, "title": "失业保险稳岗返还", "eligibility": "insured_employees > 1"}
	case "POST /policies/{id}/versions/{version}/reject", "POST /policies/{id}/retire":
		return path, url.Values{"reason": {"依据文件已废止"}}
	case "POST /api/v1/policies/{id}/versions/{version}/reject", "POST /api/v1/policies/{id}/retire":
		return path, map[string]string{"reason": "依据文件已废止"}
	case "POST /api/v1/deliveries/resend":
		return path, map[string]any{"ids": []uint64{f.sipDelivery}}
	case "POST /api/v1/registry/changes":
		return path, map[string]any{"credit_code": f.sip.CreditCode, "graduates_hired": seq % 7}
	case "POST /api/v1/calc":
		return path, map[string]any{"facts": map[string]any{"insured_employees": 20, "industry_code": "H6210"}}
	}
	return path, nil
}
