package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// The matched-firms list of the console (/firms, GET /api/v1/matches) and its export: the active
// matches a filter and the caller's scope allow, newest first, with each match's notification
// state, whether the firm opened its link and what it answered.

// MatchFilter selects active matches. admin validates every value before it gets here.
type MatchFilter struct {
	Scope    FirmScope
	PolicyID string
	ParkID   string
	Region   string // region code prefix
	Industry string // GB/T 4754 prefix, upper case: C, 39, C39 (codes are stored with or without the letter)
	Notify   string // delivered, sent, failed or pending (see notifySQL)
	Response string // confirm, object or none
	// A search names at most one of these: a whole credit code, the start of one (a range on the
	// code index), or text a firm's name contains (or its code starts with; no index serves it).
	CreditCode string
	CodePrefix string
	Text       string
	// Firms, when not nil, are the firms of the scope that Text names (FirmsNamed): the list reads
	// their matches through the firm index instead of looking at the firm of every match of the
	// scope for the text.
	Firms []string
}

// regionIndex is the index of enterprises.region_code.
const regionIndex = EnterpriseRegionIndex

// onlyCounted reports whether the maintained counts (match_counts) can total the filter: they are
// kept per policy, region code, park and state.
func (f MatchFilter) onlyCounted() bool {
	return f.Industry == "" && f.Response == "" && f.CreditCode == "" && f.CodePrefix == "" && f.Text == "" &&
		(f.Notify == "" || f.Notify == "sent" || f.Notify == "delivered")
}

// SQL pieces of the list, the export and the firm page. A match is announced by a delivery item
// (several items can share one digest message); items are keyed by firm and policy, so a newer
// policy version the firm still qualifies for keeps the notice of the old one.
const (
	// sent and delivered are the match's maintained reach (Match.Reached, reach.go); only a match
	// that reached neither is looked up in delivery_items, for a failure.
	itemOf    = "SELECT 1 FROM delivery_items i JOIN deliveries d ON d.id = i.delivery_id WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id"
	failedSQL = "(EXISTS (" + itemOf + " AND d.state IN ('dead', 'undelivered'))" +
		" OR EXISTS (SELECT 1 FROM delivery_items i WHERE i.credit_code = m.credit_code AND i.policy_id = m.policy_id AND i.state = 'dead'))"
	notifySQL = "(CASE WHEN m.reached = 2 THEN 'delivered' WHEN m.reached = 1 THEN 'sent'" +
		" WHEN " + failedSQL + " THEN 'failed' ELSE 'pending' END)"
	openedSQL   = "EXISTS (SELECT 1 FROM link_opens o WHERE o.credit_code = m.credit_code AND o.policy_id = m.policy_id)"
	responseSQL = "COALESCE((SELECT r.kind FROM enterprise_responses r WHERE r.credit_code = m.credit_code AND r.policy_id = m.policy_id), '')"
)

// industryWhere mirrors rules.IndustryHasPrefix: codes are stored with or without the section letter.
func industryWhere(q *gorm.DB, prefix string) *gorm.DB {
	letter, digits := "", prefix
	if prefix != "" && prefix[0] >= 'A' && prefix[0] <= 'Z' {
		letter, digits = prefix[:1], prefix[1:]
	}
	switch {
	case digits == "":
		return q.Where("UPPER(e.industry_code) LIKE ?", letter+"%")
	case letter == "":
		return q.Where("(e.industry_code LIKE ? OR (UPPER(e.industry_code) >= 'A' AND SUBSTR(e.industry_code, 2) LIKE ?))", digits+"%", digits+"%")
	}
	return q.Where("(UPPER(e.industry_code) LIKE ? OR e.industry_code LIKE ?)", letter+digits+"%", digits+"%")
}

// matchPlan is how matchQuery's statement reads the matches.
type matchPlan int

