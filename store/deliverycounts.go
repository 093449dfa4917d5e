package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"gorm.io/gorm"
)

// Maintained delivery counts: the status (`policypush status`, GET /api/v1/status) shows a scope's
// deliveries by channel and state, and the dashboard its dead ones. Counted from the deliveries
// that is a join of every firm in scope to its deliveries (a city's status took 1.25 s p50 at
// 1,000,000 firms on MariaDB beside the pipeline), or for the province a read of every delivery's
// index entry. DeliveryCount keeps the figure per (region code, park, channel, state), rolled up
// incrementally rather than in the notifier's transactions: counter rows are few and every
// notifier lane would queue on the same ones (the reach's drain, reach.go, measured what locks on
// the hot path cost MariaDB's delivery rate).
//
//   - a delivery's creation (intake), every transition that changes its state (notify/apply.go)
//     and a move of its firm to another place (MoveDeliveries, from the import's transaction)
//     queue it in delivery_queue in the same transaction;
//   - the notifier's drain (DrainDeliveries, every 200 ms) counts the queued deliveries:
//     CountDeliveries locks them, compares each one's state and its firm's place with the ones it
//     is counted under (Delivery.Counted*), moves the counts and stores the new ones, in one
//     transaction. The counts are at most a drain behind the deliveries; `policypush status`
//     drains first.
//   - a database made before the counts gets them filled in once (backfillDeliveryCounts);
//     `status recount` compares them with a count of the deliveries and repairs them.

func init() { Register(&DeliveryCount{}); RegisterFixup(backfillDeliveryCounts) }

// DeliveryCount is the number of deliveries of one region code, park, channel and state (the
// place is the firm's; a delivery whose firm is not in the registry has none).
type DeliveryCount struct {
	RegionCode string `gorm:"primaryKey;size:6" json:"region_code"`
	ParkID     string `gorm:"primaryKey;size:32" json:"park_id"`
	Channel    string `gorm:"primaryKey;size:16" json:"channel"`
	State      string `gorm:"primaryKey;size:16" json:"state"`
	N          int64  `gorm:"not null;default:0" json:"n"`
}

// DeliveryKey is the key of a DeliveryCount row.
type DeliveryKey struct{ RegionCode, ParkID, Channel, State string }

// DeliveryCounts are delivery counts (or changes to them) by key.
type DeliveryCounts map[DeliveryKey]int64

// ApplyDeliveryCounts adds changes to the stored delivery counts in tx, in key order.
func ApplyDeliveryCounts(tx *gorm.DB, changes DeliveryCounts) error {
	keys := make([]DeliveryKey, 0, len(changes))
	for k, n := range changes {
		if n != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b DeliveryKey) int {
		return cmp.Or(cmp.Compare(a.RegionCode, b.RegionCode), cmp.Compare(a.ParkID, b.ParkID),
			cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.State, b.State))
	})
	rows := make([][]any, len(keys))
	for i, k := range keys {
		rows[i] = []any{k.RegionCode, k.ParkID, k.Channel, k.State, changes[k]}
	}
	return addToCounters(tx, "delivery_counts", []string{"region_code", "park_id", "channel", "state"}, rows)
}

// deliveryNow is what CountDeliveries reads of a delivery: what it is counted under and what it is.
const deliveryNow = "SELECT d.id, d.channel, d.counted_state, d.counted_region, d.counted_park, d.state, " +
	"COALESCE(e.region_code, ''), COALESCE(e.park_id, '') FROM deliveries d LEFT JOIN enterprises e ON e.credit_code = d.credit_code"

// CountDeliveries brings the given deliveries' counts up to date in tx: each one whose state or
// firm's place differs from what it is counted under moves from that count to its own. On MySQL
// it locks the deliveries first (FOR UPDATE, in id order), so two drains that took one delivery
// from different queue rows move it once; on SQLite the transaction is the one writer.
func CountDeliveries(tx *gorm.DB, ids []uint64) error {
	mysql := tx.Dialector.Name() == "mysql"
	delta := DeliveryCounts{}
	type counted struct{ state, region, park string }
	moved := map[counted][]uint64{}
	var order []counted
	for lo := 0; lo < len(ids); lo += reachIDsPer {
		in, args := inList(tx, ids[lo:min(lo+reachIDsPer, len(ids))])
		if mysql {
			var locked []uint64
			if err := tx.Raw("SELECT id FROM deliveries WHERE id IN "+in+" ORDER BY id FOR UPDATE", args...).Scan(&locked).Error; err != nil {
				return fmt.Errorf("lock deliveries to count them: %w", err)
			}
		}
		rows, err := tx.Raw(deliveryNow+" WHERE d.id IN "+in, args...).Rows()
		if err != nil {
			return fmt.Errorf("read deliveries to count them: %w", err)
		}
		for rows.Next() {
			var id uint64
			var channel string
			var was, now counted
			if err := rows.Scan(&id, &channel, &was.state, &was.region, &was.park, &now.state, &now.region, &now.park); err != nil {
				rows.Close()
				return fmt.Errorf("read deliveries to count them: %w", err)
			}
			if was == now {
				continue
			}
			if was.state != "" {
				delta[DeliveryKey{was.region, was.park, channel, was.state}]--
			}
			delta[DeliveryKey{now.region, now.park, channel, now.state}]++
			if _, ok := moved[now]; !ok {
				order = append(order, now)
			}
			moved[now] = append(moved[now], id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("read deliveries to count them: %w", err)
		}
	}
	for _, c := range order {
		list := moved[c]
		for lo := 0; lo < len(list); lo += reachIDsPer {
			in, args := inList(tx, list[lo:min(lo+reachIDsPer, len(list))])
			if err := tx.Exec("UPDATE deliveries SET counted_state = ?, counted_region = ?, counted_park = ? WHERE id IN "+in,
				append([]any{c.state, c.region, c.park}, args...)...).Error; err != nil {
				return fmt.Errorf("store what deliveries are counted under: %w", err)
			}
		}
	}
	return ApplyDeliveryCounts(tx, delta)
}

// MoveDeliveries queues the deliveries of firms that moved to another place, in tx (the import's
// transaction that moved them, after its write), for the drain to count them at the new place.
// The read locks what it reads on MySQL (INSERT … SELECT), so a delivery created for such a firm
// meanwhile waits for the move and is counted after it.
func MoveDeliveries(tx *gorm.DB, codes []string) error {
	for lo := 0; lo < len(codes); lo += countIDsPer {
		in, args := inList(tx, codes[lo:min(lo+countIDsPer, len(codes))])
		if err := tx.Exec("INSERT INTO delivery_queue (delivery_id, reach) SELECT id, ? FROM deliveries WHERE credit_code IN "+in,
			append([]any{false}, args...)...).Error; err != nil {
			return fmt.Errorf("queue the deliveries of moved firms: %w", err)
		}
	}
	return nil
}

// RecountDeliveries counts every delivery by its firm's place, channel and state.
func RecountDeliveries(ctx context.Context, db *gorm.DB) (DeliveryCounts, error) {
	var rows []DeliveryCount
	if err := db.WithContext(ctx).Table("deliveries AS d").Joins("LEFT JOIN enterprises e ON e.credit_code = d.credit_code").
		Select("COALESCE(e.region_code, '') AS region_code, COALESCE(e.park_id, '') AS park_id, d.channel, d.state, COUNT(*) AS n").
		Group("COALESCE(e.region_code, ''), COALESCE(e.park_id, ''), d.channel, d.state").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("recount deliveries: %w", err)
	}
	return deliveryCountsOf(rows), nil
}

