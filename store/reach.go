package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
)

// How far a match's notices got (Match.Reached), kept on the match so that the console reads it
// instead of probing delivery_items once per match: the dashboard's funnel sums it from the
// maintained counts (MatchCount.Notified, Delivered), the list shows and filters it as a column.
//
// The truth is the deliveries: a match is delivered when a delivery carrying an item of its firm
// and policy is delivered, sent when one is sent (items are keyed by firm and policy, so a newer
// policy version the firm still qualifies for keeps the notice of the old one). Reached follows
// that truth, rolled up incrementally:
//   - every delivery transition that enters or leaves sent or delivered queues its deliveries in
//     delivery_queue marked for reach, in its own transaction (QueueDeliveries, from
//     notify/apply.go): one multi-row INSERT on the notifier's hot path (the same queue carries
//     every state change to the delivery counts, deliverycounts.go);
//   - the notifier's processes drain the queue every 200 ms (DrainDeliveries): RefreshReach recomputes
//     the reach of the queued deliveries' matches, stores what changed and moves the counts, and the
//     queue rows go, in one transaction. The funnel is at most a moment behind the deliveries;
//   - a new match row starts from the reach its firm and policy already have (ReachOfNew, from
//     CountPlaced and the matcher's supersede);
//   - a database made before the column gets it backfilled once (backfillReach).
//
// Refreshing in the notifier's own transactions, with the locks and READ COMMITTED that two lanes
// delivering one match at once need, cost MariaDB a quarter of its delivery rate (bench deliver:
// 4,049 → 2,962 notices/s). Drained in the background, concurrent drains (several notifier
// processes) take disjoint queue rows (SKIP LOCKED on MySQL) and serialize on the match rows
// (FOR UPDATE): the reach and counts move from the latest committed row, and a delivery a drain's
// snapshot missed is queued again by its own transaction, so every match ends at its truth.

// reachOf is the reach of the notices of match m's firm and policy.
const reachOf = "(SELECT COALESCE(MAX(CASE d.state WHEN '" + DeliveryDelivered + "' THEN 2 WHEN '" + DeliverySent + "' THEN 1 ELSE 0 END), 0)" +
	" FROM delivery_items i JOIN deliveries d ON d.id = i.delivery_id WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id)"

func init() { Register(&DeliveryQueue{}); RegisterFixup(renameReachQueue) }

// DeliveryQueue is a delivery whose state change, creation or firm's move waits for DrainDeliveries:
// its count (CountDeliveries, always) and, when Reach is set, the reach of its matches
// (RefreshReach).
//
// A row names a run of consecutive delivery ids, DeliveryID to LastID (0: DeliveryID alone): the
// deliveries one intake transaction creates get consecutive ids, and a batch's transition names
// them together, so a row per run rather than per delivery. A run may also name ids of other
// transactions' deliveries (an id allocated between two of the run's, on a database that
// interleaves them): counting a delivery is idempotent (CountDeliveries compares it with what it
// is counted under) and one not committed yet is skipped and counted from its own row.
//
// A row with a CreditCode (and no delivery id) names every delivery of a firm that moved to another
// place (MoveDeliveries): the drain reads them when it runs, after the move committed.
type DeliveryQueue struct {
	ID         uint64 `gorm:"primaryKey;autoIncrement" json:"id"`
	DeliveryID uint64 `gorm:"not null" json:"delivery_id"`
	LastID     uint64 `gorm:"not null;default:0" json:"last_id"`
	CreditCode string `gorm:"size:18;not null;default:''" json:"credit_code"`
	Reach      bool   `gorm:"not null;default:false" json:"reach"`
}

// last is the last delivery id of the row's run.
func (q DeliveryQueue) last() uint64 { return max(q.DeliveryID, q.LastID) }

// queueRuns are the queue rows of a set of delivery ids: one per run of consecutive ids.
func queueRuns(deliveryIDs []uint64, reach bool) []DeliveryQueue {
	ids := slices.Clone(deliveryIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var rows []DeliveryQueue
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		r := DeliveryQueue{DeliveryID: ids[i], Reach: reach}
		if j > i {
			r.LastID = ids[j]
		}
		rows = append(rows, r)
		i = j + 1
	}
	return rows
}

// TableName is delivery_queue (a queue, not a list of queues).
func (DeliveryQueue) TableName() string { return "delivery_queue" }

// QueueDeliveries queues deliveries for DrainDeliveries, in tx (the transaction that created them
// or changed their state); reach says the change may have moved the reach of their matches.
func QueueDeliveries(tx *gorm.DB, deliveryIDs []uint64, reach bool) error {
	rows := queueRuns(deliveryIDs, reach)
	if len(rows) == 0 {
		return nil
	}
	if err := tx.CreateInBatches(rows, 200).Error; err != nil {
		return fmt.Errorf("queue deliveries for their counts: %w", err)
	}
	return nil
}

