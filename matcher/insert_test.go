package matcher

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/rules"
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

// storeGroup, which writes the new matches of several policies together in credit-code order,
// stores what writeDiff stores policy by policy: the same rows, states, amounts and notices, and
// the same counts, from a stored state that holds every kind of change (new, superseded,
// revived, re-amounted, revoked, unchanged).
func TestStoreGroupStoresWhatWriteDiffStores(t *testing.T) {
	ctx := context.Background()
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	earlier := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	code := func(i int) string { return fmt.Sprintf("91320000%010d", (i*7919)%1000) }
	amount := func(v float64) *float64 { return &v }
	policies := make([]*rules.Policy, 3)
	for i := range policies {
		policies[i] = &rules.Policy{Def: &rules.Definition{ID: fmt.Sprintf("group-%d", i), Channels: []string{"wechat", "sms"}[:1+i%2]}, Version: 2}
	}
	// Each policy: firms 0..299 stored in various states; firms 100..899 eligible now.
	stored := func(db *gorm.DB) {
		var rows []store.Match
		for pi, p := range policies {
			for i := range 300 {
				m := store.Match{PolicyID: p.Def.ID, PolicyVersion: 2, CreditCode: code(i + pi), State: store.MatchActive,
					Amount: amount(float64(i)), AsOf: asOf, Notified: true, MatchedAt: earlier, UpdatedAt: earlier}
				switch i % 4 {
				case 1:
					m.PolicyVersion = 1 // superseded when still eligible
				case 2:
					m.State = store.MatchRevoked // revived when eligible again
				}
				rows = append(rows, m)
			}
		}
		if err := db.Create(&rows).Error; err != nil {
			t.Fatal(err)
		}
	}
	outcomes := make([][]Outcome, len(policies))
	for pi := range policies {
		for i := 100; i < 900; i++ {
			a := float64(i)
			if i%3 == 0 {
				a++ // a new amount
			}
			outcomes[pi] = append(outcomes[pi], Outcome{CreditCode: code(i + pi), Amount: &a})
		}
		sort.Slice(outcomes[pi], func(a, b int) bool { return outcomes[pi][a].CreditCode < outcomes[pi][b].CreditCode })
	}
	one, group := testenv.OpenDB(t).DB, testenv.OpenDB(t).DB
	stored(one)
	stored(group)
	want := make([]PolicyResult, len(policies))
	for pi, p := range policies {
		if err := writeDiff(ctx, one, p, asOf, outcomes[pi], "t", "", "", &want[pi], &Phases{}); err != nil {
			t.Fatal(err)
		}
		want[pi].Eligible = len(outcomes[pi])
	}
	got := make([]PolicyResult, len(policies))
	items := make([]policyWrite, len(policies))
	for pi, p := range policies {
		items[pi] = policyWrite{policy: p, outcomes: outcomes[pi], res: &got[pi]}
	}
	defer func(n int) { txMatches = n }(txMatches)
	txMatches = txPerTest
	if err := storeGroup(ctx, group, items, asOf, "t", "", "", nil, &Phases{}); err != nil {
		t.Fatal(err)
	}
	for pi := range policies {
		if got[pi] != want[pi] {
			t.Fatalf("policy %d: storeGroup counted %+v, writeDiff %+v", pi, got[pi], want[pi])
		}
		if got[pi].New == 0 || got[pi].Updated == 0 || got[pi].Revoked == 0 || got[pi].Unchanged == 0 {
			t.Fatalf("policy %d: %+v: the test no longer covers every kind of change", pi, got[pi])
		}
	}
	sameStrings(t, "stored matches", storedState(t, one), storedState(t, group))
	sameStrings(t, "queued notices", noticeSet(t, one), noticeSet(t, group))
	// The new matches (the rows made now: revived and superseding rows keep their first
	// matched_at) were inserted txMatches per transaction, each taking the next firms in
	// credit-code order across the policies and inserting them policy by policy.
	var fresh []store.Match
	if err := group.Where("matched_at > ?", earlier).Order("id").Find(&fresh).Error; err != nil {
		t.Fatal(err)
	}
	if len(fresh) < 4*txPerTest {
		t.Fatalf("%d new matches: too few for the test", len(fresh))
	}
	var txs [][]store.Match
	for lo := 0; lo < len(fresh); lo += txPerTest {
		tx := fresh[lo:min(lo+txPerTest, len(fresh))]
		for i := 1; i < len(tx); i++ {
			a, b := tx[i-1], tx[i]
			if a.PolicyID > b.PolicyID || a.PolicyID == b.PolicyID && a.CreditCode >= b.CreditCode {
				t.Fatalf("transaction from id %d: %s %s inserted before %s %s", tx[0].ID, a.PolicyID, a.CreditCode, b.PolicyID, b.CreditCode)
			}
		}
		txs = append(txs, tx)
	}
	// On MySQL two transactions run at once (mysqlWriters), so neighbours may take their ids in
	// either order: each still holds its own stretch of credit codes.
	if group.Dialector.Name() != "sqlite" {
		sort.Slice(txs, func(i, j int) bool { return minCode(txs[i]) < minCode(txs[j]) })
	}
	for i := 1; i < len(txs); i++ {
		if prev, tx := txs[i-1], txs[i]; maxCode(prev) > minCode(tx) {
			t.Fatalf("transaction from id %d holds firms from %s on, the one before up to %s: not in credit-code order", tx[0].ID, minCode(tx), maxCode(prev))
		}
	}
}

const txPerTest = 100

func maxCode(ms []store.Match) string {
	out := ""
	for _, m := range ms {
		out = max(out, m.CreditCode)
	}
	return out
}

func minCode(ms []store.Match) string {
	out := ms[0].CreditCode
	for _, m := range ms {
		out = min(out, m.CreditCode)
	}
	return out
}

// byPolicy orders rows as a stable sort by policy ID does.
func TestByPolicyIsAStableSortByPolicy(t *testing.T) {
	var rows []store.Match
	for i := range 500 {
		rows = append(rows, store.Match{PolicyID: fmt.Sprintf("p%d", (i*7)%11), CreditCode: fmt.Sprintf("%018d", i)})
	}
	want := append([]store.Match(nil), rows...)
	sort.SliceStable(want, func(i, j int) bool { return want[i].PolicyID < want[j].PolicyID })
	got := byPolicy(rows)
	for i := range want {
		if got[i].PolicyID != want[i].PolicyID || got[i].CreditCode != want[i].CreditCode {
			t.Fatalf("row %d: %s/%s, want %s/%s", i, got[i].PolicyID, got[i].CreditCode, want[i].PolicyID, want[i].CreditCode)
		}
	}
	if len(byPolicy(nil)) != 0 {
		t.Fatal("no rows")
	}
}
