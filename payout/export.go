package payout

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"
	"gorm.io/gorm"

	auditlog "github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Export formats.
const (
	FormatCSV  = "csv"
	FormatXLSX = "xlsx"
)

// bankColumns are registry columns copied into the payment file when the enterprises table has
// them (开户行, 账号, 户名); the file then carries what the bank needs without a second lookup.
var bankColumns = []string{"bank_name", "bank_account", "bank_account_name"}

// ExportSummary describes a written payment file.
type ExportSummary struct {
	BatchID     uint64   `json:"batch_id"`
	Rows        int      `json:"rows"`
	AmountFen   int64    `json:"amount_fen"`
	AmountTotal string   `json:"amount_total"`
	Columns     []string `json:"columns"`
}

// Export writes the payment file of a batch for the finance system: one row per line still in the
// batch (credit_code, name, amount in 元 with two decimals, and the bank fields the registry has).
// It is refused before the 公示 ends and while an objection waits for a decision. Exporting again
// writes the same rows.
func (s *Service) Export(ctx context.Context, id uint64, format string, w io.Writer, by Actor) (ExportSummary, error) {
	sum := ExportSummary{BatchID: id}
	if format != FormatCSV && format != FormatXLSX {
		return sum, fmt.Errorf("%w: format %q must be csv or xlsx", ErrInvalid, format)
	}
	now := s.now()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		b, err := begin(tx, id, StepExport, by)
		if err != nil {
			return err
		}
		if b.PublicizeUntil != nil && now.Before(*b.PublicizeUntil) {
			return fmt.Errorf("%w: the 公示 of batch %d runs until %s; the payment file can be exported after that",
				ErrState, id, b.PublicizeUntil.In(s.opts.Location).Format("2006-01-02 15:04"))
		}
		var held int64
		if err := tx.Model(&store.PayoutLine{}).Where("batch_id = ? AND state = ?", id, store.LineHeld).Count(&held).Error; err != nil {
			return fmt.Errorf("count held lines: %w", err)
		}
		if held > 0 {
			return fmt.Errorf("%w: %d objection(s) to batch %d wait for a decision (payout decide)", ErrState, held, id)
		}
		if b.State == store.BatchPublicized {
			if err := tx.Model(&store.PayoutLine{}).Where("batch_id = ? AND state = ?", id, store.LinePending).
				Updates(map[string]any{"state": store.LineExported, "updated_at": now}).Error; err != nil {
				return fmt.Errorf("mark lines exported: %w", err)
			}
			if err := move(tx, b, StepExport, map[string]any{"exported_at": now}); err != nil {
				return err
			}
		}
		if err := event(tx, id, 0, "exported", by.Name, fmt.Sprintf("%s，%d 行，合计 %s 元", format, b.Firms, Yuan(b.AmountFen)), now); err != nil {
			return err
		}
		return audit(tx, by, auditlog.PayoutExport, batchObject(id), map[string]any{"format": format, "rows": b.Firms, "amount_fen": b.AmountFen}, now)
	})
	if err != nil {
		return sum, err
	}
	return s.writeFile(ctx, id, format, w)
}

