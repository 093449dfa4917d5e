package matcher

import (
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
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

// noticeSet lists every notice the outbox holds, one per (match, channel) whether its row is a
// batch or a single notice, as "policy version firm channel subject", sorted.
func noticeSet(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var rows []store.Outbox
	if err := db.Order("id").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	var ms []store.Match
	if err := db.Find(&ms).Error; err != nil {
		t.Fatal(err)
	}
	byID := map[uint64]store.Match{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	var out []string
	add := func(id uint64, channel, subject string) {
		m, ok := byID[id]
		if !ok {
			t.Fatalf("outbox announces match %d, which is not stored", id)
		}
		out = append(out, fmt.Sprintf("%s v%d %s %s %s", m.PolicyID, m.PolicyVersion, m.CreditCode, channel, subject))
	}
	for _, r := range rows {
		var b bus.NoticeBatch
		if err := json.Unmarshal(r.Payload, &b); err == nil && len(b.MatchIDs) > 0 {
			if len(b.MatchIDs) != r.Notices {
				t.Fatalf("outbox row %d announces %d matches, says %d", r.ID, len(b.MatchIDs), r.Notices)
			}
			for _, id := range b.MatchIDs {
				add(id, b.Channel, r.Subject)
			}
			continue
		}
		var j bus.NoticeJob
		if err := json.Unmarshal(r.Payload, &j); err != nil || j.MatchID == 0 {
			t.Fatalf("outbox row %d: payload %s is neither a batch nor a notice", r.ID, r.Payload)
		}
		add(j.MatchID, j.Channel, r.Subject)
	}
	sort.Strings(out)
	return out
}