const (
	// planPage reads in list order and stops at a LIMIT (a page, a capped count), for the lists
	// that do not merge their places' walks (MatchKeys, placeWindow): on SQLite the province's,
	// newest first along ix_match_recent; a policy's, a search's, and their counts. A park's
	// firms go first on SQLite (as in planAll): the walk from the newest match of the province can
	// pass many thousands of other firms' matches before the park's first.
	planPage matchPlan = iota
	// planByID reads the rows of one page by their ids (MatchRows): the matches are found by
	// primary key, first, on both databases. Left to itself SQLite walks ix_match_recent over
	// every active match to spare the page's sort of 50 rows (seconds at 400,000 matches).
	planByID
	// planAll reads every row the filter selects (an export, the size filter's inputs). On
	// SQLite a park's or city's firms go first (CROSS JOIN fixes the order), their matches come
	// through the firm index, and are sorted: walking ix_match_recent visits every match of the
	// province for a park's few (a park's export of 11,416 rows out of 368,257 ran at 2,400
	// rows/s while the pipeline delivered; its SELECT takes 57 ms instead of 950 ms in the sqlite3
	// shell).
	planAll
)

// matchQuery selects the active matches the filter allows (no columns, no order yet).
//
// On MySQL the plan is chosen here, not left to MariaDB's estimates, which on the province's data
// read every firm (there are fewer firms than matches) and then sort all their matches:
//   - with no park and no region the firms' side has no index to start from, so the matches go
//     first (STRAIGHT_JOIN), by the policy's or the credit code's index, each firm and version
//     found by its key (the province's own pages merge its places' walks: placeWindow);
//   - with a region and no park the firms come through the region index (FORCE INDEX): a city's
//     list reads the city's firms, not the province's, even where the city holds a fifth of them;
//   - a park is small: for a page the planner starts from its index on its own (at 1,000,000
//     firms × 1,000 policies a park holds 1.4 million matches and this sort no longer fits a
//     page's deadline: docs/console.md); an export starts from it by STRAIGHT_JOIN.
//
// On SQLite, whose planner has no statistics, the plan is fixed where it would walk the wrong
// index (see matchPlan); TestConsoleQueriesUseIndexes checks both databases.
func matchQuery(ctx context.Context, db *gorm.DB, f MatchFilter, plan matchPlan) *gorm.DB {
	table, firms, versions := "matches AS m", "JOIN enterprises e", "JOIN policy_versions v"
	mysql := db.Dialector.Name() == "mysql"
	byID := plan == planByID
	state := "m.state = ?"
	if (f.CreditCode != "" || f.Firms != nil) && !mysql { // a few firms' matches, through the firm index
		state = "+m.state = ?"
	}
	park := f.Scope.ParkID != "" || f.ParkID != ""
	if !mysql && f.Firms == nil && (plan == planAll && (park || f.Scope.RegionPrefix != "" || f.Region != "") || plan == planPage && park) {
		// their matches through the firm index (ix_match_firm: credit code, state, time), whose
		// entries alone give a page's keys
		table, firms, state = "enterprises AS e", "CROSS JOIN matches AS m", "m.state = ?"
	}
	if byID {
		if mysql {
			table, firms, versions = "matches AS m FORCE INDEX (PRIMARY)", "STRAIGHT_JOIN enterprises e", "STRAIGHT_JOIN policy_versions v"
		} else {
			table = "matches AS m NOT INDEXED"
		}
	}
	if mysql && !byID {
		switch {
		case f.Firms != nil:
			// the named firms' matches through the firm index, then sorted: a few thousand rows
			table, firms, versions = "matches AS m FORCE INDEX ("+MatchFirmIndex+")", "STRAIGHT_JOIN enterprises e",
				"STRAIGHT_JOIN policy_versions v FORCE INDEX (ux_policy_version)"
		case park && plan == planAll:
			// an export: left to itself MariaDB read every policy's matches along ux_match and
			// each one's firm for its park (a park's 44,923 rows of 1.47 million: 5.6 s, then 0.56 s)
			table, firms, versions = "enterprises AS e", "STRAIGHT_JOIN matches AS m", "STRAIGHT_JOIN policy_versions v"
		case park || f.Scope.None:
		case f.Scope.RegionPrefix != "" || f.Region != "":
			firms = "JOIN enterprises e FORCE INDEX (" + regionIndex + ")"
		default:
			firms, versions = "STRAIGHT_JOIN enterprises e", "STRAIGHT_JOIN policy_versions v"
		}
	}
	q := db.WithContext(ctx).Table(table).
		Joins(firms + " ON m.credit_code = e.credit_code")
	// A page's keys and counts need no policy version (every match's version row exists: versions
	// are never deleted); joined, it made SQLite read each match's row for its policy and version.
	if plan != planPage {
		q = q.Joins(versions + " ON v.policy_id = m.policy_id AND v.version = m.policy_version")
	}
	q = q.Where(state, MatchActive)
	return f.rowFilters(f.narrow(f.Scope.Apply(q, "e"), "m", "e"))
}

