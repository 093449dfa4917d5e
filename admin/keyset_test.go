package admin

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// listFixture is a console over hand-made rows whose order is known: matches of one policy with
// matched_at in runs of equal times (ties), failed deliveries likewise.
type listFixture struct {
	*fixture
	base  time.Time
	firms []store.Enterprise
	next  int // firms[next:] have no match yet
}

func newListFixture(t *testing.T, firms, matches int) *listFixture {
	t.Helper()
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	f := &listFixture{fixture: &fixture{t: t, db: db, secret: []byte("test-link-secret-0123456789abcdef")},
		base: time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC), firms: registry.Synth(firms, 3)}
	if err := db.CreateInBatches(f.firms, 500).Error; err != nil {
		t.Fatal(err)
	}
	day := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	if err := db.Create(&store.Policy{ID: "p1", Title: "测试政策", PublishedVersion: 1}).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&store.PolicyVersion{PolicyID: "p1", Version: 1, ContentHash: "x", Source: "{}", Title: "测试政策",
		EffectiveFrom: day, State: store.VersionPublished}).Error; err != nil {
		t.Fatal(err)
	}
	for _, u := range []store.User{{Username: "admin", Role: store.RoleAdmin}, {Username: "auditor", Role: store.RoleAuditor}} {
		u.PasswordHash = "x"
		if err := db.Create(&u).Error; err != nil {
			t.Fatal(err)
		}
	}
	var err error
	f.srv, err = New(Options{DB: db, LinkSecret: f.secret})
	if err != nil {
		t.Fatal(err)
	}
	f.ts = httptest.NewServer(f.srv)
	t.Cleanup(f.ts.Close)
	// runs of 7 equal times, not in id order
	f.addMatches(matches, func(i int) time.Time { return f.base.Add(time.Duration((i*37)%matches/7) * time.Second) })
	return f
}

// addMatches gives the next n firms a match at the times at(i).
func (f *listFixture) addMatches(n int, at func(i int) time.Time) {
	f.t.Helper()
	var ms []store.Match
	for i := range n {
		e := f.firms[f.next]
		f.next++
		ms = append(ms, store.Match{PolicyID: "p1", PolicyVersion: 1, CreditCode: e.CreditCode, State: store.MatchActive,
			AsOf: time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC), MatchedAt: at(i), UpdatedAt: at(i)})
	}
	if err := f.db.CreateInBatches(ms, 500).Error; err != nil {
		f.t.Fatal(err)
	}
	// counted, as the matcher's writes are: the lists find their places in the counts
	if _, err := store.Recount(f.t.Context(), f.db, true); err != nil {
		f.t.Fatal(err)
	}
}

// order is every active match id in list order, as the database sorts them.
func (f *listFixture) order() []uint64 {
	var ids []uint64
	if err := f.db.Model(&store.Match{}).Where("state = ?", store.MatchActive).Order("matched_at DESC, id DESC").Pluck("id", &ids).Error; err != nil {
		f.t.Fatal(err)
	}
	return ids
}

type gotPage struct {
	Items []struct {
		MatchID uint64 `json:"match_id"`
		ID      uint64 `json:"id"`
	} `json:"items"`
	Total       int64  `json:"total"`
	TotalCapped bool   `json:"total_capped"`
	Page        int    `json:"page"`
	NextCursor  string `json:"next_cursor"`
	PrevCursor  string `json:"prev_cursor"`
}

func (p gotPage) ids() []uint64 {
	var out []uint64
	for _, it := range p.Items {
		out = append(out, max(it.MatchID, it.ID))
	}
	return out
}

func (f *listFixture) get(c caller, path string) gotPage {
	f.t.Helper()
	res := f.do(c, http.MethodGet, path, nil)
	if res.status != http.StatusOK {
		f.t.Fatalf("GET %s: %d %s", path, res.status, res.body)
	}
	var p gotPage
	res.json(f.t, &p)
	return p
}

// walk follows next_cursor from the first page and returns the pages' ids.
func (f *listFixture) walk(c caller, path string, between func()) [][]uint64 {
	f.t.Helper()
	var pages [][]uint64
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	p := f.get(c, path)
	for n := 1; ; n++ {
		if p.Page != n {
			f.t.Fatalf("page %d says it is page %d", n, p.Page)
		}
		if (n == 1) != (p.PrevCursor == "") {
			f.t.Fatalf("page %d: prev_cursor %q", n, p.PrevCursor)
		}
		pages = append(pages, p.ids())
		if p.NextCursor == "" {
			return pages
		}
		if len(pages) > 1000 {
			f.t.Fatal("next_cursor never ends")
		}
		if between != nil {
			between()
		}
		p = f.get(c, path+sep+"after="+url.QueryEscape(p.NextCursor))
	}
}

