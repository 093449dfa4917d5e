package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The name index: which firms' names hold a pair of adjacent characters (a bigram), so that a
// name search (FirmsNamed) reads the few firms holding the text's rarest pairs instead of every
// firm's name of its scope. At 1,000,000 firms the walk of ix_enterprise_name took
// 0.3–0.4 s idle and 1.6–4.8 s beside the delivering pipeline (docs/console.md, twelfth session).
//
// What is indexed. Only pairs of two CJK unified ideographs of the Basic Multilingual Plane
// (indexedRune): each compares equal only to itself in MySQL's collations and in SQLite's LIKE,
// so a name that LIKE finds the text in holds each of the text's pairs exactly (ASCII letters
// are matched without case, and by MySQL also with accents: "cafe" finds "Café"; characters
// outside the BMP all compare equal in utf8mb4_general_ci). The pairs of the legal form (有限公司, 股份有限公司, …)
// are left out: nearly every firm holds them, and a text made only of them is common anyway.
// A text without an indexed pair is searched as before.
//
// How it is kept. Not by the writers of enterprises (an import of 1,000,000 firms would write ten
// million more rows in its transactions): the console's process runs IndexNames every few
// seconds (NameIndexInterval), which reads the firms updated since its last pass (updated_at),
// compares each name with the one its pairs were made from (indexed_names) and writes the
// difference. A search then takes the firms holding the text's three rarest pairs (intersected in
// the index), and with them every firm
// updated since the last pass began (less NameIndexMargin, for transactions that committed
// late and for clocks of other hosts), and checks each one's current name with the same LIKE as
// the list: a pair left over from an old name finds nothing, and a firm renamed or imported
// since the last pass is looked at directly. Any writer of enterprises (an import, a change
// event, the console's edit, a script) is therefore seen. While the first pass has not ended,
// or after an import changed more than NameIndexRecent firms not yet indexed, the search walks
// ix_enterprise_name as before.

func init() { Register(&NameGram{}, &IndexedName{}) }

// NameGram says that the name of firm CreditCode holds the pair of characters Gram (NameGrams).
type NameGram struct {
	Gram       int64  `gorm:"primaryKey;autoIncrement:false"`
	CreditCode string `gorm:"primaryKey;size:18"`
}

func (NameGram) TableName() string { return "name_grams" }

// IndexedName is the name a firm's pairs in name_grams were made from.
type IndexedName struct {
	CreditCode string `gorm:"primaryKey;size:18"`
	Name       string `gorm:"size:200;not null;default:''"`
}

func (IndexedName) TableName() string { return "indexed_names" }

// On SQLite both tables are made WITHOUT ROWID: a row is its key, one b-tree instead of a table
// and an index beside it.
func init() {
	RegisterFixup(func(db *gorm.DB) error {
		if db.Dialector.Name() != "sqlite" {
			return nil
		}
		for _, ddl := range []string{
			"CREATE TABLE IF NOT EXISTS name_grams (gram integer NOT NULL, credit_code text NOT NULL, PRIMARY KEY (gram, credit_code)) WITHOUT ROWID",
			"CREATE TABLE IF NOT EXISTS indexed_names (credit_code text NOT NULL, name text NOT NULL DEFAULT '', PRIMARY KEY (credit_code)) WITHOUT ROWID",
		} {
			if err := db.Exec(ddl).Error; err != nil {
				return fmt.Errorf("create the name index: %w", err)
			}
		}
		return nil
	})
}

const (
	// NameIndexInterval is how often the console's process brings the name index up to date.
	NameIndexInterval = 10 * time.Second
	// NameIndexMargin is how far before a pass's start the next pass and the searches look again:
	// a firm stamped before the pass began but committed after its read, or stamped by a host
	// whose clock is behind.
	NameIndexMargin = time.Minute
	// NameIndexRecent is how many firms updated since the last pass a search looks at directly at
	// most; with more (an import the index has not caught up with) it walks ix_enterprise_name.
	NameIndexRecent = 5000
	// NameGramFirms is how many firms the text's rarest pair may name for the search to read them;
	// a text whose every pair is more common walks ix_enterprise_name (and is common itself).
	NameGramFirms = 5000
	// nameIndexFew is how many updated firms a pass reads by their codes at most; with more it
	// walks every firm in code order.
	nameIndexFew = 50000
	// nameIndexBatch is how many firms one transaction of a pass indexes.
	nameIndexBatch = 2000
	// counterNameIndex holds, in registry_counters, when the last complete pass began (Unix
	// milliseconds; absent or 0: never). Each pass's transactions lock the row, so that passes of
	// several processes take turns and none deletes a pair another's newer name needs.
	counterNameIndex = "name_index_at"
)

