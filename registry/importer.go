package registry

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/xuri/excelize/v2"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/store"
)

// ImportOptions tunes an import.
type ImportOptions struct {
	// BatchSize is the number of distinct firms written per transaction: 0 means 1000. Values above
	// 10000 are lowered to 10000, because a batch's lookup binds one parameter per firm and SQLite
	// allows 32766 parameters per statement.
	BatchSize int
	// Progress receives a progress bar (bytes read for CSV, rows for XLSX); nil draws none.
	Progress io.Writer
}

const (
	defaultBatchSize = 1000
	maxBatchSize     = 10000
	// maxIssues bounds the issues kept in memory: a file whose every row repeats the same mistake
	// would otherwise hold millions of them, and nobody reads past the first screens.
	maxIssues = 10000
)

// Summary counts what an import did. Every data line is counted exactly once:
//
//	Rows = Inserted + Updated + Unchanged + Superseded + Rejected
//
// Inserted: the credit code was not in the table, a row was inserted. Updated: the code was there
// and at least one catalog value (or the code warning) differed, the row was overwritten.
// Unchanged: the code was there with identical values; nothing is written, so updated_at does not
// move and no change event re-evaluates the firm. Superseded: a later line of the same batch has the
// same credit code and replaced this one before writing (a duplicate in a later batch is applied on
// top instead and counted Updated or Unchanged; either way the later line wins and a warning names
// both lines). Rejected: the line was malformed and skipped.
//
// Warned counts imported rows (Inserted, Updated or Unchanged) kept despite a warning about their
// values, such as a credit code failing only its checksum; it overlaps the counts above. Warnings
// about duplicate codes and unknown header columns are listed in Issues only.
type Summary struct {
	Rows, Inserted, Updated, Unchanged, Superseded, Warned, Rejected int
	// Issues lists rejections and warnings in file order, the first maxIssues of them;
	// IssuesDropped counts the rest.
	Issues        []Issue
	IssuesDropped int
}

// String is the one-line report shown after an import.
func (s Summary) String() string {
	out := fmt.Sprintf("共 %d 行：新增 %d，更新 %d，未变 %d，重复覆盖 %d，警告 %d，拒绝 %d",
		s.Rows, s.Inserted, s.Updated, s.Unchanged, s.Superseded, s.Warned, s.Rejected)
	if n := len(s.Issues) + s.IssuesDropped; n > 0 {
		out += fmt.Sprintf("；问题 %d 条", n)
		if s.IssuesDropped > 0 {
			out += fmt.Sprintf("（仅列出前 %d 条）", len(s.Issues))
		}
	}
	return out
}

func (s *Summary) addIssues(is ...Issue) {
	room := max(maxIssues-len(s.Issues), 0)
	if len(is) > room {
		s.IssuesDropped += len(is) - room
		is = is[:room]
	}
	s.Issues = append(s.Issues, is...)
}

// ImportFile imports a .csv (UTF-8, comma-separated) or .xlsx (first sheet) file whose first line
// is the header. Row problems are reported in the Summary; an error means the import stopped
// (unreadable file, unusable header, database failure) and the Summary counts what was committed.
func ImportFile(ctx context.Context, db *gorm.DB, path string, o ImportOptions) (Summary, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".csv":
		f, err := os.Open(path)
		if err != nil {
			return Summary{}, fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		return Import(ctx, db, f, filepath.Base(path), o)
	case ".xlsx":
		return importXLSX(ctx, db, path, o)
	default:
		return Summary{}, fmt.Errorf("import %s: unsupported file type %q; save it as .csv (UTF-8) or .xlsx", filepath.Base(path), ext)
	}
}

