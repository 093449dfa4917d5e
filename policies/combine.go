package policies

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// loadReceived reads, for a once_per: firm policy at version, the firms that were matched by an
// earlier version and hold no active match now.
func loadReceived(ctx context.Context, db *gorm.DB, p *rules.Policy) error {
	if p.Def.OncePer != rules.OncePerFirm {
		return nil
	}
	var rows []struct {
		CreditCode string
		Version    int
	}
	err := db.WithContext(ctx).Model(&store.Match{}).
		Select("credit_code, MIN(policy_version) AS version").
		Where("policy_id = ? AND policy_version < ?", p.Def.ID, p.Version).
		Where("credit_code NOT IN (?)", db.Model(&store.Match{}).Select("credit_code").
			Where("policy_id = ? AND state = ?", p.Def.ID, store.MatchActive)).
		Group("credit_code").Scan(&rows).Error
	if err != nil {
		return fmt.Errorf("load earlier matches of %s: %w", p.Def.ID, err)
	}
	received := make(map[string]int, len(rows))
	for _, r := range rows {
		received[r.CreditCode] = r.Version
	}
	p.SetReceived(received)
	return nil
}