func flat(pages [][]uint64) []uint64 {
	var out []uint64
	for _, p := range pages {
		out = append(out, p...)
	}
	return out
}

// TestMatchListKeysetPages: following next_cursor visits every match once, newest first, ties in
// matched_at broken by id, on page-size multiples and not; prev_cursor walks back the same pages;
// ?page=N jumps; matches written while someone pages are neither repeated nor skipped.
func TestMatchListKeysetPages(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 400, 125)
	admin := f.session("admin")
	want := f.order()
	if len(want) != 125 {
		t.Fatalf("%d matches", len(want))
	}
	for _, per := range []int{25, 40, 125, 200, 1} {
		pages := f.walk(admin, fmt.Sprintf("/api/v1/matches?per_page=%d", per), nil)
		if got := flat(pages); !slices.Equal(got, want) {
			t.Fatalf("per_page=%d: walked %v\nwant %v", per, got, want)
		}
		if n := (125 + per - 1) / per; len(pages) != n {
			t.Fatalf("per_page=%d: %d pages, want %d (no empty page after an exact multiple)", per, len(pages), n)
		}
	}

	// Backwards from the last page by prev_cursor: the same pages in reverse.
	pages := f.walk(admin, "/api/v1/matches?per_page=25", nil)
	last := f.get(admin, "/api/v1/matches?per_page=25")
	for range 4 {
		last = f.get(admin, "/api/v1/matches?per_page=25&after="+url.QueryEscape(last.NextCursor))
	}
	if last.NextCursor != "" || last.Page != 5 {
		t.Fatalf("page 5 of 125/25: next %q page %d", last.NextCursor, last.Page)
	}
	for i := 3; i >= 0; i-- {
		last = f.get(admin, "/api/v1/matches?per_page=25&before="+url.QueryEscape(last.PrevCursor))
		if !slices.Equal(last.ids(), pages[i]) || last.Page != i+1 {
			t.Fatalf("back to page %d: got %v (page %d), want %v", i+1, last.ids(), last.Page, pages[i])
		}
	}
	if last.PrevCursor != "" {
		t.Fatalf("page 1 reached backwards has prev_cursor %q", last.PrevCursor)
	}

	// ?page=N jumps to the page the links reach.
	for n := 1; n <= 5; n++ {
		if got := f.get(admin, fmt.Sprintf("/api/v1/matches?per_page=25&page=%d", n)); !slices.Equal(got.ids(), pages[n-1]) || got.Page != n {
			t.Fatalf("page=%d: %v, want %v", n, got.ids(), pages[n-1])
		}
	}
	if got := f.get(admin, "/api/v1/matches?per_page=25&page=6"); len(got.Items) != 0 || got.NextCursor != "" {
		t.Fatalf("page=6 of 5: %+v", got)
	}
	if got := f.get(admin, "/api/v1/matches?policy_id=none"); len(got.Items) != 0 || got.Total != 0 || got.NextCursor != "" || got.PrevCursor != "" {
		t.Fatalf("empty list: %+v", got)
	}

	// Matches written between pages: newer ones (and one tied with the newest) belong before the
	// pages already read, an older one at the end; none is shown twice, none of the first is lost.
	var walked []uint64
	inserted := 0
	pages = f.walk(admin, "/api/v1/matches?per_page=20", func() {
		inserted++
		top := f.base.Add(time.Duration(124/7) * time.Second)
		f.addMatches(3, func(i int) time.Time {
			switch i {
			case 0:
				return top // tied with the newest rows already read
			case 1:
				return top.Add(time.Duration(inserted) * time.Minute)
			}
			return f.base.Add(-time.Duration(inserted) * time.Hour) // older than everything
		})
	})
	walked = flat(pages)
	seen := map[uint64]bool{}
	for _, id := range walked {
		if seen[id] {
			t.Fatalf("match %d shown twice while rows were inserted", id)
		}
		seen[id] = true
	}
	for _, id := range want {
		if !seen[id] {
			t.Fatalf("match %d skipped while rows were inserted", id)
		}
	}
	if len(walked) != 125+inserted {
		// every older row written before the last page was read comes at the end
		t.Fatalf("walked %d rows, want the 125 and the %d older ones written meanwhile", len(walked), inserted)
	}
}

