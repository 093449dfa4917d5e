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
//   - a delivery's creation (intake), every transition that changes its state but a claim
//     (notify/apply.go: a delivery being sent stays counted as it was until the attempt's outcome)
//     queue it in delivery_queue in the same transaction; a move of its firm to another place
//     queues the firm (MoveDeliveries, from the import's transaction), whose deliveries the drain
//     reads;
//   - the notifier's drain (DrainDeliveries, every 200 ms) counts the queued deliveries:
//     CountDeliveries compares each one's state and its firm's place with what it is counted under
//     (DeliveryCounted, a row per delivery that only the drain writes), moves the counts and
//     stores the new ones, in one transaction. The counts are at most a drain behind the
//     deliveries; `policypush status` drains first.
//   - a database made before the counts gets them filled in once (backfillDeliveryCounts);
//     `status recount` compares them with a count of the deliveries and repairs them.
//
// What a delivery is counted under lives in a table of its own rather than in columns of
// deliveries: a drain that locked delivery rows deadlocked with the notifier's transactions,
// which update several deliveries (MariaDB, 1,000,000 firms: three deadlocks in 30 s). The drain
// reads the deliveries without locking them (READ COMMITTED on MySQL: the latest committed state)
// and locks only its own rows; a state committed after its read was queued by its own
// transaction and is counted by a later drain.

func init() { Register(&DeliveryCount{}, &DeliveryCounted{}); RegisterFixup(backfillDeliveryCounts) }

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
	return applyCounters(tx, "delivery_counts", []string{"region_code", "park_id", "channel", "state"}, changes,
		func(a, b DeliveryKey) int {
			return cmp.Or(cmp.Compare(a.RegionCode, b.RegionCode), cmp.Compare(a.ParkID, b.ParkID),
				cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.State, b.State))
		},
		func(k DeliveryKey) []any { return []any{k.RegionCode, k.ParkID, k.Channel, k.State} })
}

// DeliveryCounted is what one delivery is counted under in the delivery counts: its channel,
// state and its firm's place as the last drain saw them.
type DeliveryCounted struct {
	DeliveryID uint64 `gorm:"primaryKey;autoIncrement:false" json:"delivery_id"`
	Channel    string `gorm:"size:16;not null" json:"channel"`
	State      string `gorm:"size:16;not null" json:"state"`
	RegionCode string `gorm:"size:6;not null;default:''" json:"region_code"`
	ParkID     string `gorm:"size:32;not null;default:''" json:"park_id"`
}

// TableName is delivery_counted.
func (DeliveryCounted) TableName() string { return "delivery_counted" }

func (c DeliveryCounted) key() DeliveryKey {
	return DeliveryKey{c.RegionCode, c.ParkID, c.Channel, c.State}
}

// deliveryNow is what a delivery is to be counted under: its channel, state and firm's place.
const deliveryNow = "SELECT d.id AS delivery_id, d.channel, d.state, COALESCE(e.region_code, '') AS region_code, " +
	"COALESCE(e.park_id, '') AS park_id FROM deliveries d LEFT JOIN enterprises e ON e.credit_code = d.credit_code"

// CountDeliveries brings the given deliveries' counts up to date in tx: each one whose state or
// firm's place differs from what it is counted under (DeliveryCounted) moves from that count to
// its own. On MySQL the DeliveryCounted rows are locked first (FOR UPDATE, in id order), so two
// drains that took one delivery from different queue rows move it once (a delivery counted for
// the first time by both at once makes one of them fail on the primary key and try again).
func CountDeliveries(tx *gorm.DB, ids []uint64) error {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	lock := ""
	if tx.Dialector.Name() == "mysql" {
		lock = " ORDER BY delivery_id FOR UPDATE"
	}
	delta := DeliveryCounts{}
	var fresh []DeliveryCounted
	moved := map[DeliveryCounted][]uint64{} // by the new value, delivery id 0
	var order []DeliveryCounted
	for lo := 0; lo < len(ids); lo += reachIDsPer {
		in, args := inList(tx, ids[lo:min(lo+reachIDsPer, len(ids))])
		var was, now []DeliveryCounted
		if err := tx.Raw("SELECT delivery_id, channel, state, region_code, park_id FROM delivery_counted WHERE delivery_id IN "+in+lock,
			args...).Scan(&was).Error; err != nil {
			return fmt.Errorf("read what deliveries are counted under: %w", err)
		}
		if err := tx.Raw(deliveryNow+" WHERE d.id IN "+in, args...).Scan(&now).Error; err != nil {
			return fmt.Errorf("read deliveries to count them: %w", err)
		}
		counted := make(map[uint64]DeliveryCounted, len(was))
		for _, w := range was {
			counted[w.DeliveryID] = w
		}
		for _, c := range now {
			w, ok := counted[c.DeliveryID]
			if ok && w == c {
				continue
			}
			delta[c.key()]++
			if !ok {
				fresh = append(fresh, c)
				continue
			}
			delta[w.key()]--
			id := c.DeliveryID
			c.DeliveryID = 0
			if _, seen := moved[c]; !seen {
				order = append(order, c)
			}
			moved[c] = append(moved[c], id)
		}
	}
	if err := tx.CreateInBatches(fresh, 500).Error; err != nil {
		return fmt.Errorf("store what deliveries are counted under: %w", err)
	}
	for _, c := range order {
		list := moved[c]
		for lo := 0; lo < len(list); lo += reachIDsPer {
			in, args := inList(tx, list[lo:min(lo+reachIDsPer, len(list))])
			if err := tx.Exec("UPDATE delivery_counted SET state = ?, region_code = ?, park_id = ? WHERE delivery_id IN "+in,
				append([]any{c.State, c.RegionCode, c.ParkID}, args...)...).Error; err != nil {
				return fmt.Errorf("store what deliveries are counted under: %w", err)
			}
		}
	}
	return ApplyDeliveryCounts(tx, delta)
}

