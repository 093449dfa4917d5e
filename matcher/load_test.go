package matcher

import (
	"context"
	"slices"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// TestLoadSnapshotReadsEveryPageOnce: pages read on several connections at once come back in
// credit-code order, each active firm once, for the whole registry and for shards whose bounds
// fall on, just before and between page ends; inactive firms count towards a page's span but are
// never held.
func TestLoadSnapshotReadsEveryPageOnce(t *testing.T) {
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	ctx := context.Background()
	firms := registry.Synth(157, 41)
	for i := range firms {
		if i%5 == 0 {
			firms[i].Status = "revoked"
		}
	}
	if err := db.CreateInBatches(firms, 50).Error; err != nil {
		t.Fatal(err)
	}
	var all, active []string
	for _, f := range firms {
		all = append(all, f.CreditCode)
		if f.Status == store.StatusActive {
			active = append(active, f.CreditCode)
		}
	}
	slices.Sort(all)
	slices.Sort(active)
	defer func(n int) { loadPage = n }(loadPage)
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.SetMaxOpenConns(sqlDB.Stats().MaxOpenConnections)
	for _, page := range []int{1, 7, 10, 156, 157, 1000} {
		loadPage = page
		// a pool of one or three connections: the readers take their turns on it (loadConns)
		switch page {
		case 7:
			sqlDB.SetMaxOpenConns(1)
		case 10:
			sqlDB.SetMaxOpenConns(3)
		default:
			sqlDB.SetMaxOpenConns(16)
		}
		for _, r := range [][2]int{{-1, -1}, {0, 70}, {7, 14}, {13, 15}, {69, -1}, {3, 4}, {150, 157}} {
			lo, hi := "", ""
			if r[0] >= 0 {
				lo = all[r[0]]
			}
			if r[1] >= 0 && r[1] < len(all) {
				hi = all[r[1]]
			}
			var want []string
			for _, c := range active {
				if (lo == "" || c >= lo) && (hi == "" || c < hi) {
					want = append(want, c)
				}
			}
			snap, err := LoadSnapshot(ctx, db, LoadOptions{Lo: lo, Hi: hi})
			if err != nil {
				t.Fatalf("page %d, range %v: %v", page, r, err)
			}
			var got []string
			for row := 0; row < snap.n; row++ {
				got = append(got, snap.code(row))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("page %d, range %v: held %d firms %v…, want %d %v…", page, r, len(got), got[:min(3, len(got))], len(want), want[:min(3, len(want))])
			}
			if snap.Active() != len(want) {
				t.Fatalf("page %d, range %v: %d active, want %d", page, r, snap.Active(), len(want))
			}
		}
	}
}
