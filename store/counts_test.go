package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// A database made before the counts existed gets them at migrate time: match_counts is created
// and filled from the matches once, equal to a recount; existing counts are left alone.
func TestMigrateBackfillsMatchCounts(t *testing.T) {
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	ctx := context.Background()
	at := time.Date(2026, 5, 1, 23, 10, 0, 0, time.UTC)
	for i := range 30 {
		code := fmt.Sprintf("91320%013d", i)
		if err := db.Create(&store.Enterprise{CreditCode: code, RegionCode: []string{"320102", "320505"}[i%2],
			ParkID: []string{"", "SIP", "NJ-JB"}[i%3]}).Error; err != nil {
			t.Fatal(err)
		}
		amount := float64(i) * 10.05
		m := store.Match{PolicyID: fmt.Sprintf("p%d", i%4), PolicyVersion: 1, CreditCode: code, State: store.MatchActive,
			AsOf: at, MatchedAt: at.Add(time.Duration(i) * time.Hour), UpdatedAt: at}
		if i%5 == 0 {
			m.State = store.MatchRevoked
		}
		if i%3 != 0 {
			m.Amount = &amount
		}
		if err := db.Create(&m).Error; err != nil {
			t.Fatal(err)
		}
	}
	// A match of a firm not in the registry counts nowhere, as the console's joins never showed it.
	if err := db.Create(&store.Match{PolicyID: "p1", PolicyVersion: 1, CreditCode: "913200000000000999", State: store.MatchActive,
		AsOf: at, MatchedAt: at, UpdatedAt: at}).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Migrator().DropTable(&store.MatchCount{}, &store.MatchHour{}); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	rep, err := store.Recount(ctx, db, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Diffs) > 0 || rep.Matches != 30 {
		t.Fatalf("after the backfill: %d matches counted, want 30; differences %+v", rep.Matches, rep.Diffs)
	}
	var active int64
	if err := db.Model(&store.MatchCount{}).Where("state = ?", store.MatchActive).Select("SUM(n)").Scan(&active).Error; err != nil || active != 24 {
		t.Fatalf("%d active matches counted, want 24 (%v)", active, err)
	}
	// Migrating again does not count twice.
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if rep, err := store.Recount(ctx, db, false); err != nil || len(rep.Diffs) > 0 {
		t.Fatalf("after a second migration: %+v %v", rep.Diffs, err)
	}
}
