package payout

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/xuri/excelize/v2"
	"gorm.io/gorm"

	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Issue is one line of a results file that was not applied: where and why.
type Issue struct {
	Line   int    `json:"line"` // 1-based, the header is line 1
	Column string `json:"column,omitempty"`
	Code   string `json:"credit_code,omitempty"`
	Msg    string `json:"message"`
}

func (i Issue) String() string {
	s := fmt.Sprintf("line %d", i.Line)
	if i.Column != "" {
		s += ", column " + i.Column
	}
	if i.Code != "" {
		s += " (" + i.Code + ")"
	}
	return s + ": " + i.Msg
}

// ResultSummary says what a results import did. Importing the same file again changes nothing
// and counts every line as unchanged.
type ResultSummary struct {
	BatchID   uint64  `json:"batch_id"`
	Paid      int     `json:"paid"`
	Failed    int     `json:"failed"`
	Unchanged int     `json:"unchanged"`
	PaidFen   int64   `json:"paid_fen"`
	Closed    bool    `json:"closed"` // every exported line now has a result
	Issues    []Issue `json:"issues"`
}

// resultRow is one parsed line of the bank's file.
type resultRow struct {
	line       int
	code       string
	status     string
	paidAt     *time.Time
	reason     string
	paidAtText string
}

var resultColumns = []string{"credit_code", "status", "paid_at", "reason"}

