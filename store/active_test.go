package store_test

import (
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
