package matcher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// The maintained match counts equal a recount from the raw tables after every round of random
// writes through the writer's paths: new matches, revocations, firms qualifying again, amounts
// changing, new policy versions superseding, firms moving region or park, a policy retired; and
// the delivery counts equal a count of the deliveries beside them.
// A fixed seed; SQLite by default, MySQL when the environment says so.
func TestMatchCountsEqualRecount(t *testing.T) {
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	ctx := context.Background()
	firms := registry.Synth(240, 5)
	if err := db.CreateInBatches(firms, 60).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.Recount(ctx, db, true); err != nil { // written around the registry: count the firms
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 17))
	policies := []*rules.Policy{
		{Def: &rules.Definition{ID: "cnt-a", Channels: []string{"sms"}}, Version: 1},
		{Def: &rules.Definition{ID: "cnt-b", Channels: []string{"sms", "wechat"}}, Version: 1},
		{Def: &rules.Definition{ID: "cnt-c"}, Version: 1},
	}
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	base := time.Date(2026, 3, 1, 22, 30, 0, 0, time.UTC)
	outcomes := func() []Outcome {
		var out []Outcome
		for _, f := range firms {
			if rng.IntN(3) == 0 {
				continue
			}
			oc := Outcome{CreditCode: f.CreditCode}
			if rng.IntN(4) != 0 {
				a := float64(rng.IntN(5)) * 1234.56
				oc.Amount = &a
			}
			out = append(out, oc)
		}
		return out
	}
	var deliveries []uint64 // every delivery made
	check := func(round int, what string) {
		t.Helper()
		rep, err := store.Recount(ctx, db, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Diffs) > 0 {
			t.Fatalf("round %d, after %s: %d counter rows differ from the recount, first %+v", round, what, len(rep.Diffs), rep.Diffs[0])
		}
		if rep.Misplaced != 0 {
			t.Fatalf("round %d, after %s: %d matches do not carry their firm's place", round, what, rep.Misplaced)
		}
		if rep.FirmDiffs != 0 || rep.Firms != int64(len(firms)) {
			t.Fatalf("round %d, after %s: %d firms counted, want %d; %d firm counts differ", round, what, rep.Firms, len(firms), rep.FirmDiffs)
		}
		if rep.DeliveryDiffs != 0 || rep.Deliveries != int64(len(deliveries)) {
			t.Fatalf("round %d, after %s: %d deliveries counted, want %d; %d delivery counts differ", round, what, rep.Deliveries,
				len(deliveries), rep.DeliveryDiffs)
		}
	}
	// deliveries to random firms, and state changes of earlier ones, queued as the notifier queues
	// them (the recount drains the queue first): their counts follow the firms' moves
	deliver := func(round int) {
		t.Helper()
		states := []string{store.DeliveryQueued, store.DeliverySending, store.DeliverySent, store.DeliveryDelivered, store.DeliveryDead}
		if err := db.Transaction(func(tx *gorm.DB) error {
			var queued []uint64
			for i := range 1 + rng.IntN(5) {
				f := firms[rng.IntN(len(firms))]
				d := store.Delivery{MatchID: uint64(round*10 + i + 1), Channel: []string{"sms", "wechat"}[rng.IntN(2)], Recipient: f.CreditCode,
					CreditCode: f.CreditCode, PolicyID: "cnt-a", State: store.DeliveryQueued, CreatedAt: base, UpdatedAt: base}
				if err := tx.Create(&d).Error; err != nil {
					return err
				}
				deliveries = append(deliveries, d.ID)
				queued = append(queued, d.ID)
			}
			for range rng.IntN(4) {
				id := deliveries[rng.IntN(len(deliveries))]
				if err := tx.Model(&store.Delivery{}).Where("id = ?", id).Update("state", states[rng.IntN(len(states))]).Error; err != nil {
					return err
				}
				queued = append(queued, id)
			}
			return store.QueueDeliveries(tx, queued, false)
		}); err != nil {
			t.Fatal(err)
		}
	}
	var kinds [4]int
	for round := range 24 {
		w := writer{asOf: asOf, prefix: "t", now: base.Add(time.Duration(round) * 5 * time.Hour)}
		deliver(round)
		switch k := rng.IntN(8); {
		case k < 4: // a policy evaluated again, sometimes as a new version
			p := policies[rng.IntN(len(policies))]
			if rng.IntN(3) == 0 {
				p.Version++
			}
			stored, err := loadStored(ctx, db, p, "", "")
			if err != nil {
				t.Fatal(err)
			}
			cs := stored.diff(p, outcomes())
			if rng.IntN(2) == 0 {
				err = w.writeBatched(ctx, db, p, cs)
			} else {
				err = db.Transaction(func(tx *gorm.DB) error { return w.writeAll(tx, []policyChanges{{p, cs}}) })
			}
			if err != nil {
				t.Fatal(err)
			}
			kinds[0]++
			check(round, fmt.Sprintf("%s v%d: %d new, %d revived, %d superseded, %d amounts, %d revoked", p.Def.ID, p.Version,
				len(cs.fresh), len(cs.revive), len(cs.supersede), len(cs.reamount), len(cs.lost)))
		case k < 7: // firms move to another region or park, change status; new firms come
			var recs []registry.Record
			for range 1 + rng.IntN(30) {
				recs = append(recs, registry.Record{CreditCode: firms[rng.IntN(len(firms))].CreditCode})
			}
			moveFirms(t, db, recs, func(e *store.Enterprise) {
				switch rng.IntN(4) {
				case 0:
					e.RegionCode = []string{"320102", "320505", "320211", "321281"}[rng.IntN(4)]
				case 1:
					e.ParkID = []string{"", "SIP", "NJ-JB", "WX-HT"}[rng.IntN(4)]
				case 2:
					e.Status = []string{store.StatusActive, store.StatusRevoked}[rng.IntN(2)]
				}
			})
			fresh := registry.Synth(1+rng.IntN(3), int64(100+round))
			if err := db.Transaction(func(tx *gorm.DB) error {
				var recs []registry.Record
				for _, e := range fresh {
					recs = append(recs, registry.Record{CreditCode: e.CreditCode})
				}
				stored, err := registry.LockStored(tx, recs)
				if err != nil {
					return err
				}
				for _, e := range fresh {
					if stored[e.CreditCode] == nil {
						firms = append(firms, e)
					}
				}
				return registry.UpsertCounted(tx, stored, fresh)
			}); err != nil {
				t.Fatal(err)
			}
			kinds[1]++
			check(round, "moving firms")
		default: // a policy retired: every active match revoked
			p := policies[rng.IntN(len(policies))]
			err := db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&store.Match{}).Where("policy_id = ? AND state = ?", p.Def.ID, store.MatchActive).
					Updates(map[string]any{"state": store.MatchRevoked, "revoked_at": w.now, "updated_at": w.now}).Error; err != nil {
					return err
				}
				return store.RevokePolicyCounts(tx, p.Def.ID)
			})
			if err != nil {
				t.Fatal(err)
			}
			kinds[2]++
			check(round, "retiring "+p.Def.ID)
		}
	}
	var active, counted int64
	if err := db.Model(&store.Match{}).Where("state = ?", store.MatchActive).Count(&active).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Model(&store.MatchCount{}).Where("state = ?", store.MatchActive).Select("COALESCE(SUM(n), 0)").Scan(&counted).Error; err != nil {
		t.Fatal(err)
	}
	if active == 0 || counted != active || kinds[0] == 0 || kinds[1] == 0 || kinds[2] == 0 {
		t.Fatalf("%d active matches, %d counted; rounds by kind %v: the test did not exercise every path", active, counted, kinds)
	}
	// A counter row out of step is found, and repaired.
	var one store.MatchCount
	if err := db.Where("state = ? AND n > 0", store.MatchActive).Take(&one).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Model(&store.MatchCount{}).Where("policy_id = ? AND region_code = ? AND park_id = ? AND state = ?",
		one.PolicyID, one.RegionCode, one.ParkID, one.State).Update("n", gorm.Expr("n + 3")).Error; err != nil {
		t.Fatal(err)
	}
	if rep, err := store.Recount(ctx, db, false); err != nil || len(rep.Diffs) != 1 {
		t.Fatalf("a counter off by 3: recount found %d differences (%v), want 1", len(rep.Diffs), err)
	}
	if rep, err := store.Recount(ctx, db, true); err != nil || !rep.Fixed {
		t.Fatalf("repair: %+v, %v", rep, err)
	}
	check(-1, "the repair")
}