// rowFilters adds the filter's conditions on each match and its firm (alias e) other than its
// scope, policy, park and region: industry, notice, answer and search.
func (f MatchFilter) rowFilters(q *gorm.DB) *gorm.DB {
	if f.Industry != "" {
		q = industryWhere(q, f.Industry)
	}
	switch f.Notify {
	case "delivered":
		q = q.Where("m.reached = ?", ReachDelivered)
	case "sent":
		q = q.Where("m.reached = ?", ReachSent)
	case "failed", "pending":
		// through the CASE, not as a bare [NOT] EXISTS: MariaDB turns those into a semi-join that
		// materializes every failed item (a full read of delivery_items)
		q = q.Where("m.reached = ? AND "+notifySQL+" = ?", ReachNone, f.Notify)
	}
	switch f.Response {
	case "none":
		q = q.Where(responseSQL + " = ''")
	case ResponseConfirm, ResponseObject:
		q = q.Where(responseSQL+" = ?", f.Response)
	}
	switch {
	case f.CreditCode != "":
		q = q.Where("m.credit_code = ?", f.CreditCode)
	case f.CodePrefix != "":
		q = q.Where("m.credit_code LIKE ? ESCAPE '!'", LikePrefix(f.CodePrefix))
	case f.Firms != nil && len(f.Firms) == 0:
		q = q.Where("1 = 0")
	case f.Firms != nil:
		q = q.Where("m.credit_code IN ?", f.Firms)
	case f.Text != "":
		q = f.textFilter(q)
	}
	return q
}

// NameSearchFirms is how many firms a name search (MatchFilter.Text) looks up by name at most
// before reading their matches (FirmsNamed); a text that more firms' names contain is common
// enough for the newest matches to hold a page of it soon, so its list walks them instead.
const NameSearchFirms = 2000

