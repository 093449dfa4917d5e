package store

import (
	"fmt"

	"gorm.io/gorm"
)

// Payout notices (docs/payout.md) made the notice keys wider: a delivery item is unique per
// (match, channel, kind, payout line) and a delivery per (match, channel, recipient, kind, line).
// AutoMigrate adds the columns but keeps an existing primary key and index, so a database created
// before is widened here, once.

func init() { RegisterFixup(widenNoticeKeys) }

func widenNoticeKeys(db *gorm.DB) error {
	var itemKey, deliveryKey int64
	mysql := db.Dialector.Name() == "mysql"
	if mysql {
		if err := db.Raw(`SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE
			WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'delivery_items' AND CONSTRAINT_NAME = 'PRIMARY'`).Scan(&itemKey).Error; err != nil {
			return fmt.Errorf("read the key of delivery_items: %w", err)
		}
		if err := db.Raw(`SELECT COUNT(*) FROM information_schema.STATISTICS
			WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'deliveries' AND INDEX_NAME = 'ux_delivery'`).Scan(&deliveryKey).Error; err != nil {
			return fmt.Errorf("read the key of deliveries: %w", err)
		}
	} else {
		if err := db.Raw(`SELECT COUNT(*) FROM pragma_table_info('delivery_items') WHERE pk > 0`).Scan(&itemKey).Error; err != nil {
			return fmt.Errorf("read the key of delivery_items: %w", err)
		}
		if err := db.Raw(`SELECT COUNT(*) FROM pragma_index_info('ux_delivery')`).Scan(&deliveryKey).Error; err != nil {
			return fmt.Errorf("read the key of deliveries: %w", err)
		}
	}
	if deliveryKey == 3 {
		drop := "DROP INDEX ux_delivery"
		if mysql {
			drop = "ALTER TABLE deliveries DROP INDEX ux_delivery"
		}
		if err := db.Exec(drop).Error; err != nil {
			return fmt.Errorf("widen the key of deliveries: %w", err)
		}
		if err := db.Migrator().CreateIndex(&Delivery{}, "ux_delivery"); err != nil {
			return fmt.Errorf("widen the key of deliveries: %w", err)
		}
	}
	if itemKey != 2 {
		return nil
	}
	if mysql {
		if err := db.Exec("ALTER TABLE delivery_items DROP PRIMARY KEY, ADD PRIMARY KEY (match_id, channel, kind, ref)").Error; err != nil {
			return fmt.Errorf("widen the key of delivery_items: %w", err)
		}
		return nil
	}
	// SQLite cannot change a primary key: copy the rows into a table with the new one.
	return db.Transaction(func(tx *gorm.DB) error {
		for _, stmt := range []string{
			"ALTER TABLE delivery_items RENAME TO delivery_items_narrow",
			"DROP INDEX IF EXISTS idx_delivery_items_delivery_id",
		} {
			if err := tx.Exec(stmt).Error; err != nil {
				return fmt.Errorf("widen the key of delivery_items: %w", err)
			}
		}
		if err := tx.Migrator().CreateTable(&DeliveryItem{}); err != nil {
			return fmt.Errorf("widen the key of delivery_items: %w", err)
		}
		const cols = "match_id, channel, kind, ref, delivery_id, credit_code, policy_id, state, note, fallback, queued_at"
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
