package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// rawReach is the reach of every match computed from the deliveries, as the console's queries did
// before matches kept it: delivered when a delivery carrying an item of the firm and policy is
// delivered, sent when one is sent.
func rawReach(t *testing.T, db *gorm.DB) map[uint64]int8 {
	t.Helper()
	var rows []struct {
		ID    uint64
		Reach int8
	}
	item := "SELECT 1 FROM delivery_items i JOIN deliveries d ON d.id = i.delivery_id WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id"
	if err := db.Raw("SELECT m.id, CASE WHEN EXISTS (" + item + " AND d.state = 'delivered') THEN 2 WHEN EXISTS (" + item +
		" AND d.state = 'sent') THEN 1 ELSE 0 END AS reach FROM matches m").Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int8{}
	for _, r := range rows {
		out[r.ID] = r.Reach
	}
	return out
}

// checkReach fails unless every match's Reached is its raw reach and the counts equal a recount.
func checkReach(t *testing.T, db *gorm.DB, when string) {
	t.Helper()
	want := rawReach(t, db)
	var ms []store.Match
	if err := db.Find(&ms).Error; err != nil {
		t.Fatal(err)
	}
	reached := 0
	for _, m := range ms {
		if m.Reached != want[m.ID] {
			t.Errorf("%s: match %d (%s, %s v%d, %s) reached %d, the deliveries say %d", when, m.ID, m.CreditCode, m.PolicyID,
				m.PolicyVersion, m.State, m.Reached, want[m.ID])
		}
		if m.Reached > 0 {
			reached++
		}
	}
	rep, err := store.Recount(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Diffs) > 0 {
		t.Fatalf("%s: the counts differ from a recount: %+v", when, rep.Diffs)
	}
	if reached == 0 {
		t.Fatalf("%s: no match reached: the check proves little", when)
	}
}