// FirmsNamed resolves the name search of a list (f.Text) to the firms it names, when there are
// at most NameSearchFirms; the list then reads their matches through the firm index. The codes
// come from the name index (namegrams.go: the firms holding the text's rarest pair of Han
// characters, and those updated since its last pass, each checked by name and scope) when it can
// answer; else, in the province or a city, from ix_enterprise_name (name, place, code), every
// firm's name read once without the rows (about 40 ms for 200,000 firms on MariaDB idle, 0.3–0.4
// s at 1,000,000 and seconds beside the pipeline), and in a park or county from its own firms. f
// comes back unchanged when it has no text or the text is common (more firms than that), and
// with Firms set (maybe empty: no match) otherwise.
func FirmsNamed(ctx context.Context, db *gorm.DB, f MatchFilter) (MatchFilter, error) {
	if f.Text == "" || f.Firms != nil || f.Scope.None {
		return f, nil
	}
	// the firms of the text's rarest pair of characters, when the name index can answer
	// (namegrams.go): a few hundred lookups where a park's own firms are tens of thousands
	codes, ok, err := firmsByGrams(ctx, db, f, f.namedFirms)
	if err != nil {
		return f, fmt.Errorf("find the firms named %q: %w", f.Text, err)
	}
	if ok {
		f.Firms = codes
		return f, nil
	}
	table := "enterprises AS e"
	switch {
	case f.Scope.ParkID != "" || f.ParkID != "" || len(f.Scope.RegionPrefix) > 4 || len(f.Region) > 4:
		// a park's or county's firms come through their own index, each firm's name from its
		// row: fewer than every firm's name in the name index (a park of 45,000 firms at
		// 1,000,000: 0.07 s against 0.4 s)
	case db.Dialector.Name() == "mysql":
		table += " FORCE INDEX (" + EnterpriseNameIndex + ")"
	default:
		table += " INDEXED BY " + EnterpriseNameIndex
	}
	codes, err = f.namedFirms(db.WithContext(ctx).Table(table).Select("e.credit_code"))
	if err != nil {
		return f, fmt.Errorf("find the firms named %q: %w", f.Text, err)
	}
	if len(codes) > NameSearchFirms {
		return f, nil
	}
	f.Firms = codes
	return f, nil
}

// namedFirms reads, through q (over enterprises as e), the codes of the firms of the filter's
// scope, park and region whose name holds the text (textFilter), NameSearchFirms+1 at most.
func (f MatchFilter) namedFirms(q *gorm.DB) ([]string, error) {
	q = f.textFilter(q)
	if f.ParkID != "" {
		q = q.Where("e.park_id = ?", f.ParkID)
	}
	if f.Region != "" {
		q = WherePrefix(q, "e.region_code", f.Region)
	}
	codes := []string{}
	err := f.Scope.Apply(q, "e").Limit(NameSearchFirms + 1).Scan(&codes).Error
	return codes, err
}

// textFilter narrows q, which reads enterprises as e, to the firms whose name contains f.Text or
// whose credit code starts with it: FirmsNamed's lookup, and the list of a text too common for
// it, which walks the newest matches and stops at its page (the count at CountCap).
func (f MatchFilter) textFilter(q *gorm.DB) *gorm.DB {
	return q.Where("(e.name LIKE ? ESCAPE '!' OR e.credit_code LIKE ? ESCAPE '!')", LikeContains(f.Text), LikePrefix(strings.ToUpper(f.Text)))
}

// MatchRow is one line of the matched-firms list and its export. ContactPhone is as stored: the
// caller masks it for whoever may not see it.
type MatchRow struct {
	MatchID       uint64    `json:"match_id"`
	CreditCode    string    `json:"credit_code"`
	Name          string    `json:"name"`
	RegionCode    string    `json:"region_code"`
	IndustryCode  string    `json:"industry_code"`
	ParkID        string    `json:"park_id"`
	ContactPhone  string    `json:"contact_phone"`
	PolicyID      string    `json:"policy_id"`
	PolicyVersion int       `json:"policy_version"`
	PolicyTitle   string    `json:"policy_title"`
	Amount        *float64  `json:"amount"`
	MatchedAt     time.Time `json:"matched_at"`
	Notify        string    `json:"notify_state"`
	Opened        bool      `json:"opened"`
	Response      string    `json:"response"`
	// what the firm's size (大中小微) is computed from
	Employees     int64   `json:"-"`
	AnnualRevenue float64 `json:"-"`
	TotalAssets   float64 `json:"-"`
}

const matchColumns = "m.id AS match_id, m.credit_code, e.name, e.region_code, e.industry_code, e.park_id, e.contact_phone, " +
	"m.policy_id, m.policy_version, v.title AS policy_title, m.amount, m.matched_at, e.employees, e.annual_revenue, e.total_assets"

