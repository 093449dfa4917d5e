package core

import (
	"archive/zip"
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/xuri/excelize/v2"
)

// Format is an export file format.
type Format string

// Export formats.
const (
	FormatCSV  Format = "csv"
	FormatXLSX Format = "xlsx"
	FormatJSON Format = "json"
)

func (f Format) check() error {
	switch f {
	case FormatCSV, FormatXLSX, FormatJSON:
		return nil
	}
	return fmt.Errorf("%w: format %q: use csv, xlsx or json", ErrInvalid, string(f))
}

// Table is the layout of an export file.
type Table struct {
	Header []string // column titles; the JSON keys
	Sheet  string   // xlsx sheet name (default Sheet1)
	BOM    bool     // start a CSV with a UTF-8 byte order mark (Excel reads UTF-8 CSV only with one)
}

// MaxSheetRows is how many data rows one xlsx sheet holds (Excel's limit less the header row).
const MaxSheetRows = excelize.TotalRows - 1

// tableWriter writes one row at a time; close finishes the file.
type tableWriter interface {
	row(cells []any) error
	close() error
	discard() // after an error: free what close would have (the xlsx temporary file)
}

func newTableWriter(w io.Writer, f Format, t Table) (tableWriter, error) {
	switch f {
	case FormatCSV:
		return newCSVWriter(w, t)
	case FormatXLSX:
		return newXLSXWriter(w, t)
	case FormatJSON:
		return newJSONWriter(w, t), nil
	}
	return nil, f.check()
}

// SafeCell keeps a spreadsheet from reading a text cell as a formula (CSV injection through a firm
// name that starts with =, +, -, @, a tab or a carriage return): such a value gets a leading '.
func SafeCell(v string) string {
	if v != "" && strings.IndexByte("=+-@\t\r", v[0]) >= 0 {
		return "'" + v
	}
	return v
}

// cellText is a cell of a CSV file: text escaped against formulas, amounts with two decimals.
func cellText(v any) string {
	switch x := v.(type) {
	case string:
		return SafeCell(x)
	case float64:
		return strconv.FormatFloat(x, 'f', 2, 64)
	case *float64:
		if x == nil {
			return ""
		}
		return strconv.FormatFloat(*x, 'f', 2, 64)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case nil:
		return ""
	}
	return SafeCell(fmt.Sprint(v))
}

type csvWriter struct {
	buf *bufio.Writer
	cw  *csv.Writer
	out []string
}

func newCSVWriter(w io.Writer, t Table) (*csvWriter, error) {
	buf := bufio.NewWriterSize(w, 64<<10)
	if t.BOM {
		_, _ = buf.WriteString("\uFEFF")
	}
	c := &csvWriter{buf: buf, cw: csv.NewWriter(buf), out: make([]string, len(t.Header))}
	if err := c.cw.Write(t.Header); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *csvWriter) row(cells []any) error {
	if len(cells) != len(c.out) {
		return fmt.Errorf("export row has %d cells, the header %d", len(cells), len(c.out))
	}
	for i, v := range cells {
		c.out[i] = cellText(v)
	}
	return c.cw.Write(c.out)
}

func (c *csvWriter) close() error {
	c.cw.Flush()
	if err := c.cw.Error(); err != nil {
		return err
	}
	return c.buf.Flush()
}

// xlsxWriter writes through excelize's StreamWriter, which keeps rows in a temporary file past
// 16 MB; the zip goes to w only at close, so an error before it leaves w untouched.
type xlsxWriter struct {
	w    io.Writer
	f    *excelize.File
	sw   *excelize.StreamWriter
	n    int
	vals []any
}

func newXLSXWriter(w io.Writer, t Table) (*xlsxWriter, error) {
	f := excelize.NewFile()
	sheet := "Sheet1"
	if t.Sheet != "" && t.Sheet != sheet {
		if err := f.SetSheetName(sheet, t.Sheet); err != nil {
			f.Close()
			return nil, err
		}
		sheet = t.Sheet
	}
	sw, err := f.NewStreamWriter(sheet)
	if err != nil {
		f.Close()
		return nil, err
	}
	header := make([]any, len(t.Header))
	for i, h := range t.Header {
		header[i] = h
	}
	if err := sw.SetRow("A1", header); err != nil {
		f.Close()
		return nil, err
	}
	return &xlsxWriter{w: w, f: f, sw: sw, vals: make([]any, len(t.Header))}, nil
}

func (x *xlsxWriter) row(cells []any) error {
	if x.n >= MaxSheetRows {
		return fmt.Errorf("%w: an xlsx sheet holds at most %d rows; export as csv or narrow the filter", ErrInvalid, MaxSheetRows)
	}
	if len(cells) != len(x.vals) {
		return fmt.Errorf("export row has %d cells, the header %d", len(cells), len(x.vals))
	}
	for i, v := range cells {
		switch c := v.(type) {
		case *float64:
			if c == nil {
				x.vals[i] = nil
			} else {
				x.vals[i] = *c
			}
		default:
			x.vals[i] = v
		}
	}
	x.n++
	cell, err := excelize.CoordinatesToCellName(1, x.n+1)
	if err != nil {
		return err
	}
	return x.sw.SetRow(cell, x.vals)
}

func (c *csvWriter) discard()  {}
func (j *jsonWriter) discard() {}
func (x *xlsxWriter) discard() { _ = x.f.Close() }

func (x *xlsxWriter) close() error {
	defer x.f.Close()
	if err := x.sw.Flush(); err != nil {
		return err
	}
	// excelize builds the whole zip in a bytes.Buffer before writing it out; a zip writer on w
	// instead streams it (the buffer stays empty). The workbook's parts are far below the 4 GiB
	// that would need excelize's zip64 header fix-up on that buffer.
	x.f.SetZipWriter(func(io.Writer) excelize.ZipWriter { return zip.NewWriter(x.w) })
	_, err := x.f.WriteTo(io.Discard)
	return err
}

// jsonWriter writes an indented JSON array of objects keyed by the header, one row at a time.
type jsonWriter struct {
	buf  *bufio.Writer
	keys [][]byte
	n    int
	err  error
}

func newJSONWriter(w io.Writer, t Table) *jsonWriter {
	j := &jsonWriter{buf: bufio.NewWriterSize(w, 64<<10)}
	for _, h := range t.Header {
		k, _ := json.Marshal(h)
		j.keys = append(j.keys, k)
	}
	_, j.err = j.buf.WriteString("[")
	return j
}

func (j *jsonWriter) row(cells []any) error {
	if len(cells) != len(j.keys) {
		return fmt.Errorf("export row has %d cells, the header %d", len(cells), len(j.keys))
	}
	if j.n > 0 {
		j.buf.WriteByte(',')
	}
	j.buf.WriteString("\n  {")
	for i, v := range cells {
		if i > 0 {
			j.buf.WriteByte(',')
		}
		j.buf.WriteString("\n    ")
		j.buf.Write(j.keys[i])
		j.buf.WriteString(": ")
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		j.buf.Write(b)
	}
	_, err := j.buf.WriteString("\n  }")
	j.n++
	return err
}

func (j *jsonWriter) close() error {
	if j.err != nil {
		return j.err
	}
	if j.n > 0 {
		j.buf.WriteString("\n")
	}
	if _, err := j.buf.WriteString("]\n"); err != nil {
		return err
	}
	return j.buf.Flush()
}
