package admin

import (
	"context"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// The console's match queries use indexes for every table they reach per match: the plan never
// scans delivery_items, link_opens or enterprise_responses (the probe's dashboard ran four
// correlated subqueries over an unindexed delivery_items, 559 s on 5,000 firms), and the newest-
// first list walks the matches index instead of sorting every match in scope. SQLite only: its
// plans do not depend on table statistics; MySQL's do, and on a test database's few rows it
// rightly prefers scans.
func TestConsoleMatchQueriesUseIndexes(t *testing.T) {
	tdb := testenv.OpenDB(t)
	if tdb.Driver != "sqlite" {
		t.Skip("plans are checked on SQLite, whose planner does not depend on statistics")
	}
	ctx := context.Background()
	for _, p := range []*Principal{
		{Name: "admin", Role: store.RoleAdmin},
		{Name: "park", Role: store.RolePark, ParkID: "SIP"},
		{Name: "district", Role: store.RoleDistrict, RegionPrefix: "3205"},
	} {
		for name, f := range map[string]matchFilter{"all": {}, "notify": {Notify: "sent"}, "policy": {PolicyID: "wengang-fanhuan-2022"}} {
			t.Run(p.Name+"/"+name, func(t *testing.T) {
				q := store.MatchExportQuery(ctx, tdb.DB, f.storeFilter(p)).Limit(50)
				stmt := q.Session(&gorm.Session{DryRun: true}).Scan(&[]store.MatchRow{}).Statement
				var plan []struct {
					ID, Parent, Notused int
					Detail              string
				}
				if err := tdb.DB.Raw("EXPLAIN QUERY PLAN "+stmt.SQL.String(), stmt.Vars...).Scan(&plan).Error; err != nil {
					t.Fatal(err)
				}
				var lines []string
				for _, row := range plan {
					lines = append(lines, row.Detail)
				}
				text := strings.Join(lines, "\n")
				for _, l := range lines { // the subqueries' aliases: i delivery_items, d deliveries, o link_opens, r enterprise_responses
					for _, alias := range []string{"i", "d", "o", "r"} {
						if l == "SCAN "+alias || strings.HasPrefix(l, "SCAN "+alias+" ") {
							t.Fatalf("a full scan per match (%s):\n%s", l, text)
						}
					}
				}
				if strings.Contains(text, "USE TEMP B-TREE FOR ORDER BY") && p.ParkID == "" && p.RegionPrefix == "" {
					t.Fatalf("the unscoped list sorts every match instead of walking ix_match_recent:\n%s", text)
				}
			})
		}
	}
}