// MoveDeliveries queues the deliveries of firms that moved to another place, in tx (the import's
// transaction that moved them): a queue row per firm, which the drain turns into the firm's
// deliveries when it runs, after the move committed, and counts them at the firm's place then. So
// the import reads and locks no delivery (an INSERT … SELECT of the firms' deliveries held shared
// locks on them until the import's batch committed, and a notifier updating one waited for it). A
// delivery created for such a firm meanwhile is counted wherever the drain that takes it finds
// the firm; the drain of the firm's row comes after the move and moves it if that was the old
// place.
func MoveDeliveries(tx *gorm.DB, codes []string) error {
	rows := make([]DeliveryQueue, 0, len(codes))
	for _, c := range codes {
		rows = append(rows, DeliveryQueue{CreditCode: c})
	}
	if len(rows) == 0 {
		return nil
	}
	if err := tx.CreateInBatches(rows, 500).Error; err != nil {
		return fmt.Errorf("queue the deliveries of moved firms: %w", err)
	}
	return nil
}

// RecountDeliveries counts every delivery by its firm's place, channel and state, as the drained
// counts have it: a delivery in the middle of an attempt (sending; its claim is not queued, see
// notify's Transition.movesState) under the state it is counted under, when it is counted.
func RecountDeliveries(ctx context.Context, db *gorm.DB) (DeliveryCounts, error) {
	state := "CASE WHEN d.state = '" + DeliverySending + "' AND c.state IS NOT NULL THEN c.state ELSE d.state END"
	var rows []DeliveryCount
	if err := db.WithContext(ctx).Table("deliveries AS d").Joins("LEFT JOIN enterprises e ON e.credit_code = d.credit_code").
		Joins("LEFT JOIN delivery_counted c ON c.delivery_id = d.id").
		Select("COALESCE(e.region_code, '') AS region_code, COALESCE(e.park_id, '') AS park_id, d.channel, " + state + " AS state, COUNT(*) AS n").
		Group("COALESCE(e.region_code, ''), COALESCE(e.park_id, ''), d.channel, " + state).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("recount deliveries: %w", err)
	}
	return countsOf(rows), nil
}

// StoredDeliveryCounts reads the stored delivery counts (rows of zero left out).
func StoredDeliveryCounts(ctx context.Context, db *gorm.DB) (DeliveryCounts, error) {
	return storedCounts[DeliveryCount, DeliveryKey](ctx, db, "delivery counts")
}

func (r DeliveryCount) keyN() (DeliveryKey, int64) {
	return DeliveryKey{r.RegionCode, r.ParkID, r.Channel, r.State}, r.N
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

// replaceDeliveryCounts counts every delivery as it is, in tx: what each one is counted under
// (DeliveryCounted) becomes its state and its firm's place, and the counts a count of that. On
// MySQL the INSERT … SELECT locks the deliveries it reads, so no state change slips between what
// is stored and what is counted (a change queued meanwhile finds its delivery counted as it was
// and moves it). A recount's figures are not taken (the signature is recountTable's): it counts
// what it stores in the same transaction.
func replaceDeliveryCounts(tx *gorm.DB, _ DeliveryCounts) error {
	for _, table := range []any{&DeliveryCounted{}, &DeliveryCount{}} {
		if err := tx.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(table).Error; err != nil {
			return fmt.Errorf("clear delivery counts: %w", err)
		}
	}
	if err := tx.Exec("INSERT INTO delivery_counted (delivery_id, channel, state, region_code, park_id) " + deliveryNow).Error; err != nil {
		return fmt.Errorf("store what deliveries are counted under: %w", err)
	}
	var rows []DeliveryCount
	if err := tx.Table("delivery_counted").Select("region_code, park_id, channel, state, COUNT(*) AS n").
		Group("region_code, park_id, channel, state").Scan(&rows).Error; err != nil {
		return fmt.Errorf("count deliveries: %w", err)
	}
	return ApplyDeliveryCounts(tx, countsOf(rows))
}

// backfillDeliveryCounts counts the deliveries of a database made before the counts existed, once:
// when deliveries exist and delivery_counted does not (it came after delivery_counts, in the same
// session's work: a database with the counts but not it is counted again too).
func backfillDeliveryCounts(db *gorm.DB) error {
	m := db.Migrator()
	if m.HasTable(&DeliveryCounted{}) || !m.HasTable(&Delivery{}) || !m.HasTable(&Enterprise{}) {
		return nil
	}
	for _, table := range []any{&DeliveryCount{}, &DeliveryCounted{}} {
		if !m.HasTable(table) {
			if err := m.CreateTable(table); err != nil {
				return fmt.Errorf("create the delivery counts: %w", err)
			}
		}
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return replaceDeliveryCounts(tx, nil) }); err != nil {
		_ = m.DropTable(&DeliveryCounted{}) // the next start counts again
		return err
	}
	return nil
}
