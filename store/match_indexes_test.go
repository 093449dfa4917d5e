package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// A database created when matches had ix_match_state loses it at migrate time; deferring and
// restoring the bulk-load indexes leaves the table with every index it had.
func TestMatchIndexes(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	m := db.Migrator()
	if err := db.Exec("CREATE INDEX ix_match_state ON matches (policy_id, state)").Error; err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if m.HasIndex(&store.Match{}, "ix_match_state") {
		t.Fatal("migrate kept ix_match_state")
	}
	empty, err := store.MatchesEmpty(ctx, db)
	if err != nil || !empty {
		t.Fatalf("a new database's matches: empty %v, %v", empty, err)
	}
	restore, err := store.DeferMatchIndexes(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if m.HasIndex(&store.Match{}, store.MatchFirmIndex) {
		t.Fatal("the firm index is still there during the bulk load")
	}
	for _, name := range matchIndexes(db)[1:] {
		if !m.HasIndex(&store.Match{}, name) {
			t.Fatalf("the bulk load dropped %s, which it keeps in step", name)
		}
	}
	// Another process's migration may have created it meanwhile: restoring is still no error.
	if err := m.CreateIndex(&store.Match{}, store.MatchFirmIndex); err != nil {
		t.Fatal(err)
	}
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range matchIndexes(db) {
		if !m.HasIndex(&store.Match{}, name) {
			t.Fatalf("%s is missing after the bulk load", name)
		}
	}
	// MySQL has no ix_match_recent: a database made before loses it at migrate time
	if db.Dialector.Name() == "mysql" {
		if err := db.Exec("CREATE INDEX " + store.RecentMatchIndex + " ON matches (state, matched_at)").Error; err != nil {
			t.Fatal(err)
		}
		if err := store.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		if m.HasIndex(&store.Match{}, store.RecentMatchIndex) {
			t.Fatal("migrate kept ix_match_recent on MySQL")
		}
	}
}

// matchIndexes are the secondary indexes matches have on db's database, the firm index first.
func matchIndexes(db *gorm.DB) []string {
	out := []string{store.MatchFirmIndex, "ux_match", store.MatchPlaceIndex}
	if db.Dialector.Name() != "mysql" {
		out = append(out, store.RecentMatchIndex)
	}
	return out
}

// A database made before matches carried their firm's place gets the columns, filled in from the
// firms, and ix_match_place at migrate time; a match another writer left at a stale place is
// found by a recount and moved by a repairing one.
func TestMigrateFillsMatchPlaces(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	m := db.Migrator()
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for i, e := range []store.Enterprise{{RegionCode: "320571", ParkID: "SIP"}, {RegionCode: "320102"}, {RegionCode: "321002"}} {
		e.CreditCode, e.Status = fmt.Sprintf("91320%013d", i), store.StatusActive
		if err := db.Create(&e).Error; err != nil {
			t.Fatal(err)
		}
		for p := range 2 {
			if err := db.Create(&store.Match{PolicyID: fmt.Sprintf("p%d", p), PolicyVersion: 1, CreditCode: e.CreditCode,
				State: store.MatchActive, AsOf: at, MatchedAt: at, UpdatedAt: at}).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	// as a database made before the columns
	if err := m.DropIndex(&store.Match{}, store.MatchPlaceIndex); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"RegionCode", "ParkID"} {
		if err := m.DropColumn(&store.Match{}, col); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if !m.HasIndex(&store.Match{}, store.MatchPlaceIndex) {
		t.Fatal("no ix_match_place after the migration")
	}
	check := func(want int64, fix bool) {
		t.Helper()
		rep, err := store.Recount(ctx, db, fix)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Misplaced != want || rep.Matches != 6 {
			t.Fatalf("recount (fix %v): %d of %d matches misplaced, want %d of 6", fix, rep.Misplaced, rep.Matches, want)
		}
	}
	check(0, false)
	var sip int64
	if err := db.Model(&store.Match{}).Where("region_code = ? AND park_id = ?", "320571", "SIP").Count(&sip).Error; err != nil || sip != 2 {
		t.Fatalf("%d matches in the park after the migration, want 2 (%v)", sip, err)
	}
	if err := db.Exec("UPDATE matches SET park_id = '' WHERE park_id = 'SIP'").Error; err != nil {
		t.Fatal(err)
	}
	check(2, false)
	check(2, true)
	check(0, false)
}