// A city's or a park's list merges the newest matches of each of its places (store.MatchKeys):
// following next_cursor visits every match of the scope once in list order, prev_cursor walks
// back the same pages, ?page=N jumps, on page-size multiples and not.
func TestScopedMatchListKeysetPages(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 400, 125)
	admin := f.session("admin")
	place := map[string]store.Enterprise{}
	cities, parks := map[string]int{}, map[string]int{}
	for _, e := range f.firms[:f.next] {
		place[e.CreditCode] = e
		cities[e.RegionCode[:4]]++
		if e.ParkID != "" {
			parks[e.ParkID]++
		}
	}
	most := func(n map[string]int) string {
		best := ""
		for k, v := range n {
			if best == "" || v > n[best] || v == n[best] && k < best {
				best = k
			}
		}
		return best
	}
	city, park := most(cities), most(parks)
	if cities[city] < 20 || parks[park] < 3 {
		t.Fatalf("the fixture's largest city has %d matches, its largest park %d: too few to page", cities[city], parks[park])
	}
	var all []store.Match
	if err := f.db.Where("state = ?", store.MatchActive).Order("matched_at DESC, id DESC").Find(&all).Error; err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query string
		in    func(e store.Enterprise) bool
	}{
		{"region=" + city, func(e store.Enterprise) bool { return strings.HasPrefix(e.RegionCode, city) }},
		{"park_id=" + url.QueryEscape(park), func(e store.Enterprise) bool { return e.ParkID == park }},
	} {
		t.Run(c.query, func(t *testing.T) {
			var want []uint64
			for _, m := range all {
				if c.in(place[m.CreditCode]) {
					want = append(want, m.ID)
				}
			}
			for _, per := range []int{7, 10, len(want), 1} {
				path := fmt.Sprintf("/api/v1/matches?%s&per_page=%d", c.query, per)
				pages := f.walk(admin, path, nil)
				if got := flat(pages); !slices.Equal(got, want) {
					t.Fatalf("per_page=%d: walked %v\nwant %v", per, got, want)
				}
				if n := (len(want) + per - 1) / per; len(pages) != n {
					t.Fatalf("per_page=%d: %d pages, want %d", per, len(pages), n)
				}
				if per == 1 {
					continue
				}
				last := f.get(admin, path)
				for range len(pages) - 1 {
					last = f.get(admin, path+"&after="+url.QueryEscape(last.NextCursor))
				}
				for i := len(pages) - 2; i >= 0; i-- {
					last = f.get(admin, path+"&before="+url.QueryEscape(last.PrevCursor))
					if !slices.Equal(last.ids(), pages[i]) || last.Page != i+1 {
						t.Fatalf("per_page=%d, back to page %d: got %v (page %d), want %v", per, i+1, last.ids(), last.Page, pages[i])
					}
				}
				for n := 1; n <= len(pages); n++ {
					if got := f.get(admin, fmt.Sprintf("%s&page=%d", path, n)); !slices.Equal(got.ids(), pages[n-1]) || got.Page != n {
						t.Fatalf("per_page=%d, page=%d: %v, want %v", per, n, got.ids(), pages[n-1])
					}
				}
			}
			// the export holds the same rows in the same order (a park's is read along its place)
			res := f.do(admin, http.MethodGet, "/api/v1/matches/export?format=csv&"+c.query, nil)
			if res.status != http.StatusOK {
				t.Fatalf("export: %d %s", res.status, res.body)
			}
			recs, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(res.body), "\ufeff"))).ReadAll()
			if err != nil || len(recs) == 0 {
				t.Fatalf("export: %v", err)
			}
			var codes, wantCodes []string
			for _, r := range recs[1:] {
				codes = append(codes, r[0])
			}
			byID := map[uint64]string{}
			for _, m := range all {
				byID[m.ID] = m.CreditCode
			}
			for _, id := range want {
				wantCodes = append(wantCodes, byID[id])
			}
			if !slices.Equal(codes, wantCodes) {
				t.Fatalf("export rows %v\nwant %v", codes, wantCodes)
			}
		})
	}
}

// TestListCursorErrors: a bad cursor or page is a 400 saying what to do, on the API and the page.
func TestListCursorErrors(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 60, 60)
	admin := f.session("admin")
	good := f.get(admin, "/api/v1/matches?per_page=10").NextCursor
	for _, q := range []string{"after=abc", "after=" + good[:len(good)-2], "before=%21%21", "cursor=djEuMS4wLjE",
		"after=" + good + "&before=" + good, "after=" + good + "&page=2", "page=202&per_page=50"} {
		for _, path := range []string{"/api/v1/matches?", "/firms?", "/api/v1/deliveries?", "/api/v1/audit?"} {
			res := f.do(admin, http.MethodGet, path+q, nil)
			if res.status != http.StatusBadRequest {
				t.Fatalf("GET %s%s: %d, want 400\n%s", path, q, res.status, res.body)
			}
			body := string(res.body)
			if !strings.Contains(body, "翻页") && !strings.Contains(body, "只能给一个") && !strings.Contains(body, "不能与") {
				t.Fatalf("GET %s%s: no clear message\n%s", path, q, body)
			}
		}
	}
	// The page shows next and previous links that carry the cursors.
	res := f.do(admin, http.MethodGet, "/firms?per_page=10&after="+url.QueryEscape(good), nil)
	body := string(res.body)
	if res.status != http.StatusOK || !strings.Contains(body, `rel="next"`) || !strings.Contains(body, `rel="prev"`) ||
		!strings.Contains(body, "after=") || !strings.Contains(body, "before=") || !strings.Contains(body, "第 2 页") {
		t.Fatalf("page 2 of /firms: %d\n%s", res.status, body)
	}
}