// renameReachQueue moves what an older database's reach_queue (every row a reach refresh) holds
// into delivery_queue, once. Not in one transaction: MySQL's DROP TABLE waits for the metadata
// lock a transaction that read the table holds (gorm's migrator runs it on a connection of its
// own). A start that stops between the two moves the rows again, and a delivery queued twice is
// drained once.
func renameReachQueue(db *gorm.DB) error {
	m := db.Migrator()
	if !m.HasTable("reach_queue") {
		return nil
	}
	if !m.HasTable(&DeliveryQueue{}) {
		if err := m.CreateTable(&DeliveryQueue{}); err != nil {
			return fmt.Errorf("create delivery_queue: %w", err)
		}
	}
	if err := db.Exec("INSERT INTO delivery_queue (delivery_id, reach) SELECT delivery_id, ? FROM reach_queue", true).Error; err != nil {
		return fmt.Errorf("move reach_queue into delivery_queue: %w", err)
	}
	if err := m.DropTable("reach_queue"); err != nil {
		return fmt.Errorf("drop reach_queue: %w", err)
	}
	return nil
}

// deliveryDrainRows is how many queue rows one drain transaction reads; it takes them in order
// until they name deliveryDrainIDs deliveries (at least one row).
const (
	deliveryDrainRows = 2000
	deliveryDrainIDs  = 5000
)

// DrainDeliveries counts the queued deliveries (CountDeliveries), refreshes the reach of the ones
// queued for it (RefreshReach) and removes them from the queue — runs expanded, moved firms'
// deliveries read — at most deliveryDrainRows queue rows and about deliveryDrainIDs deliveries per
// transaction, until the queue is empty or ctx ends; it returns how many queue rows it took.
func DrainDeliveries(ctx context.Context, db *gorm.DB) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n, more := 0, false
		err := retryConflicts(ctx, func() error {
			return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				q := "SELECT id, delivery_id, last_id, credit_code, reach FROM delivery_queue ORDER BY id LIMIT ?"
				if tx.Dialector.Name() == "mysql" {
					q += " FOR UPDATE SKIP LOCKED"
				}
				var rows []DeliveryQueue
				if err := tx.Raw(q, deliveryDrainRows).Scan(&rows).Error; err != nil {
					return fmt.Errorf("read the delivery queue: %w", err)
				}
				more = len(rows) == deliveryDrainRows
				var all []uint64 // CountDeliveries takes each once
				var reach []uint64
				var firms []string
				seenReach := map[uint64]bool{}
				for i, r := range rows {
					if i > 0 && len(all)+len(firms) >= deliveryDrainIDs {
						rows, more = rows[:i], true // the rest for the next transaction
						break
					}
					if r.CreditCode != "" {
						firms = append(firms, r.CreditCode)
						continue
					}
					for id := r.DeliveryID; id <= r.last(); id++ {
						all = append(all, id)
						if r.Reach && !seenReach[id] {
							seenReach[id] = true
							reach = append(reach, id)
						}
					}
				}
				if n = len(rows); n == 0 {
					return nil
				}
				ids, err := firmDeliveries(tx, firms)
				if err != nil {
					return err
				}
				all = append(all, ids...)
				if err := CountDeliveries(tx, all); err != nil {
					return err
				}
				if err := RefreshReach(tx, reach); err != nil {
					return err
				}
				queued := make([]uint64, n)
				for i, r := range rows {
					queued[i] = r.ID
				}
				for lo := 0; lo < n; lo += reachIDsPer {
					if err := tx.Where("id IN ?", queued[lo:min(lo+reachIDsPer, n)]).Delete(&DeliveryQueue{}).Error; err != nil {
						return fmt.Errorf("empty the delivery queue: %w", err)
					}
				}
				return nil
			}, reachTxOptions(db))
		})
		if err != nil {
			return total, err
		}
		total += n
		if !more {
			return total, nil
		}
	}
	return total, ctx.Err()
}

// firmDeliveries are the ids of the deliveries of the given firms, read without locking them.
func firmDeliveries(tx *gorm.DB, codes []string) ([]uint64, error) {
	slices.Sort(codes)
	codes = slices.Compact(codes)
	var ids []uint64
	for lo := 0; lo < len(codes); lo += countIDsPer {
		in, args := inList(tx, codes[lo:min(lo+countIDsPer, len(codes))])
		var part []uint64
		if err := tx.Raw("SELECT id FROM deliveries WHERE credit_code IN "+in, args...).Scan(&part).Error; err != nil {
			return nil, fmt.Errorf("read the deliveries of moved firms: %w", err)
		}
		ids = append(ids, part...)
	}
	return ids, nil
}

