package core

import (
	"fmt"
	"os"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// seedMatches writes firms × policies active matches (every firm matches every policy), plus one
// revoked match that no export may show. Firm 0 is named like a formula; policy 0 has no amount.
func seedMatches(tb testing.TB, db *gorm.DB, firms, policies int) {
	tb.Helper()
	now := time.Date(2022, 6, 30, 8, 0, 0, 0, time.UTC)
	asOf := time.Date(2022, 6, 30, 0, 0, 0, 0, time.UTC)
	err := db.Transaction(func(tx *gorm.DB) error {
		es := make([]store.Enterprise, 0, 1000)
		for i := range firms {
			name := fmt.Sprintf("苏州某某科技有限公司%06d", i)
			if i == 0 {
				name = `=HYPERLINK("http://evil.example","点我")`
			}
			es = append(es, store.Enterprise{CreditCode: code(i), Name: name, RegionCode: "320505", IndustryCode: "C3911",
				Status: store.StatusActive, ParkID: "SIP", Employees: int64(10 + i%300), AnnualRevenue: float64(i%5000) * 10,
				ContactPhone: "13800001234", CreatedAt: now, UpdatedAt: now})
			if len(es) == cap(es) || i == firms-1 {
				if err := tx.CreateInBatches(es, 200).Error; err != nil {
					return err
				}
				es = es[:0]
			}
		}
		for p := range policies {
			if err := tx.Create(&store.Policy{ID: policy(p), Title: fmt.Sprintf("政策 %d", p), PublishedVersion: 1}).Error; err != nil {
				return err
			}
			if err := tx.Create(&store.PolicyVersion{PolicyID: policy(p), Version: 1, ContentHash: "h", Source: "{}",
				Title: fmt.Sprintf("政策 %d", p), EffectiveFrom: asOf, State: "published", CreatedAt: now}).Error; err != nil {
				return err
			}
		}
		ms := make([]store.Match, 0, 2000)
		for p := range policies {
			for i := range firms {
				var amount *float64
				if p != 0 {
					a := float64(10000 + i%7*1000)
					amount = &a
				}
				ms = append(ms, store.Match{PolicyID: policy(p), PolicyVersion: 1, CreditCode: code(i), State: store.MatchActive,
					Amount: amount, AsOf: asOf, MatchedAt: now.Add(time.Duration(i) * time.Second), UpdatedAt: now})
				if len(ms) == cap(ms) {
					if err := tx.CreateInBatches(ms, 250).Error; err != nil {
						return err
					}
					ms = ms[:0]
				}
			}
		}
		ms = append(ms, store.Match{PolicyID: "revoked-policy", PolicyVersion: 1, CreditCode: code(0), State: store.MatchRevoked,
			AsOf: asOf, MatchedAt: now, UpdatedAt: now})
		return tx.CreateInBatches(ms, 250).Error
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func code(i int) string   { return fmt.Sprintf("91320500%010d", i) }
func policy(p int) string { return fmt.Sprintf("p%02d", p) }

func getenv(k string) string { return os.Getenv(k) }