// legalFormGrams are the pairs of the legal-form suffixes, which nearly every name holds.
var legalFormGrams = func() map[int64]bool {
	m := map[int64]bool{}
	for _, s := range []string{"有限公司", "有限责任公司", "股份有限公司", "分公司", "合伙企业"} {
		for _, g := range allGrams(s) {
			m[g] = true
		}
	}
	return m
}()

// indexedRune reports whether a character takes part in the name index (see above): the CJK
// unified ideographs of the BMP (the main block and extension A). Not the rest of Unicode's Han:
// compatibility ideographs (U+F900…) and Kangxi radicals equal their unified twins in the
// Unicode collations (utf8mb4_unicode_ci, MySQL 8's utf8mb4_0900_ai_ci), which give each unified
// ideograph a weight of its own, as utf8mb4_general_ci and utf8mb4_bin compare code points.
func indexedRune(r rune) bool { return r >= 0x4E00 && r <= 0x9FFF || r >= 0x3400 && r <= 0x4DBF }

// allGrams are the distinct pairs of adjacent indexed characters of s, in order of appearance.
func allGrams(s string) []int64 {
	var out []int64
	prev := rune(-1)
	for _, r := range s {
		if indexedRune(r) && prev >= 0 {
			if g := int64(prev)<<21 | int64(r); !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
		prev = -1
		if indexedRune(r) {
			prev = r
		}
	}
	return out
}

// NameGrams are the pairs of s the name index keeps: allGrams without the legal form's.
func NameGrams(s string) []int64 {
	all := allGrams(s)
	out := all[:0]
	for _, g := range all {
		if !legalFormGrams[g] {
			out = append(out, g)
		}
	}
	return out
}

// NameIndexPass is what one IndexNames did.
type NameIndexPass struct {
	Read    int // firms updated since the last pass (and its margin), or every firm on the first
	Changed int // whose name differed from the indexed one
	Seconds float64
}

// nameIndexAt reads when the last complete pass began (zero: never).
func nameIndexAt(ctx context.Context, db *gorm.DB) (time.Time, error) {
	var n []int64
	if err := db.WithContext(ctx).Raw("SELECT n FROM registry_counters WHERE name = ?", counterNameIndex).Scan(&n).Error; err != nil {
		return time.Time{}, fmt.Errorf("read the name index's time: %w", err)
	}
	if len(n) == 0 || n[0] <= 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(n[0]).UTC(), nil
}

// IndexNames brings the name index up to date with the firms updated since the last pass began
// (less NameIndexMargin; every firm on the first pass), one transaction per nameIndexBatch firms,
// and then records when this pass began.
// yield, when not nil, is called before each transaction (the console's precedence, stage.Gate).
func IndexNames(ctx context.Context, db *gorm.DB, yield func(context.Context)) (NameIndexPass, error) {
	return indexNames(ctx, db, yield, time.Now(), nameIndexFew)
}

// indexNames is IndexNames of a pass that began at start, reading the updated firms by their
// codes when fewer than few, else walking every firm.
func indexNames(ctx context.Context, db *gorm.DB, yield func(context.Context), start time.Time, few int) (pass NameIndexPass, err error) {
	if yield == nil {
		yield = func(context.Context) {}
	}
	began := time.Now()
	defer func() { pass.Seconds = time.Since(began).Seconds() }()
	at, err := nameIndexAt(ctx, db)
	if err != nil {
		return pass, err
	}
	var since time.Time
	if at.IsZero() {
		// the row the passes' transactions lock
		if err := db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
			Create(&RegistryCounter{Name: counterNameIndex}).Error; err != nil {
			return pass, fmt.Errorf("start the name index: %w", err)
		}
	} else {
		since = at.Add(-NameIndexMargin)
	}
	recent, err := updatedSince(ctx, db, since, few)
	if err != nil {
		return pass, err
	}
	if recent < few {
		// few: their codes through the updated_at index, then in batches
		codes, err := updatedCodes(ctx, db, since)
		if err != nil {
			return pass, err
		}
		for lo := 0; lo < len(codes); lo += nameIndexBatch {
			batch := codes[lo:min(lo+nameIndexBatch, len(codes))]
			yield(ctx)
			n, err := indexBatch(ctx, db, batch)
			pass.Read, pass.Changed = pass.Read+len(batch), pass.Changed+n
			if err != nil {
				return pass, err
			}
		}
	} else {
		// many (the first pass, an import): every firm in code order along the primary key,
		// those updated since kept here (a condition on updated_at could make a planner sort
		// all of them for each batch)
		after := ""
		for {
			var firms []struct {
				CreditCode string
				UpdatedAt  time.Time
			}
			if err := db.WithContext(ctx).Table("enterprises").Select("credit_code, updated_at").Where("credit_code > ?", after).
				Order("credit_code").Limit(nameIndexBatch).Scan(&firms).Error; err != nil {
				return pass, fmt.Errorf("read the firms to index by name: %w", err)
			}
			if len(firms) == 0 {
				break
			}
			after = firms[len(firms)-1].CreditCode
			codes := make([]string, 0, len(firms))
			for _, f := range firms {
				if since.IsZero() || f.UpdatedAt.After(since) {
					codes = append(codes, f.CreditCode)
				}
			}
			if len(codes) == 0 {
				continue
			}
			yield(ctx)
			n, err := indexBatch(ctx, db, codes)
			pass.Read, pass.Changed = pass.Read+len(codes), pass.Changed+n
			if err != nil {
				return pass, err
			}
		}
	}
	if pass.Read == 0 && !at.IsZero() {
		// nothing updated since the last pass's margin: its time stands (an idle registry
		// costs two reads of indexes and writes nothing)
		return pass, nil
	}
	ms := start.UTC().UnixMilli()
	if err := db.WithContext(ctx).Exec("UPDATE registry_counters SET n = ? WHERE name = ? AND n < ?", ms, counterNameIndex, ms).Error; err != nil {
		return pass, fmt.Errorf("record the name index's time: %w", err)
	}
	return pass, nil
}

// NameIndexReady reports whether the name index answers searches: it has had a complete pass,
// and at most NameIndexRecent firms were updated since (less its margin).
func NameIndexReady(ctx context.Context, db *gorm.DB) (bool, error) {
	at, err := nameIndexAt(ctx, db)
	if err != nil || at.IsZero() {
		return false, err
	}
	n, err := updatedSince(ctx, db, at.Add(-NameIndexMargin), NameIndexRecent+1)
	return n <= NameIndexRecent, err
}

// updatedSince counts the firms updated after since (every firm when since is zero), up to limit,
// from the updated_at index alone.
func updatedSince(ctx context.Context, db *gorm.DB, since time.Time, limit int) (int, error) {
	inner := "SELECT 1 FROM enterprises"
	args := []any{}
	if !since.IsZero() {
		inner += " WHERE updated_at > ?"
		args = append(args, since)
	}
	var n []int
	if err := db.WithContext(ctx).Raw("SELECT COUNT(*) FROM ("+inner+" LIMIT ?) t", append(args, limit)...).Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("count the firms updated since the name index's last pass: %w", err)
	}
	return n[0], nil
}

