package store

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Maintained match counts (docs/console.md, "Maintained aggregates"). The console's dashboard and
// status count matches per policy, city, park and day inside a principal's scope; at millions of
// matches a GROUP BY over matches joined to enterprises cannot answer in time. MatchCount holds
// those figures per (policy, firm's region code, firm's park, match state), and MatchHour the active
// ones per (policy, region code, park, hour made) for the chart by day, both updated in
// the same transaction as the rows it counts: every writer of matches (the matcher's diff,
// retiring a policy) and of a firm's region or park (registry imports) computes the change of
// the counts it causes and applies it with ApplyCounts, a few UPSERTs per transaction.
//
// Like the console's old queries, a match counts only while its firm is in the registry (the
// count joins enterprises); firms are never deleted, so this is every match in practice.

func init() { Register(&MatchCount{}, &MatchHour{}) }

// MatchCount is the number of matches (and their amount) of one policy, region code, park and
// state. Amounts are summed for active matches only, in fen so that adding and subtracting stays
// exact; Amounts counts the active matches that have an amount (a sum over none is no amount, as
// SQL's SUM is NULL).
type MatchCount struct {
	PolicyID   string `gorm:"primaryKey;size:64" json:"policy_id"`
	RegionCode string `gorm:"primaryKey;size:6;index:ix_count_region" json:"region_code"`
	ParkID     string `gorm:"primaryKey;size:32;index:ix_count_park" json:"park_id"`
	State      string `gorm:"primaryKey;size:16" json:"state"`
	N          int64  `gorm:"not null;default:0" json:"n"`
	Amounts    int64  `gorm:"not null;default:0" json:"amounts"`
	AmountFen  int64  `gorm:"not null;default:0" json:"amount_fen"`
	// Notified and Delivered count the matches whose notices got that far (Match.Reached): the
	// dashboard's funnel.
	Notified  int64 `gorm:"not null;default:0" json:"notified"`
	Delivered int64 `gorm:"not null;default:0" json:"delivered"`
}

// val is r's figures.
func (r MatchCount) val() CountVal {
	return CountVal{N: r.N, Amounts: r.Amounts, AmountFen: r.AmountFen, Notified: r.Notified, Delivered: r.Delivered}
}

// MatchHour is the active matches of one policy, region code and park made in one UTC hour
// ("2006-01-02T15"): the chart by day folds hours into local days. Its own table keeps the rows
// the other figures sum over few.
type MatchHour struct {
	PolicyID   string `gorm:"primaryKey;size:64" json:"policy_id"`
	RegionCode string `gorm:"primaryKey;size:6;index:ix_hour_region" json:"region_code"`
	ParkID     string `gorm:"primaryKey;size:32;index:ix_hour_park" json:"park_id"`
	Hour       string `gorm:"primaryKey;size:13;index:ix_hour_hour" json:"hour"`
	N          int64  `gorm:"not null;default:0" json:"n"`
	Amounts    int64  `gorm:"not null;default:0" json:"amounts"`
	AmountFen  int64  `gorm:"not null;default:0" json:"amount_fen"`
}

// CountKey is the key of a MatchCount row (Hour empty) or of a MatchHour row (Hour set, State
// active).
type CountKey struct {
	PolicyID, RegionCode, ParkID, State, Hour string
}

// CountVal is the figures of a MatchCount row (or a change of them); a MatchHour row has no
// Notified and Delivered.
type CountVal struct {
	N         int64 `json:"n"`
	Amounts   int64 `json:"amounts"`
	AmountFen int64 `json:"amount_fen"`
	Notified  int64 `json:"notified"`
	Delivered int64 `json:"delivered"`
}

// Counts is a set of MatchCount figures (or of changes to them) by key.
type Counts map[CountKey]CountVal

// CountedMatch is what a match contributes to the counts: its policy, state, amount, time and
// reach, and its firm's region code and park.
type CountedMatch struct {
	PolicyID   string
	State      string
	Amount     *float64
	MatchedAt  time.Time
	Reached    int8
	RegionCode string
	ParkID     string
}

// HourOf is the hour key of a match made at t.
func HourOf(t time.Time) string { return t.UTC().Format("2006-01-02T15") }

// Fen is an amount in 元 as whole fen.
func Fen(amount float64) int64 { return int64(math.Round(amount * 100)) }