// BenchmarkWriteCounted is the hot path of a full match, new matches with their notices in
// transactions of txMatches, with the match counts kept (counted) and without (plain: the same
// statements minus the counting), interleaved in each iteration (alternating which goes first):
//
//	go test ./matcher -run '^$' -bench WriteCounted -count 6 -benchtime 3x
func BenchmarkWriteCounted(b *testing.B) {
	tdb := testenv.OpenDB(b)
	db := tdb.DB
	ctx := context.Background()
	const n = 20000
	firms := registry.Synth(n, 3)
	if err := db.CreateInBatches(firms, 500).Error; err != nil {
		b.Fatal(err)
	}
	version := 0
	rowsOf := func(w writer) [][]store.Match {
		version++
		var out [][]store.Match
		for lo := 0; lo < n; lo += txMatches {
			rows := make([]store.Match, 0, txMatches)
			for _, f := range firms[lo:min(lo+txMatches, n)] {
				a := 1500.0
				rows = append(rows, store.Match{PolicyID: "bench", PolicyVersion: version, CreditCode: f.CreditCode, State: store.MatchActive,
					Amount: &a, AsOf: w.asOf, Notified: true, MatchedAt: w.now, UpdatedAt: w.now})
			}
			out = append(out, rows)
		}
		return out
	}
	channels := map[string][]string{"bench": {"sms"}}
	w := writer{asOf: time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC), prefix: "b", now: time.Now().UTC()}
	var spent, cpu [2]time.Duration // counted, plain
	for i := 0; b.Loop(); i++ {
		for k := range 2 {
			counted := (i+k)%2 == 0 // alternate which goes first
			batches := rowsOf(w)
			start, startCPU := time.Now(), cpuTime()
			for _, rows := range batches {
				err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
					if counted {
						return w.insertFresh(tx, rows, channels)
					}
					if err := insertMatches(tx, rows); err != nil {
						return err
					}
					return tx.Create(noticeRows(rows, channels, w.prefix, w.now)).Error
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			spent[map[bool]int{true: 0, false: 1}[counted]] += time.Since(start)
			cpu[map[bool]int{true: 0, false: 1}[counted]] += cpuTime() - startCPU
		}
	}
	b.ReportMetric(float64(spent[0].Nanoseconds())/float64(b.N*n), "ns/counted-match")
	b.ReportMetric(float64(spent[1].Nanoseconds())/float64(b.N*n), "ns/plain-match")
	// CPU time of the process: on SQLite the database's work too, and less inflated by other load.
	b.ReportMetric(float64(cpu[0].Nanoseconds())/float64(b.N*n), "cpu-ns/counted-match")
	b.ReportMetric(float64(cpu[1].Nanoseconds())/float64(b.N*n), "cpu-ns/plain-match")
}

