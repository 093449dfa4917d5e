package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/policypush/policypush/core"
	"github.com/policypush/policypush/store"
)

var exportHeader = []string{"统一社会信用代码", "企业名称", "行政区划", "行业代码", "园区", "规模", "联系电话",
	"政策编号", "政策", "版本", "金额（元）", "匹配时间", "通知状态", "已打开链接", "企业回复"}

func (s *Server) exportRecord(m *matchRow) []any {
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

// exportMatches streams what the filter shows (every page) as CSV or XLSX, in the principal's
// scope with the same masking as the list, through core.ExportMatches: the audit entry first,
// then the rows straight from the database cursor (constant memory; docs/console.md).
func (s *Server) exportMatches(w http.ResponseWriter, r *http.Request, p *Principal) {
	format := core.Format(r.URL.Query().Get("format"))
	if format == "" {
		format = core.FormatXLSX
	}
	if format != core.FormatXLSX && format != core.FormatCSV {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("参数 format=%q 无效：可选 xlsx, csv", format), nil)
		return
	}
	f, err := parseMatchFilter(r.URL.Query(), p)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	ctx := r.Context()
	asOf, err := s.evalDate(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	sf, err := store.FirmsNamed(ctx, s.opts.DB, f.storeFilter(p))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	name := "matches-" + s.now().In(s.opts.Location).Format("20060102-1504") + "." + string(format)
	ctype := "text/csv; charset=utf-8"
	if format == core.FormatXLSX {
		ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	}
	dw := &download{w: w, contentType: ctype, filename: name}
	var row matchRow
	var firm store.Enterprise
	_, err = s.core.ExportMatches(ctx, dw, core.MatchExport{
		Actor: p.Name, Format: format, Filter: f.audited(),
		Table: core.Table{Header: exportHeader, Sheet: "匹配企业", BOM: format == core.FormatCSV},
		Query: store.MatchExportQuery(ctx, s.opts.DB, sf),
		Record: func(m *core.MatchLine) ([]any, bool) {
			row = matchRow{MatchRow: store.MatchRow{MatchID: m.MatchID, CreditCode: m.CreditCode, Name: m.Name, RegionCode: m.RegionCode,
				IndustryCode: m.IndustryCode, ParkID: m.ParkID, ContactPhone: m.ContactPhone, PolicyID: m.PolicyID,
				PolicyVersion: int(m.PolicyVersion), PolicyTitle: m.PolicyTitle, Amount: m.Amount, MatchedAt: m.MatchedAt,
				Notify: m.Notify, Opened: m.Opened, Response: m.Response}}
			row.Size = sizeOf(m.IndustryCode, m.Employees, m.AnnualRevenue, m.TotalAssets, asOf)
			if f.Size != "" && row.Size != f.Size {
				return nil, false
			}
			if firm.ParkID = m.ParkID; !p.seesContact(&firm) {
				row.ContactPhone = MaskPhone(row.ContactPhone)
			}
			return s.exportRecord(&row), true
		},
	})
	switch {
	case err == nil:
	case !dw.started:
		s.failErr(w, r, exportError(err))
	default:
		// Part of the file is out: abort the response so the client sees a broken download rather
		// than a short file.
		s.opts.Log.Error("export interrupted", "path", r.URL.Path, "actor", p.Name, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// exportError maps an export's refusal to an answer.
func exportError(err error) error {
	if errors.Is(err, core.ErrInvalid) {
		return badRequest("无法导出：%v", err)
	}
	return err
}

// download sends the attachment headers with the first byte of the file, so an error before it
// can still answer with an error page or JSON.
type download struct {
	w                     http.ResponseWriter
	contentType, filename string
	started               bool
}

func (d *download) Write(b []byte) (int, error) {
	if !d.started {
		d.started = true
		h := d.w.Header()
		h.Set("Content-Type", d.contentType)
		h.Set("Content-Disposition", `attachment; filename="`+d.filename+`"`)
	}
	return d.w.Write(b)
}