// selectMatches gives q MatchRow's columns in list order (newest first).
func selectMatches(q *gorm.DB) *gorm.DB {
	return q.Select(matchColumns + ", " + notifySQL + " AS notify, " + openedSQL + " AS opened, " + responseSQL + " AS response").
		Order("m.matched_at DESC, m.id DESC")
}

// narrow adds the filter's policy, park and region conditions: the policy column of table alias
// match, the park and region code of alias place (the firm, or a MatchCount row, which holds all
// three).
func (f MatchFilter) narrow(q *gorm.DB, match, place string) *gorm.DB {
	if f.PolicyID != "" {
		q = q.Where(match+".policy_id = ?", f.PolicyID)
	}
	if f.ParkID != "" {
		q = q.Where(place+".park_id = ?", f.ParkID)
	}
	if f.Region != "" {
		q = WherePrefix(q, place+".region_code", f.Region)
	}
	return q
}

// SortsScope reports whether a page of the list reads and sorts every match of its scope before
// its first row (matchQuery): a park's firms come first, and on MySQL a city's too, so the work
// grows with the scope's matches, where a walk of ix_match_recent stops at the page's LIMIT.
// A list that merges its places' walks (placeWindow) does not, unless it has more than maxPlaces.
func SortsScope(db *gorm.DB, f MatchFilter) bool {
	if f.Firms != nil || f.walksPlaces(db) {
		return false
	}
	park := f.Scope.ParkID != "" || f.ParkID != ""
	if db.Dialector.Name() == "mysql" {
		return park || f.Scope.RegionPrefix != "" || f.Region != ""
	}
	return park
}

// CountMatches is the total of the list, counted up to max+1: summed from the maintained counts
// (MatchCount, kept by policy, region code, park and state, scoped like enterprises, with how many
// were sent and delivered) when the filter narrows only by policy, park, region and a sent or
// delivered notice, so that no page counts matches; otherwise the list's rows are counted.
func CountMatches(ctx context.Context, db *gorm.DB, f MatchFilter, max int) (int64, error) {
	if !f.onlyCounted() {
		return CountUpTo(matchQuery(ctx, db, f, planPage), max)
	}
	// match_counts holds a few rows per policy and place (not per match): summing the rows in
	// scope is the cheap part, whatever plan the database picks.
	q := f.Scope.Apply(db.WithContext(ctx).Table("match_counts AS c").Where("c.state = ?", MatchActive), "c")
	q = f.narrow(q, "c", "c")
	sum := map[string]string{"": "c.n", "sent": "c.notified - c.delivered", "delivered": "c.delivered"}[f.Notify]
	var n int64
	if err := q.Select("COALESCE(SUM(" + sum + "), 0)").Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("count matches: %w", err)
	}
	return n, nil
}

// MatchKeys reads the keys (matched_at, id) of one page of the list: for a city's or a park's
// list by merging the newest keys of each of its places (placeWindow), else by walking (or
// sorting) as matchQuery plans.
func MatchKeys(ctx context.Context, db *gorm.DB, f MatchFilter, p Page) (Window, error) {
	if w, ok, err := placeWindow(ctx, db, f, p); ok || err != nil {
		return w, err
	}
	return KeysetWindow(matchQuery(ctx, db, f, planPage), "m.matched_at", "m.id", p)
}

// maxPlaces is how many places (region code and park) a list merges at most; past it the list
// goes the way matchQuery plans. A province has about a hundred counties and a few hundred parks;
// SQLite allows 500 parts in one UNION.
const maxPlaces = 400

// walksPlaces reports whether a page of the list merges its places' walks: the list is a city's,
// county's or park's (by the caller's scope or the filter), not narrowed by policy or a search
// (whose own indexes, or the scope's few firms, serve them better); on MySQL, which has no
// ix_match_recent, the province's list too, a name search included (it walks and filters, as
// the walk along ix_match_recent does on SQLite).
func (f MatchFilter) walksPlaces(db *gorm.DB) bool {
	if f.Scope.None || f.PolicyID != "" || f.CreditCode != "" || f.CodePrefix != "" || f.Firms != nil {
		return false
	}
	if f.scoped() {
		return f.Text == ""
	}
	return db.Dialector.Name() == "mysql"
}

