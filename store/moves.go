package store

import (
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

func init() { Register(&RegistryCounter{}) }

// RegistryCounter is a running count the registry keeps for its readers. One so far:
// counterPlaceMoves, the firms whose region code or park an import has changed
// (registry.UpsertCounted adds to it in the transaction that moves them). A full match reads it
// before loading its snapshot; when a transaction of new matches finds it unchanged, no firm has
// moved since the snapshot read the places, and the counts of the new matches take every known
// firm's place from the snapshot instead of reading firms again (PlaceMatches).
type RegistryCounter struct {
	Name string `gorm:"primaryKey;size:64" json:"name"`
	N    int64  `gorm:"not null;default:0" json:"n"`
}

const counterPlaceMoves = "place_moves"

// PlaceMoves reads how many firm moves the registry has made. On MySQL the read takes a shared
// lock on the counter, so that an import moving firms (which takes the counter first, NotePlaceMoves)
// commits either before it (the value read shows the move) or after the caller's transaction
// (whose new matches the import then counts under the new place): between the two, counts keyed
// by a stale place cannot be written. SQLite's one writer orders them anyway.
func PlaceMoves(tx *gorm.DB) (int64, error) {
	q := "SELECT n FROM registry_counters WHERE name = ?"
	if tx.Dialector.Name() == "mysql" {
		q += " LOCK IN SHARE MODE" // MariaDB has no FOR SHARE; MySQL 8 accepts both
	}
	var n []int64
	if err := tx.Raw(q, counterPlaceMoves).Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("read the registry's move count: %w", err)
	}
	if len(n) == 0 {
		return 0, nil
	}
	return n[0], nil
}

// NotePlaceMoves adds n moved firms to the counter, in the moving transaction, before it moves
// their match counts (the lock order PlaceMoves relies on: counter first, then counts).
func NotePlaceMoves(tx *gorm.DB, n int) error {
	if n == 0 {
		return nil
	}
	err := tx.Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "name"}},
		DoUpdates: clause.Assignments(map[string]any{"n": gorm.Expr("n + ?", n)}),
	}).Create(&RegistryCounter{Name: counterPlaceMoves, N: int64(n)}).Error
	if err != nil {
		return fmt.Errorf("count moved firms: %w", err)
	}
	return nil
}