// StoredDeliveryCounts reads the stored delivery counts (rows of zero left out).
func StoredDeliveryCounts(ctx context.Context, db *gorm.DB) (DeliveryCounts, error) {
	var rows []DeliveryCount
	if err := db.WithContext(ctx).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read delivery counts: %w", err)
	}
	return deliveryCountsOf(rows), nil
}

func deliveryCountsOf(rows []DeliveryCount) DeliveryCounts {
	out := DeliveryCounts{}
	for _, r := range rows {
		if r.N != 0 {
			out[DeliveryKey{r.RegionCode, r.ParkID, r.Channel, r.State}] = r.N
		}
	}
	return out
}

// countDiffs is how many keys differ between two sets of counts.
func countDiffs[K comparable](stored, recount map[K]int64) int {
	n := 0
	for k, v := range recount {
		if stored[k] != v {
			n++
		}
	}
	for k := range stored {
		if _, ok := recount[k]; !ok {
			n++
		}
	}
	return n
}

// replaceDeliveryCounts counts every delivery as it is, in tx: each one's Counted* columns become
// its state and its firm's place, and the counts a count of those columns. The UPDATE comes first
// and locks every delivery on MySQL, so no state change slips between what is stored and what is
// counted (a change queued meanwhile finds its delivery counted as it was and moves it).
func replaceDeliveryCounts(tx *gorm.DB) error {
	set := "UPDATE deliveries SET counted_state = state, counted_region = COALESCE((SELECT e.region_code FROM enterprises e WHERE e.credit_code = deliveries.credit_code), ''), " +
		"counted_park = COALESCE((SELECT e.park_id FROM enterprises e WHERE e.credit_code = deliveries.credit_code), '')"
	if tx.Dialector.Name() == "mysql" {
		set = "UPDATE deliveries d LEFT JOIN enterprises e ON e.credit_code = d.credit_code SET d.counted_state = d.state, " +
			"d.counted_region = COALESCE(e.region_code, ''), d.counted_park = COALESCE(e.park_id, '')"
	}
	if err := tx.Exec(set).Error; err != nil {
		return fmt.Errorf("store what deliveries are counted under: %w", err)
	}
	var rows []DeliveryCount
	if err := tx.Table("deliveries").Select("counted_region AS region_code, counted_park AS park_id, channel, counted_state AS state, COUNT(*) AS n").
		Group("counted_region, counted_park, channel, counted_state").Scan(&rows).Error; err != nil {
		return fmt.Errorf("count deliveries: %w", err)
	}
	if err := tx.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(&DeliveryCount{}).Error; err != nil {
		return fmt.Errorf("clear delivery counts: %w", err)
	}
	return ApplyDeliveryCounts(tx, deliveryCountsOf(rows))
}

// backfillDeliveryCounts counts the deliveries of a database made before the counts existed, once:
// when deliveries exist and delivery_counts does not. It adds the Counted* columns first
// (fixups run before AutoMigrate).
func backfillDeliveryCounts(db *gorm.DB) error {
	m := db.Migrator()
	if m.HasTable(&DeliveryCount{}) || !m.HasTable(&Delivery{}) || !m.HasTable(&Enterprise{}) {
		return nil
	}
	for _, col := range []string{"CountedState", "CountedRegion", "CountedPark"} {
		if !m.HasColumn(&Delivery{}, col) {
			if err := m.AddColumn(&Delivery{}, col); err != nil {
				return fmt.Errorf("add deliveries.%s: %w", col, err)
			}
		}
	}
	if err := m.CreateTable(&DeliveryCount{}); err != nil {
		return fmt.Errorf("create delivery_counts: %w", err)
	}
	return db.Transaction(replaceDeliveryCounts)
}
