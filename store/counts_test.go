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

// BenchmarkActiveMatches is the figure status and the dashboard need most, the active matches in
// a scope, counted over the raw tables (raw: matches joined to enterprises, as before) and read
// from the maintained counts (counts), on 50,000 firms and 200,000 matches made in SQL:
//
//	go test ./store -run '^$' -bench ActiveMatches -benchtime 20x
func BenchmarkActiveMatches(b *testing.B) {
	tdb := testenv.OpenDB(b)
	db := tdb.DB
	ctx := context.Background()
	const firms, perFirm = 50000, 4
	gen := `WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?) `
	code := "'9132' || substr('00000000000000' || i, -14)"
	region := "'32' || substr('0' || (1 + i % 13), -2) || '0' || (i % 7)"
	park := "'P' || (i % 40)"
	if tdb.Driver == "mysql" {
		code = "CONCAT('9132', LPAD(CAST(i AS CHAR), 14, '0'))"
		region = "CONCAT('32', LPAD(CAST(1 + i % 13 AS CHAR), 2, '0'), '0', CAST(i % 7 AS CHAR))"
		park = "CONCAT('P', CAST(i % 40 AS CHAR))"
	}
	if err := db.Exec(gen+`INSERT INTO enterprises (credit_code, name, region_code, park_id, status, created_at, updated_at)
		SELECT `+code+`, 'f', `+region+`, CASE WHEN i % 5 = 0 THEN `+park+` ELSE '' END, 'active', ?, ? FROM seq`,
		firms-1, time.Now().UTC(), time.Now().UTC()).Error; err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	for p := range perFirm {
		if err := db.Exec(gen+`INSERT INTO matches (policy_id, policy_version, credit_code, state, amount, as_of, notified, matched_at, updated_at)
			SELECT ?, 1, `+code+`, CASE WHEN i % 9 = 0 THEN 'revoked' ELSE 'active' END,
			1000 + i % 100, ?, 1, ?, ? FROM seq`, firms-1, fmt.Sprintf("p%d", p), at, at.Add(time.Duration(p)*time.Hour), at).Error; err != nil {
			b.Fatal(err)
		}
	}
	if _, err := store.Recount(ctx, db, true); err != nil {
		b.Fatal(err)
	}
	for _, scope := range []struct{ name, where string }{{"province", "1 = 1"}, {"city", "e.region_code LIKE '3205%'"}, {"park", "e.park_id = 'P5'"}} {
		var raw, counted int64
		b.Run("raw/"+scope.name, func(b *testing.B) {
			for b.Loop() {
				if err := db.Raw("SELECT COUNT(*) FROM matches m JOIN enterprises e ON e.credit_code = m.credit_code WHERE m.state = 'active' AND " +
					scope.where).Scan(&raw).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("counts/"+scope.name, func(b *testing.B) {
			for b.Loop() {
				if err := db.Raw("SELECT COALESCE(SUM(e.n), 0) FROM match_counts e WHERE e.state = 'active' AND " + scope.where).Scan(&counted).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
		if raw != counted || raw == 0 {
			b.Fatalf("%s: raw %d, counts %d", scope.name, raw, counted)
		}
	}
}

// PlaceMatches takes firms' places from the caller, but reads again every firm updated from
// Since on and every firm the caller does not know: a stale place of a firm the registry moved
// after the caller read it must not be counted (the import moved the counts of its matches in
// its own transaction, before these existed). The counts equal a recount.
func TestPlaceMatchesReadsMovedFirmsAgain(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	read := time.Now().UTC().Add(-time.Hour) // when the caller read the places
	regions := []string{"320102", "320505", "321002"}
	var ms []store.Match
	for i := range 40 {
		code := fmt.Sprintf("91320%013d", i)
		e := store.Enterprise{CreditCode: code, RegionCode: regions[i%3], ParkID: []string{"", "SIP"}[i%2], Status: store.StatusActive,
			UpdatedAt: read.Add(-time.Hour)}
		if err := db.Create(&e).Error; err != nil {
			t.Fatal(err)
		}
		for p := range 2 {
			ms = append(ms, store.Match{PolicyID: fmt.Sprintf("p%d", p), PolicyVersion: 1, CreditCode: code, State: store.MatchActive,
				AsOf: read, MatchedAt: read, UpdatedAt: read})
		}
	}
	// Firms 0–9 moved after the read: the caller still has their old place.
	if err := db.Model(&store.Enterprise{}).Where("credit_code < ?", fmt.Sprintf("91320%013d", 10)).
		Updates(map[string]any{"region_code": "320411", "park_id": "CZ-WJ", "updated_at": time.Now().UTC()}).Error; err != nil {
		t.Fatal(err)
	}
	known := &store.KnownPlaces{Since: read, Place: func(code string) (string, string, bool) {
		var i int
		if _, err := fmt.Sscanf(code[5:], "%d", &i); err != nil || i >= 35 { // firms 35–39: not known
			return "", "", false
		}
		return regions[i%3], []string{"", "SIP"}[i%2], true
	}}
	insertCounted(t, db, ms, ms, known, nil)
	recountEquals(t, ctx, db, 80)
}

// insertCounted places all (store.PlaceMatches), inserts ins (all or a part of it: the rest keep
// ID 0, as rows another writer stored) and counts all with pre, in one transaction.
func insertCounted(t *testing.T, db *gorm.DB, all, ins []store.Match, known *store.KnownPlaces, pre *store.PreparedCounts) {
	t.Helper()
	if err := db.Transaction(func(tx *gorm.DB) error {
		placed, _, err := store.PlaceMatches(tx, all, known)
		if err != nil {
			return err
		}
		if err := tx.Create(&ins).Error; err != nil {
			return err
		}
		return store.CountPlaced(tx, all, placed, pre)
	}); err != nil {
		t.Fatal(err)
	}
}

// recountEquals checks that the maintained counts equal a recount of the n stored matches.
func recountEquals(t *testing.T, ctx context.Context, db *gorm.DB, n int64) {
	t.Helper()
	rep, err := store.Recount(ctx, db, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Diffs) > 0 || rep.Matches != n || rep.Misplaced != 0 {
		t.Fatalf("%d matches counted, want %d; %d not at their firm's place; differences from a recount: %+v", rep.Matches, n, rep.Misplaced, rep.Diffs)
	}
}

// Counts prepared before the transaction (KnownPlaces.Prepare) are applied only when every row
// was inserted: with a row skipped (ID 0, another writer stored it), the counts are computed
// again and still equal a recount.
func TestPreparedCountsNeedEveryRowInserted(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	at := time.Now().UTC()
	var ms []store.Match
	places := map[string][2]string{}
	for i := range 12 {
		code := fmt.Sprintf("91320%013d", i)
		places[code] = [2]string{[]string{"320102", "320505"}[i%2], ""}
		if err := db.Create(&store.Enterprise{CreditCode: code, RegionCode: places[code][0], Status: store.StatusActive}).Error; err != nil {
			t.Fatal(err)
		}
		ms = append(ms, store.Match{PolicyID: "prep", PolicyVersion: 1, CreditCode: code, State: store.MatchActive,
			AsOf: at, MatchedAt: at, UpdatedAt: at})
	}
	moves, err := store.PlaceMoves(db)
	if err != nil {
		t.Fatal(err)
	}
	known := &store.KnownPlaces{Since: at, Moves: moves, Counted: true, Place: func(code string) (string, string, bool) {
		p, ok := places[code]
		return p[0], p[1], ok
	}}
	pre := known.Prepare(ms)
	if pre == nil {
		t.Fatal("no counts prepared though every firm's place is known")
	}
	// the first was not inserted: ID 0
	insertCounted(t, db, ms, ms[1:], known, pre)
	recountEquals(t, ctx, db, 11)
}

// A database made before the firm counts gets them at migrate time, counted from its firms; the
// status reads them, and a count out of step is found and repaired by a recount.
func TestFirmCountsBackfilledAndRecounted(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	for i, e := range []store.Enterprise{{RegionCode: "320571", ParkID: "SIP"}, {RegionCode: "320571", ParkID: "SIP", Status: store.StatusRevoked},
		{RegionCode: "320102"}, {RegionCode: "321002", Status: store.StatusDeregistered}} {
		e.CreditCode = fmt.Sprintf("91320%013d", i)
		if e.Status == "" {
			e.Status = store.StatusActive
		}
		if err := db.Create(&e).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Migrator().DropTable(&store.FirmCount{}); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	status := func(sc store.FirmScope) store.Status {
		t.Helper()
		st, err := store.ReadStatus(ctx, db, time.Now(), sc)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, c := range []struct {
		scope          store.FirmScope
		firms, actives int64
	}{{store.FirmScope{}, 4, 2}, {store.FirmScope{ParkID: "SIP"}, 2, 1}, {store.FirmScope{RegionPrefix: "3201"}, 1, 1}} {
		if st := status(c.scope); st.Enterprises != c.firms || st.EnterprisesActive != c.actives {
			t.Fatalf("%+v after the backfill: %d firms, %d active; want %d, %d", c.scope, st.Enterprises, st.EnterprisesActive, c.firms, c.actives)
		}
	}
	if err := db.Exec("UPDATE firm_counts SET n = n + 3 WHERE park_id = 'SIP' AND status = ?", store.StatusActive).Error; err != nil {
		t.Fatal(err)
	}
	if rep, err := store.Recount(ctx, db, true); err != nil || rep.FirmDiffs != 1 || rep.Firms != 4 || !rep.Fixed {
		t.Fatalf("recount of a firm count off by 3: %+v, %v", rep, err)
	}
	if rep, err := store.Recount(ctx, db, false); err != nil || rep.FirmDiffs != 0 {
		t.Fatalf("after the repair: %+v, %v", rep, err)
	}
	if st := status(store.FirmScope{ParkID: "SIP"}); st.Enterprises != 2 {
		t.Fatalf("the park after the repair: %d firms, want 2", st.Enterprises)
	}
}

// A database made before the delivery counts gets them at migrate time, counted from its
// deliveries by their firms' places (and an older reach_queue's rows move into delivery_queue);
// the status reads them for every scope, and a count out of step is found and repaired by a
// recount.
func TestDeliveryCountsBackfilledAndRecounted(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	at := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
	places := [][2]string{{"320571", "SIP"}, {"320571", ""}, {"320102", ""}}
	for i, p := range places {
		code := fmt.Sprintf("91320%013d", i)
		if err := db.Create(&store.Enterprise{CreditCode: code, RegionCode: p[0], ParkID: p[1], Status: store.StatusActive}).Error; err != nil {
			t.Fatal(err)
		}
		for j, st := range []string{store.DeliveryDelivered, store.DeliveryDead, store.DeliveryDelivered}[:i+1] {
			if err := db.Create(&store.Delivery{MatchID: uint64(10*i + j + 1), Channel: "sms", Recipient: code, CreditCode: code,
				PolicyID: "p", State: st, CreatedAt: at, UpdatedAt: at}).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	// as an older database: no counts, a reach queue
	if err := db.Migrator().DropTable(&store.DeliveryCount{}, &store.DeliveryCounted{}, &store.DeliveryQueue{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("CREATE TABLE reach_queue (id INTEGER PRIMARY KEY, delivery_id BIGINT NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO reach_queue (id, delivery_id) VALUES (1, 2), (2, 3)").Error; err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	var queued []store.DeliveryQueue
	if err := db.Order("delivery_id").Find(&queued).Error; err != nil || len(queued) != 2 || queued[0].DeliveryID != 2 || !queued[1].Reach {
		t.Fatalf("the reach queue's rows in delivery_queue: %+v, %v", queued, err)
	}
	status := func(sc store.FirmScope) map[string]int64 {
		t.Helper()
		st, err := store.ReadStatus(ctx, db, at, sc)
		if err != nil {
			t.Fatal(err)
		}
		return st.Deliveries["sms"]
	}
	for _, c := range []struct {
		scope           store.FirmScope
		delivered, dead int64
	}{{store.FirmScope{}, 4, 2}, {store.FirmScope{ParkID: "SIP"}, 1, 0}, {store.FirmScope{RegionPrefix: "3205"}, 2, 1},
		{store.FirmScope{RegionPrefix: "3201"}, 2, 1}, {store.FirmScope{RegionPrefix: "3210"}, 0, 0}} {
		if got := status(c.scope); got[store.DeliveryDelivered] != c.delivered || got[store.DeliveryDead] != c.dead {
			t.Errorf("%+v after the backfill: %v; want %d delivered, %d dead", c.scope, got, c.delivered, c.dead)
		}
		if n, err := store.DeadDeliveries(ctx, db, store.DashboardFilter{Scope: c.scope}); err != nil || n != c.dead {
			t.Errorf("%+v: %d dead deliveries on the dashboard (%v), want %d", c.scope, n, err, c.dead)
		}
	}
	if err := db.Exec("UPDATE delivery_counts SET n = n + 3 WHERE park_id = 'SIP'").Error; err != nil {
		t.Fatal(err)
	}
	if rep, err := store.Recount(ctx, db, false); err != nil || rep.DeliveryDiffs != 1 || rep.Fixed {
		t.Fatalf("check of a delivery count off by 3 (it stays after the check drains again): %+v, %v", rep, err)
	}
	if rep, err := store.Recount(ctx, db, true); err != nil || rep.DeliveryDiffs != 1 || rep.Deliveries != 6 || !rep.Fixed {
		t.Fatalf("recount of a delivery count off by 3: %+v, %v", rep, err)
	}
	if rep, err := store.Recount(ctx, db, false); err != nil || rep.DeliveryDiffs != 0 {
		t.Fatalf("after the repair: %+v, %v", rep, err)
	}
	if got := status(store.FirmScope{ParkID: "SIP"}); got[store.DeliveryDelivered] != 1 {
		t.Fatalf("the park after the repair: %v", got)
	}
}

// A claim is not queued: a delivery being sent stays counted under the state it was claimed from,
// and a recount agrees; the attempt's outcome, queued, moves it.
func TestDeliveryBeingSentStaysCountedAsItWas(t *testing.T) {
	ctx := context.Background()
	db, at := oneFirmDB(t)
	d := store.Delivery{MatchID: 1, Channel: "sms", Recipient: "r", CreditCode: "913200000000000001", PolicyID: "p",
		State: store.DeliveryFailed, CreatedAt: at, UpdatedAt: at}
	if err := db.Create(&d).Error; err != nil {
		t.Fatal(err)
	}
	step := func(state string, queue bool, want string) {
		t.Helper()
		if err := db.Model(&d).Update("state", state).Error; err != nil {
			t.Fatal(err)
		}
		if queue {
			if err := store.QueueDeliveries(db, []uint64{d.ID}, false); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := store.Recount(ctx, db, false) // drains first
		if err != nil || rep.DeliveryDiffs != 0 || rep.Deliveries != 1 {
			t.Fatalf("%s: recount %+v, %v", state, rep, err)
		}
		st, err := store.ReadStatus(ctx, db, at, store.FirmScope{RegionPrefix: "3205"})
		if err != nil || st.Deliveries["sms"][want] != 1 || len(st.Deliveries["sms"]) != 1 {
			t.Fatalf("%s: the status says %v (%v), want one %s", state, st.Deliveries, err, want)
		}
	}
	step(store.DeliveryFailed, true, store.DeliveryFailed)
	step(store.DeliverySending, false, store.DeliveryFailed)
	step(store.DeliverySent, true, store.DeliverySent)
}

// The queue holds a row per run of consecutive delivery ids; a drain counts every delivery of a
// run, skips an id with no delivery (another transaction's, rolled back or not committed yet) and
// takes long runs over several transactions, leaving the queue empty and the counts a recount's.
func TestDeliveryQueueRuns(t *testing.T) {
	ctx := context.Background()
	db, at := oneFirmDB(t)
	var ds []store.Delivery
	for i := range 6003 {
		ds = append(ds, store.Delivery{MatchID: uint64(i + 1), Channel: "sms", Recipient: "r", CreditCode: "913200000000000001",
			PolicyID: "p", State: store.DeliveryQueued, CreatedAt: at, UpdatedAt: at})
	}
	if err := db.CreateInBatches(ds, 500).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.DrainDeliveries(ctx, db); err != nil { // whatever a hook queued
		t.Fatal(err)
	}
	id := func(i int) uint64 { return ds[i].ID }
	// the first 6,000 in one run (more than a drain transaction takes), two more apart, and a
	// run past the last delivery
	var ids []uint64
	for i := range 6000 {
		ids = append(ids, id(i))
	}
	ids = append(ids, id(6002), id(6001), id(6002), id(6002)+5, id(6002)+6)
	if err := db.Model(&store.Delivery{}).Where("id IN ?", ids).Update("state", store.DeliverySent).Error; err != nil {
		t.Fatal(err)
	}
	if err := store.QueueDeliveries(db, ids, true); err != nil {
		t.Fatal(err)
	}
	var rows []store.DeliveryQueue
	if err := db.Order("delivery_id").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	want := []store.DeliveryQueue{{DeliveryID: id(0), LastID: id(5999)}, {DeliveryID: id(6001), LastID: id(6002)}, {DeliveryID: id(6002) + 5, LastID: id(6002) + 6}}
	if len(rows) != len(want) {
		t.Fatalf("queue rows %+v, want runs %+v", rows, want)
	}
	for i, r := range rows {
		if r.DeliveryID != want[i].DeliveryID || r.LastID != want[i].LastID || !r.Reach {
			t.Fatalf("queue row %d: %+v, want the run %+v", i, r, want[i])
		}
	}
	if err := store.QueueDeliveries(db, []uint64{id(6000)}, false); err != nil { // a run of one
		t.Fatal(err)
	}
	n, err := store.DrainDeliveries(ctx, db)
	if err != nil || n != 4 {
		t.Fatalf("drained %d queue rows (%v), want 4", n, err)
	}
	var left int64
	if err := db.Model(&store.DeliveryQueue{}).Count(&left).Error; err != nil || left != 0 {
		t.Fatalf("%d rows left in the queue (%v)", left, err)
	}
	rep, err := store.Recount(ctx, db, false)
	if err != nil || rep.DeliveryDiffs != 0 || rep.Deliveries != 6003 {
		t.Fatalf("recount after draining runs: %+v, %v", rep, err)
	}
	st, err := store.ReadStatus(ctx, db, at, store.FirmScope{})
	if err != nil || st.Deliveries["sms"][store.DeliverySent] != 6002 || st.Deliveries["sms"][store.DeliveryQueued] != 1 {
		t.Fatalf("status after draining runs: %v (%v)", st.Deliveries, err)
	}
}

// oneFirmDB is a test database holding one active firm, 913200000000000001 in 320571, and the
// time its deliveries are stamped with.
func oneFirmDB(t *testing.T) (*gorm.DB, time.Time) {
	t.Helper()
	db := testenv.OpenDB(t).DB
	if err := db.Create(&store.Enterprise{CreditCode: "913200000000000001", RegionCode: "320571", Status: store.StatusActive}).Error; err != nil {
		t.Fatal(err)
	}
	return db, time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
}
