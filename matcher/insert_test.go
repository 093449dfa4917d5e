package matcher

import (
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// insertMatches gives every row the id it was stored under, over several statements, on both
// databases; on SQLite a row another writer stored first keeps that row's id.
func TestInsertMatchesSetsStoredIDs(t *testing.T) {
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	row := func(i int) store.Match {
		amount := float64(i) + 0.25
		m := store.Match{PolicyID: fmt.Sprintf("p%d", i%3), PolicyVersion: 1 + i%2, CreditCode: fmt.Sprintf("9132%014d", i),
			State: store.MatchActive, AsOf: asOf, Notified: i%5 != 0, MatchedAt: now, UpdatedAt: now}
		if i%4 != 0 {
			m.Amount = &amount
		}
		return m
	}
	var existing store.Match
	if tdb.Driver == "sqlite" {
		existing = row(7)
		if err := db.Create(&existing).Error; err != nil {
			t.Fatal(err)
		}
	}
	rows := make([]store.Match, 2345)
	for i := range rows {
		rows[i] = row(i)
	}
	if tdb.Driver != "sqlite" {
		rows = append(rows[:7], rows[8:]...)
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return insertMatches(tx, rows) }); err != nil {
		t.Fatal(err)
	}
	for _, want := range rows {
		var got store.Match
		if err := db.Where("id = ?", want.ID).Take(&got).Error; err != nil {
			t.Fatalf("row %s/%d/%s: id %d not stored: %v", want.PolicyID, want.PolicyVersion, want.CreditCode, want.ID, err)
		}
		if got.PolicyID != want.PolicyID || got.PolicyVersion != want.PolicyVersion || got.CreditCode != want.CreditCode ||
			got.Notified != want.Notified || !got.AsOf.Equal(want.AsOf) || !got.MatchedAt.Equal(want.MatchedAt) ||
			!sameAmount(got.Amount, want.Amount) {
			t.Fatalf("id %d holds %+v, want %+v", want.ID, got, want)
		}
	}
	if tdb.Driver == "sqlite" && rows[7].ID != existing.ID {
		t.Fatalf("the row stored first got id %d, want %d", rows[7].ID, existing.ID)
	}
	var n int64
	db.Model(&store.Match{}).Count(&n)
	if int(n) != len(rows) {
		t.Fatalf("%d rows stored, want %d", n, len(rows))
	}
}
