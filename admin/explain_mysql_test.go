package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// largeTables are the tables that hold millions of rows in a province, by name and by the
// aliases the console's SQL gives them.
var largeTables = map[string]string{"matches": "matches", "m": "matches", "enterprises": "enterprises", "e": "enterprises",
	"deliveries": "deliveries", "d": "deliveries", "delivery_items": "delivery_items", "i": "delivery_items"}

// TestConsoleQueriesUseIndexesOnMySQL is the MariaDB counterpart of
// TestConsoleMatchQueriesUseIndexes: it seeds enough rows for the planner to be realistic
// (4,000 firms, 12,000 matches, 1,000 deliveries and items, ANALYZE TABLE), drives the list
// (every role, first and later pages, filters), the firm page and the failed-delivery log through
// the API, records every SELECT they run, and fails on any plan that reads a large table in full
// (EXPLAIN type=ALL).
func TestConsoleQueriesUseIndexesOnMySQL(t *testing.T) {
	t.Parallel()
	f := newListFixture(t, 4000, 0)
	if f.db.Dialector.Name() != "mysql" {
		t.Skip("MariaDB plans; SQLite's are checked by TestConsoleMatchQueriesUseIndexes")
	}
	start := time.Now()
	db := f.db
	day := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"p2", "p3"} {
		if err := db.Create(&store.Policy{ID: id, Title: "测试政策 " + id, PublishedVersion: 1}).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&store.PolicyVersion{PolicyID: id, Version: 1, ContentHash: "x", Source: "{}", Title: "测试政策 " + id,
			EffectiveFrom: day, State: store.VersionPublished}).Error; err != nil {
			t.Fatal(err)
		}
	}
	var ms []store.Match
	for p, id := range []string{"p1", "p2", "p3"} {
		for i, e := range f.firms {
			at := f.base.Add(time.Duration(p*len(f.firms)+i) * time.Second)
			ms = append(ms, store.Match{PolicyID: id, PolicyVersion: 1, CreditCode: e.CreditCode, State: store.MatchActive,
				AsOf: day, MatchedAt: at, UpdatedAt: at})
		}
	}
	if err := db.CreateInBatches(ms, 2000).Error; err != nil {
		t.Fatal(err)
	}
	var ds []store.Delivery
	var items []store.DeliveryItem
	// most messages arrive; few fail, as in a province (a planner rightly scans a table
	// half of whose rows a filter selects): 1 in 20 here
	states := make([]string, 40)
	for i := range states {
		states[i] = store.DeliveryDelivered
	}
	states[7], states[19], states[31] = store.DeliverySent, store.DeliveryDead, store.DeliveryFailed
	for i := 0; i < len(ms); i += 12 {
		m := ms[i]
		ds = append(ds, store.Delivery{MatchID: m.ID, Channel: "sms", Recipient: fmt.Sprintf("138%08d", i), CreditCode: m.CreditCode,
			PolicyID: m.PolicyID, State: states[(i/12)%len(states)], Provider: "tencent", Attempts: 1, Items: 1, CreatedAt: m.MatchedAt, UpdatedAt: m.MatchedAt})
	}
	if err := db.CreateInBatches(ds, 2000).Error; err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		items = append(items, store.DeliveryItem{MatchID: d.MatchID, Channel: "sms", DeliveryID: d.ID, CreditCode: d.CreditCode,
			PolicyID: d.PolicyID, QueuedAt: d.CreatedAt})
	}
	if err := db.CreateInBatches(items, 2000).Error; err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"matches", "enterprises", "deliveries", "delivery_items", "policies", "policy_versions"} {
		if err := db.Exec("ANALYZE TABLE " + tbl).Error; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seeded in %v", time.Since(start))

	// Record every SELECT the requests run.
	type stmt struct {
		sql  string
		vars []any
	}
	var mu sync.Mutex
	var seen []stmt
	var on bool
	record := func(tx *gorm.DB) {
		mu.Lock()
		defer mu.Unlock()
		if on && strings.HasPrefix(strings.TrimSpace(strings.ToUpper(tx.Statement.SQL.String())), "SELECT") {
			seen = append(seen, stmt{tx.Statement.SQL.String(), append([]any(nil), tx.Statement.Vars...)})
		}
	}
	if err := db.Callback().Query().After("gorm:query").Register("test:record", record); err != nil {
		t.Fatal(err)
	}
	if err := db.Callback().Row().After("gorm:row").Register("test:record", record); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&store.User{Username: "park_sip", Role: store.RolePark, ParkID: "SIP", PasswordHash: "x"}).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&store.User{Username: "region_3205", Role: store.RoleDistrict, RegionPrefix: "3205", PasswordHash: "x"}).Error; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	on = true
	mu.Unlock()
	get := func(c caller, path string) gotPage { // a timeout is reported, and the plans still checked
		res := f.do(c, http.MethodGet, path, nil)
		var p gotPage
		if res.status != http.StatusOK {
			t.Errorf("GET %s as %s: %d %s", path, c.name, res.status, res.body)
			return p
		}
		res.json(t, &p)
		return p
	}
	firm := f.firms[17].CreditCode
	for _, user := range []string{"admin", "park_sip", "region_3205"} {
		c := f.session(user)
		for _, q := range []string{"", "policy_id=p2", "notify=sent", "notify=pending&policy_id=p1", "q=" + firm[:8]} {
			p := get(c, "/api/v1/matches?"+q)
			if p.NextCursor != "" {
				get(c, "/api/v1/matches?"+q+"&after="+url.QueryEscape(p.NextCursor))
			}
			if user == "admin" {
				get(c, "/api/v1/matches?page=3&"+q)
			}
		}
		p := get(c, "/api/v1/deliveries")
		if p.NextCursor != "" {
			get(c, "/api/v1/deliveries?after="+url.QueryEscape(p.NextCursor))
		}
		get(c, "/api/v1/deliveries?state=dead&channel=sms")
	}
	admin := f.session("admin")
	if res := f.do(admin, http.MethodGet, "/api/v1/firms/"+firm, nil); res.status != http.StatusOK {
		t.Fatalf("firm page: %d %s", res.status, res.body)
	}
	mu.Lock()
	on = false
	stmts := seen
	mu.Unlock()

	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]bool{}
	for _, s := range stmts {
		if checked[s.sql] {
			continue
		}
		checked[s.sql] = true
		rows, err := sqlDB.Query("EXPLAIN "+s.sql, s.vars...)
		if err != nil {
			t.Fatalf("EXPLAIN %s: %v", s.sql, err)
		}
		cols, _ := rows.Columns()
		var plan []string
		var bad []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := map[string]string{}
			var line []string
			for i, c := range cols {
				v := vals[i]
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				row[c] = fmt.Sprint(v)
				line = append(line, c+"="+row[c])
			}
			plan = append(plan, strings.Join(line, " "))
			if row["type"] == "ALL" && largeTables[row["table"]] != "" {
				bad = append(bad, largeTables[row["table"]])
			}
		}
		rows.Close()
		if os.Getenv("POLICYPUSH_TEST_SHOW_PLANS") != "" {
			t.Logf("%s\n%s", s.sql, strings.Join(plan, "\n"))
		}
		if len(bad) > 0 {
			t.Errorf("full scan of %v:\n%s\n%s", bad, s.sql, strings.Join(plan, "\n"))
		}
	}
	if len(checked) < 10 {
		t.Fatalf("only %d distinct statements recorded", len(checked))
	}
	t.Logf("%d distinct statements explained; whole test %v", len(checked), time.Since(start))
}