// parseResults reads a CSV or xlsx results file (named by its extension) into rows and issues.
func (s *Service) parseResults(name string, r io.Reader) ([]resultRow, []Issue, error) {
	var records [][]string
	switch strings.ToLower(filepath.Ext(name)) {
	case ".xlsx":
		f, err := excelize.OpenReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s is not a readable xlsx file: %v", ErrInvalid, name, err)
		}
		defer f.Close()
		sheets := f.GetSheetList()
		if len(sheets) == 0 {
			return nil, nil, fmt.Errorf("%w: %s has no sheet", ErrInvalid, name)
		}
		if records, err = f.GetRows(sheets[0]); err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", name, err)
		}
	default:
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", name, err)
		}
		cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))))
		cr.FieldsPerRecord = -1
		if records, err = cr.ReadAll(); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
		}
	}
	if len(records) == 0 {
		return nil, nil, fmt.Errorf("%w: %s is empty (expected a header row %s)", ErrInvalid, name, strings.Join(resultColumns, ","))
	}
	col := map[string]int{}
	for i, h := range records[0] {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	for _, c := range resultColumns[:2] {
		if _, ok := col[c]; !ok {
			return nil, nil, fmt.Errorf("%w: %s: header lacks column %q (expected %s)", ErrInvalid, name, c, strings.Join(resultColumns, ","))
		}
	}
	get := func(rec []string, c string) string {
		if i, ok := col[c]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	var rows []resultRow
	var issues []Issue
	seen := map[string]int{}
	for i, rec := range records[1:] {
		line := i + 2
		if strings.TrimSpace(strings.Join(rec, "")) == "" {
			continue
		}
		r := resultRow{line: line, code: strings.ToUpper(get(rec, "credit_code")), status: strings.ToLower(get(rec, "status")),
			reason: get(rec, "reason"), paidAtText: get(rec, "paid_at")}
		bad := func(column, format string, args ...any) {
			issues = append(issues, Issue{Line: line, Column: column, Code: r.code, Msg: fmt.Sprintf(format, args...)})
		}
		switch {
		case r.code == "":
			bad("credit_code", "is empty")
			continue
		case seen[r.code] > 0:
			bad("credit_code", "listed again (first on line %d); only the first is used", seen[r.code])
			continue
		}
		seen[r.code] = line
		switch r.status {
		case store.LinePaid:
			t, err := s.parseTime(r.paidAtText)
			if err != nil {
				bad("paid_at", "%v", err)
				continue
			}
			r.paidAt = &t
		case store.LineFailed:
			if r.reason == "" {
				bad("reason", "a failed line needs the bank's reason (the firm is told what to do)")
				continue
			}
		default:
			bad("status", "%q must be paid or failed", r.status)
			continue
		}
		rows = append(rows, r)
	}
	return rows, issues, nil
}

// parseTime accepts the date formats banks' files use, in the configured time zone.
func (s *Service) parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, fmt.Errorf("is empty; a paid line needs the payment date (YYYY-MM-DD)")
	}
	for _, layout := range []string{time.DateOnly, time.DateTime, "2006-01-02 15:04", "2006/01/02", "2006/1/2", "20060102", time.RFC3339} {
		if t, err := time.ParseInLocation(layout, v, s.opts.Location); err == nil {
			if t.After(s.now().Add(24 * time.Hour)) {
				return time.Time{}, fmt.Errorf("%q is in the future", v)
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)", v)
}

// ImportResults applies the bank's outcome of a batch's payment file. Lines with errors are
// reported (line, column, credit code, what is wrong) and skipped; the valid ones are applied in
// one transaction together with their notices. A line already recorded with the same outcome is
// unchanged; a different outcome for a recorded line is refused (a bank result is final).
func (s *Service) ImportResults(ctx context.Context, id uint64, name string, r io.Reader, by Actor) (ResultSummary, error) {
	sum := ResultSummary{BatchID: id}
	rows, issues, err := s.parseResults(name, r)
	if err != nil {
		return sum, err
	}
	now := s.now()
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		sum.Paid, sum.Failed, sum.Unchanged, sum.PaidFen, sum.Issues = 0, 0, 0, 0, append([]Issue(nil), issues...)
		b, err := begin(tx, id, StepResults, by)
		if err != nil {
			return err
		}
		var lines []store.PayoutLine
		if err := tx.Where("batch_id = ?", id).Find(&lines).Error; err != nil {
			return fmt.Errorf("load lines of batch %d: %w", id, err)
		}
		byCode := make(map[string]*store.PayoutLine, len(lines))
		for i := range lines {
			byCode[lines[i].CreditCode] = &lines[i]
		}
		var paid, failed []store.PayoutLine
		for _, row := range rows {
			l := byCode[row.code]
			bad := func(format string, args ...any) {
				sum.Issues = append(sum.Issues, Issue{Line: row.line, Column: "credit_code", Code: row.code, Msg: fmt.Sprintf(format, args...)})
			}
			switch {
			case l == nil:
				bad("is not in batch %d", id)
				continue
			case l.State == row.status:
				if row.status == store.LinePaid && l.PaidAt != nil && !l.PaidAt.Equal(*row.paidAt) {
					bad("was recorded paid on %s; the file says %s", l.PaidAt.In(s.opts.Location).Format(time.DateOnly), row.paidAtText)
					continue
				}
				sum.Unchanged++
				continue
			case l.State != store.LineExported:
				bad("is %s; a bank result is final and can only be recorded for an exported line", l.State)
				continue
			}
			fields := map[string]any{}
			detail := row.code + "：" + Yuan(l.AmountFen) + " 元"
			if row.status == store.LinePaid {
				fields["paid_at"] = *row.paidAt
				detail += "，" + row.paidAt.In(s.opts.Location).Format(time.DateOnly) + " 到账"
			} else {
				fields["reason"] = clip(row.reason, 500)
				detail += "，失败：" + row.reason
			}
			if err := setLine(tx, l, row.status, fields, now); err != nil {
				return err
			}
			if err := event(tx, id, l.ID, row.status, by.Name, detail, now); err != nil {
				return err
			}
			if row.status == store.LinePaid {
				paid = append(paid, *l)
				sum.Paid++
				sum.PaidFen += l.AmountFen
			} else {
				failed = append(failed, *l)
				sum.Failed++
			}
		}
		if err := s.queueNotices(ctx, tx, b.PolicyID, paid, NoticePaid, now); err != nil {
			return err
		}
		if err := s.queueNotices(ctx, tx, b.PolicyID, failed, NoticeFailed, now); err != nil {
			return err
		}
		var open int64
		if err := tx.Model(&store.PayoutLine{}).Where("batch_id = ? AND state = ?", id, store.LineExported).Count(&open).Error; err != nil {
			return fmt.Errorf("count open lines: %w", err)
		}
		if open == 0 && b.State == store.BatchExported {
			if err := tx.Model(&store.PayoutBatch{}).Where("id = ? AND state = ?", id, store.BatchExported).
				Updates(map[string]any{"state": store.BatchClosed, "closed_at": now}).Error; err != nil {
				return fmt.Errorf("close batch %d: %w", id, err)
			}
			if err := event(tx, id, 0, "closed", by.Name, "全部行已有银行结果", now); err != nil {
				return err
			}
		}
		sum.Closed = open == 0
		if sum.Paid+sum.Failed == 0 {
			return nil
		}
		return audit(tx, by, auditlog.PayoutResults, batchObject(id), map[string]any{"file": filepath.Base(name), "paid": sum.Paid,
			"failed": sum.Failed, "unchanged": sum.Unchanged, "issues": len(sum.Issues), "paid_fen": sum.PaidFen}, now)
	})
	return sum, err
}
