package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// browserTarget resolves a Location header the way a WHATWG URL parser does for a special scheme:
// tabs and newlines vanish, leading and trailing C0 controls and spaces are trimmed, a backslash
// is a slash. It reports whether the result stays on the same origin.
func browserTarget(loc string) (string, bool) {
	loc = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(loc)
	loc = strings.TrimFunc(loc, func(r rune) bool { return r <= 0x20 })
	loc = strings.ReplaceAll(loc, `\`, "/")
	u, err := url.Parse(loc)
	if err != nil {
		return loc, false
	}
	return loc, u.Scheme == "" && u.Host == "" && strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//")
}

// Known bypasses of a post-login redirect: each leads to "/", while ordinary console paths are
// kept as they are.
func TestSafeNextRejectsKnownBypasses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ next, want string }{
		{"/firms", "/firms"},
		{"/firms?policy_id=kuogang-buzhu-2022&page=2", "/firms?policy_id=kuogang-buzhu-2022&page=2"},
		{"/firms?q=%E8%8B%8F%E5%B7%9E%20%E5%9B%AD%E5%8C%BA", "/firms?q=%E8%8B%8F%E5%B7%9E%20%E5%9B%AD%E5%8C%BA"},
		{"/policies/a/versions/2#diff", "/policies/a/versions/2#diff"},
		{"", "/"},
		{"firms", "/"},
		{"//evil.example", "/"},
		{"///evil.example", "/"},
		{`/\evil.example`, "/"},
		{`\/evil.example`, "/"},
		{`/\/evil.example`, "/"},
		{"/\t/evil.example", "/"},
		{"/\n/evil.example", "/"},
		{"/\r\n/evil.example", "/"},
		{"\t//evil.example", "/"},
		{" //evil.example", "/"},
		{"/ /evil.example", "/"},
		{"/%09/evil.example", "/"},
		{"/%0a/evil.example", "/"},
		{"/%2F/evil.example", "/"},
		{"/%2f%2fevil.example", "/"},
		{"/%5C/evil.example", "/"},
		{"/%5cevil.example", "/"},
		{"/%252F/evil.example", "/"},
		{"/%25252F/evil.example", "/"},
		{"/\u0085/evil.example", "/"},
		{"/\u3000/evil.example", "/"},
		{"/\x00/evil.example", "/"},
		{"https://evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"/javascript:alert(1)", "/javascript:alert(1)"},
		{"http:/evil.example", "/"},
		{"/login", "/"},
		{"/login?next=//evil.example", "/"},
		{"/./login", "/"},
		{"/%zz", "/"},
		{"/" + strings.Repeat("a", maxNext), "/"},
	} {
		got := safeNext(tc.next)
		if got != tc.want {
			t.Errorf("safeNext(%q) = %q, want %q", tc.next, got, tc.want)
		}
		if loc, ok := browserTarget(got); !ok {
			t.Errorf("safeNext(%q) = %q, which a browser resolves to %q, off this site", tc.next, got, loc)
		}
	}
}

// The redirect a signed-in visitor of /login gets, and the one after signing in, go through the
// same check: the Location header stays on this site for every bypass the issue found.
func TestLoginRedirectStaysOnSite(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	me := f.session("park_sip")
	for _, next := range []string{"/%09/evil.example", "/%5C/evil.example", "//evil.example", "/%0d%0a/evil.example"} {
		res := f.do(me, http.MethodGet, "/login?next="+next, nil)
		loc := res.header.Get("Location")
		if res.status != http.StatusSeeOther || loc != "/" {
			t.Errorf("next=%s: %d Location %q, want 303 to /", next, res.status, loc)
		}
	}
}