// Import reads a CSV stream; name labels messages and the progress bar. When r is a regular file its
// size drives the progress bar.
func Import(ctx context.Context, db *gorm.DB, r io.Reader, name string, o ImportOptions) (Summary, error) {
	size := int64(-1)
	if st, ok := r.(interface{ Stat() (fs.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	bar := newProgress(o.Progress, size, name, true)
	cr := csv.NewReader(bar.reader(r))
	cr.FieldsPerRecord = -1 // a short or long line is one rejected row, not the end of the import
	cr.ReuseRecord = true
	return run(ctx, db, name, &csvSource{r: cr}, bar, o)
}

func importXLSX(ctx context.Context, db *gorm.DB, path string, o ImportOptions) (Summary, error) {
	name := filepath.Base(path)
	f, err := excelize.OpenFile(path)
	if err != nil {
		return Summary{}, fmt.Errorf("import %s: %w", name, err)
	}
	defer f.Close()
	sheets := f.GetSheetList()
	if len(sheets) == 0 {
		return Summary{}, fmt.Errorf("import %s: the workbook has no sheet", name)
	}
	sheet := sheets[0]
	rows, err := f.Rows(sheet)
	if err != nil {
		return Summary{}, fmt.Errorf("import %s: read sheet %s: %w", name, sheet, err)
	}
	defer rows.Close()
	bar := newProgress(o.Progress, sheetRows(f, sheet), name, false)
	return run(ctx, db, name, &xlsxSource{rows: rows, bar: bar}, bar, o)
}

// sheetRows is the row count the sheet declares, or -1 when it declares none.
func sheetRows(f *excelize.File, sheet string) int64 {
	dim, err := f.GetSheetDimension(sheet)
	if err != nil {
		return -1
	}
	_, last, ok := strings.Cut(dim, ":")
	if !ok {
		return -1
	}
	_, row, err := excelize.CellNameToCoordinates(last)
	if err != nil {
		return -1
	}
	return int64(row)
}

// lineError is a line the reader could not split into fields; it is reported and skipped.
type lineError struct {
	line   int
	reason string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.reason) }

// rowSource yields records with their 1-based line numbers. It returns io.EOF at the end, a
// *lineError for a line to skip, and any other error to stop the import.
type rowSource interface {
	next() (rec []string, line int, err error)
}

type csvSource struct{ r *csv.Reader }

func (s *csvSource) next() ([]string, int, error) {
	rec, err := s.r.Read()
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return nil, pe.StartLine, &lineError{line: pe.StartLine, reason: "cannot be split into fields (" + pe.Err.Error() + "); line skipped"}
	}
	if err != nil {
		return nil, 0, err
	}
	line, _ := s.r.FieldPos(0)
	return rec, line, nil
}

type xlsxSource struct {
	rows  *excelize.Rows
	bar   *progress
	line  int
	width int // header width; excelize drops trailing empty cells, so shorter rows are padded to it
}

func (s *xlsxSource) next() ([]string, int, error) {
	if !s.rows.Next() {
		if err := s.rows.Error(); err != nil {
			return nil, 0, err
		}
		return nil, 0, io.EOF
	}
	s.line++
	s.bar.add(1)
	// Raw values: the number format would turn 1234 into "1,234" and 0.05 into "5%"; dates arrive
	// as serial numbers, which parseDate understands.
	rec, err := s.rows.Columns(excelize.Options{RawCellValue: true})
	if err != nil {
		return nil, 0, err
	}
	if s.width == 0 {
		s.width = len(rec)
	}
	for len(rec) < s.width {
		rec = append(rec, "")
	}
	return rec, s.line, nil
}

// run reads the header, then parses and writes every line in batches.
func run(ctx context.Context, db *gorm.DB, name string, src rowSource, bar *progress, o ImportOptions) (s Summary, err error) {
	defer func() { bar.done(err == nil) }()
	header, _, err := src.next()
	if errors.Is(err, io.EOF) {
		return s, fmt.Errorf("import %s: the file is empty; the first line must be the header", name)
	}
	if err != nil {
		return s, fmt.Errorf("import %s: header: %w", name, err)
	}
	for _, h := range header {
		if !utf8.ValidString(h) {
			return s, fmt.Errorf("import %s: the header is not UTF-8 text; if Excel saved the file, save it as \"CSV UTF-8\" or .xlsx instead", name)
		}
	}
	l := newLayout(header)
	if l.err != nil {
		return s, fmt.Errorf("import %s: %w", name, l.err)
	}
	if len(l.missing) > 0 {
		return s, fmt.Errorf("import %s: the header (line 1) has no %s column; it must name the columns with catalog keys such as credit_code, name, region_code",
			name, strings.Join(l.missing, " or "))
	}
	s.addIssues(l.unknown...)

	size := o.BatchSize
	if size <= 0 {
		size = defaultBatchSize
	}
	size = min(size, maxBatchSize)
	b := &batcher{db: db, size: size, seen: map[[creditCodeLen]byte]int32{}, pos: map[string]int{}}
	for {
		if err := ctx.Err(); err != nil {
			return s, fmt.Errorf("import %s: %w", name, err)
		}
		rec, line, err := src.next()
		var le *lineError
		switch {
		case errors.Is(err, io.EOF):
			if err := b.flush(ctx, &s); err != nil {
				return s, fmt.Errorf("import %s: %w", name, err)
			}
			return s, nil
		case errors.As(err, &le):
			s.Rows++
			s.Rejected++
			s.addIssues(Issue{Line: le.line, Reason: le.reason})
			continue
		case err != nil:
			return s, fmt.Errorf("import %s: read: %w", name, err)
		}
		if blank(rec) {
			continue
		}
		s.Rows++
		e, issues, ok := l.parse(rec, line)
		s.addIssues(issues...)
		if !ok {
			s.Rejected++
			continue
		}
		b.add(&s, e, line, len(issues) > 0)
		if len(b.rows) >= b.size {
			if err := b.flush(ctx, &s); err != nil {
				return s, fmt.Errorf("import %s: %w", name, err)
			}
		}
	}
}

func blank(rec []string) bool {
	for _, c := range rec {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// batcher collects parsed rows and writes them one transaction per batch.
type batcher struct {
	db   *gorm.DB
	size int
	rows []pending
	pos  map[string]int // credit code → index in rows, for duplicates within the batch
	// seen maps every credit code imported so far to its last line, so a duplicate is reported with
	// both lines even across batches. A fixed-size key instead of a string keeps a province-sized
	// file (millions of codes) at tens of bytes per firm.
	seen map[[creditCodeLen]byte]int32
}

type pending struct {
	e      store.Enterprise
	line   int
	warned bool
}

func (b *batcher) add(s *Summary, e store.Enterprise, line int, warned bool) {
	var key [creditCodeLen]byte
	copy(key[:], e.CreditCode)
	if prev, dup := b.seen[key]; dup {
		s.addIssues(Issue{Line: line, Column: "credit_code", Value: e.CreditCode, Warning: true,
			Reason: fmt.Sprintf("appears again (also on line %d); line %d wins", prev, line)})
	}
	b.seen[key] = int32(line)
	p := pending{e: e, line: line, warned: warned}
	if i, ok := b.pos[e.CreditCode]; ok {
		b.rows[i] = p
		s.Superseded++
		return
	}
	b.pos[e.CreditCode] = len(b.rows)
	b.rows = append(b.rows, p)
}

// upsertColumns are overwritten when a credit code exists: every catalog column, the code warning
// and updated_at. created_at keeps the first import's time.
var upsertColumns = sync.OnceValue(func() []string {
	cols := make([]string, 0, len(Catalog)+1)
	for _, f := range Catalog[1:] { // the key itself never changes
		cols = append(cols, f.Key)
	}
	return append(cols, "code_warning", "updated_at")
})

// flush writes the pending rows in one transaction. It first reads the existing rows of the batch
// under a write lock (FOR UPDATE on MySQL; SQLite has a single writer anyway), so Inserted and
// Updated are exact even with another writer at work, and unchanged rows are not rewritten.
// Counts are added to s only after the commit.
func (b *batcher) flush(ctx context.Context, s *Summary) error {
	if len(b.rows) == 0 {
		return nil
	}
	codes := make([]string, len(b.rows))
	for i, p := range b.rows {
		codes[i] = p.e.CreditCode
	}
	var inserted, updated, unchanged, warned int
	err := b.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var existing []store.Enterprise
		if err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).
			Where("credit_code IN ?", codes).Find(&existing).Error; err != nil {
			return fmt.Errorf("look up existing firms: %w", err)
		}
		old := make(map[string]store.Enterprise, len(existing))
		for _, e := range existing {
			old[e.CreditCode] = e
		}
		write := make([]store.Enterprise, 0, len(b.rows))
		for _, p := range b.rows {
			if p.warned {
				warned++
			}
			prev, found := old[p.e.CreditCode]
			switch {
			case !found:
				inserted++
			case sameData(prev, p.e):
				unchanged++
				continue
			default:
				updated++
			}
			write = append(write, p.e)
		}
		if len(write) == 0 {
			return nil
		}
		err := tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "credit_code"}},
			DoUpdates: clause.AssignmentColumns(upsertColumns()),
		}).CreateInBatches(&write, rowsPerInsert(tx)).Error
		if err != nil {
			return fmt.Errorf("upsert firms: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("batch of lines %d–%d: %w", b.rows[0].line, b.rows[len(b.rows)-1].line, err)
	}
	s.Inserted += inserted
	s.Updated += updated
	s.Unchanged += unchanged
	s.Warned += warned
	b.rows = b.rows[:0]
	clear(b.pos)
	return nil
}

