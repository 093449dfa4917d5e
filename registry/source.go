package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	_ "github.com/glebarez/go-sqlite" // database/sql driver "sqlite", for a source kept in a file

	"github.com/policypush/policypush/store"
)

// Source is a table of the data-sharing platform read in place (一企一档): Query is a SELECT whose
// column aliases are catalog keys (or labels, or synonyms) plus updated_at, the time a row last
// changed. Sync reads it in keyset pages ordered by (updated_at, credit_code), so the platform's
// index on updated_at serves every page and a sync after the last one reads only what changed.
type Source struct {
	Driver   string // mysql; sqlite for a file (trials, tests)
	DSN      string
	Query    string
	PageSize int // 0: 1000
}

// SyncOptions tune one sync run.
type SyncOptions struct {
	// Full reads every row instead of those changed since the stored high-water mark, and reports
	// firms the source no longer has.
	Full bool
	// DeregisterVanished marks firms the source no longer has (found by a full sync) deregistered,
	// through the same door as any change; otherwise they are only reported.
	DeregisterVanished bool
	// Sink writes each page; nil: upsert into the state database without re-matching.
	Sink     Sink
	Progress io.Writer // progress bar (rows); nil: none
}

// SyncSummary is an import summary plus what a full sync found missing.
type SyncSummary struct {
	Summary
	Vanished     []string // active firms stored but no longer in the source (full sync), sorted
	Deregistered int      // of them, marked deregistered
	HighWater    time.Time
}

// cursorSource names the high-water mark of the SQL source in the cursors table.
const cursorSource = "registry.source"

// sourceRowsPerPage is the default page of a sync.
const sourceRowsPerPage = 1000

var selectRe = regexp.MustCompile(`(?is)^\s*(select|with)\s`)

// Check reports a source configuration that cannot work, naming the key.
func (s Source) Check() error {
	switch s.Driver {
	case "mysql", "sqlite":
	default:
		return fmt.Errorf("registry.source.driver %q is not mysql (or sqlite)", s.Driver)
	}
	if s.DSN == "" {
		return errors.New("registry.source.dsn is empty")
	}
	if !selectRe.MatchString(s.Query) || strings.Contains(strings.TrimRight(strings.TrimSpace(s.Query), ";"), ";") {
		return errors.New("registry.source.query must be one SELECT statement (its column aliases catalog keys plus updated_at)")
	}
	return nil
}

// MaskDSN hides the password of a DSN for messages and logs: user:****@tcp(host:3306)/db.
func MaskDSN(driver, dsn string) string {
	if driver == "mysql" {
		if cfg, err := mysql.ParseDSN(dsn); err == nil {
			if cfg.Passwd != "" {
				cfg.Passwd = "****"
			}
			return cfg.FormatDSN()
		}
		return "(unparsable mysql DSN)"
	}
	if i := strings.Index(dsn, "@"); i >= 0 {
		if j := strings.Index(dsn[:i], ":"); j >= 0 {
			return dsn[:j+1] + "****" + dsn[i:]
		}
	}
	return dsn
}

