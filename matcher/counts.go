package matcher

import (
	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// The writer keeps store.MatchCount and store.MatchHour in step with the rows it writes, in the
// same transaction (docs/console.md, "Maintained aggregates"). New matches are counted from the
// rows in memory (store.PlaceMatches and store.CountPlaced, in insertFresh); a write that changes stored rows
// (supersede, revive, amount, revoke) reads what the rows contribute to the counts before and
// after it and applies the difference as a few UPSERTs. The firm's region and park are always read
// in the transaction, never taken from the evaluation's snapshot, so a firm that moved meanwhile is
// counted where it is.

// countedWrite runs write, which changes the rows with the ids touched and may insert rows, whose
// ids it returns, and applies the change to the match counts.
func countedWrite(tx *gorm.DB, touched []uint64, write func() (inserted []uint64, err error)) error {
	c, err := store.BeginCountChange(tx, touched)
	if err != nil {
		return err
	}
	inserted, err := write()
	if err != nil {
		return err
	}
	return c.Finish(tx, append(touched[:len(touched):len(touched)], inserted...))
}

// insertedIDs are the ids of stored rows (0: not inserted, another writer stored it).
func insertedIDs(rows []store.Match) []uint64 {
	ids := make([]uint64, 0, len(rows))
	for i := range rows {
		if rows[i].ID != 0 {
			ids = append(ids, rows[i].ID)
		}
	}
	return ids
}

// matchIDs are the ids of rows.
func matchIDs(ms []*store.Match) []uint64 {
	ids := make([]uint64, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}
