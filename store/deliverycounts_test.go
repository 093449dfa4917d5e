package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

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
	db := testenv.OpenDB(t).DB
	at := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)
	if err := db.Create(&store.Enterprise{CreditCode: "913200000000000001", RegionCode: "320571", Status: store.StatusActive}).Error; err != nil {
		t.Fatal(err)
	}
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