// Add adds (sign 1) or subtracts (sign -1) one match: to its MatchCount row and, if it is active,
// to its MatchHour row.
func (c Counts) Add(m CountedMatch, sign int64) {
	hour := ""
	if m.State == MatchActive {
		hour = HourOf(m.MatchedAt)
	}
	c.add(m, hour, sign)
}

// add is Add with the match's hour key given.
func (c Counts) add(m CountedMatch, hour string, sign int64) {
	k := CountKey{PolicyID: m.PolicyID, RegionCode: m.RegionCode, ParkID: m.ParkID, State: m.State}
	d := CountVal{N: sign}
	if m.State == MatchActive && m.Amount != nil {
		d.Amounts, d.AmountFen = sign, sign*Fen(*m.Amount)
	}
	if m.State == MatchActive {
		k.Hour = hour
		c.plus(k, d)
		k.Hour = ""
	}
	if m.Reached >= ReachSent {
		d.Notified = sign
	}
	if m.Reached >= ReachDelivered {
		d.Delivered = sign
	}
	c.plus(k, d)
}

func (c Counts) plus(k CountKey, d CountVal) {
	c[k] = c[k].plus(d, 1)
}

// plus is v with d times sign added.
func (v CountVal) plus(d CountVal, sign int64) CountVal {
	return CountVal{N: v.N + sign*d.N, Amounts: v.Amounts + sign*d.Amounts, AmountFen: v.AmountFen + sign*d.AmountFen,
		Notified: v.Notified + sign*d.Notified, Delivered: v.Delivered + sign*d.Delivered}
}

// Merge adds every figure of o, times sign.
func (c Counts) Merge(o Counts, sign int64) {
	for k, v := range o {
		c[k] = c[k].plus(v, sign)
	}
}

// nonZero are the keys with a figure other than zero, in key order (so that concurrent writers
// lock counter rows in the same order).
func (c Counts) nonZero() []CountKey {
	keys := make([]CountKey, 0, len(c))
	for k, v := range c {
		if v != (CountVal{}) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b CountKey) int {
		return strings.Compare(a.PolicyID+"\x00"+a.RegionCode+"\x00"+a.ParkID+"\x00"+a.State+"\x00"+a.Hour,
			b.PolicyID+"\x00"+b.RegionCode+"\x00"+b.ParkID+"\x00"+b.State+"\x00"+b.Hour)
	})
	return keys
}

// countUpsertRows is how many counter rows one UPSERT carries.
const countUpsertRows = 200

// ApplyCounts adds changes to the stored counts in tx: a multi-row UPSERT per countUpsertRows
// changed keys of each table (MySQL INSERT … ON DUPLICATE KEY UPDATE, SQLite INSERT … ON CONFLICT
// DO UPDATE).
func ApplyCounts(tx *gorm.DB, changes Counts) error {
	var counts, hours []CountKey
	for _, k := range changes.nonZero() {
		if k.Hour == "" {
			counts = append(counts, k)
		} else {
			hours = append(hours, k)
		}
	}
	if err := upsertCounts(tx, "match_counts", "state", countColumns, counts, changes, func(k CountKey) string { return k.State }); err != nil {
		return err
	}
	return upsertCounts(tx, "match_hours", "hour", countColumns[:3], hours, changes, func(k CountKey) string { return k.Hour })
}

// countColumns are the figures of match_counts; match_hours has the first three.
var countColumns = []string{"n", "amounts", "amount_fen", "notified", "delivered"}

// values are v's figures in countColumns order.
func (v CountVal) values() []any { return []any{v.N, v.Amounts, v.AmountFen, v.Notified, v.Delivered} }

