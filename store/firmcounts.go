package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
)

// Maintained firm counts: the status (`policypush status`, GET /api/v1/status) shows how many
// firms a scope holds and how many are active. Counted from enterprises that is a read of every
// firm's index entry in scope (1.1 s for 1,000,000 firms on MariaDB beside the pipeline);
// FirmCount keeps the figure per (region code, park, registry status), written in the
// transaction that writes the firms (registry.UpsertCounted, every import's and change event's
// write), filled in once for a database made before (backfillFirmCounts), checked and repaired
// with the match counts by Recount. A writer that bypasses the registry (a test seeding firms
// directly) recounts. Which firms are new is exact under concurrent imports for the reason the
// import's inserted and updated figures are (registry.DBSink): the batch's rows are read first
// with a locking read (registry.LockStored), which under MySQL's default REPEATABLE READ also
// locks the gap a missing firm would go into, so two imports adding the same new firm cannot both
// insert it (one waits, or deadlocks and is rolled back).

func init() { Register(&FirmCount{}); RegisterFixup(backfillFirmCounts) }

// FirmCount is the number of firms of one region code, park and registry status.
type FirmCount struct {
	RegionCode string `gorm:"primaryKey;size:6" json:"region_code"`
	ParkID     string `gorm:"primaryKey;size:32" json:"park_id"`
	Status     string `gorm:"primaryKey;size:16" json:"status"`
	N          int64  `gorm:"not null;default:0" json:"n"`
}

// FirmKey is the key of a FirmCount row.
type FirmKey struct{ RegionCode, ParkID, Status string }

// FirmCounts are firm counts (or changes to them) by key.
type FirmCounts map[FirmKey]int64

// Add adds (sign 1) or subtracts (sign -1) a firm as it is in e.
func (c FirmCounts) Add(e *Enterprise, sign int64) {
	c[FirmKey{e.RegionCode, e.ParkID, e.Status}] += sign
}

// ApplyFirmCounts adds changes to the stored firm counts in tx, in key order (so that concurrent
// writers lock counter rows in the same order).
func ApplyFirmCounts(tx *gorm.DB, changes FirmCounts) error {
	return applyCounters(tx, "firm_counts", []string{"region_code", "park_id", "status"}, changes,
		func(a, b FirmKey) int {
			return cmp.Or(cmp.Compare(a.RegionCode, b.RegionCode), cmp.Compare(a.ParkID, b.ParkID), cmp.Compare(a.Status, b.Status))
		},
		func(k FirmKey) []any { return []any{k.RegionCode, k.ParkID, k.Status} })
}

// applyCounters adds changes to a counter table keyed by keyCols, in key order (compare), so that
// concurrent writers lock counter rows in the same order; values are a key's column values.
func applyCounters[M ~map[K]int64, K comparable](tx *gorm.DB, table string, keyCols []string, changes M, compare func(a, b K) int,
	values func(K) []any) error {
	keys := make([]K, 0, len(changes))
	for k, n := range changes {
		if n != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compare)
	rows := make([][]any, len(keys))
	for i, k := range keys {
		rows[i] = append(values(k), changes[k])
	}
	return addToCounters(tx, table, keyCols, rows)
}

// addToCounters adds to counter rows of table, keyed by keyCols, with a column n: each row is the
// key's values and the number to add, in the order given (callers sort them, so that concurrent
// writers lock counter rows in one order); a multi-row UPSERT per countUpsertRows rows.
func addToCounters(tx *gorm.DB, table string, keyCols []string, rows [][]any) error {
	upsert := " ON CONFLICT (" + strings.Join(keyCols, ", ") + ") DO UPDATE SET n = " + table + ".n + excluded.n"
	if tx.Dialector.Name() == "mysql" {
		upsert = " ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
	}
	one := "(?" + strings.Repeat(",?", len(keyCols)) + ")"
	head := "INSERT INTO " + table + " (" + strings.Join(keyCols, ", ") + ", n) VALUES "
	for lo := 0; lo < len(rows); lo += countUpsertRows {
		part := rows[lo:min(lo+countUpsertRows, len(rows))]
		args := make([]any, 0, (len(keyCols)+1)*len(part))
		for _, r := range part {
			args = append(args, r...)
		}
		if err := tx.Exec(head+one+strings.Repeat(","+one, len(part)-1)+upsert, args...).Error; err != nil {
			return fmt.Errorf("update %s: %w", table, err)
		}
	}
	return nil
}

