package registry

import (
	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// UpsertCounted is Upsert that keeps the firm counts (store.FirmCount: each firm under its old
// region code, park and status out, under its new ones in) and moves the matches (the place each
// carries: store.MoveMatches), the match counts (store.MatchCount) and the delivery counts (their
// deliveries queued for the notifier's drain: store.MoveDeliveries) of firms whose region code
// or park changes, in the same transaction: the counts of their matches are read before the write (under
// the old region and park) and after it, and the difference applied. stored holds the firms' rows
// as they were (LockStored). New firms have no matches to move. The moves are counted too
// (store.NotePlaceMoves), before the counts move: a full match trusts its snapshot's places while
// that count stands still.
func UpsertCounted(tx *gorm.DB, stored map[string]*store.Enterprise, firms []store.Enterprise) error {
	var moved []string
	var movedFirms []store.Enterprise
	last := make(map[string]int, len(firms)) // a code written twice ends as its last row
	for i := range firms {
		last[firms[i].CreditCode] = i
	}
	counts := store.FirmCounts{}
	for i := range firms {
		old := stored[firms[i].CreditCode]
		if last[firms[i].CreditCode] == i {
			if old != nil {
				counts.Add(old, -1)
			}
			counts.Add(&firms[i], 1)
		}
		if old != nil && (old.RegionCode != firms[i].RegionCode || old.ParkID != firms[i].ParkID) {
			moved = append(moved, firms[i].CreditCode)
			movedFirms = append(movedFirms, firms[i])
		}
	}
	if err := store.ApplyFirmCounts(tx, counts); err != nil {
		return err
	}
	if len(moved) == 0 {
		return Upsert(tx, firms)
	}
	if err := store.NotePlaceMoves(tx, len(moved)); err != nil {
		return err
	}
	before, err := store.CountFirmMatches(tx, moved)
	if err != nil {
		return err
	}
	if err := Upsert(tx, firms); err != nil {
		return err
	}
	if err := store.MoveMatches(tx, movedFirms); err != nil {
		return err
	}
	if err := store.MoveDeliveries(tx, moved); err != nil {
		return err
	}
	after, err := store.CountFirmMatches(tx, moved)
	if err != nil {
		return err
	}
	after.Merge(before, -1)
	return store.ApplyCounts(tx, after)
}