// upsertCounts adds changes to the figures cols of the rows keys of table, whose last key column
// is col (valued by last).
func upsertCounts(tx *gorm.DB, table, col string, cols []string, keys []CountKey, changes Counts, last func(CountKey) string) error {
	mysql := tx.Dialector.Name() == "mysql"
	row := "(?,?,?,?" + strings.Repeat(",?", len(cols)) + ")"
	sets := make([]string, len(cols))
	for i, c := range cols {
		if mysql {
			sets[i] = c + " = " + c + " + VALUES(" + c + ")"
		} else {
			sets[i] = c + " = " + table + "." + c + " + excluded." + c
		}
	}
	for lo := 0; lo < len(keys); lo += countUpsertRows {
		part := keys[lo:min(lo+countUpsertRows, len(keys))]
		var b strings.Builder
		b.WriteString("INSERT INTO " + table + " (policy_id, region_code, park_id, " + col + ", " + strings.Join(cols, ", ") + ") VALUES ")
		args := make([]any, 0, len(part)*(4+len(cols)))
		for i, k := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(row)
			args = append(args, k.PolicyID, k.RegionCode, k.ParkID, last(k))
			args = append(args, changes[k].values()[:len(cols)]...)
		}
		if mysql {
			b.WriteString(" ON DUPLICATE KEY UPDATE " + strings.Join(sets, ", "))
		} else {
			b.WriteString(" ON CONFLICT (policy_id, region_code, park_id, " + col + ") DO UPDATE SET " + strings.Join(sets, ", "))
		}
		if err := tx.Exec(b.String(), args...).Error; err != nil {
			return fmt.Errorf("update %s: %w", table, err)
		}
	}
	return nil
}

// countedSelect reads what matches contribute to the counts; the caller adds the WHERE clause.
const countedSelect = "SELECT m.policy_id, m.state, m.amount, m.matched_at, m.reached, e.region_code, e.park_id " +
	"FROM matches m JOIN enterprises e ON e.credit_code = m.credit_code"

// countIDsPer is how many ids or credit codes one counting query names.
const countIDsPer = 1000

// CountMatchIDs reads the counts of the matches with the given ids, as they stand in tx.
func CountMatchIDs(tx *gorm.DB, ids []uint64) (Counts, error) { return countIn(tx, "m.id", ids) }

// CountFirmMatches reads the counts of every match of the given firms, as they stand in tx.
func CountFirmMatches(tx *gorm.DB, codes []string) (Counts, error) {
	return countIn(tx, "m.credit_code", codes)
}