// A full match trusts its snapshot's places while the registry's move count stands still: no firm
// is read again, though every firm was written within the margin before the load (an import just
// before the match). Once an import moved firms (registry.UpsertCounted counts the moves), the
// next transaction reads the firms updated since, and the counts still equal a recount.
func TestKnownPlacesFollowTheMoveCount(t *testing.T) {
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	firms := registry.Synth(160, 23)
	if err := db.CreateInBatches(firms, 80).Error; err != nil {
		t.Fatal(err)
	}
	reads := 0 // statements that read firms
	count := func(tx *gorm.DB) {
		if strings.Contains(tx.Statement.SQL.String(), "FROM enterprises") {
			reads++
		}
	}
	if err := db.Callback().Row().After("gorm:row").Register("test:firm_reads", count); err != nil {
		t.Fatal(err)
	}
	moves, err := store.PlaceMoves(db)
	if err != nil {
		t.Fatal(err)
	}
	loaded := time.Now()
	snap, err := LoadSnapshot(ctx, db, LoadOptions{Fields: withPlaces(nil)})
	if err != nil {
		t.Fatal(err)
	}
	known := snap.places(loaded.Add(-placesMargin), moves)
	reads = 0
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	write := func(id string) {
		t.Helper()
		p := &rules.Policy{Def: &rules.Definition{ID: id, Channels: []string{"sms"}}, Version: 1}
		var out []Outcome
		for row := range snap.Active() {
			out = append(out, Outcome{CreditCode: snap.code(row)})
		}
		items := []policyWrite{{policy: p, outcomes: out, res: &PolicyResult{}}}
		if err := storeGroup(ctx, db, items, asOf, "t", "", "", known, &Phases{}); err != nil {
			t.Fatal(err)
		}
		rep, err := store.Recount(ctx, db, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Diffs) > 0 || rep.Matches == 0 || rep.Misplaced != 0 {
			t.Fatalf("%s: %d matches, %d not at their firm's place; %d counts differ from a recount: %+v", id, rep.Matches, rep.Misplaced, len(rep.Diffs), rep.Diffs)
		}
	}
	write("moves-a")
	if reads != 0 {
		t.Fatalf("%d statements read firms again with no firm moved since the snapshot", reads)
	}
	// An import moves a tenth of the active firms to another city and park.
	var recs []registry.Record
	for row := 0; row < snap.Active(); row += 10 {
		recs = append(recs, registry.Record{CreditCode: snap.code(row)})
	}
	moveFirms(t, db, recs, func(e *store.Enterprise) { e.RegionCode, e.ParkID = "320411", "CZ-WJ" })
	write("moves-b")
	if reads == 0 {
		t.Fatal("no firm was read again after an import moved firms")
	}
}

// moveFirms changes the firms of recs with move and writes them as an import does
// (registry.UpsertCounted), in one transaction.
func moveFirms(t *testing.T, db *gorm.DB, recs []registry.Record, move func(*store.Enterprise)) {
	t.Helper()
	if err := db.Transaction(func(tx *gorm.DB) error {
		stored, err := registry.LockStored(tx, recs)
		if err != nil {
			return err
		}
		var next []store.Enterprise
		for _, e := range stored {
			n := *e
			move(&n)
			next = append(next, n)
		}
		return registry.UpsertCounted(tx, stored, next)
	}); err != nil {
		t.Fatal(err)
	}
}