// writeFile streams the exported lines of a batch.
func (s *Service) writeFile(ctx context.Context, id uint64, format string, w io.Writer) (ExportSummary, error) {
	db := s.db.WithContext(ctx)
	sum := ExportSummary{BatchID: id, Columns: []string{"credit_code", "name", "amount"}}
	var bank []string
	for _, c := range bankColumns {
		if db.Migrator().HasColumn(&store.Enterprise{}, c) {
			bank = append(bank, c)
		}
	}
	sum.Columns = append(sum.Columns, bank...)
	sel := "l.credit_code, l.name, l.amount_fen"
	for _, c := range bank {
		sel += ", COALESCE(e." + c + ", '')"
	}
	rows, err := db.Table("payout_lines l").Select(sel).Joins("LEFT JOIN enterprises e ON e.credit_code = l.credit_code").
		Where("l.batch_id = ? AND l.state IN ?", id, []string{store.LineExported, store.LinePaid, store.LineFailed}).
		Order("l.credit_code").Rows()
	if err != nil {
		return sum, fmt.Errorf("read lines of batch %d: %w", id, err)
	}
	defer rows.Close()
	out, err := newSheetWriter(format, w, sum.Columns)
	if err != nil {
		return sum, err
	}
	for rows.Next() {
		var code, name string
		var fen int64
		extra := make([]string, len(bank))
		dest := []any{&code, &name, &fen}
		for i := range extra {
			dest = append(dest, &extra[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return sum, fmt.Errorf("read line of batch %d: %w", id, err)
		}
		if err := out.row(code, name, fen, extra); err != nil {
			return sum, err
		}
		sum.Rows++
		sum.AmountFen += fen
	}
	if err := rows.Err(); err != nil {
		return sum, fmt.Errorf("read lines of batch %d: %w", id, err)
	}
	sum.AmountTotal = Yuan(sum.AmountFen)
	return sum, out.close(sum)
}

// sheetWriter writes rows to a CSV or, through excelize's StreamWriter, to an xlsx file, so a
// batch of a million lines does not sit in memory as cells.
type sheetWriter struct {
	csv  *csv.Writer
	xl   *excelize.File
	sw   *excelize.StreamWriter
	w    io.Writer
	n    int
	cols int
}

func newSheetWriter(format string, w io.Writer, header []string) (*sheetWriter, error) {
	sw := &sheetWriter{w: w, cols: len(header)}
	if format == FormatCSV {
		sw.csv = csv.NewWriter(w)
		return sw, sw.csv.Write(header)
	}
	sw.xl = excelize.NewFile()
	if err := sw.xl.SetSheetName("Sheet1", "付款清单"); err != nil {
		return nil, fmt.Errorf("xlsx: %w", err)
	}
	st, err := sw.xl.NewStreamWriter("付款清单")
	if err != nil {
		return nil, fmt.Errorf("xlsx: %w", err)
	}
	sw.sw = st
	if err := st.SetColWidth(1, 1, 22); err != nil {
		return nil, fmt.Errorf("xlsx: %w", err)
	}
	if err := st.SetColWidth(2, 2, 36); err != nil {
		return nil, fmt.Errorf("xlsx: %w", err)
	}
	cells := make([]any, len(header))
	for i, h := range header {
		cells[i] = h
	}
	return sw, sw.next(cells)
}

func (sw *sheetWriter) next(cells []any) error {
	sw.n++
	cell, _ := excelize.CoordinatesToCellName(1, sw.n)
	if err := sw.sw.SetRow(cell, cells); err != nil {
		return fmt.Errorf("xlsx row %d: %w", sw.n, err)
	}
	return nil
}

func (sw *sheetWriter) row(code, name string, fen int64, extra []string) error {
	if sw.csv != nil {
		return sw.csv.Write(append([]string{code, name, Yuan(fen)}, extra...))
	}
	// The amount is a number cell (finance sums it) written from its exact decimal text.
	amount, _ := strconv.ParseFloat(Yuan(fen), 64)
	cells := []any{code, name, excelize.Cell{Value: amount}}
	for _, e := range extra {
		cells = append(cells, e)
	}
	return sw.next(cells)
}

func (sw *sheetWriter) close(sum ExportSummary) error {
	if sw.csv != nil {
		sw.csv.Flush()
		if err := sw.csv.Error(); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
		return nil
	}
	if err := sw.sw.Flush(); err != nil {
		return fmt.Errorf("xlsx: %w", err)
	}
	// A second sheet states the batch, the row count and the total, for the finance clerk's check.
	if _, err := sw.xl.NewSheet("汇总"); err != nil {
		return fmt.Errorf("xlsx: %w", err)
	}
	for i, kv := range [][2]any{{"batch_id", sum.BatchID}, {"rows", sum.Rows}, {"amount_total", sum.AmountTotal},
		{"columns", strings.Join(sum.Columns, ",")}} {
		if err := sw.xl.SetSheetRow("汇总", "A"+strconv.Itoa(i+1), &[]any{kv[0], kv[1]}); err != nil {
			return fmt.Errorf("xlsx: %w", err)
		}
	}
	if err := sw.xl.Write(sw.w); err != nil {
		return fmt.Errorf("write xlsx: %w", err)
	}
	return sw.xl.Close()
}
