package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// The indexes of matches, and the bulk load that builds some of them after its rows.
//
// A match row is written into four b-trees: the table, ux_match (policy, version, firm: the
// uniqueness that keeps a firm from being notified twice, and every per-policy read), the firm
// index (MatchFirmIndex: the firm page, the per-firm diff, joins from enterprises) and the place
// index (MatchPlaceIndex: region code, park, state, matched_at; a city's or a park's list pages,
// and on MySQL the province's: places.go) — and on SQLite a fifth, ix_match_recent (state,
// matched_at: the province's newest-first list and export, walked without a sort).
//
// MySQL has no ix_match_recent (dropped from databases made before, recentMatchIndex): there the
// province's list merges its places' walks like a city's, and its export is a scan and a sort on
// the server, so the index only cost its writes — a secondary-index insert per match, as
// expensive on InnoDB as the place index's (2.0 GB of 9.6 GB of indexes at 51 million matches,
// memory the buffer pool then lacked for the rest). SQLite keeps it: its export would otherwise
// sort the province's matches in this process's memory (temp_store=MEMORY), and in step its
// entries are appends at the index's end. ix_match_state (policy, state) was another; the
// console's per-policy counts now read match_counts and the per-policy reads walk ux_match's
// policy prefix, so it is dropped from databases created before (dropMatchStateIndex).
//
// A province's first full match inserts every match into an empty table: millions of rows. Kept
// in step row by row, each secondary index costs about as much as the table itself; built once
// afterwards (a sort and a bottom-up build, online on InnoDB) it costs a fraction of that. So a
// first full load drops the deferrable indexes, writes, and creates them again (DeferMatchIndexes).
// ux_match is never deferred: it is what makes a concurrent writer's duplicate fail or be skipped.
// Nor is SQLite's ix_match_recent any longer: a full match's new rows share their state and time, so in
// step they are appends at the end of that index, while building it afterwards sorts every row
// by its time text (35 bytes then, 29 since rows are stamped to the millisecond; 200,000 firms ×
// 140 policies on SQLite: keeping it in step made the whole command 1.2 s shorter, two
// alternating runs each). The firm index (MatchFirmIndex) is deferred although it holds the
// time too: its rows arrive in credit-code order per group of policies, not at its end (kept in
// step the command took 2 s longer). While it is missing the firm page reads an unindexed,
// filling table; a process killed in that window leaves it missing until the next start of any
// policypush command, whose migration (AutoMigrate) creates missing indexes.

func init() { RegisterFixup(dropMatchStateIndex) }

// RecentMatchIndex is ix_match_recent (state, matched_at), SQLite's only (see above).
const RecentMatchIndex = "ix_match_recent"

// recentMatchIndex makes ix_match_recent on SQLite and drops it on MySQL, after AutoMigrate (the
// models do not name it: it is one database's).
func recentMatchIndex(db *gorm.DB) error {
	m := db.Migrator()
	has := m.HasIndex(&Match{}, RecentMatchIndex)
	switch {
	case db.Dialector.Name() == "mysql" && has:
		if err := m.DropIndex(&Match{}, RecentMatchIndex); err != nil {
			return fmt.Errorf("drop %s (MySQL's lists walk ix_match_place): %w", RecentMatchIndex, err)
		}
	case db.Dialector.Name() != "mysql" && !has:
		if err := db.Exec("CREATE INDEX IF NOT EXISTS " + RecentMatchIndex + " ON matches (state, matched_at)").Error; err != nil {
			return fmt.Errorf("create %s: %w", RecentMatchIndex, err)
		}
	}
	return nil
}

// MatchFirmIndex is the firm index of matches: (credit_code, state, matched_at), with the row id
// every secondary index holds. A firm's matches, the per-firm diff and joins from enterprises
// find their rows through its first column; a park's list pages (the park's firms first, then
// their active matches, newest first) read their keys from it alone: before it held the state
// and time, every match of the park was read from the table to sort 50 of them (45,000 rows for
// a park of 5,000 firms: 88 ms idle on SQLite, 0.5–1 s while the pipeline delivered; now 14 ms).
const MatchFirmIndex = "ix_match_firm"

func dropMatchStateIndex(db *gorm.DB) error {
	m := db.Migrator()
	if m.HasTable(&Match{}) && m.HasIndex(&Match{}, "ix_match_state") {
		if err := m.DropIndex(&Match{}, "ix_match_state"); err != nil {
			return fmt.Errorf("drop ix_match_state (no longer used): %w", err)
		}
	}
	return nil
}

// deferrableMatchIndexes are the secondary indexes of matches a bulk load builds after its rows.
// Not MatchPlaceIndex: built afterwards it cost as much as kept in step (2.2–2.5 s of a full
// match of 200,000 firms on SQLite), and while it is missing a city's or park's list page would
// read every match.
var deferrableMatchIndexes = []string{MatchFirmIndex}

// MatchesEmpty reports whether the matches table holds no row at all.
func MatchesEmpty(ctx context.Context, db *gorm.DB) (bool, error) {
	var ids []uint64
	if err := db.WithContext(ctx).Raw("SELECT id FROM matches LIMIT 1").Scan(&ids).Error; err != nil {
		return false, fmt.Errorf("look for stored matches: %w", err)
	}
	return len(ids) == 0, nil
}

// DeferMatchIndexes drops the deferrable secondary indexes of matches for a bulk load and returns
// the function that creates them again, which the caller must run when the load ends, whether it
// succeeded or not (with a context that is not already cancelled). An index another process
// dropped or created meanwhile is no error.
func DeferMatchIndexes(ctx context.Context, db *gorm.DB) (restore func(context.Context) error, err error) {
	m := db.WithContext(ctx).Migrator()
	var dropped []string
	restore = func(ctx context.Context) error {
		m := db.WithContext(ctx).Migrator()
		var errs []error
		for _, name := range dropped {
			if m.HasIndex(&Match{}, name) {
				continue
			}
			if err := m.CreateIndex(&Match{}, name); err != nil && !alreadyExists(err) {
				errs = append(errs, fmt.Errorf("create index %s of matches again: %w", name, err))
			}
		}
		return errors.Join(errs...)
	}
	for _, name := range deferrableMatchIndexes {
		if !m.HasIndex(&Match{}, name) {
			continue
		}
		if err := m.DropIndex(&Match{}, name); err != nil {
			if m.HasIndex(&Match{}, name) {
				return restore, fmt.Errorf("drop index %s of matches for the bulk load: %w", name, err)
			}
		}
		dropped = append(dropped, name)
	}
	return restore, nil
}

// alreadyExists reports a CREATE INDEX that lost a race with another process creating it.
func alreadyExists(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "already exists") || strings.Contains(s, "duplicate key name")
}
