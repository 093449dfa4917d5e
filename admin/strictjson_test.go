package admin

import (
	"net/http"
	"strings"
	"testing"
)

// The calculator and the rule check take exactly one JSON object: null, a second value or trailing
// garbage is a 400 that says what is wrong, not an empty request answered 200.
func TestJSONBodiesAreOneObject(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	author := f.session("author")
	for _, path := range []string{"/api/v1/calc", "/api/v1/rules/check"} {
		for _, tc := range []struct{ body, says string }{
			{`{} xyz`, "之后还有内容"},
			{`{} {}`, "之后还有内容"},
			{`{}]`, "之后还有内容"},
			{`null`, "须为 JSON 对象"},
			{`  null  `, "须为 JSON 对象"},
			{`[]`, "须为 JSON 对象"},
			{`"text"`, "须为 JSON 对象"},
			{`42`, "须为 JSON 对象"},
			{``, "请求体为空"},
			{`{"facts":`, "不是有效的 JSON"},
		} {
			res := f.do(author, http.MethodPost, path, tc.body)
			if res.status != http.StatusBadRequest || !strings.Contains(string(res.body), tc.says) {
				t.Errorf("POST %s %q: %d %s, want 400 saying %q", path, tc.body, res.status, res.body, tc.says)
			}
		}
	}
	// What stays valid: one object, white space around it.
	if res := f.do(author, http.MethodPost, "/api/v1/calc", "\n {\"facts\":{\"employees\":12}} \n"); res.status != http.StatusOK {
		t.Fatalf("a valid body: %d %s", res.status, res.body)
	}
}