// scoped reports whether the list is a park's, county's or city's: by the caller's scope or the
// filter.
func (f MatchFilter) scoped() bool {
	return f.Scope.ParkID != "" || f.Scope.RegionPrefix != "" || f.ParkID != "" || f.Region != ""
}

// placeWindow reads one page of a city's, county's or park's list (walksPlaces; ok false
// otherwise, or past maxPlaces): the places holding its active matches come from the maintained
// counts, each place's newest keys from ix_match_place (region code, park, state, matched_at:
// a walk that stops at the page's LIMIT), and one statement merges them (a UNION ALL of one
// ordered, limited read per place). Every match of a place is in the scope and filter's park and
// region, which the place's rows are narrowed by again. At 1,000,000 firms a park holds 1.4
// million matches and a city 6.6 million: a page sorted every one of them (docs/console.md).
func placeWindow(ctx context.Context, db *gorm.DB, f MatchFilter, p Page) (Window, bool, error) {
	if !f.walksPlaces(db) {
		return Window{}, false, nil
	}
	places, err := listPlaces(ctx, db, f, maxPlaces)
	if err != nil {
		return Window{}, false, err
	}
	if len(places) > maxPlaces {
		return Window{}, false, nil
	}
	firm := f.Industry != "" || f.Text != "" // a condition on the firm
	read := func(r keyRead) ([]Cursor, error) {
		if len(places) == 0 {
			return nil, nil
		}
		parts := make([]any, len(places))
		union := make([]string, len(places))
		for i, pl := range places {
			part := db.Table("matches AS m").Where("m.region_code = ? AND m.park_id = ? AND m.state = ?", pl.RegionCode, pl.ParkID, MatchActive)
			if firm {
				part = part.Joins("JOIN enterprises e ON e.credit_code = m.credit_code")
			}
			part = f.rowFilters(f.narrow(f.Scope.Apply(part, "m"), "m", "m"))
			r := r
			r.limit += r.offset
			parts[i] = r.apply(part, "m.matched_at", "m.id")
			union[i] = fmt.Sprintf("SELECT * FROM (?) AS p%d", i)
		}
		order := "at ASC, id ASC"
		if r.desc {
			order = "at DESC, id DESC"
		}
		return scanKeys(db.WithContext(ctx).Raw("SELECT at, id FROM ("+strings.Join(union, " UNION ALL ")+") AS u ORDER BY "+order+
			" LIMIT ? OFFSET ?", append(parts, r.limit, r.offset)...))
	}
	w, err := keysetWindow(read, p)
	return w, true, err
}

// MatchRows reads the rows of the list with the given ids, in list order (one page: a few hundred
// ids at most).
func MatchRows(ctx context.Context, db *gorm.DB, f MatchFilter, ids []uint64) ([]MatchRow, error) {
	var rows []MatchRow
	if len(ids) == 0 {
		return rows, nil
	}
	if err := selectMatches(matchQuery(ctx, db, f, planByID)).Where("m.id IN ?", ids).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("read matches: %w", err)
	}
	return rows, nil
}

// MatchExportQuery selects every row of the list, in list order, with MatchRow's column names
// (those of core.MatchLine): core.ExportMatches streams it from a cursor. A list of one place (a
// park's, a county's without parks) is read along ix_match_place, in list order already: its
// first row leaves at once, where a sort of the scope's matches came first (a park's 1.48
// million at 1,000,000 firms: no row within a minute on MariaDB beside the pipeline).
func MatchExportQuery(ctx context.Context, db *gorm.DB, f MatchFilter) *gorm.DB {
	if f.scoped() && f.walksPlaces(db) {
		if places, err := listPlaces(ctx, db, f, 2); err == nil && len(places) == 1 {
			return selectMatches(placeQuery(ctx, db, f, places[0]))
		}
	}
	return selectMatches(matchQuery(ctx, db, f, planAll))
}

