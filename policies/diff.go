package policies

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
)

// VersionDiff is what changed from one version of a policy to another.
type VersionDiff struct {
	PolicyID string         `json:"policy_id"`
	From     int            `json:"from"`
	To       int            `json:"to"`
	Changes  []rules.Change `json:"changes"`
}

// Diff compares two stored versions of a policy.
func Diff(ctx context.Context, db *gorm.DB, policyID string, from, to int) (VersionDiff, error) {
	d := VersionDiff{PolicyID: policyID, From: from, To: to}
	var defs [2]*rules.Definition
	for i, v := range []int{from, to} {
		if v <= 0 {
			return d, fmt.Errorf("give two version numbers (see `policypush policy versions %s`)", policyID)
		}
		row, err := loadVersionRow(ctx, db, policyID, v)
		if err != nil {
			return d, err
		}
		if defs[i], err = rules.FromCanonical([]byte(row.Source)); err != nil {
			return d, err
		}
	}
	d.Changes = rules.DiffDefinitions(defs[0], defs[1])
	return d, nil
}