// RecountFirms counts every firm by region code, park and status.
func RecountFirms(ctx context.Context, db *gorm.DB) (FirmCounts, error) {
	var rows []FirmCount
	if err := db.WithContext(ctx).Table("enterprises").Select("region_code, park_id, status, COUNT(*) AS n").
		Group("region_code, park_id, status").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("recount firms: %w", err)
	}
	return countsOf(rows), nil
}

// StoredFirmCounts reads the stored firm counts (rows of zero left out).
func StoredFirmCounts(ctx context.Context, db *gorm.DB) (FirmCounts, error) {
	return storedCounts[FirmCount, FirmKey](ctx, db, "firm counts")
}

func (r FirmCount) keyN() (FirmKey, int64) { return FirmKey{r.RegionCode, r.ParkID, r.Status}, r.N }

// counterRow is a row of a counter table (FirmCount, DeliveryCount): its key and number.
type counterRow[K comparable] interface{ keyN() (K, int64) }

// countsOf is counter rows by key, rows of zero left out.
func countsOf[R counterRow[K], K comparable](rows []R) map[K]int64 {
	out := map[K]int64{}
	for _, r := range rows {
		if k, n := r.keyN(); n != 0 {
			out[k] = n
		}
	}
	return out
}

// storedCounts reads a counter table (what names it in an error) by key, rows of zero left out.
func storedCounts[R counterRow[K], K comparable](ctx context.Context, db *gorm.DB, what string) (map[K]int64, error) {
	var rows []R
	if err := db.WithContext(ctx).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return countsOf(rows), nil
}

// recountTable compares a counter table (stored) with a recount of what it counts; with fix it
// repairs a difference (replace). It returns the recount's total and how many keys differ.
func recountTable[M ~map[K]int64, K comparable](ctx context.Context, tx *gorm.DB, fix bool, recount, stored func(context.Context, *gorm.DB) (M, error),
	replace func(*gorm.DB, M) error) (total int64, diffs int, fixed bool, err error) {
	now, err := recount(ctx, tx)
	if err != nil {
		return 0, 0, false, err
	}
	was, err := stored(ctx, tx)
	if err != nil {
		return 0, 0, false, err
	}
	for _, n := range now {
		total += n
	}
	if diffs = countDiffs(was, now); fix && diffs > 0 {
		if err := replace(tx, now); err != nil {
			return total, diffs, false, err
		}
		fixed = true
	}
	return total, diffs, fixed, nil
}

// replaceFirmCounts stores counts as the firm counts, in tx.
func replaceFirmCounts(tx *gorm.DB, counts FirmCounts) error {
	if err := tx.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(&FirmCount{}).Error; err != nil {
		return fmt.Errorf("clear firm counts: %w", err)
	}
	return ApplyFirmCounts(tx, counts)
}

// backfillFirmCounts counts the firms of a database made before the counts existed, once: when
// enterprises exist and firm_counts does not.
func backfillFirmCounts(db *gorm.DB) error {
	m := db.Migrator()
	if m.HasTable(&FirmCount{}) || !m.HasTable(&Enterprise{}) {
		return nil
	}
	return db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Migrator().CreateTable(&FirmCount{}); err != nil {
			return fmt.Errorf("create firm_counts: %w", err)
		}
		counts, err := RecountFirms(txContext(tx), tx)
		if err != nil {
			return err
		}
		return ApplyFirmCounts(tx, counts)
	})
}