// updatedCodes are the codes of the firms updated after since, in code order.
func updatedCodes(ctx context.Context, db *gorm.DB, since time.Time) ([]string, error) {
	codes := []string{}
	q := db.WithContext(ctx).Table("enterprises").Select("credit_code")
	if !since.IsZero() {
		q = q.Where("updated_at > ?", since)
	}
	if err := q.Scan(&codes).Error; err != nil {
		return nil, fmt.Errorf("read the firms updated since the name index's last pass: %w", err)
	}
	slices.Sort(codes)
	return codes, nil
}

// indexBatch indexes the names of firms codes in one transaction: each firm's name read under the
// pass lock (counterNameIndex) and compared with its indexed name; the pairs of the old name it
// no longer holds are deleted, those of the new one added. It returns how many names changed.
func indexBatch(ctx context.Context, db *gorm.DB, codes []string) (int, error) {
	changed := 0
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		lock := "SELECT n FROM registry_counters WHERE name = ?"
		if tx.Dialector.Name() == "mysql" {
			lock += " FOR UPDATE"
		}
		var n []int64
		if err := tx.Raw(lock, counterNameIndex).Scan(&n).Error; err != nil {
			return fmt.Errorf("lock the name index: %w", err)
		}
		in, args := inList(tx, codes)
		type named struct{ CreditCode, Name string }
		var now, was []named
		if err := tx.Raw("SELECT credit_code, name FROM enterprises WHERE credit_code IN "+in, args...).Scan(&now).Error; err != nil {
			return fmt.Errorf("read the names to index: %w", err)
		}
		if err := tx.Raw("SELECT credit_code, name FROM indexed_names WHERE credit_code IN "+in, args...).Scan(&was).Error; err != nil {
			return fmt.Errorf("read the indexed names: %w", err)
		}
		old := make(map[string]string, len(was))
		for _, w := range was {
			old[w.CreditCode] = w.Name
		}
		var add, drop []NameGram
		var names []IndexedName
		for _, f := range now {
			prev, known := old[f.CreditCode]
			if known && prev == f.Name {
				continue
			}
			changed++
			names = append(names, IndexedName{CreditCode: f.CreditCode, Name: f.Name})
			next := NameGrams(f.Name)
			for _, g := range next {
				add = append(add, NameGram{Gram: g, CreditCode: f.CreditCode})
			}
			if known {
				for _, g := range NameGrams(prev) {
					if !slices.Contains(next, g) {
						drop = append(drop, NameGram{Gram: g, CreditCode: f.CreditCode})
					}
				}
			}
		}
		if len(names) == 0 {
			return nil
		}
		// in key order: a statement's rows then fall on few pages of the pair index, each
		// pair's new firms together (in firm order they were spread over the whole index)
		slices.SortFunc(add, func(a, b NameGram) int {
			return cmp.Or(cmp.Compare(a.Gram, b.Gram), strings.Compare(a.CreditCode, b.CreditCode))
		})
		return errors.Join(dropGrams(tx, drop), addGrams(tx, add), noteIndexed(tx, names))
	})
	return changed, err
}