// seedReach stores 40 firms with matches of three policies (some revoked) and counts them.
func seedReach(t *testing.T, db *gorm.DB) []store.Match {
	t.Helper()
	at := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	// every match's version exists (versions are never deleted): the refresh finds a firm's
	// matches of a policy by their whole key, version by version
	for p := range 3 {
		for v := 1; v <= 30; v++ {
			if err := db.Create(&store.PolicyVersion{PolicyID: fmt.Sprintf("p%d", p), Version: v, ContentHash: "x", Source: "{}",
				Title: "t", EffectiveFrom: at, State: store.VersionPublished}).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	var ms []store.Match
	for i := range 40 {
		code := fmt.Sprintf("91320%013d", i)
		if err := db.Create(&store.Enterprise{CreditCode: code, RegionCode: []string{"320102", "320505"}[i%2],
			ParkID: []string{"", "SIP"}[i%3%2]}).Error; err != nil {
			t.Fatal(err)
		}
		for p := range 3 {
			if (i+p)%4 == 0 {
				continue
			}
			m := store.Match{PolicyID: fmt.Sprintf("p%d", p), PolicyVersion: 1, CreditCode: code, State: store.MatchActive,
				AsOf: at, MatchedAt: at, UpdatedAt: at}
			if (i+p)%7 == 0 {
				m.State = store.MatchRevoked
			}
			if err := db.Create(&m).Error; err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
	}
	if _, err := store.Recount(context.Background(), db, true); err != nil {
		t.Fatal(err)
	}
	return ms
}

// A match's reach follows its deliveries through every state change that is refreshed, directly
// (RefreshReach) or queued and drained (QueueDeliveries, DrainDeliveries), a new version's row starts from the reach of the old one's notices (ReachOfNew), and the
// counts (notified, delivered) stay equal to a recount throughout.
func TestReachFollowsDeliveries(t *testing.T) {
	db := testenv.OpenDB(t).DB
	ms := seedReach(t, db)
	rng := rand.New(rand.NewPCG(7, 13))
	states := []string{store.DeliveryQueued, store.DeliverySending, store.DeliverySent, store.DeliveryDelivered,
		store.DeliveryUndelivered, store.DeliveryFailed, store.DeliveryDead}
	var deliveries []store.Delivery
	drained := 0 // queued deliveries refreshed by the drains at the end of the rounds
	now := time.Now().UTC()
	for round := range 6 {
		for range 25 {
			switch {
			case len(deliveries) == 0 || rng.IntN(3) == 0: // a new delivery of one or two matches (a digest)
				m := ms[rng.IntN(len(ms))]
				d := store.Delivery{MatchID: m.ID, Channel: []string{"sms", "wechat"}[rng.IntN(2)], Recipient: fmt.Sprint(len(deliveries)),
					CreditCode: m.CreditCode, PolicyID: m.PolicyID, State: states[rng.IntN(len(states))], Provider: "tencent", Items: 1}
				if err := db.Create(&d).Error; err != nil {
					t.Fatal(err)
				}
				carried := []store.Match{m}
				if other := ms[rng.IntN(len(ms))]; other.CreditCode == m.CreditCode && other.ID != m.ID {
					carried = append(carried, other)
				}
				for _, c := range carried {
					if err := db.Create(&store.DeliveryItem{MatchID: c.ID, Channel: d.Channel, Kind: fmt.Sprint(d.ID), DeliveryID: d.ID,
						CreditCode: c.CreditCode, PolicyID: c.PolicyID, QueuedAt: now}).Error; err != nil {
						t.Fatal(err)
					}
				}
				if err := store.RefreshReach(db, []uint64{d.ID}); err != nil {
					t.Fatal(err)
				}
				deliveries = append(deliveries, d)
			default: // one or more deliveries change state together (a batch)
				var ids []uint64
				to := states[rng.IntN(len(states))]
				for range 1 + rng.IntN(3) {
					ids = append(ids, deliveries[rng.IntN(len(deliveries))].ID)
				}
				// as the notifier does: queued in the transaction of the change, refreshed by a drain
				if err := db.Transaction(func(tx *gorm.DB) error {
					if err := tx.Model(&store.Delivery{}).Where("id IN ?", ids).Update("state", to).Error; err != nil {
						return err
					}
					return store.QueueDeliveries(tx, ids, true)
				}); err != nil {
					t.Fatal(err)
				}
				if rng.IntN(4) == 0 {
					if _, err := store.DrainDeliveries(context.Background(), db); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		n, err := store.DrainDeliveries(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		drained += n
		var left int64
		if err := db.Model(&store.DeliveryQueue{}).Count(&left).Error; err != nil || left != 0 {
			t.Fatalf("%d deliveries left in the queue after a drain (%v)", left, err)
		}
		checkReach(t, db, fmt.Sprintf("round %d", round))
		// A new version of a policy: the firms' active rows are superseded and new ones inserted,
		// which start from the reach of the firm's notices of the policy.
		policy := fmt.Sprintf("p%d", round%3)
		if err := db.Transaction(func(tx *gorm.DB) error {
			var old []store.Match
			if err := tx.Where("policy_id = ? AND state = ?", policy, store.MatchActive).Find(&old).Error; err != nil {
				return err
			}
			if len(old) == 0 {
				return nil
			}
			c, err := store.BeginCountChange(tx, ids(old))
			if err != nil {
				return err
			}
			if err := tx.Model(&store.Match{}).Where("id IN ?", ids(old)).Update("state", store.MatchSuperseded).Error; err != nil {
				return err
			}
			fresh := make([]store.Match, len(old))
			for i, m := range old {
				fresh[i] = store.Match{PolicyID: m.PolicyID, PolicyVersion: m.PolicyVersion + 1, CreditCode: m.CreditCode,
					State: store.MatchActive, AsOf: m.AsOf, MatchedAt: now, UpdatedAt: now}
			}
			if err := tx.Create(&fresh).Error; err != nil {
				return err
			}
			if err := store.ReachOfNew(tx, fresh); err != nil {
				return err
			}
			ms = append(ms, fresh...)
			return c.Finish(tx, append(ids(old), ids(fresh)...))
		}); err != nil {
			t.Fatal(err)
		}
		checkReach(t, db, fmt.Sprintf("round %d, new version of %s", round, policy))
	}
	if drained == 0 {
		t.Fatal("no drain at the end of a round found queued deliveries: the queue path went untested")
	}
}

func ids(ms []store.Match) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// A database made before matches kept their reach gets the column, filled from the deliveries, and
// counts with notified and delivered equal to a recount, at migrate time, once.
func TestMigrateBackfillsReach(t *testing.T) {
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	ms := seedReach(t, db)
	now := time.Now().UTC()
	for i, m := range ms {
		if i%3 == 2 {
			continue
		}
		d := store.Delivery{MatchID: m.ID, Channel: "sms", Recipient: "13800000000", CreditCode: m.CreditCode, PolicyID: m.PolicyID,
			State: []string{store.DeliverySent, store.DeliveryDelivered, store.DeliveryDead}[i%3], Provider: "tencent", Items: 1}
		if err := db.Create(&d).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&store.DeliveryItem{MatchID: m.ID, Channel: "sms", DeliveryID: d.ID, CreditCode: m.CreditCode,
			PolicyID: m.PolicyID, QueuedAt: now}).Error; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		model any
		cols  []string
	}{{&store.Match{}, []string{"Reached"}}, {&store.MatchCount{}, []string{"Notified", "Delivered"}}} {
		for _, col := range c.cols {
			if err := db.Migrator().DropColumn(c.model, col); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	checkReach(t, db, "after the backfill")
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	checkReach(t, db, "after a second migration")
}