// rowsPerInsert sizes one multi-row INSERT. The SQLite driver matches each bound parameter against
// every argument, so its cost grows with the square of the parameters in a statement (27 per row):
// measured on the 20,000-firm file, 1000 rows per INSERT imported 1,100 rows/s, 25 rows about
// 10,000 rows/s. MySQL has no such cost and is better served by fewer round trips; 500 rows stay
// far below its 65,535 placeholders.
func rowsPerInsert(db *gorm.DB) int {
	if db.Dialector.Name() == "sqlite" {
		return 25
	}
	return 500
}

// sameData reports whether two firms hold the same registry data: every catalog column and the code
// warning. Timestamps are bookkeeping, and the date is compared by day because the databases hand it
// back with different locations.
func sameData(a, b store.Enterprise) bool {
	if (a.RegisteredAt == nil) != (b.RegisteredAt == nil) {
		return false
	}
	if a.RegisteredAt != nil && a.RegisteredAt.Format(time.DateOnly) != b.RegisteredAt.Format(time.DateOnly) {
		return false
	}
	a.RegisteredAt, b.RegisteredAt = nil, nil
	a.CreatedAt, a.UpdatedAt = time.Time{}, time.Time{}
	b.CreatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	return a == b
}

// progress is a progress bar that may be absent. It never starts a goroutine: the spinner's
// refresh ticker is turned off, the bar redraws as data arrives.
type progress struct {
	bar *progressbar.ProgressBar
	w   io.Writer
}

func newProgress(w io.Writer, max int64, name string, bytes bool) *progress {
	if w == nil {
		return &progress{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("导入 " + name),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionSetSpinnerChangeInterval(0),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("行"))
	}
	return &progress{bar: progressbar.NewOptions64(max, opts...), w: w}
}

func (p *progress) reader(r io.Reader) io.Reader {
	if p.bar == nil {
		return r
	}
	pr := progressbar.NewReader(r, p.bar)
	return &pr
}

func (p *progress) add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n) // drawing is best effort; an unwritable terminal must not stop the import
	}
}

func (p *progress) done(ok bool) {
	if p.bar == nil {
		return
	}
	if ok {
		_ = p.bar.Finish() // best effort, as in add
	}
	fmt.Fprintln(p.w)
}
