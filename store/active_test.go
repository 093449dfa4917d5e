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

// A database made when the park index was (park_id) gets (park_id, status) in its place at
// migrate time; migrating again changes nothing.
func TestMigrateReplacesTheParkIndex(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	m := db.Migrator()
	if err := m.DropIndex(&store.Enterprise{}, "ix_enterprise_park_status"); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("CREATE INDEX idx_enterprises_park_id ON enterprises (park_id)").Error; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := store.Migrate(context.Background(), db); err != nil {
			t.Fatal(err)
		}
		if m.HasIndex(&store.Enterprise{}, "idx_enterprises_park_id") || !m.HasIndex(&store.Enterprise{}, "ix_enterprise_park_status") {
			t.Fatalf("after migrate: old index %v, new index %v", m.HasIndex(&store.Enterprise{}, "idx_enterprises_park_id"),
				m.HasIndex(&store.Enterprise{}, "ix_enterprise_park_status"))
		}
	}
}
