package store

import (
	"context"
	"database/sql"
	"fmt"

	"gorm.io/gorm"
)

// A match carries its firm's place (Match.RegionCode, Match.ParkID), kept like the maintained
// counts: set when the row is written (PlaceMatches, from the same places the counts of the new
// rows are computed from), moved with the firm in the import's transaction (MoveMatches), filled
// in once for a database made before (backfillMatchPlaces), checked and repaired by `policypush
// status recount` (MisplacedMatches). ix_match_place (region code, park, state, matched_at) then gives
// each (region code, park) of a scope its newest active matches in order, so that a city's or a
// park's list page merges a few short index walks (MatchKeys) instead of sorting every match of
// the scope: at 1,000,000 firms a park holds 1.4 million matches and a city 6.6 million.

// MatchPlaceIndex is ix_match_place: (region_code, park_id, state, matched_at).
const MatchPlaceIndex = "ix_match_place"

// Placement is what PlaceMatches found, for CountPlaced.
type Placement struct {
	// trusted: the known places held (no firm moved since they were read), so counts prepared
	// from them still hold
	trusted bool
	// absent are the firms not in the registry: their matches count nowhere (as in a recount)
	absent map[string]bool
}

// PlaceMatches sets the region code and park of each of ms (rows about to be inserted in tx) to
// its firm's, and reports whether any row's place changed from what it held. Places come from
// known (nil: none) when they still hold, else they are read in tx: with known.Counted, while
// the registry's move count equals known.Moves every known firm's place is taken as it is;
// otherwise the known firms updated from known.Since on are read again (the import sets
// updated_at in its transaction), and firms known does not hold are read by credit code. It runs
// before any other read of the transaction: on MySQL the move count is read with a shared lock,
// which waits for a moving import to commit, and the reads after it then see the move.
func PlaceMatches(tx *gorm.DB, ms []Match, known *KnownPlaces) (Placement, bool, error) {
	pl := Placement{}
	moved := true
	if known != nil && known.Counted {
		n, err := PlaceMoves(tx)
		if err != nil {
			return pl, false, err
		}
		moved = n != known.Moves
	}
	pl.trusted = !moved
	type place struct{ region, park string }
	firms := make(map[string]place, len(ms))
	var codes []string // firms to read in tx
	lo, hi := "", ""
	for i := range ms {
		code := ms[i].CreditCode
		if _, ok := firms[code]; ok {
			continue
		}
		if known != nil {
			if region, park, ok := known.Place(code); ok {
				firms[code] = place{region, park}
				if lo == "" || code < lo {
					lo = code
				}
				hi = max(hi, code)
				continue
			}
		}
		firms[code] = place{}
		codes = append(codes, code)
	}
	found := make(map[string]bool, len(codes))
	scan := func(rows *sql.Rows, err error) error {
		if err != nil {
			return fmt.Errorf("read the places of new matches' firms: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var code string
			var p place
			if err := rows.Scan(&code, &p.region, &p.park); err != nil {
				return fmt.Errorf("read the places of new matches' firms: %w", err)
			}
			if _, ok := firms[code]; ok {
				firms[code] = p
				found[code] = true
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read the places of new matches' firms: %w", err)
		}
		return nil
	}
	if moved && hi != "" {
		// the known firms updated since, within the codes placed here (a full match's transaction
		// holds a stretch of credit codes): while an import runs, not every firm it touched each time
		if err := scan(tx.Raw("SELECT credit_code, region_code, park_id FROM enterprises WHERE updated_at >= ? AND credit_code >= ? AND credit_code <= ?",
			known.Since, lo, hi).Rows()); err != nil {
			return pl, false, err
		}
	}
	for lo := 0; lo < len(codes); lo += countIDsPer {
		in, args := inList(tx, codes[lo:min(lo+countIDsPer, len(codes))])
		if err := scan(tx.Raw("SELECT credit_code, region_code, park_id FROM enterprises WHERE credit_code IN "+in, args...).Rows()); err != nil {
			return pl, false, err
		}
	}
	for _, code := range codes {
		if !found[code] {
			if pl.absent == nil {
				pl.absent = map[string]bool{}
			}
			pl.absent[code] = true
		}
	}
	changed := false
	for i := range ms {
		p := firms[ms[i].CreditCode]
		if ms[i].RegionCode != p.region || ms[i].ParkID != p.park {
			ms[i].RegionCode, ms[i].ParkID, changed = p.region, p.park, true
		}
	}
	return pl, changed, nil
}

// CountPlaced adds matches just inserted in tx, placed by PlaceMatches (rows with ID 0 were not
// inserted and are skipped), to the counts, after setting their reach (ReachOfNew): pre (nil:
// none), counts prepared from the same places before the transaction, when the places held and
// every row was inserted without notices; else counted from the rows.
func CountPlaced(tx *gorm.DB, ms []Match, pl Placement, pre *PreparedCounts) error {
	if err := ReachOfNew(tx, ms); err != nil {
		return err
	}
	if pre != nil && pl.trusted && allFresh(ms) {
		return ApplyCounts(tx, pre.delta)
	}
	delta := Counts{}
	var hours hourOf
	for i := range ms {
		if ms[i].ID != 0 && !pl.absent[ms[i].CreditCode] {
			delta.addNew(&ms[i], &hours)
		}
	}
	return ApplyCounts(tx, delta)
}

// MoveMatches gives every match of the firms the place they now have in tx (the import's
// transaction that moved them, after its write): one UPDATE per new place and thousand firms.
func MoveMatches(tx *gorm.DB, firms []Enterprise) error {
	type place struct{ region, park string }
	by := map[place][]string{}
	var order []place
	for i := range firms {
		p := place{firms[i].RegionCode, firms[i].ParkID}
		if _, ok := by[p]; !ok {
			order = append(order, p)
		}
		by[p] = append(by[p], firms[i].CreditCode)
	}
	for _, p := range order {
		codes := by[p]
		for lo := 0; lo < len(codes); lo += countIDsPer {
			in, args := inList(tx, codes[lo:min(lo+countIDsPer, len(codes))])
			if err := tx.Exec("UPDATE matches SET region_code = ?, park_id = ? WHERE credit_code IN "+in,
				append([]any{p.region, p.park}, args...)...).Error; err != nil {
				return fmt.Errorf("move the matches of moved firms: %w", err)
			}
		}
	}
	return nil
}

// BeforeCreate places a match created through GORM whose place is not set (tests, tools; the
// matcher's bulk insert places its rows itself and does not come through here) from its firm in
// the same transaction, so that no writer leaves a row out of its scope's list.
func (m *Match) BeforeCreate(tx *gorm.DB) error {
	if m.RegionCode != "" || m.ParkID != "" {
		return nil
	}
	var p []struct{ RegionCode, ParkID string }
	if err := tx.Session(&gorm.Session{NewDB: true}).Raw("SELECT region_code, park_id FROM enterprises WHERE credit_code = ?", m.CreditCode).
		Scan(&p).Error; err != nil {
		return fmt.Errorf("read the place of match %s/%s: %w", m.PolicyID, m.CreditCode, err)
	}
	if len(p) > 0 {
		m.RegionCode, m.ParkID = p[0].RegionCode, p[0].ParkID
	}
	return nil
}

// placeFix is the statement that gives the matches with ids in (?, ?] their firm's place.
func placeFix(db *gorm.DB) string {
	if db.Dialector.Name() == "mysql" {
		return "UPDATE matches m JOIN enterprises e ON e.credit_code = m.credit_code SET m.region_code = e.region_code, m.park_id = e.park_id " +
			"WHERE m.id > ? AND m.id <= ? AND (m.region_code <> e.region_code OR m.park_id <> e.park_id)"
	}
	return "UPDATE matches SET region_code = e.region_code, park_id = e.park_id FROM enterprises e " +
		"WHERE e.credit_code = matches.credit_code AND matches.id > ? AND matches.id <= ? " +
		"AND (matches.region_code <> e.region_code OR matches.park_id <> e.park_id)"
}

// placeFixIDs is how many ids one placeFix statement covers: short transactions on a large table.
const placeFixIDs = 200000

// fixPlaces gives every match its firm's place, placeFixIDs ids per statement, and returns how
// many rows it changed.
func fixPlaces(db *gorm.DB) (int64, error) {
	var top []uint64
	if err := db.Raw("SELECT COALESCE(MAX(id), 0) FROM matches").Scan(&top).Error; err != nil {
		return 0, fmt.Errorf("give matches their firm's place: %w", err)
	}
	var n int64
	for lo := uint64(0); len(top) > 0 && lo < top[0]; lo += placeFixIDs {
		res := db.Exec(placeFix(db), lo, lo+placeFixIDs)
		if res.Error != nil {
			return n, fmt.Errorf("give matches their firm's place: %w", res.Error)
		}
		n += res.RowsAffected
	}
	return n, nil
}

// MisplacedMatches counts the matches whose place differs from their firm's (none, unless a writer
// bypassed PlaceMatches and MoveMatches); with fix it gives them their firm's place and reports
// how many it moved.
func MisplacedMatches(ctx context.Context, db *gorm.DB, fix bool) (int64, error) {
	db = db.WithContext(ctx)
	if fix {
		return fixPlaces(db)
	}
	var n int64
	if err := db.Raw("SELECT COUNT(*) FROM matches m JOIN enterprises e ON e.credit_code = m.credit_code " +
		"WHERE m.region_code <> e.region_code OR m.park_id <> e.park_id").Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("count misplaced matches: %w", err)
	}
	return n, nil
}

func init() { RegisterFixup(backfillMatchPlaces) }

// backfillMatchPlaces adds the place columns to the matches of a database made before them and
// fills them in (the upgrade's long step at tens of millions of matches: a pass over the table
// joined to enterprises by primary key, in short statements; AutoMigrate then builds
// ix_match_place). Until that index exists the fill is run again at every start, so a start
// killed half-way finishes it the next time.
func backfillMatchPlaces(db *gorm.DB) error {
	m := db.Migrator()
	if !m.HasTable(&Match{}) || !m.HasTable(&Enterprise{}) || m.HasIndex(&Match{}, MatchPlaceIndex) {
		return nil
	}
	for _, col := range []string{"RegionCode", "ParkID"} {
		if !m.HasColumn(&Match{}, col) {
			if err := m.AddColumn(&Match{}, col); err != nil {
				return fmt.Errorf("add the place of matches (%s): %w", col, err)
			}
		}
	}
	_, err := fixPlaces(db)
	return err
}