// TestSizeFilteredKeysetPages: the size filter (applied in Go) pages the same way.
func TestSizeFilteredKeysetPages(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 150, 150)
	admin := f.session("admin")
	asOf, err := f.srv.evalDate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tested := 0
	for _, size := range sizeTiers {
		keys, err := f.srv.sizeFilteredKeys(t.Context(), matchFilter{Size: size}.storeFilter(&Principal{Name: "admin", Role: store.RoleAdmin}), size, asOf)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for _, k := range keys {
			want = append(want, k.ID)
		}
		got := flat(f.walk(admin, "/api/v1/matches?per_page=7&size="+size, nil))
		if !slices.Equal(got, want) {
			t.Fatalf("size=%s: %v, want %v", size, got, want)
		}
		if len(want) > 0 {
			tested++
		}
		if len(want) > 21 {
			p2 := f.get(admin, "/api/v1/matches?per_page=7&page=2&size="+size)
			back := f.get(admin, "/api/v1/matches?per_page=7&size="+size+"&before="+url.QueryEscape(p2.PrevCursor))
			if !slices.Equal(back.ids(), want[:7]) || back.PrevCursor != "" {
				t.Fatalf("size=%s: back from page 2: %v", size, back.ids())
			}
			p3 := f.get(admin, "/api/v1/matches?per_page=7&page=3&size="+size)
			back = f.get(admin, "/api/v1/matches?per_page=7&size="+size+"&before="+url.QueryEscape(p3.PrevCursor))
			if !slices.Equal(back.ids(), want[7:14]) || back.PrevCursor == "" || back.Page != 2 {
				t.Fatalf("size=%s: back from page 3: %v (page %d)", size, back.ids(), back.Page)
			}
			tested++
		}
	}
	if tested < 3 {
		t.Fatalf("only %d size checks ran: the synthetic firms no longer spread over the sizes", tested)
	}
}

// TestFailedDeliveriesAndAuditKeysetPages: the failed-delivery log (ties in updated_at) and the
// audit log (which grows with every page read, since each read is audited) page without
// repeating or skipping.
func TestFailedDeliveriesAndAuditKeysetPages(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 100, 100)
	admin := f.session("admin")
	var ms []store.Match
	f.db.Order("id").Find(&ms)
	for i, m := range ms[:73] {
		at := f.base.Add(time.Duration(i/5) * time.Minute)
		d := store.Delivery{MatchID: m.ID, Channel: "sms", Recipient: "1380000" + fmt.Sprintf("%04d", i), CreditCode: m.CreditCode,
			PolicyID: "p1", State: store.DeliveryDead, Provider: "tencent", Attempts: 3, Items: 1, CreatedAt: at, UpdatedAt: at}
		if err := f.db.Create(&d).Error; err != nil {
			t.Fatal(err)
		}
		if err := f.db.Model(&d).UpdateColumn("updated_at", at).Error; err != nil {
			t.Fatal(err)
		}
	}
	var want []uint64
	f.db.Model(&store.Delivery{}).Order("updated_at DESC, id DESC").Pluck("id", &want)
	if got := flat(f.walk(admin, "/api/v1/deliveries?per_page=10", nil)); !slices.Equal(got, want) {
		t.Fatalf("failed deliveries: %v\nwant %v", got, want)
	}
	if got := flat(f.walk(admin, "/api/v1/deliveries?per_page=73", nil)); !slices.Equal(got, want) {
		t.Fatalf("failed deliveries, one exact page: %v", got)
	}

	for i := range 45 {
		if err := writeAudit(f.db, "someone", "test.row", fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var before []uint64
	f.db.Model(&store.AuditLog{}).Where("action = ?", "test.row").Order("id DESC").Pluck("id", &before)
	got := flat(f.walk(admin, "/api/v1/audit?per_page=9&action=test.", func() {
		_ = writeAudit(f.db, "someone", "test.row", "meanwhile", nil)
	}))
	if !slices.Equal(got, before) {
		t.Fatalf("audit log while it grows: %v\nwant %v", got, before)
	}
}
