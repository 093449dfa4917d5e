package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// TestActiveByCodeWalksThePrimaryKey: a keyset page of active firms in credit-code order is read
// along the primary key, not gathered from ix_enterprise_status_region and sorted (with `status =
// ?` both planners took that index: every page read every active firm; the matcher's load of
// 190,000 firms took 8.7 s instead of 2).
func TestActiveByCodeWalksThePrimaryKey(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	if err := db.CreateInBatches(registry.Synth(3000, 5), 500).Error; err != nil {
		t.Fatal(err)
	}
	table, cond := store.ActiveByCode(db)
	q := "SELECT credit_code, region_code FROM " + table + " WHERE " + cond + " AND credit_code > ? ORDER BY credit_code LIMIT 1000"
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	p := explain(t, sqlDB, db.Dialector.Name(), statement{q, []any{store.StatusActive, ""}})
	all := strings.Join(p.lines, "\n")
	if p.sorted || strings.Contains(all, "filesort") || strings.Contains(all, "USING INDEX ix_enterprise_status_region") || strings.Contains(all, "key=ix_enterprise_status_region") {
		t.Fatalf("the active firms' keyset page is sorted or read by status:\n%s", all)
	}
	if db.Dialector.Name() == "mysql" && !strings.Contains(all, "key=PRIMARY") {
		t.Fatalf("the active firms' keyset page is not read along the primary key:\n%s", all)
	}
}

// A database made before an index replacement (store/indexes.go) gets the new index in place of
// the old one at migrate time; migrating again changes nothing.
func TestMigrateReplacesIndexes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		model      any
		table, now string
		old        map[string]string // name → columns
	}{
		{&store.Enterprise{}, "enterprises", store.EnterpriseParkIndex, map[string]string{"idx_enterprises_park_id": "park_id", "ix_enterprise_park_status": "park_id, status"}},
		{&store.Enterprise{}, "enterprises", store.EnterpriseRegionIndex, map[string]string{"idx_enterprises_region_code": "region_code"}},
		{&store.Match{}, "matches", store.MatchFirmIndex, map[string]string{"idx_matches_credit_code": "credit_code"}},
		{&store.Delivery{}, "deliveries", store.DeliveryFirmIndex, map[string]string{"idx_deliveries_credit_code": "credit_code"}},
	} {
		t.Run(c.now, func(t *testing.T) {
			t.Parallel()
			db := testenv.OpenDB(t).DB
			m := db.Migrator()
			if err := m.DropIndex(c.model, c.now); err != nil {
				t.Fatal(err)
			}
			for name, cols := range c.old {
				if err := db.Exec("CREATE INDEX " + name + " ON " + c.table + " (" + cols + ")").Error; err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if err := store.Migrate(context.Background(), db); err != nil {
					t.Fatal(err)
				}
				for name := range c.old {
					if m.HasIndex(c.model, name) {
						t.Fatalf("after migrate: %s is still there", name)
					}
				}
				if !m.HasIndex(c.model, c.now) {
					t.Fatalf("after migrate: no %s", c.now)
				}
			}
		})
	}
}
