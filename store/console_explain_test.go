package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// largeTables are the tables that hold millions of rows in a province, by name and by the
// aliases the console's SQL gives them (store/console_*.go: m, e, d, i; counter rows are c and h,
// payout lines l, answers and link opens x, o and r).
var largeTables = map[string]string{"matches": "matches", "m": "matches", "enterprises": "enterprises", "e": "enterprises",
	"deliveries": "deliveries", "d": "deliveries", "delivery_items": "delivery_items", "i": "delivery_items", "outboxes": "outbox",
	"name_grams": "name_grams", "g0": "name_grams", "g1": "name_grams", "g2": "name_grams"}

// probed are the large tables the list reads once per match (the notify state): any scan of them,
// even along an index, multiplies by the matches (the probe's dashboard ran four correlated
// subqueries over an unindexed delivery_items, 559 s on 5,000 firms).
var probed = map[string]bool{"deliveries": true, "delivery_items": true}

// consoleSeed is a database with enough rows for MariaDB's planner to be realistic: 4,000 firms,
// three policies matched by every firm (12,000 active matches and their counts), a delivery with
// its item and events for every twelfth match (1 in 20 failed, as in a province: a planner rightly
// scans a table half of whose rows a filter selects), link opens and answers of a few firms,
// an approved payout batch and outbox rows, mostly published.
type consoleSeed struct {
	db       *gorm.DB
	firms    []store.Enterprise
	firm     string // a firm with a delivery
	delivery uint64
}