// open connects to the source. MySQL datetimes are read as wall-clock times labelled UTC, and the
// same times are sent back as keyset bounds, so the platform's time zone never shifts a page.
func (s Source) open() (*sql.DB, error) {
	dsn := s.DSN
	if s.Driver == "mysql" {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("registry.source.dsn: %v", err)
		}
		cfg.ParseTime, cfg.Loc = true, time.UTC
		if cfg.Timeout == 0 {
			cfg.Timeout = 10 * time.Second
		}
		dsn = cfg.FormatDSN()
	}
	db, err := sql.Open(s.Driver, dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// Sync reads the source through the one door into the registry (state is the database holding the
// enterprises and the high-water mark). Rows are read in read-only transactions, one per page, so
// the platform's database is never written and no long transaction holds its undo log.
func Sync(ctx context.Context, state *gorm.DB, src Source, o SyncOptions) (sum SyncSummary, err error) {
	if err := src.Check(); err != nil {
		return sum, err
	}
	where := MaskDSN(src.Driver, src.DSN)
	fail := func(err error) error { return fmt.Errorf("registry source %s: %w", where, err) }
	db, err := src.open()
	if err != nil {
		return sum, fail(err)
	}
	defer db.Close()
	var hw store.MatcherCursor
	if !o.Full {
		if err := state.WithContext(ctx).Where("name = ?", cursorSource).Limit(1).Find(&hw).Error; err != nil {
			return sum, fmt.Errorf("read the source's high-water mark: %w", err)
		}
	}
	pageSize := src.PageSize
	if pageSize <= 0 {
		pageSize = sourceRowsPerPage
	}
	total := int64(-1)
	if o.Progress != nil {
		total, _ = countRows(ctx, db, src.Query, hw.At, o.Full)
	}
	bar := newProgress(o.Progress, total, "同步 "+where, false)
	defer func() { bar.done(err == nil) }()

	sink := o.Sink
	if sink == nil {
		sink = DBSink{DB: state}
	}
	b := newBatcher(sink, pageSize)
	var seen map[[creditCodeLen]byte]struct{}
	if o.Full {
		seen = map[[creditCodeLen]byte]struct{}{}
	}
	var l *layout
	var lastAt any
	lastCode := ""
	after := hw.At
	n := 0
	for first := true; ; first = false {
		rows, err := readPage(ctx, db, src.Query, first, after, lastAt, lastCode, pageSize)
		if err != nil {
			return sum, fail(err)
		}
		if l == nil && len(rows.cols) > 0 {
			l, err = sourceLayout(rows.cols)
			if err != nil {
				return sum, fail(err)
			}
			sum.addIssues(l.unknown...)
		}
		for _, rec := range rows.data {
			n++
			sum.Rows++
			bar.add(1)
			r, issues, ok := l.parse(rec.cells, Position{Unit: UnitRow, N: n})
			sum.addIssues(issues...)
			if seen != nil && r.CreditCode != "" {
				var k [creditCodeLen]byte
				copy(k[:], r.CreditCode)
				seen[k] = struct{}{}
			}
			if !ok {
				sum.Rejected++
				continue
			}
			if err := b.add(ctx, &sum.Summary, r, len(issues) > 0); err != nil {
				return sum, err
			}
		}
		if len(rows.data) > 0 {
			last := rows.data[len(rows.data)-1]
			lastAt, lastCode = last.updatedAt, last.code
			if t, ok := last.updatedAt.(time.Time); ok && t.After(sum.HighWater) {
				sum.HighWater = t
			}
		}
		if len(rows.data) < pageSize {
			break
		}
	}
	if err := b.flush(ctx, &sum.Summary); err != nil {
		return sum, err
	}
	if o.Full {
		if err := sum.vanished(ctx, state, seen, sink, o.DeregisterVanished); err != nil {
			return sum, err
		}
	}
	if !sum.HighWater.IsZero() {
		// The mark moves only after every page is written; rows at exactly the mark are read again
		// next time (as unchanged), since another row may share its updated_at.
		err := state.WithContext(ctx).Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "name"}},
			DoUpdates: clause.AssignmentColumns([]string{"at", "updated_at"})}).
			Create(&store.MatcherCursor{Name: cursorSource, At: sum.HighWater, UpdatedAt: time.Now().UTC()}).Error
		if err != nil {
			return sum, fmt.Errorf("store the source's high-water mark: %w", err)
		}
	}
	return sum, nil
}

// sourceLayout binds the result columns; updated_at (the sync's own column) and credit_code must
// be there.
func sourceLayout(cols []string) (*layout, error) {
	l := newLayout(cols, nil)
	if l.err != nil {
		return nil, l.err
	}
	var kept []Issue
	for _, u := range l.unknown {
		if normHeader(u.Column) != "updated_at" {
			u.Line = 0
			u.Reason = "is not a catalog field; the column is ignored (alias it to a catalog key in registry.source.query)"
			kept = append(kept, u)
		}
	}
	l.unknown = kept
	for _, k := range l.missing {
		if k == "credit_code" {
			return nil, errors.New("registry.source.query has no credit_code column; alias the credit-code column AS credit_code")
		}
	}
	l.missing = nil // a department's table may lack the name: new firms are checked for it one by one
	return &l, nil
}

type sourceRow struct {
	cells     []string
	updatedAt any // as the driver returned it, sent back as the next page's bound
	code      string
}

type sourcePage struct {
	cols []string // without updated_at's position removed: cells align with cols
	data []sourceRow
}