// dropGrams deletes pairs by their key.
func dropGrams(tx *gorm.DB, rows []NameGram) error {
	for _, r := range rows {
		if err := tx.Exec("DELETE FROM name_grams WHERE gram = ? AND credit_code = ?", r.Gram, r.CreditCode).Error; err != nil {
			return fmt.Errorf("delete a renamed firm's pairs: %w", err)
		}
	}
	return nil
}

// addGrams inserts pairs, skipping those already there: one JSON parameter per 5,000 on SQLite
// (its driver binds parameters in time quadratic in their number), 500 rows per statement on MySQL.
func addGrams(tx *gorm.DB, rows []NameGram) error {
	if tx.Dialector.Name() == "sqlite" {
		for lo := 0; lo < len(rows); lo += 5000 {
			var b strings.Builder
			b.WriteByte('[')
			for i, r := range rows[lo:min(lo+5000, len(rows))] {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "[%d,%q]", r.Gram, r.CreditCode)
			}
			b.WriteByte(']')
			if err := tx.Exec("INSERT OR IGNORE INTO name_grams (gram, credit_code) SELECT value->>0, value->>1 FROM json_each(?)", b.String()).Error; err != nil {
				return fmt.Errorf("add the names' pairs: %w", err)
			}
		}
		return nil
	}
	for lo := 0; lo < len(rows); lo += 500 {
		chunk := rows[lo:min(lo+500, len(rows))]
		args := make([]any, 0, 2*len(chunk))
		for _, r := range chunk {
			args = append(args, r.Gram, r.CreditCode)
		}
		q := "INSERT IGNORE INTO name_grams (gram, credit_code) VALUES (?,?)" + strings.Repeat(",(?,?)", len(chunk)-1)
		if err := tx.Exec(q, args...).Error; err != nil {
			return fmt.Errorf("add the names' pairs: %w", err)
		}
	}
	return nil
}

// noteIndexed records the names the pairs were made from.
func noteIndexed(tx *gorm.DB, names []IndexedName) error {
	per := 500
	if tx.Dialector.Name() == "sqlite" {
		per = 100 // two parameters a row
	}
	err := tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "credit_code"}},
		DoUpdates: clause.AssignmentColumns([]string{"name"})}).CreateInBatches(&names, per).Error
	if err != nil {
		return fmt.Errorf("record the indexed names: %w", err)
	}
	return nil
}

// enterpriseUpdatedIndex is gorm's index of enterprises.updated_at.
const enterpriseUpdatedIndex = "idx_enterprises_updated_at"

