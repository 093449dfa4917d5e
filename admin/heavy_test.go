package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A list page that sorts every match of a large scope (a park's narrowed to a policy) waits for a
// turn (heavyPage): with every turn taken it answers 503 at its deadline, while a page that walks
// the newest matches (the province's, and the park's own, which merges its places' walks) answers
// at once; with a turn free the narrowed page answers too.
func TestHeavyListPagesTakeTurns(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 60, 60)
	park := ""
	for _, e := range f.firms[:60] {
		if e.ParkID != "" {
			park = e.ParkID
			break
		}
	}
	if park == "" {
		t.Fatal("no matched firm in a park: the fixture changed")
	}
	f.srv.heavyMatches = 1
	f.srv.opts.QueryTimeout = 300 * time.Millisecond
	admin := f.session("admin")
	parkPage := "/api/v1/matches?park_id=" + url.QueryEscape(park)
	for range cap(f.srv.heavy) {
		f.srv.heavy <- struct{}{}
	}
	// the park's page narrowed to a policy: its sort reads the whole park
	narrowed := parkPage + "&policy_id=p1"
	start := time.Now()
	res := f.do(admin, http.MethodGet, narrowed, nil)
	if res.status != http.StatusServiceUnavailable || !strings.Contains(string(res.body), "查询超时") || time.Since(start) > 3*time.Second {
		t.Fatalf("%s with every turn taken: %d after %v\n%s", narrowed, res.status, time.Since(start), res.body)
	}
	if got := f.get(admin, "/api/v1/matches?per_page=5"); len(got.Items) != 5 {
		t.Fatalf("the province's page while the turns are taken: %d items", len(got.Items))
	}
	if got := f.get(admin, parkPage); len(got.Items) == 0 {
		t.Fatal("the park's own page while the turns are taken: no rows")
	}
	<-f.srv.heavy
	if got := f.get(admin, narrowed); len(got.Items) == 0 {
		t.Fatal("the narrowed page with a turn free: no rows")
	}
	if len(f.srv.heavy) != cap(f.srv.heavy)-1 {
		t.Fatalf("%d turns held after the page, want %d", len(f.srv.heavy), cap(f.srv.heavy)-1)
	}
}