// readPage reads one keyset page in a read-only transaction.
func readPage(ctx context.Context, db *sql.DB, query string, first bool, since time.Time, lastAt any, lastCode string, limit int) (sourcePage, error) {
	var page sourcePage
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return page, err
	}
	defer tx.Rollback() //nolint:errcheck // read-only: nothing to keep
	q := "SELECT * FROM (" + strings.TrimRight(strings.TrimSpace(query), ";") + ") src"
	var args []any
	switch {
	case !first:
		q += " WHERE updated_at > ? OR (updated_at = ? AND credit_code > ?)"
		args = append(args, bound(lastAt), bound(lastAt), lastCode)
	case !since.IsZero():
		q += " WHERE updated_at >= ?"
		args = append(args, bound(since))
	}
	q += " ORDER BY updated_at, credit_code LIMIT " + strconv.Itoa(limit)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return page, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return page, err
	}
	page.cols = cols
	ui, ci := -1, -1
	for i, c := range cols {
		switch normHeader(c) {
		case "updated_at":
			ui = i
		case "credit_code":
			ci = i
		}
	}
	if ui < 0 {
		return page, errors.New("registry.source.query has no updated_at column; alias the row's last-change time AS updated_at")
	}
	if ci < 0 {
		return page, errors.New("registry.source.query has no credit_code column; alias the credit-code column AS credit_code")
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return page, err
		}
		cells := make([]string, len(cols))
		for i, v := range vals {
			cells[i] = sqlText(v)
		}
		page.data = append(page.data, sourceRow{cells: cells, updatedAt: vals[ui], code: cells[ci]})
	}
	return page, rows.Err()
}

// bound is a keyset bound as the source compares it: a time as the wall-clock text a DATETIME
// column holds (MySQL converts it; SQLite compares text, where a driver's own time format with a
// zone suffix would not equal the stored value).
func bound(v any) any {
	if t, ok := v.(time.Time); ok {
		return t.UTC().Format("2006-01-02 15:04:05.999999")
	}
	return v
}

// countRows is the number of rows a sync will read, for the progress bar.
func countRows(ctx context.Context, db *sql.DB, query string, since time.Time, full bool) (int64, error) {
	q := "SELECT COUNT(*) FROM (" + strings.TrimRight(strings.TrimSpace(query), ";") + ") src"
	var args []any
	if !full && !since.IsZero() {
		q += " WHERE updated_at >= ?"
		args = append(args, bound(since))
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return -1, err
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var n int64
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return -1, err
	}
	return n, nil
}

// sqlText is a database value as an import cell holds it: DECIMAL digits as the server wrote them
// (no float rounding), dates as 2006-01-02, NULL as empty.
func sqlText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case []byte:
		return string(x)
	case string:
		return x
	case time.Time:
		if x.Hour() == 0 && x.Minute() == 0 && x.Second() == 0 && x.Nanosecond() == 0 {
			return x.Format(time.DateOnly)
		}
		return x.Format(time.DateTime)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return fmt.Sprint(v)
}

// vanished lists the active firms the source no longer has, and marks them deregistered through
// the sink when asked to.
func (s *SyncSummary) vanished(ctx context.Context, state *gorm.DB, seen map[[creditCodeLen]byte]struct{}, sink Sink, deregister bool) error {
	var last string
	for {
		var codes []string
		err := store.ActiveFirmsByCode(state.WithContext(ctx)).Where("credit_code > ?", last).
			Order("credit_code").Limit(5000).Pluck("credit_code", &codes).Error
		if err != nil {
			return fmt.Errorf("list stored firms: %w", err)
		}
		if len(codes) == 0 {
			break
		}
		last = codes[len(codes)-1]
		for _, c := range codes {
			var k [creditCodeLen]byte
			copy(k[:], c)
			if _, ok := seen[k]; !ok {
				s.Vanished = append(s.Vanished, c)
			}
		}
	}
	if !deregister || len(s.Vanished) == 0 {
		return nil
	}
	status := columnByKey("status")
	for lo := 0; lo < len(s.Vanished); lo += sourceRowsPerPage {
		var recs []Record
		for i, c := range s.Vanished[lo:min(lo+sourceRowsPerPage, len(s.Vanished))] {
			recs = append(recs, Record{CreditCode: c, At: Position{Unit: UnitRow, N: lo + i + 1},
				cols: []*column{status}, vals: []any{store.StatusDeregistered}})
		}
		res, err := sink.Write(ctx, recs)
		if err != nil {
			return fmt.Errorf("mark vanished firms deregistered: %w", err)
		}
		s.Deregistered += res.Updated
	}
	return nil
}
