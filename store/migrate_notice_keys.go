package store

import (
	"fmt"

	"gorm.io/gorm"
)

// Payout notices (docs/payout.md) made the notice keys wider: a delivery item is unique per
// (match, channel, kind, payout line) and a delivery per (match, channel, recipient, kind, line).
// AutoMigrate can neither add a primary-key column to a table that has a primary key nor widen an
// existing index, so a database created before is brought to the new keys here, before it runs.

func init() { RegisterFixup(widenNoticeKeys) }

func widenNoticeKeys(db *gorm.DB) error {
	m := db.Migrator()
	mysql := db.Dialector.Name() == "mysql"
	if m.HasTable(&Delivery{}) && !m.HasColumn(&Delivery{}, "kind") && m.HasIndex(&Delivery{}, "ux_delivery") {
		// AutoMigrate then adds kind and ref and creates the index with all five columns.
		if err := m.DropIndex(&Delivery{}, "ux_delivery"); err != nil {
			return fmt.Errorf("widen the key of deliveries: %w", err)
		}
	}
	if !m.HasTable(&DeliveryItem{}) || m.HasColumn(&DeliveryItem{}, "kind") {
		return nil
	}
	if mysql {
		if err := db.Exec(`ALTER TABLE delivery_items ADD COLUMN kind varchar(16) NOT NULL DEFAULT '',
			ADD COLUMN ref bigint unsigned NOT NULL DEFAULT 0, DROP PRIMARY KEY, ADD PRIMARY KEY (match_id, channel, kind, ref)`).Error; err != nil {
			return fmt.Errorf("widen the key of delivery_items: %w", err)
		}
		return nil
	}
	// SQLite cannot change a primary key: copy the rows into a table with the new one.
	return db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("ALTER TABLE delivery_items RENAME TO delivery_items_narrow").Error; err != nil {
			return fmt.Errorf("widen the key of delivery_items: %w", err)
		}
		// The renamed table keeps its indexes and their names, which the new table's would clash
		// with: drop every named one (whatever version of the schema created it).
		var names []string
		if err := tx.Raw("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'delivery_items_narrow' AND sql IS NOT NULL").
			Scan(&names).Error; err != nil {
			return fmt.Errorf("widen the key of delivery_items: %w", err)
		}
		for _, name := range names {
			if err := tx.Exec(`DROP INDEX IF EXISTS "` + name + `"`).Error; err != nil {
				return fmt.Errorf("widen the key of delivery_items: %w", err)
			}
		}
		if err := tx.Migrator().CreateTable(&DeliveryItem{}); err != nil {
			return fmt.Errorf("widen the key of delivery_items: %w", err)
		}
		const cols = "match_id, channel, delivery_id, credit_code, policy_id, state, note, fallback, queued_at"
		for _, stmt := range []string{
			"INSERT INTO delivery_items (" + cols + ") SELECT " + cols + " FROM delivery_items_narrow",
			"DROP TABLE delivery_items_narrow",
		} {
			if err := tx.Exec(stmt).Error; err != nil {
				return fmt.Errorf("widen the key of delivery_items: %w", err)
			}
		}
		return nil
	})
}