// retryConflicts runs a drain's transaction again (at most four times in all) when it lost to a
// concurrent drain: a deadlock or lock wait (the match rows, RefreshReach) or a delivery both
// counted for the first time (the primary key of DeliveryCounted). The loser's work is the
// winner's too, so trying again at once finds little left.
func retryConflicts(ctx context.Context, tx func() error) error {
	var err error
	for range 4 {
		if err = tx(); err == nil || ctx.Err() != nil || !(IsLockConflict(err) || IsUniqueViolation(err)) {
			return err
		}
	}
	return err
}

// reachTxOptions are the options of a drain: READ COMMITTED on MySQL, so that it reads the
// deliveries committed when it runs rather than its snapshot; the default elsewhere (SQLite has
// one writer).
func reachTxOptions(db *gorm.DB) *sql.TxOptions {
	if db.Dialector.Name() == "mysql" {
		return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	return nil
}

// reachIDsPer is how many delivery or match ids one reach statement names.
const reachIDsPer = 500

// RefreshReach recomputes, in tx, the reach of every match of the firms and policies the items of
// the given deliveries carry, stores the ones that changed and moves the match counts with them.
// On MySQL it locks those match rows first (FOR UPDATE, in id order).
func RefreshReach(tx *gorm.DB, deliveryIDs []uint64) error {
	mysql := tx.Dialector.Name() == "mysql"
	for lo := 0; lo < len(deliveryIDs); lo += reachIDsPer {
		part := deliveryIDs[lo:min(lo+reachIDsPer, len(deliveryIDs))]
		in, args := inList(tx, part)
		// the matches of an item's firm and policy by their whole unique key, one lookup per
		// version of the policy (ux_match: policy, version, firm). By ux_match's policy prefix
		// alone the databases read every match of the policy for each item (a drain ran for
		// minutes at 51 million matches); through the firm index, every match of the firm (51 per
		// firm at 1,000,000 × 1,000 on MariaDB: 108 ms idle for 500 deliveries, 1–1.6 s beside
		// the console; by the whole key 7 ms; SQLite at 200,000 firms 65 → 4 ms)
		// (SQLite's CROSS JOIN keeps the order: left to itself it read the policy's matches first)
		pairs := " FROM delivery_items x CROSS JOIN policy_versions v ON v.policy_id = x.policy_id" +
			" CROSS JOIN matches m ON m.policy_id = v.policy_id AND m.policy_version = v.version AND m.credit_code = x.credit_code"
		if mysql {
			pairs = " FROM delivery_items x STRAIGHT_JOIN policy_versions v ON v.policy_id = x.policy_id" +
				" STRAIGHT_JOIN matches m FORCE INDEX (ux_match) ON m.policy_id = v.policy_id AND m.policy_version = v.version AND m.credit_code = x.credit_code"
		}
		where := " WHERE x.delivery_id IN " + in
		if mysql {
			// lock the matches first, in id order: concurrent refreshes of one match queue here
			var ids []uint64
			if err := tx.Raw("SELECT m.id"+pairs+where+" ORDER BY m.id FOR UPDATE", args...).Scan(&ids).Error; err != nil {
				return fmt.Errorf("lock matches to refresh their reach: %w", err)
			}
			if len(ids) == 0 {
				continue
			}
		}
		rows, err := tx.Raw("SELECT m.id, m.policy_id, m.state, m.amount, m.matched_at, m.reached, e.region_code, e.park_id, "+reachOf+
			pairs+" JOIN enterprises e ON e.credit_code = m.credit_code"+where, args...).Rows()
		if err != nil {
			return fmt.Errorf("read the reach of matches: %w", err)
		}
		delta := Counts{}
		moved := map[int8][]uint64{}
		seen := map[uint64]bool{}
		for rows.Next() {
			var id uint64
			var m CountedMatch
			var now int8
			if err := rows.Scan(&id, &m.PolicyID, &m.State, &m.Amount, &m.MatchedAt, &m.Reached, &m.RegionCode, &m.ParkID, &now); err != nil {
				rows.Close()
				return fmt.Errorf("read the reach of matches: %w", err)
			}
			if seen[id] || now == m.Reached {
				continue
			}
			seen[id] = true
			delta.Add(m, -1)
			m.Reached = now
			delta.Add(m, 1)
			moved[now] = append(moved[now], id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("read the reach of matches: %w", err)
		}
		if err := setReached(tx, moved); err != nil {
			return err
		}
		if err := ApplyCounts(tx, delta); err != nil {
			return err
		}
	}
	return nil
}

// setReached stores the reach of matches, by reach.
func setReached(tx *gorm.DB, ids map[int8][]uint64) error {
	for level, list := range ids {
		for lo := 0; lo < len(list); lo += reachIDsPer {
			if err := tx.Model(&Match{}).Where("id IN ?", list[lo:min(lo+reachIDsPer, len(list))]).
				Update("reached", level).Error; err != nil {
				return fmt.Errorf("store the reach of matches: %w", err)
			}
		}
	}
	return nil
}

// ReachOfNew sets the reach of match rows just inserted in tx (ID 0: not inserted, skipped) to
// what their firms' notices of the policy already reached, in memory and in the table, before
// they are counted. A firm and policy that has no sent or delivered delivery (every match of a
// first match, and almost every new one) costs one look at delivery_items per call.
func ReachOfNew(tx *gorm.DB, ms []Match) error {
	var some []uint64
	if err := tx.Raw("SELECT match_id FROM delivery_items LIMIT 1").Scan(&some).Error; err != nil {
		return fmt.Errorf("look for delivery items: %w", err)
	}
	if len(some) == 0 {
		return nil
	}
	var codes []string
	seen := map[string]bool{}
	for i := range ms {
		if ms[i].ID != 0 && !seen[ms[i].CreditCode] {
			seen[ms[i].CreditCode] = true
			codes = append(codes, ms[i].CreditCode)
		}
	}
	type pair struct{ policy, code string }
	reach := map[pair]int8{}
	// The firms' items through ix_item_firm_policy, each one's delivery by its key, for every
	// policy at once (the pairs that are not new matches are left out below). Left to itself
	// SQLite went from deliveries by state instead: every sent or delivered delivery read for each
	// query, 0.26 s each with 200,000 of them, and one query per policy of each transaction made a
	// full match of 140 policies beside a delivered backlog take 549 s to write instead of 12.
	items := "delivery_items i INDEXED BY ix_item_firm_policy CROSS JOIN deliveries d"
	if tx.Dialector.Name() == "mysql" {
		items = "delivery_items i FORCE INDEX (ix_item_firm_policy) STRAIGHT_JOIN deliveries d"
	}
	for lo := 0; lo < len(codes); lo += countIDsPer {
		in, args := inList(tx, codes[lo:min(lo+countIDsPer, len(codes))])
		q := "SELECT i.policy_id, i.credit_code, MAX(CASE d.state WHEN '" + DeliveryDelivered + "' THEN 2 ELSE 1 END) FROM " + items +
			" ON d.id = i.delivery_id WHERE i.credit_code IN " + in + " AND d.state IN ('" + DeliverySent + "', '" +
			DeliveryDelivered + "') GROUP BY i.policy_id, i.credit_code"
		rows, err := tx.Raw(q, args...).Rows()
		if err != nil {
			return fmt.Errorf("read the reach of new matches: %w", err)
		}
		for rows.Next() {
			var policy, code string
			var level int8
			if err := rows.Scan(&policy, &code, &level); err != nil {
				rows.Close()
				return fmt.Errorf("read the reach of new matches: %w", err)
			}
			reach[pair{policy, code}] = level
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("read the reach of new matches: %w", err)
		}
	}
	if len(reach) == 0 {
		return nil
	}
	moved := map[int8][]uint64{}
	for i := range ms {
		if level := reach[pair{ms[i].PolicyID, ms[i].CreditCode}]; ms[i].ID != 0 && level != ms[i].Reached {
			ms[i].Reached = level
			moved[level] = append(moved[level], ms[i].ID)
		}
	}
	return setReached(tx, moved)
}

// backfillReach adds Match.Reached and the counts' Notified and Delivered to a database made
// before them, once (when matches lack the column): the reach of every match that has a delivery
// item is computed from the deliveries, and the counts are replaced by a recount.
func backfillReach(db *gorm.DB) error {
	m := db.Migrator()
	if !m.HasTable(&Match{}) || m.HasColumn(&Match{}, "Reached") {
		return nil
	}
	return db.Transaction(func(tx *gorm.DB) error {
		m := tx.Migrator()
		if err := m.AddColumn(&Match{}, "Reached"); err != nil {
			return fmt.Errorf("add matches.reached: %w", err)
		}
		if m.HasTable(&DeliveryItem{}) && m.HasTable(&Delivery{}) {
			if err := tx.Exec("UPDATE matches SET reached = " + strings.ReplaceAll(reachOf, "m.", "matches.") +
				" WHERE EXISTS (SELECT 1 FROM delivery_items x WHERE x.credit_code = matches.credit_code AND x.policy_id = matches.policy_id)").Error; err != nil {
				return fmt.Errorf("backfill matches.reached: %w", err)
			}
		}
		if !m.HasTable(&MatchCount{}) || !m.HasTable(&Enterprise{}) {
			return nil // backfillMatchCounts counts them
		}
		for _, col := range []string{"Notified", "Delivered"} {
			if !m.HasColumn(&MatchCount{}, col) {
				if err := m.AddColumn(&MatchCount{}, col); err != nil {
					return fmt.Errorf("add match_counts.%s: %w", strings.ToLower(col), err)
				}
			}
		}
		return recountInto(tx)
	})
}
