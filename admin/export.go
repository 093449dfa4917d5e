package admin

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"
)

// maxExportRows caps one export; a larger selection must be narrowed by the filter first.
const maxExportRows = 100000

var exportHeader = []string{"统一社会信用代码", "企业名称", "行政区划", "行业代码", "园区", "规模", "联系电话",
	"政策编号", "政策", "版本", "金额（元）", "匹配时间", "通知状态", "已打开链接", "企业回复"}

func (s *Server) exportRecord(m matchRow) []any {
	opened := "否"
	if m.Opened {
		opened = "是"
	}
	var amount any = ""
	if m.Amount != nil {
		amount = *m.Amount
	}
	return []any{m.CreditCode, m.Name, m.RegionCode, m.IndustryCode, m.ParkID, m.SizeLabel(), m.ContactPhone,
		m.PolicyID, m.PolicyTitle, m.PolicyVersion, amount, m.MatchedAt.In(s.opts.Location).Format("2006-01-02 15:04"),
		m.NotifyLabel(), opened, m.ResponseLabel()}
}

// exportMatches writes what the filter shows (every page) as CSV or XLSX, in the principal's
// scope with the same masking as the list, and records the export in the audit log first.
func (s *Server) exportMatches(w http.ResponseWriter, r *http.Request, p *Principal) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "xlsx"
	}
	if format != "xlsx" && format != "csv" {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("参数 format=%q 无效：可选 xlsx, csv", format), nil)
		return
	}
	f, err := parseMatchFilter(r.URL.Query(), p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	var total int64
	if err := s.matchQuery(r.Context(), p, f).Count(&total).Error; err != nil {
		s.failErr(w, r, err)
		return
	}
	if total > maxExportRows {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("筛选结果有 %d 行，超过一次导出上限 %d 行：请按政策、区划或行业缩小范围", total, maxExportRows), nil)
		return
	}
	rows, _, err := s.readMatchRows(r.Context(), p, f, 0, 0)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	detail := f.audited()
	detail["format"], detail["rows"] = format, len(rows)
	if err := s.audit(r, p, "firm.export", "matches", detail); err != nil {
		s.failErr(w, r, err)
		return
	}
	name := "matches-" + s.now().In(s.opts.Location).Format("20060102-1504")
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
		_, _ = w.Write([]byte("\uFEFF")) // Excel opens UTF-8 CSV correctly only with a BOM
		cw := csv.NewWriter(w)
		_ = cw.Write(exportHeader)
		for _, m := range rows {
			rec := s.exportRecord(m)
			out := make([]string, len(rec))
			for i, v := range rec {
				switch x := v.(type) {
				case float64:
					out[i] = strconv.FormatFloat(x, 'f', 2, 64)
				case string:
					out[i] = csvSafe(x)
				default:
					out[i] = fmt.Sprint(x)
				}
			}
			_ = cw.Write(out)
		}
		cw.Flush()
		return
	}
	if err := s.writeXLSX(w, name, rows); err != nil {
		s.opts.Log.Error("write xlsx export", "err", err)
	}
}

func (s *Server) writeXLSX(w http.ResponseWriter, name string, rows []matchRow) error {
	f := excelize.NewFile()
	defer f.Close()
	sheet := "匹配企业"
	if err := f.SetSheetName("Sheet1", sheet); err != nil {
		return err
	}
	sw, err := f.NewStreamWriter(sheet)
	if err != nil {
		return err
	}
	header := make([]any, len(exportHeader))
	for i, h := range exportHeader {
		header[i] = h
	}
	if err := sw.SetRow("A1", header); err != nil {
		return err
	}
	for i, m := range rows {
		cell, _ := excelize.CoordinatesToCellName(1, i+2)
		if err := sw.SetRow(cell, s.exportRecord(m)); err != nil {
			return err
		}
	}
	if err := sw.Flush(); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.xlsx"`)
	_, err = f.WriteTo(w)
	return err
}

// csvSafe keeps a spreadsheet from reading a cell as a formula (CSV injection through a firm name
// that starts with =, +, - or @).
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