// countIn counts the matches whose column is one of vals (inList).
func countIn[T string | uint64](tx *gorm.DB, col string, vals []T) (Counts, error) {
	out := Counts{}
	for lo := 0; lo < len(vals); lo += countIDsPer {
		in, args := inList(tx, vals[lo:min(lo+countIDsPer, len(vals))])
		if err := scanCounted(tx.Raw(countedSelect+" WHERE "+col+" IN "+in, args...), out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scanCounted adds the rows of a countedSelect query to out.
func scanCounted(q *gorm.DB, out Counts) error {
	rows, err := q.Rows()
	if err != nil {
		return fmt.Errorf("count matches: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m CountedMatch
		if err := rows.Scan(&m.PolicyID, &m.State, &m.Amount, &m.MatchedAt, &m.Reached, &m.RegionCode, &m.ParkID); err != nil {
			return fmt.Errorf("count matches: %w", err)
		}
		out.Add(m, 1)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count matches: %w", err)
	}
	return nil
}

// KnownPlaces are firms' region codes and parks as a caller read them from enterprises (the
// matcher's snapshot), and from when: Place reports a firm's, ok false for a firm it did not read.
type KnownPlaces struct {
	Place func(code string) (region, park string, ok bool)
	// Since is when the caller began reading, less a margin for another writer's clock and for a
	// transaction that commits a while after it set updated_at (the registry's import sets it
	// inside its transaction, after taking its locks).
	Since time.Time
	// Moves, when Counted, is PlaceMoves as the caller read it before it began reading places.
	// While a transaction finds the count unchanged, no firm has moved since, and every known
	// firm's place is taken without reading firms updated from Since on: after a registry import
	// that is every firm, each read back by every transaction of a full match that follows it
	// within the margin (1.35 s of a 13 s match of 200,000 firms, the import just before).
	Moves   int64
	Counted bool
}

// PreparedCounts are the counts new matches add when every one of them is inserted, none has
// notices yet (Match.Reached) and the places they were computed from still hold: what
// CountPlaced then applies. Computed before the transaction (KnownPlaces.Prepare: a full
// match does it for the next transaction on its other core while SQLite's one writer runs the
// current one), applied in it as they are when that holds, else computed again.
type PreparedCounts struct{ delta Counts }

// Prepare places ms from the known places (PlaceMatches checks them again in the transaction) and
// computes their counts; nil when a firm's place is not known or the move count was not read.
func (k *KnownPlaces) Prepare(ms []Match) *PreparedCounts {
	if k == nil || !k.Counted {
		return nil
	}
	for i := range ms {
		region, park, ok := k.Place(ms[i].CreditCode)
		if !ok {
			return nil
		}
		ms[i].RegionCode, ms[i].ParkID = region, park
	}
	delta := Counts{}
	var hours hourOf
	for i := range ms {
		delta.addNew(&ms[i], &hours)
	}
	return &PreparedCounts{delta: delta}
}

// hourOf remembers the last time's hour: a batch's matches share their time.
type hourOf struct {
	at   time.Time
	hour string
}

func (h *hourOf) of(t time.Time) string {
	if h.hour == "" || !t.Equal(h.at) {
		h.at, h.hour = t, HourOf(t)
	}
	return h.hour
}

// addNew counts a new match, placed (PlaceMatches).
func (c Counts) addNew(m *Match, hours *hourOf) {
	h := ""
	if m.State == MatchActive {
		h = hours.of(m.MatchedAt)
	}
	c.add(CountedMatch{PolicyID: m.PolicyID, State: m.State, Amount: m.Amount, MatchedAt: m.MatchedAt,
		Reached: m.Reached, RegionCode: m.RegionCode, ParkID: m.ParkID}, h, 1)
}

// allFresh reports whether every match was inserted and has no notices yet.
func allFresh(ms []Match) bool {
	for i := range ms {
		if ms[i].ID == 0 || ms[i].Reached != ReachNone {
			return false
		}
	}
	return true
}

// CountChange measures what a write does to the counts: Before reads the counts of the rows it
// will touch, After those of the rows it touched, and Apply stores the difference, all in the
// write's transaction. The ids of rows it inserts go to After only.
type CountChange struct{ delta Counts }

// BeginCountChange starts measuring a write to the matches with the given ids.
func BeginCountChange(tx *gorm.DB, ids []uint64) (*CountChange, error) {
	c := &CountChange{delta: Counts{}}
	if len(ids) == 0 {
		return c, nil
	}
	before, err := CountMatchIDs(tx, ids)
	if err != nil {
		return nil, err
	}
	c.delta.Merge(before, -1)
	return c, nil
}

// Finish adds the counts of the rows with the given ids as they stand now, and applies the change.
func (c *CountChange) Finish(tx *gorm.DB, ids []uint64) error {
	if len(ids) > 0 {
		after, err := CountMatchIDs(tx, ids)
		if err != nil {
			return err
		}
		c.delta.Merge(after, 1)
	}
	return ApplyCounts(tx, c.delta)
}

// RevokePolicyCounts moves the counts of a policy's active matches to revoked, as revoking all of
// them (retiring the policy) does to the rows; it reads only the counter rows.
func RevokePolicyCounts(tx *gorm.DB, policyID string) error {
	var rows []MatchCount
	if err := tx.Where("policy_id = ? AND state = ?", policyID, MatchActive).Find(&rows).Error; err != nil {
		return fmt.Errorf("read match counts of %s: %w", policyID, err)
	}
	var hours []MatchHour
	if err := tx.Where("policy_id = ?", policyID).Find(&hours).Error; err != nil {
		return fmt.Errorf("read match counts of %s: %w", policyID, err)
	}
	delta := Counts{}
	for _, r := range rows {
		delta.plus(CountKey{r.PolicyID, r.RegionCode, r.ParkID, r.State, ""}, CountVal{}.plus(r.val(), -1))
		delta.plus(CountKey{r.PolicyID, r.RegionCode, r.ParkID, MatchRevoked, ""}, CountVal{N: r.N, Notified: r.Notified, Delivered: r.Delivered})
	}
	for _, r := range hours {
		delta.plus(CountKey{r.PolicyID, r.RegionCode, r.ParkID, MatchActive, r.Hour}, CountVal{-r.N, -r.Amounts, -r.AmountFen, 0, 0})
	}
	return ApplyCounts(tx, delta)
}

// RecountMatches counts every match from the raw tables (a keyset scan over matches by id).
func RecountMatches(ctx context.Context, db *gorm.DB) (Counts, error) {
	out := Counts{}
	var after uint64
	for {
		rows, err := db.WithContext(ctx).Raw("SELECT m.id, m.policy_id, m.state, m.amount, m.matched_at, m.reached, e.region_code, e.park_id "+
			"FROM matches m JOIN enterprises e ON e.credit_code = m.credit_code WHERE m.id > ? ORDER BY m.id LIMIT 50000", after).Rows()
		if err != nil {
			return nil, fmt.Errorf("recount matches: %w", err)
		}
		n := 0
		for rows.Next() {
			var m CountedMatch
			if err := rows.Scan(&after, &m.PolicyID, &m.State, &m.Amount, &m.MatchedAt, &m.Reached, &m.RegionCode, &m.ParkID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("recount matches: %w", err)
			}
			out.Add(m, 1)
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("recount matches: %w", err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

// StoredCounts reads the stored counts (rows with every figure zero left out).
func StoredCounts(ctx context.Context, db *gorm.DB) (Counts, error) {
	var rows []MatchCount
	if err := db.WithContext(ctx).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read match counts: %w", err)
	}
	var hours []MatchHour
	if err := db.WithContext(ctx).Find(&hours).Error; err != nil {
		return nil, fmt.Errorf("read match counts: %w", err)
	}
	out := Counts{}
	for _, r := range rows {
		if v := r.val(); v != (CountVal{}) {
			out[CountKey{r.PolicyID, r.RegionCode, r.ParkID, r.State, ""}] = v
		}
	}
	for _, r := range hours {
		if v := (CountVal{N: r.N, Amounts: r.Amounts, AmountFen: r.AmountFen}); v != (CountVal{}) {
			out[CountKey{r.PolicyID, r.RegionCode, r.ParkID, MatchActive, r.Hour}] = v
		}
	}
	return out, nil
}

// CountDiff is one key whose stored figures differ from a recount.
type CountDiff struct {
	Key     CountKey
	Stored  CountVal
	Recount CountVal
}

// CompareCounts lists the keys where stored and recounted figures differ, in key order.
func CompareCounts(stored, recount Counts) []CountDiff {
	all := Counts{}
	all.Merge(stored, 1)
	all.Merge(recount, -1)
	var out []CountDiff
	for _, k := range all.nonZero() {
		out = append(out, CountDiff{Key: k, Stored: stored[k], Recount: recount[k]})
	}
	return out
}

// RecountReport says what a recount found and did.
type RecountReport struct {
	Matches int64       `json:"matches"` // matches counted (of firms in the registry)
	Rows    int         `json:"rows"`    // counter rows after the recount
	Diffs   []CountDiff `json:"-"`
	Fixed   bool        `json:"fixed"`
	// Misplaced is how many matches did not carry their firm's place (MisplacedMatches); a
	// repairing recount gave it to them (Fixed says so only for the counts).
	Misplaced int64 `json:"misplaced"`
	// Firms is how many firms were counted; FirmDiffs how many firm counts (FirmCount rows)
	// differed from that count (a repairing recount replaced them, and says so in Fixed).
	Firms     int64 `json:"firms"`
	FirmDiffs int   `json:"firm_diffs"`
	// Deliveries is how many deliveries were counted; DeliveryDiffs how many delivery counts
	// (DeliveryCount rows) differed from that count after the queue was drained (a repairing
	// recount counted every delivery again, and says so in Fixed).
	Deliveries    int64 `json:"deliveries"`
	DeliveryDiffs int   `json:"delivery_diffs"`
}

// Recount counts every match again and compares with the stored counts; with fix it replaces the
// stored counts by the recount in one transaction. First it counts (with fix: repairs) the
// matches that do not carry their firm's place; the firm counts (FirmCount) are compared and
// replaced the same way, and the delivery counts (DeliveryCount) after the delivery queue is
// drained. No write of matches slips between counting and
// storing: on SQLite the transaction holds the one write lock from its start; on MySQL it first
// locks every counter row and the gaps between them (a locking read), so a writer whose change the
// recount's snapshot does not see waits, and adds its change after the recount is stored.
func Recount(ctx context.Context, db *gorm.DB, fix bool) (RecountReport, error) {
	var rep RecountReport
	var err error
	if rep.Misplaced, err = MisplacedMatches(ctx, db, fix); err != nil {
		return rep, err
	}
	if _, err := DrainDeliveries(ctx, db); err != nil {
		return rep, err
	}
	run := func(tx *gorm.DB) error {
		if fix && tx.Dialector.Name() == "mysql" {
			var n int64
			for _, table := range []string{"match_counts", "match_hours", "firm_counts", "delivery_counts"} {
				if err := tx.Raw("SELECT COUNT(*) FROM " + table + " FOR UPDATE").Scan(&n).Error; err != nil {
					return fmt.Errorf("lock match counts: %w", err)
				}
			}
		}
		var fixedFirms, fixedDeliveries bool
		if rep.Firms, rep.FirmDiffs, fixedFirms, err = recountTable(ctx, tx, fix, RecountFirms, StoredFirmCounts, replaceFirmCounts); err != nil {
			return err
		}
		if rep.Deliveries, rep.DeliveryDiffs, fixedDeliveries, err = recountTable(ctx, tx, fix, RecountDeliveries, StoredDeliveryCounts,
			replaceDeliveryCounts); err != nil {
			return err
		}
		rep.Fixed = fixedFirms || fixedDeliveries
		recount, err := RecountMatches(ctx, tx)
		if err != nil {
			return err
		}
		stored, err := StoredCounts(ctx, tx)
		if err != nil {
			return err
		}
		rep.Diffs = CompareCounts(stored, recount)
		for k, v := range recount {
			if k.Hour == "" {
				rep.Matches += v.N
			}
		}
		rep.Rows = len(recount)
		if !fix || len(rep.Diffs) == 0 {
			return nil
		}
		if err := clearCounts(tx); err != nil {
			return err
		}
		if err := ApplyCounts(tx, recount); err != nil {
			return err
		}
		rep.Fixed = true
		return nil
	}
	if !fix {
		if err := run(db.WithContext(ctx)); err != nil {
			return rep, err
		}
		// the delivery counts follow the deliveries a drain behind: under live delivery a
		// difference may be the last moment's transitions, so a check drains and compares again
		// (twice at most) and reports what stays
		for range 2 {
			if rep.DeliveryDiffs == 0 {
				break
			}
			if _, err := DrainDeliveries(ctx, db); err != nil {
				return rep, err
			}
			if rep.Deliveries, rep.DeliveryDiffs, _, err = recountTable(ctx, db.WithContext(ctx), false, RecountDeliveries,
				StoredDeliveryCounts, replaceDeliveryCounts); err != nil {
				return rep, err
			}
		}
		return rep, nil
	}
	return rep, db.WithContext(ctx).Transaction(run)
}

// backfillReach (reach.go) runs first: the recount reads matches.reached.
func init() { RegisterFixup(backfillReach); RegisterFixup(backfillMatchCounts) }

// backfillMatchCounts counts the matches of a database made before the counts existed, once: when
// matches exist and match_counts does not (match_hours comes with it).
func backfillMatchCounts(db *gorm.DB) error {
	m := db.Migrator()
	if m.HasTable(&MatchCount{}) || !m.HasTable(&Match{}) || !m.HasTable(&Enterprise{}) {
		return nil
	}
	return db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Migrator().DropTable(&MatchHour{}); err != nil { // no match_hours without match_counts
			return fmt.Errorf("create match_hours: %w", err)
		}
		if err := tx.Migrator().CreateTable(&MatchCount{}, &MatchHour{}); err != nil {
			return fmt.Errorf("create match_counts: %w", err)
		}
		return recountInto(tx)
	})
}

// recountInto replaces the stored counts by a recount of every match, in tx.
func recountInto(tx *gorm.DB) error {
	counts, err := RecountMatches(txContext(tx), tx)
	if err != nil {
		return err
	}
	if err := clearCounts(tx); err != nil {
		return err
	}
	return ApplyCounts(tx, counts)
}

// txContext is the context tx's statements run under (Background when none was given).
func txContext(tx *gorm.DB) context.Context {
	if ctx := tx.Statement.Context; ctx != nil {
		return ctx
	}
	return context.Background()
}

// clearCounts deletes every counter row, in tx.
func clearCounts(tx *gorm.DB) error {
	for _, table := range []any{&MatchCount{}, &MatchHour{}} {
		if err := tx.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(table).Error; err != nil {
			return fmt.Errorf("clear match counts: %w", err)
		}
	}
	return nil
}
