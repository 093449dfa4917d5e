package store

import (
	"fmt"

	"gorm.io/gorm"
)

// Indexes that replaced others. AutoMigrate creates an index the models name and the database
// lacks, but neither drops one the models no longer name nor changes one's columns, so a database
// made before a replacement gets it here, before AutoMigrate, on every start: the new index is
// created where an old one is still there, then the old ones are dropped (on a large table the
// creation is the upgrade's long step: minutes at tens of millions of rows).
var replacedIndexes = []struct {
	model any
	old   []string
	now   string
	why   string
}{
	{&Enterprise{}, []string{"idx_enterprises_park_id", "ix_enterprise_park_status"}, EnterpriseParkIndex,
		"a park's firms, their active ones counted and their codes joined to matches from the index alone"},
	{&Enterprise{}, []string{"idx_enterprises_region_code"}, EnterpriseRegionIndex,
		"a city's firms joined to their matches and deliveries by code from the index alone (SQLite: 10× on a city's status)"},
	{&Match{}, []string{"idx_matches_credit_code"}, MatchFirmIndex,
		"a park's list pages read their keys from the index alone"},
	{&Delivery{}, []string{"idx_deliveries_credit_code"}, DeliveryFirmIndex,
		"a city's or park's deliveries counted by channel and state from the index alone"},
}

// Names of indexes other code names (FORCE INDEX, plans checked by tests).
const (
	// EnterpriseParkIndex is (park_id, status, credit_code).
	EnterpriseParkIndex = "ix_enterprise_park"
	// EnterpriseRegionIndex is (region_code, credit_code).
	EnterpriseRegionIndex = "ix_enterprise_region"
	// EnterpriseNameIndex is (name, region_code, park_id, credit_code).
	EnterpriseNameIndex = "ix_enterprise_name"
	// DeliveryFirmIndex is (credit_code, channel, state).
	DeliveryFirmIndex = "ix_delivery_firm"
)

func init() { RegisterFixup(replaceIndexes) }

func replaceIndexes(db *gorm.DB) error {
	m := db.Migrator()
	for _, r := range replacedIndexes {
		if !m.HasTable(r.model) {
			continue
		}
		var old []string
		for _, name := range r.old {
			if m.HasIndex(r.model, name) {
				old = append(old, name)
			}
		}
		if len(old) == 0 {
			continue
		}
		if !m.HasIndex(r.model, r.now) {
			if err := m.CreateIndex(r.model, r.now); err != nil {
				return fmt.Errorf("create %s (%s): %w", r.now, r.why, err)
			}
		}
		for _, name := range old {
			if err := m.DropIndex(r.model, name); err != nil {
				return fmt.Errorf("drop %s (replaced by %s): %w", name, r.now, err)
			}
		}
	}
	return nil
}
