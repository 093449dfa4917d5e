package store_test

import (
	"fmt"
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
	explain := "EXPLAIN QUERY PLAN "
	if db.Dialector.Name() == "mysql" {
		explain = "EXPLAIN "
	}
	rows, err := sqlDB.Query(explain+q, store.StatusActive, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var plan []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var line []string
		for i, c := range cols {
			v := vals[i]
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			line = append(line, c+"="+fmt.Sprint(v))
		}
		plan = append(plan, strings.Join(line, " "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(plan, "\n")
	if strings.Contains(all, "TEMP B-TREE") || strings.Contains(all, "filesort") || strings.Contains(all, "USING INDEX ix_enterprise_status_region") || strings.Contains(all, "key=ix_enterprise_status_region") {
		t.Fatalf("the active firms' keyset page is sorted or read by status:\n%s", all)
	}
	if db.Dialector.Name() == "mysql" && !strings.Contains(all, "key=PRIMARY") {
		t.Fatalf("the active firms' keyset page is not read along the primary key:\n%s", all)
	}
}
