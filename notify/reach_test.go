package notify

import (
	"testing"

	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// checkReach fails unless a match reached want, every match's reach is what its deliveries say
// (as the console read it before matches kept it) and the counts equal a recount.
func checkReach(h *harness, m store.Match, want int8) {
	h.t.Helper()
	// what the notifier's drain loop does every reachEvery
	if _, err := store.DrainDeliveries(h.ctx, h.db); err != nil {
		h.t.Fatal(err)
	}
	var rows []struct {
		ID      uint64
		Reached int8
		Raw     int8
	}
	item := "SELECT 1 FROM delivery_items i JOIN deliveries d ON d.id = i.delivery_id WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id"
	if err := h.db.Raw("SELECT m.id, m.reached, CASE WHEN EXISTS (" + item + " AND d.state = 'delivered') THEN 2 WHEN EXISTS (" +
		item + " AND d.state = 'sent') THEN 1 ELSE 0 END AS raw FROM matches m").Scan(&rows).Error; err != nil {
		h.t.Fatal(err)
	}
	for _, r := range rows {
		if r.Reached != r.Raw {
			h.t.Errorf("match %d reached %d, its deliveries say %d", r.ID, r.Reached, r.Raw)
		}
		if r.ID == m.ID && r.Reached != want {
			h.t.Errorf("match %d reached %d, want %d", r.ID, r.Reached, want)
		}
	}
	rep, err := store.Recount(h.ctx, h.db, false)
	if err != nil || len(rep.Diffs) > 0 {
		h.t.Fatalf("the counts differ from a recount: %+v %v", rep.Diffs, err)
	}
}

// The notifier keeps each match's reach and the dashboard's counts of it in step with the
// deliveries (queued by each transition, refreshed by its drain): sent when a message carrying it is accepted, delivered when one is reported
// delivered, and back to nothing when the only accepted message turns out undelivered.
func TestNotifierKeepsTheReachOfMatches(t *testing.T) {
	t.Run("delivered", func(t *testing.T) {
		h := newHarness(t, sandbox.Options{}, nil)
		receiptServer(h, "", 0)
		h.firm("F1", "o-user-1", "13800000001")
		h.firm("F2", "", "13800000002")
		m1 := h.match("F1", "p-a", 1, ChannelWeChat, ChannelSMS)
		m2 := h.match("F2", "p-a", 1, ChannelSMS)
		if _, err := store.Recount(h.ctx, h.db, true); err != nil { // the harness stores matches without counting them
			t.Fatal(err)
		}
		h.settle()
		waitState(h, h.itemOf(m1.ID, ChannelWeChat).DeliveryID, store.DeliveryDelivered)
		waitState(h, h.itemOf(m1.ID, ChannelSMS).DeliveryID, store.DeliveryDelivered)
		waitState(h, h.itemOf(m2.ID, ChannelSMS).DeliveryID, store.DeliveryDelivered)
		checkReach(h, m1, store.ReachDelivered)
		checkReach(h, m2, store.ReachDelivered)
	})
	t.Run("undelivered", func(t *testing.T) {
		h := newHarness(t, sandbox.Options{}, nil)
		receiptServer(h, "", 1) // every report says "failed:user block"
		h.firm("F1", "o-user-1", "13800000001")
		m := h.match("F1", "p-a", 1, ChannelWeChat)
		if _, err := store.Recount(h.ctx, h.db, true); err != nil {
			t.Fatal(err)
		}
		h.settle()
		waitState(h, h.itemOf(m.ID, ChannelWeChat).DeliveryID, store.DeliveryUndelivered)
		h.settle()
		waitState(h, h.itemOf(m.ID, ChannelSMS).DeliveryID, store.DeliveryUndelivered)
		checkReach(h, m, store.ReachNone)
	})
}