// firmsByGrams is FirmsNamed's lookup through the name index, in any scope: the firms holding the
// text's rarest indexed pairs (up to nameGramJoins of them) and those updated since the index's
// last pass (less its margin), each checked by its current name and scope (named). ok is false when the index cannot answer: no
// indexed pair in the text, no complete pass yet, more than NameIndexRecent firms updated since,
// or every pair of the text held by more than NameGramFirms firms. codes is nil (with ok) when
// more than NameSearchFirms firms are named.
func firmsByGrams(ctx context.Context, db *gorm.DB, f MatchFilter, named func(*gorm.DB) ([]string, error)) (codes []string, ok bool, err error) {
	grams := NameGrams(f.Text)
	if len(grams) == 0 {
		return nil, false, nil
	}
	grams = grams[:min(len(grams), 16)]
	at, err := nameIndexAt(ctx, db)
	if err != nil || at.IsZero() {
		return nil, false, err
	}
	since := at.Add(-NameIndexMargin)
	recent, err := updatedSince(ctx, db, since, NameIndexRecent+1)
	if err != nil || recent > NameIndexRecent {
		return nil, false, err
	}
	rarest, err := rarestGrams(ctx, db, grams)
	if err != nil || rarest[0].N > NameGramFirms {
		return nil, false, err
	}
	mysql := db.Dialector.Name() == "mysql"
	found := map[string]bool{}
	add := func(q *gorm.DB) error {
		got, err := named(q)
		for _, c := range got {
			found[c] = true
		}
		return err
	}
	if rarest[0].N > 0 {
		// the firms of the rarest pair that hold the next rarest ones too, found in the pair
		// index alone (a key lookup each), then each survivor's row by its key: at 4,000,000
		// firms the rarest pair of a whole name still named a few thousand firms
		joins := 1 + min(len(rarest)-1, nameGramJoins-1)
		op := " CROSS JOIN "
		if mysql {
			op = " STRAIGHT_JOIN "
		}
		from := "name_grams AS g0"
		where := "g0.gram = ?"
		args := []any{rarest[0].Gram}
		for i := 1; i < joins; i++ {
			from += fmt.Sprintf("%sname_grams AS g%d", op, i)
			where += fmt.Sprintf(" AND g%d.gram = ? AND g%d.credit_code = g0.credit_code", i, i)
			args = append(args, rarest[i].Gram)
		}
		if err := add(db.WithContext(ctx).Table(from+op+"enterprises AS e").Select("e.credit_code").
			Where(where+" AND e.credit_code = g0.credit_code", args...)); err != nil {
			return nil, false, err
		}
	}
	if recent > 0 {
		table := "enterprises AS e INDEXED BY " + enterpriseUpdatedIndex
		if mysql {
			table = "enterprises AS e FORCE INDEX (" + enterpriseUpdatedIndex + ")"
		}
		if err := add(db.WithContext(ctx).Table(table).Select("e.credit_code").Where("e.updated_at > ?", since)); err != nil {
			return nil, false, err
		}
	}
	if len(found) > NameSearchFirms {
		return nil, true, nil
	}
	codes = make([]string, 0, len(found))
	for c := range found {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes, true, nil
}

// gramCount is how many firms hold a pair (up to NameGramFirms+1).
type gramCount struct {
	Gram int64
	N    int
}

// nameGramJoins is how many of a text's pairs a search intersects at most.
const nameGramJoins = 3

// rarestGrams counts the firms of each pair, from the index alone, up to NameGramFirms+1 each, in
// one statement, and returns the counts rarest first.
func rarestGrams(ctx context.Context, db *gorm.DB, grams []int64) ([]gramCount, error) {
	parts := make([]string, len(grams))
	args := make([]any, 0, 3*len(grams))
	for i, g := range grams {
		parts[i] = fmt.Sprintf("SELECT ? AS gram, COUNT(*) AS n FROM (SELECT 1 FROM name_grams WHERE gram = ? LIMIT ?) t%d", i)
		args = append(args, g, g, NameGramFirms+1)
	}
	var counts []gramCount
	if err := db.WithContext(ctx).Raw(strings.Join(parts, " UNION ALL "), args...).Scan(&counts).Error; err != nil {
		return nil, fmt.Errorf("count the firms of a name's pairs: %w", err)
	}
	if len(counts) != len(grams) {
		return nil, fmt.Errorf("count the firms of a name's pairs: %d answers for %d pairs", len(counts), len(grams))
	}
	slices.SortStableFunc(counts, func(a, b gramCount) int { return cmp.Compare(a.N, b.N) })
	return counts, nil
}