// matchPlace is a region code and park: the unit of ix_match_place.
type matchPlace struct{ RegionCode, ParkID string }

// listPlaces reads the places holding the filter's active matches from the maintained counts, in
// order, at most max+1 of them.
func listPlaces(ctx context.Context, db *gorm.DB, f MatchFilter, max int) ([]matchPlace, error) {
	var places []matchPlace
	q := f.Scope.Apply(db.WithContext(ctx).Table("match_counts AS c").Where("c.state = ? AND c.n > 0", MatchActive), "c")
	if err := f.narrow(q, "c", "c").Distinct("c.region_code", "c.park_id").Order("c.region_code, c.park_id").
		Limit(max + 1).Scan(&places).Error; err != nil {
		return nil, fmt.Errorf("read the places of the list: %w", err)
	}
	return places, nil
}

// placeQuery selects the filter's active matches of one place along ix_match_place, with their
// firms and versions (no columns, no order yet: the index's order is the list's).
func placeQuery(ctx context.Context, db *gorm.DB, f MatchFilter, pl matchPlace) *gorm.DB {
	table, join, versions := "matches AS m INDEXED BY "+MatchPlaceIndex, "JOIN", "policy_versions v"
	if db.Dialector.Name() == "mysql" {
		// each firm and version by its key: a join buffer (MariaDB's choice for a few versions)
		// would give up the index's order for a sort
		table, join, versions = "matches AS m FORCE INDEX ("+MatchPlaceIndex+")", "STRAIGHT_JOIN", "policy_versions v FORCE INDEX (ux_policy_version)"
	}
	q := db.WithContext(ctx).Table(table).
		Joins(join+" enterprises e ON m.credit_code = e.credit_code").
		Joins(join+" "+versions+" ON v.policy_id = m.policy_id AND v.version = m.policy_version").
		Where("m.region_code = ? AND m.park_id = ? AND m.state = ?", pl.RegionCode, pl.ParkID, MatchActive)
	// the scope on the firm as well as on the match's copy of its place: what a caller may see is
	// decided by the registry, as for the rows of a page (MatchRows)
	return f.rowFilters(f.narrow(f.Scope.Apply(f.Scope.Apply(q, "m"), "e"), "m", "m"))
}

// TooManyRowsError refuses to read more rows than a caller can handle in memory.
type TooManyRowsError struct{ Rows, Max int64 }

func (e *TooManyRowsError) Error() string {
	return fmt.Sprintf("%d rows, more than the %d allowed: narrow the filter", e.Rows, e.Max)
}

// MatchSizeInput is what a match's firm size (大中小微) is computed from, with the match's key.
type MatchSizeInput struct {
	ID            uint64
	MatchedAt     time.Time
	IndustryCode  string
	Employees     int64
	AnnualRevenue float64
	TotalAssets   float64
}

// MatchSizeInputs reads, in list order, the size inputs of every match the filter selects: the
// size is computed in Go (rules.ClassifySize), so a size filter reads them all. More than max
// matches is a *TooManyRowsError, before any is read.
func MatchSizeInputs(ctx context.Context, db *gorm.DB, f MatchFilter, max int64) ([]MatchSizeInput, error) {
	var n int64
	if err := matchQuery(ctx, db, f, planAll).Count(&n).Error; err != nil {
		return nil, fmt.Errorf("count matches: %w", err)
	}
	if n > max {
		return nil, &TooManyRowsError{Rows: n, Max: max}
	}
	var rows []MatchSizeInput
	if err := matchQuery(ctx, db, f, planAll).Select("m.id, m.matched_at, e.industry_code, e.employees, e.annual_revenue, e.total_assets").
		Order("m.matched_at DESC, m.id DESC").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("read matches: %w", err)
	}
	return rows, nil
}