func seedConsole(t *testing.T) consoleSeed {
	t.Helper()
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	s := consoleSeed{db: db, firms: registry.Synth(4000, 3)}
	if err := db.CreateInBatches(s.firms, 500).Error; err != nil {
		t.Fatal(err)
	}
	day := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	base := time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)
	for _, id := range []string{"p1", "p2", "p3"} {
		if err := db.Create(&store.Policy{ID: id, Title: "测试政策 " + id, Department: "省人社厅", PublishedVersion: 1}).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&store.PolicyVersion{PolicyID: id, Version: 1, ContentHash: "x", Source: "{}", Title: "测试政策 " + id,
			Department: "省人社厅", EffectiveFrom: day, State: store.VersionPublished}).Error; err != nil {
			t.Fatal(err)
		}
	}
	var ms []store.Match
	for p, id := range []string{"p1", "p2", "p3"} {
		for i, e := range s.firms {
			at := base.Add(time.Duration(p*len(s.firms)+i) * time.Second)
			amount := float64(i%50) * 100
			ms = append(ms, store.Match{PolicyID: id, PolicyVersion: 1, CreditCode: e.CreditCode, State: store.MatchActive,
				Amount: &amount, AsOf: day, MatchedAt: at, UpdatedAt: at})
		}
	}
	if err := db.CreateInBatches(ms, 2000).Error; err != nil {
		t.Fatal(err)
	}
	states := make([]string, 40)
	for i := range states {
		states[i] = store.DeliveryDelivered
	}
	states[7], states[19], states[31] = store.DeliverySent, store.DeliveryDead, store.DeliveryFailed
	var ds []store.Delivery
	for i := 0; i < len(ms); i += 12 {
		m := ms[i]
		ds = append(ds, store.Delivery{MatchID: m.ID, Channel: "sms", Recipient: fmt.Sprintf("138%08d", i), CreditCode: m.CreditCode,
			PolicyID: m.PolicyID, State: states[(i/12)%len(states)], Provider: "tencent", Attempts: 1, Items: 1,
			CreatedAt: m.MatchedAt, UpdatedAt: m.MatchedAt})
	}
	if err := db.CreateInBatches(ds, 2000).Error; err != nil {
		t.Fatal(err)
	}
	var items []store.DeliveryItem
	var events []store.DeliveryEvent
	for _, d := range ds {
		items = append(items, store.DeliveryItem{MatchID: d.MatchID, Channel: "sms", DeliveryID: d.ID, CreditCode: d.CreditCode,
			PolicyID: d.PolicyID, QueuedAt: d.CreatedAt})
		events = append(events, store.DeliveryEvent{DeliveryID: d.ID, Kind: store.EventQueued, At: d.CreatedAt},
			store.DeliveryEvent{DeliveryID: d.ID, Kind: store.EventSent, At: d.CreatedAt})
	}
	for _, rows := range []any{items, events} {
		if err := db.CreateInBatches(rows, 2000).Error; err != nil {
			t.Fatal(err)
		}
	}
	s.firm, s.delivery = ds[5].CreditCode, ds[5].ID
	for i := 0; i < len(ms); i += 40 {
		m := ms[i]
		if err := db.Create(&store.LinkOpen{CreditCode: m.CreditCode, PolicyID: m.PolicyID, FirstAt: m.MatchedAt, LastAt: m.MatchedAt,
			Count: 1}).Error; err != nil {
			t.Fatal(err)
		}
		if i%80 == 0 {
			if err := db.Create(&store.EnterpriseResponse{MatchID: m.ID, CreditCode: m.CreditCode, PolicyID: m.PolicyID,
				PolicyVersion: 1, Kind: store.ResponseConfirm, At: m.MatchedAt}).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	batch := store.PayoutBatch{PolicyID: "p1", Round: 1, State: store.BatchApproved, CreatedBy: "author", CreatedAt: base,
		ApprovedBy: "reviewer", ApprovedAt: &base, AsOf: day}
	if err := db.Create(&batch).Error; err != nil {
		t.Fatal(err)
	}
	var lines []store.PayoutLine
	for i := 0; i < len(s.firms); i += 10 {
		lines = append(lines, store.PayoutLine{BatchID: batch.ID, CreditCode: s.firms[i].CreditCode, PolicyID: "p1", MatchID: ms[i].ID,
			AmountFen: 10000, State: []string{store.LinePending, store.LinePaid, store.LineFailed}[i%3], UpdatedAt: base})
	}
	if err := db.CreateInBatches(lines, 500).Error; err != nil {
		t.Fatal(err)
	}
	var outbox []store.Outbox
	for i := range 3000 {
		o := store.Outbox{Subject: "pp.notice", Payload: []byte("{}"), CreatedAt: base, Notices: 1}
		if i%100 != 0 {
			o.PublishedAt = &base
		}
		outbox = append(outbox, o)
	}
	if err := db.CreateInBatches(outbox, 1000).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.Recount(ctx, db, true); err != nil {
		t.Fatal(err)
	}
	if db.Dialector.Name() == "mysql" {
		for _, tbl := range []string{"matches", "enterprises", "deliveries", "delivery_items", "delivery_events", "link_opens",
			"enterprise_responses", "policies", "policy_versions", "match_counts", "match_hours", "payout_lines", "payout_batches", "outbox"} {
			if err := db.Exec("ANALYZE TABLE " + tbl).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// statement is one SQL statement a store function ran.
type statement struct {
	sql  string
	vars []any
}

// recorder keeps the SELECTs run through a database while it is on.
type recorder struct {
	mu   sync.Mutex
	on   bool
	seen []statement
}

func record(t *testing.T, db *gorm.DB) *recorder {
	t.Helper()
	r := &recorder{}
	keep := func(tx *gorm.DB) {
		r.mu.Lock()
		defer r.mu.Unlock()
		// DryRun: a subquery built into another statement (the parts of a place merge), which is
		// explained as a whole
		if sqlText := tx.Statement.SQL.String(); r.on && !tx.DryRun && strings.HasPrefix(strings.ToUpper(strings.TrimSpace(sqlText)), "SELECT") {
			r.seen = append(r.seen, statement{sqlText, append([]any(nil), tx.Statement.Vars...)})
		}
	}
	if err := db.Callback().Query().After("gorm:query").Register("test:record", keep); err != nil {
		t.Fatal(err)
	}
	if err := db.Callback().Row().After("gorm:row").Register("test:record", keep); err != nil {
		t.Fatal(err)
	}
	return r
}

// during runs f and returns the SELECTs it ran.
func (r *recorder) during(f func() error) ([]statement, error) {
	r.mu.Lock()
	r.on, r.seen = true, nil
	r.mu.Unlock()
	err := f()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.seen, err
}

// plan is a statement's query plan: one line per step, and the large tables it reads in full.
type plan struct {
	lines []string
	full  []string
	// sorted: SQLite sorts rows for ORDER BY instead of reading them in index order
	sorted bool
	// first is the alias of the table the plan reads first
	first string
}

// explain asks the database for a statement's plan. A full scan is, on MySQL, an access of type
// ALL (the table) or index (a whole index, the primary key included); on SQLite, a SCAN of a large
// table without an index, any SCAN of a table probed per match, or a SCAN along the region index.
func explain(t *testing.T, sqlDB *sql.DB, driver string, st statement) plan {
	t.Helper()
	var p plan
	if driver == "sqlite" {
		rows, err := sqlDB.Query("EXPLAIN QUERY PLAN "+st.sql, st.vars...)
		if err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN %s: %v", st.sql, err)
		}
		defer rows.Close()
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			p.lines = append(p.lines, detail)
			if f := strings.Fields(detail); p.first == "" && len(f) > 1 && (f[0] == "SCAN" || f[0] == "SEARCH") {
				p.first = f[1]
			}
			// matches by state alone inside a join: every active match, once per outer row
			if len(p.lines) > 1 && parent == 0 && strings.Contains(detail, "ix_match_recent (state=?)") {
				p.full = append(p.full, "matches")
			}
			p.sorted = p.sorted || strings.Contains(detail, "USE TEMP B-TREE FOR ORDER BY")
			f := strings.Fields(detail)
			if len(f) < 2 || f[0] != "SCAN" {
				continue
			}
			// a walk along the region index is a city's LIKE read as a scan of every firm's code
			// instead of a range (store.WherePrefix)
			if table := largeTables[f[1]]; table != "" && (len(f) == 2 || probed[table] || strings.Contains(detail, store.EnterpriseRegionIndex)) {
				p.full = append(p.full, table)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rows, err := sqlDB.Query("EXPLAIN "+st.sql, st.vars...)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", st.sql, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
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
		p.lines = append(p.lines, strings.Join(line, " "))
		if p.first == "" {
			p.first = row["table"]
		}
		if table := largeTables[row["table"]]; (row["type"] == "ALL" || row["type"] == "index") && table != "" {
			p.full = append(p.full, table)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConsoleQueriesUseIndexes runs every read of the console's store functions (the
// matched-firms list with its count, pages, jumps, rows, size inputs and export; the firm page;
// the dashboard; the failed-delivery log; the enterprise page; policy, account and sign-in reads)
// in each kind of scope, records every SELECT they run, asks the database for its plan (on SQLite
// and, with POLICYPUSH_TEST_MYSQL_DSN, on MariaDB), and fails on any plan that reads
// matches, enterprises, deliveries, delivery_items or the outbox in full. The unscoped list walks
// ix_match_recent instead of sorting every match (SQLite). POLICYPUSH_TEST_SHOW_PLANS=1 logs them.
func TestConsoleQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := seedConsole(t)
	db := s.db
	driver := db.Dialector.Name()
	t.Logf("seeded in %v", time.Since(start))
	rec := record(t, db)
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code := s.firms[17].CreditCode
	failed := []string{store.DeliveryDead, store.DeliveryFailed, store.DeliveryUndelivered, store.DeliveryUnknown}

	type check struct {
		name string
		run  func(sc store.FirmScope) error
		// walks: the statements read a page along an index, so SQLite must not sort (unscoped only:
		// a park's or region's matches come through the firms' index and are sorted, a few)
		walks bool
		// whole: the statements read every match the filter selects and its firm (an export, the
		// size filter's inputs, the funnel's notified and delivered counts). In the province that is
		// a third or all of the matches and firms: reading matches and enterprises in full is then
		// the plan (on MariaDB faster than walking an index with a primary-key lookup per row;
		// docs/console.md, Exports). In a park or region it is a full scan like any other.
		whole bool
		// keys: a park's or a city's pages (on MySQL, which has no ix_match_recent, the
		// province's too) read the keys of their matches along ix_match_place, each place's
		// newest first (store.MatchKeys merges them), from the index alone on SQLite (checked on
		// its plan's wording), never sorting the scope's matches
		keys bool
		// onePlace: in a park (one place: region code and park) the statements read its matches
		// along ix_match_place, in list order, with no sort (a park's export streams from its
		// first row; MariaDB had read every policy's matches along ux_match for it, then sorted
		// the park's after starting from its firms)
		onePlace bool
	}
	// the name index's pairs, as if its pass had begun after the seed (no firm recent)
	indexedAt := time.Now().Add(2 * time.Minute)
	if _, err := store.IndexNamesAt(ctx, db, indexedAt); err != nil {
		t.Fatal(err)
	}
	var checks []check
	for name, f := range map[string]store.MatchFilter{"all": {}, "policy": {PolicyID: "p2"}, "notify": {Notify: "sent"},
		"pending of a policy": {Notify: "pending", PolicyID: "p1"}, "code prefix": {CodePrefix: code[:8]},
		"code": {CreditCode: code}, "industry": {Industry: "C"}, "no answer": {Response: "none"}, "region": {Region: "3205"},
		"park": {ParkID: "SIP"}, "name": {Text: "科技"}, "named firms": {Text: s.firms[17].Name},
		"named firms of a policy": {Text: s.firms[17].Name, PolicyID: "p1"}, "indexed firms": {Text: s.firms[17].Name},
		"indexed firms of a policy": {Text: s.firms[17].Name, PolicyID: "p1"}} {
		listed := name == "all" || name == "policy" || name == "notify"
		// "named firms": the console resolves a name to its firms first (store.FirmsNamed),
		// walking ix_enterprise_name before the name index has had a pass; "indexed firms"
		// after one (namegrams.go)
		indexed := strings.HasPrefix(name, "indexed")
		named := strings.HasPrefix(name, "named") || indexed
		scoped := func(sc store.FirmScope) (store.MatchFilter, error) {
			f := f
			f.Scope = sc
			if !named {
				return f, nil
			}
			at := time.Time{}
			if indexed {
				at = indexedAt
			}
			if err := store.SetNameIndexAt(db, at); err != nil {
				return f, err
			}
			r, err := store.FirmsNamed(ctx, db, f)
			if err == nil && r.Firms == nil {
				err = fmt.Errorf("%q names more than %d firms", f.Text, store.NameSearchFirms)
			}
			return r, err
		}
		checks = append(checks,
			check{name: "matches count " + name, run: func(sc store.FirmScope) error {
				f, err := scoped(sc)
				if err != nil {
					return err
				}
				_, err = store.CountMatches(ctx, db, f, store.CountCap)
				return err
			}},
			check{name: "matches pages " + name, run: func(sc store.FirmScope) error {
				f, err := scoped(sc)
				if err != nil {
					return err
				}
				first, err := store.MatchKeys(ctx, db, f, store.Page{Page: 1, PerPage: 50})
				if err != nil || len(first.Keys) == 0 {
					return err
				}
				last := first.Keys[len(first.Keys)-1]
				next, err := store.MatchKeys(ctx, db, f, store.Page{Page: 2, PerPage: 50, After: &last})
				if err != nil || len(next.Keys) == 0 {
					return err
				}
				_, err = store.MatchKeys(ctx, db, f, store.Page{Page: 1, PerPage: 50, Before: &next.Keys[0]})
				return err
			}, walks: listed, keys: f.PolicyID == "" && f.CreditCode == "" && f.CodePrefix == "" && f.Text == ""},
			check{name: "matches jump " + name, run: func(sc store.FirmScope) error {
				f, err := scoped(sc)
				if err != nil {
					return err
				}
				w, err := store.MatchKeys(ctx, db, f, store.Page{Page: 3, PerPage: 50})
				if err != nil {
					return err
				}
				_, err = store.MatchRows(ctx, db, f, w.IDs())
				return err
			}},
		)
		if named {
			checks = append(checks, check{name: "matches export " + name, run: func(sc store.FirmScope) error {
				f, err := scoped(sc)
				if err != nil {
					return err
				}
				rows, err := store.MatchExportQuery(ctx, db, f).Rows()
				if err != nil {
					return err
				}
				return rows.Close()
			}})
		}
	}
	checks = append(checks,
		check{name: "matches size inputs", run: func(sc store.FirmScope) error {
			_, err := store.MatchSizeInputs(ctx, db, store.MatchFilter{Scope: sc, PolicyID: "p1"}, 200000)
			return err
		}, whole: true},
		check{name: "matches export", run: func(sc store.FirmScope) error {
			rows, err := store.MatchExportQuery(ctx, db, store.MatchFilter{Scope: sc, Notify: "delivered"}).Rows()
			if err != nil {
				return err
			}
			return rows.Close()
		}, whole: true, onePlace: true},
		check{name: "firm page", run: func(store.FirmScope) error {
			if _, err := store.FirmByCode(ctx, db, s.firm); err != nil {
				return err
			}
			_, err := store.ReadFirmHistory(ctx, db, s.firm)
			return err
		}},
		check{name: "enterprise page", run: func(store.FirmScope) error {
			if _, err := store.EnterpriseMatches(ctx, db, s.firm, "p2"); err != nil {
				return err
			}
			_, err := store.ActiveMatchOf(ctx, db, s.firm, "p1")
			return err
		}},
		check{name: "evaluation date", run: func(store.FirmScope) error {
			_, _, err := store.LatestMatchAsOf(ctx, db)
			return err
		}},
		// the status reads maintained counts (firms, matches, deliveries) besides the policies
		// and, unscoped, the pending outbox
		check{name: "status", run: func(sc store.FirmScope) error {
			_, err := store.ReadStatus(ctx, db, time.Now(), sc)
			return err
		}},
		check{name: "pending outbox", run: func(store.FirmScope) error {
			_, err := store.PendingOutbox(ctx, db)
			return err
		}},
		check{name: "policy reads", run: func(store.FirmScope) error {
			for _, read := range []func() error{
				func() error { _, err := store.PolicyLibrary(ctx, db); return err },
				func() error { _, err := store.ReviewQueue(ctx, db); return err },
				func() error { _, err := store.PolicyTitles(ctx, db, store.PoliciesInForce); return err },
				func() error { _, err := store.DepartmentPolicies(ctx, db, "省人社厅"); return err },
				func() error { _, err := store.VersionsOf(ctx, db, "p1"); return err },
				func() error { _, err := store.ReviewsOf(ctx, db, "p1", 1); return err },
			} {
				if err := read(); err != nil {
					return err
				}
			}
			return nil
		}},
		check{name: "failed deliveries", run: func(sc store.FirmScope) error {
			for _, f := range []store.FailedDeliveryFilter{{Scope: sc, States: failed}, {Scope: sc, States: failed[:1], Channel: "sms"}} {
				if _, err := store.CountFailedDeliveries(ctx, db, f, store.CountCap); err != nil {
					return err
				}
				w, err := store.FailedDeliveryKeys(ctx, db, f, store.Page{Page: 1, PerPage: 5})
				if err != nil || len(w.Keys) == 0 {
					return err
				}
				if _, err := store.FailedDeliveryKeys(ctx, db, f, store.Page{Page: 2, PerPage: 5, After: &w.Keys[len(w.Keys)-1]}); err != nil {
					return err
				}
			}
			return nil
		}},
	)
	for _, policy := range []string{"", "p1"} {
		checks = append(checks, check{name: "dashboard funnel " + policy, run: func(sc store.FirmScope) error {
			_, err := store.ReadFunnelStages(ctx, db, store.DashboardFilter{Scope: sc, PolicyID: policy})
			return err
		}, whole: true})
		checks = append(checks, check{name: "dashboard figures " + policy, run: func(sc store.FirmScope) error {
			f := store.DashboardFilter{Scope: sc, PolicyID: policy}
			if _, err := store.ActiveMatchTotal(ctx, db, f); err != nil {
				return err
			}
			for _, by := range []store.GroupBy{store.ByPolicy, store.ByCity, store.ByPark} {
				if _, err := store.ActiveMatchGroups(ctx, db, f, by); err != nil {
					return err
				}
			}
			if _, err := store.ActiveMatchHours(ctx, db, f); err != nil {
				return err
			}
			if _, err := store.DeadDeliveries(ctx, db, f); err != nil {
				return err
			}
			if _, err := store.PayoutTotals(ctx, db, f); err != nil {
				return err
			}
			for _, by := range []store.GroupBy{store.ByCity, store.ByPark} {
				if _, err := store.PayoutGroups(ctx, db, f, by); err != nil {
					return err
				}
			}
			return nil
		}})
	}

	show := os.Getenv("POLICYPUSH_TEST_SHOW_PLANS") != ""
	explained := 0
	for _, sc := range []store.FirmScope{{}, {ParkID: "SIP"}, {RegionPrefix: "3205"}} {
		for _, c := range checks {
			stmts, err := rec.during(func() error { return c.run(sc) })
			if err != nil {
				t.Fatalf("%s in scope %+v: %v", c.name, sc, err)
			}
			if len(stmts) == 0 {
				t.Fatalf("%s in scope %+v ran no SELECT", c.name, sc)
			}
			for _, st := range stmts {
				p := explain(t, sqlDB, driver, st)
				explained++
				text := strings.Join(p.lines, "\n")
				if show {
					t.Logf("%s in scope %+v:\n%s\n%s", c.name, sc, st.sql, text)
				}
				full := p.full
				if strings.Contains(text, store.EnterpriseNameIndex) && (strings.Contains(text, "COVERING INDEX") || strings.Contains(text, "Using index")) {
					// a name search reads every firm's name, from the name index alone (FirmsNamed)
					full = slices.DeleteFunc(full, func(table string) bool { return table == "enterprises" })
				}
				if c.whole && sc.All() {
					full = slices.DeleteFunc(full, func(table string) bool { return table == "matches" || table == "enterprises" })
				}
				if sc.All() && driver == "mysql" && strings.Contains(st.sql, ") AS capped") {
					// a capped count of the province's matches with a condition on each row (its
					// firm's industry or name, its answer): MySQL has no ix_match_recent, so it
					// reads matches in key order instead of that index's, and either way stops at
					// the CountCap+1st row that passes (every row only when fewer pass)
					full = slices.DeleteFunc(full, func(table string) bool { return table == "matches" })
				}
				if len(full) > 0 {
					t.Errorf("%s in scope %+v reads %v in full:\n%s\n%s", c.name, sc, full, st.sql, text)
				}
				if c.onePlace && sc.ParkID != "" && strings.Contains(st.sql, "FROM matches") &&
					(!strings.Contains(text, store.MatchPlaceIndex) || p.sorted || strings.Contains(text, "filesort")) {
					t.Errorf("%s in a park does not read its place along %s in order:\n%s\n%s", c.name, store.MatchPlaceIndex, st.sql, text)
				}
				if c.keys && (!sc.All() || driver == "mysql") && strings.Contains(st.sql, "FROM matches") {
					want := store.MatchPlaceIndex
					if driver == "sqlite" && !strings.Contains(st.sql, "JOIN enterprises") && !strings.Contains(st.sql, "m.reached") &&
						!strings.Contains(st.sql, "enterprise_responses") { // filters that read the row
						want = "COVERING INDEX " + want
					}
					if !strings.Contains(text, want) {
						t.Errorf("%s in scope %+v does not walk %s for a page's keys:\n%s\n%s", c.name, sc, want, st.sql, text)
					}
				}
				if c.walks && sc.All() && p.sorted {
					t.Errorf("%s: the unscoped list sorts every match instead of walking ix_match_recent:\n%s\n%s", c.name, st.sql, text)
				}
			}
		}
	}
	checkReachOfNewReadsItemsByFirm(t, s, rec)
	t.Logf("%d statements explained on %s; whole test %v", explained, driver, time.Since(start))
}

// TestNameSearchThroughTheNamedFirms: a name search of the province or a city resolved to the
// firms it names (store.FirmsNamed) lists and counts the same matches, page by page, as the search
// that looks at every match's firm; a text more firms' names hold than NameSearchFirms, and a
// park's search, are left to that search.
func TestNameSearchThroughTheNamedFirms(t *testing.T) {
	t.Parallel()
	s := seedConsole(t)
	ctx := context.Background()
	keys := func(f store.MatchFilter) []store.Cursor {
		t.Helper()
		var all []store.Cursor
		per := 7 // pages of a few rows, but the common text's thousands of matches a thousand at a time
		if f.Text == "有限公司" {
			per = 1000
		}
		p := store.Page{Page: 1, PerPage: per}
		for {
			w, err := store.MatchKeys(ctx, s.db, f, p)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, w.Keys...)
			if len(w.Keys) < p.PerPage {
				return all
			}
			last := w.Keys[len(w.Keys)-1]
			p = store.Page{Page: 1, PerPage: per, After: &last}
		}
	}
	name := []rune(s.firms[17].Name)
	resolved := 0
	// indexed: the name index has had a pass since the seed, so every search of a text holding
	// Han pairs must be answered by it
	search := func(indexed bool) {
		t.Helper()
		for _, text := range []string{s.firms[17].Name, string(name[len(name)-6 : len(name)-2]), "没有这样的企业", strings.ToLower(s.firms[5].CreditCode[:14]), "有限公司"} {
			for _, f := range []store.MatchFilter{{Text: text}, {Text: text, Scope: store.FirmScope{RegionPrefix: "3205"}}, {Text: text, Region: "32"},
				{Text: text, PolicyID: "p2"}, {Text: text, Scope: store.FirmScope{ParkID: "SIP"}}} {
				named, err := store.FirmsNamed(ctx, s.db, f)
				if err != nil {
					t.Fatal(err)
				}
				byGrams, ok, err := store.FirmsByGrams(ctx, s.db, f)
				if err != nil {
					t.Fatal(err)
				}
				if hanPairs := len(store.NameGrams(text)) > 0; ok != (indexed && hanPairs) {
					t.Fatalf("%+v: answered by the name index %v, want %v", f, ok, indexed && hanPairs)
				}
				if ok && !slices.Equal(byGrams, named.Firms) {
					t.Fatalf("%+v: the name index names %d firms, the search %d", f, len(byGrams), len(named.Firms))
				}
				switch {
				case named.Firms != nil:
					resolved++
				case text != "有限公司":
					t.Fatalf("%+v: not resolved to its firms", f)
				}
				if text == "有限公司" && f.Scope.All() && f.Region == "" && named.Firms != nil {
					t.Fatalf("%+v: resolved to %d firms, more than the %d a search looks up", f, len(named.Firms), store.NameSearchFirms)
				}
				want, got := keys(f), keys(named)
				if !slices.Equal(got, want) {
					t.Fatalf("%+v: %d keys through the named firms, %d looking at each match's firm", f, len(got), len(want))
				}
				n, err := store.CountMatches(ctx, s.db, f, store.CountCap)
				if err != nil {
					t.Fatal(err)
				}
				m, err := store.CountMatches(ctx, s.db, named, store.CountCap)
				if err != nil {
					t.Fatal(err)
				}
				if n != m || int(n) != len(want) {
					t.Fatalf("%+v: count %d through the named firms, %d otherwise, %d listed", f, m, n, len(want))
				}
				if text == s.firms[17].Name && f.Scope.All() && f.Region == "" && len(want) == 0 {
					t.Fatalf("%+v: the firm's own name lists nothing", f)
				}
			}
		}
	}
	search(false)
	if resolved < 20 {
		t.Fatalf("%d searches resolved to their firms, want at least 20", resolved)
	}

	// the name index's first pass, as if it had begun two minutes after the seed: no firm is
	// then recent, and the searches read the pairs alone
	later := time.Now().Add(2 * time.Minute)
	pass, err := store.IndexNamesWalking(ctx, s.db, later)
	if err != nil {
		t.Fatal(err)
	}
	if pass.Read != len(s.firms) || pass.Changed != len(s.firms) {
		t.Fatalf("first pass read %d and indexed %d names of %d firms", pass.Read, pass.Changed, len(s.firms))
	}
	resolved = 0
	search(true)
	if resolved < 20 {
		t.Fatalf("%d searches resolved to their firms through the name index, want at least 20", resolved)
	}

	// a firm renamed after that pass is found by its new name (it is recent) and no longer by
	// its old one (its old pairs are checked against its name); the next pass moves its pairs
	renamed := s.firms[17]
	fresh := "苏州市吴中区翠微琉璃工艺品有限公司"
	if err := s.db.Model(&store.Enterprise{}).Where("credit_code = ?", renamed.CreditCode).
		Updates(map[string]any{"name": fresh, "updated_at": later.Add(2*time.Minute + 500*time.Millisecond)}).Error; err != nil {
		t.Fatal(err)
	}
	find := func(text string) []string {
		t.Helper()
		codes, ok, err := store.FirmsByGrams(ctx, s.db, store.MatchFilter{Text: text})
		if err != nil || !ok {
			t.Fatalf("search %q through the name index: ok %v, %v", text, ok, err)
		}
		return codes
	}
	for round := range 2 {
		if got := find("翠微琉璃"); !slices.Equal(got, []string{renamed.CreditCode}) {
			t.Fatalf("round %d: the new name finds %v", round, got)
		}
		if got := find(renamed.Name); len(got) != 0 {
			t.Fatalf("round %d: the old name still finds %v", round, got)
		}
		if round == 0 {
			pass, err := store.IndexNamesAt(ctx, s.db, later.Add(3*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if pass.Changed != 1 {
				t.Fatalf("second pass indexed %d names, want the renamed firm's", pass.Changed)
			}
		}
	}
	var pairs int64
	if err := s.db.Model(&store.NameGram{}).Where("credit_code = ?", renamed.CreditCode).Count(&pairs).Error; err != nil {
		t.Fatal(err)
	}
	if want := len(store.NameGrams(fresh)); int(pairs) != want {
		t.Fatalf("the renamed firm has %d pairs in the index, want the %d of its new name", pairs, want)
	}
	// a pass reads again the firms updated within the margin before the last pass began (the
	// renamed one) and writes nothing for them; with nothing changed since, it reads nothing
	for i, want := range []int{1, 0} {
		if pass, err := store.IndexNamesAt(ctx, s.db, later.Add(time.Duration(10+10*i)*time.Minute)); err != nil || pass.Changed != 0 || pass.Read != want {
			t.Fatalf("idle pass %d: %+v (want %d read), %v", i, pass, want, err)
		}
	}
	// walking every firm finds the same as reading the updated ones: from the pass after the
	// rename, only the renamed firm
	if err := store.SetNameIndexAt(s.db, later.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if pass, err := store.IndexNamesWalking(ctx, s.db, later.Add(30*time.Minute)); err != nil || pass.Changed != 0 || pass.Read != 1 {
		t.Fatalf("walking pass: %+v (want 1 read), %v", pass, err)
	}
}

// checkReachOfNewReadsItemsByFirm: the reach of new matches is read from the firms' delivery
// items (ix_item_firm_policy) and each item's delivery by its key, never from the deliveries by
// state (SQLite's own choice: every sent or delivered delivery per query; a full match of 200,000
// firms beside 236,086 delivered notices wrote for 549 s instead of 16).
// Run by TestConsoleQueriesUseIndexes on its seed (deliveries sent and delivered).
func checkReachOfNewReadsItemsByFirm(t *testing.T, s consoleSeed, rec *recorder) {
	t.Helper()
	db := s.db
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	var ms []store.Match
	for i, f := range s.firms[:40] {
		ms = append(ms, store.Match{ID: uint64(1_000_000 + i), PolicyID: "p1", PolicyVersion: 1, CreditCode: f.CreditCode})
	}
	rollback := errors.New("roll back")
	stmts, err := rec.during(func() error {
		return db.Transaction(func(tx *gorm.DB) error {
			if err := store.ReachOfNew(tx, ms); err != nil {
				return err
			}
			return rollback
		})
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	found := false
	for _, st := range stmts {
		if !strings.Contains(st.sql, "JOIN deliveries") {
			continue
		}
		found = true
		p := explain(t, sqlDB, db.Dialector.Name(), st)
		if p.first != "i" || !strings.Contains(strings.Join(p.lines, "\n"), "ix_item_firm_policy") {
			t.Fatalf("the reach of new matches is not read from the firms' items first:\n%s\n%s", st.sql, strings.Join(p.lines, "\n"))
		}
	}
	if !found {
		t.Fatalf("ReachOfNew ran no read of the delivery items beside delivered notices: %v", stmts)
	}
}
