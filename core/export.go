package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// MatchExport asks for an export of matches. The console passes its list's query (the principal's
// scope and filter) and its sheet layout; the CLI passes ActiveMatches and DataTable. Either way
// the rows stream from a database cursor to w: nothing holds all rows.
type MatchExport struct {
	Actor  string // recorded in the audit log
	Format Format
	Table  Table
	// Query selects the rows, with columns named like MatchLine's (see MatchLine); its order is the
	// file's order.
	Query *gorm.DB
	// Record gives the cells of one row (in Table.Header's order); false leaves the row out (a
	// filter decided in Go, such as the size tier). The line is reused for the next row: Record
	// must not keep it.
	Record func(*MatchLine) ([]any, bool)
	// Filter is what selected the rows (policy, region, …), recorded in the audit log with the
	// format. Never contact data.
	Filter map[string]any
}

// ExportSummary says what an export wrote.
type ExportSummary struct {
	Rows int `json:"rows"`
}

// ExportMatches records the export in the audit log (actor, filter, format), then writes the rows
// of req.Query as req.Format. Nothing reaches w before the audit record is written, so no export
// goes unrecorded; the record holds the filter rather than a row count, since counting first
// would read every row twice.
//
// An error before anything reached w (a bad request, the audit write, the query, a sheet over
// the xlsx row limit) leaves w untouched; for CSV and JSON an error after the first row leaves
// a truncated file, which the caller must signal (the console aborts the response).
func (s *Service) ExportMatches(ctx context.Context, w io.Writer, req MatchExport) (sum ExportSummary, err error) {
	if err := req.Format.check(); err != nil {
		return sum, err
	}
	if req.Query == nil || req.Record == nil || len(req.Table.Header) == 0 {
		return sum, fmt.Errorf("%w: an export needs a query, a record function and a header", ErrInvalid)
	}
	detail := maps.Clone(req.Filter)
	if detail == nil {
		detail = map[string]any{}
	}
	detail["format"] = string(req.Format)
	if err := audit.Record(s.db.WithContext(ctx), s.opts.Journal, audit.Entry{At: s.now(), Actor: req.Actor, Action: audit.FirmExport,
		Object: "matches", Detail: detail}); err != nil {
		return sum, err
	}
	rows, err := req.Query.WithContext(ctx).Rows()
	if err != nil {
		return sum, fmt.Errorf("read matches: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return sum, fmt.Errorf("read matches: %w", err)
	}
	var line MatchLine
	dest, err := line.bind(cols)
	if err != nil {
		return sum, err
	}
	tw, err := newTableWriter(w, req.Format, req.Table)
	if err != nil {
		return sum, err
	}
	defer func() {
		if err != nil {
			tw.discard()
		}
	}()
	for rows.Next() {
		if sum.Rows%1024 == 0 && ctx.Err() != nil { // the SQLite driver does not stop rows.Next on its own
			return sum, ctx.Err()
		}
		line.reset()
		if err := rows.Scan(dest...); err != nil {
			return sum, fmt.Errorf("read match row %d: %w", sum.Rows+1, err)
		}
		rec, keep := req.Record(&line)
		if !keep {
			continue
		}
		if err := tw.row(rec); err != nil {
			return sum, err
		}
		sum.Rows++
	}
	if err := rows.Err(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// the driver may report its own interruption (SQLite: "interrupted") for a cancelled
			// request: the cause is the context, which callers test for
			err = errors.Join(cerr, err)
		}
		return sum, fmt.Errorf("read matches after row %d: %w", sum.Rows, err)
	}
	return sum, tw.close()
}

// ActiveMatches selects every active match (of one policy when policyID is not empty) with its
// firm, ordered by policy, version and credit code: the rows of the CLI's export.
//
// The order is the unique index ux_match's. On SQLite the query names that index: walking it
// yields rows in order from the first one, where the planner (without ANALYZE statistics) would
// read every active match through ix_match_recent and sort them first — 3.5× slower at 200,000
// matches, and a sort held in this process's memory (temp_store=MEMORY) that grows with the
// export. MySQL gets no hint: there the forced index walk (a primary-key lookup per row) was
// slower than the server's own scan and filesort, which it keeps on the server (docs/console.md).
func (s *Service) ActiveMatches(ctx context.Context, policyID string) *gorm.DB {
	from := "matches AS m"
	if s.db.Dialector.Name() == "sqlite" {
		from += " INDEXED BY ux_match"
	}
	q := s.db.WithContext(ctx).Table(from).
		Select("m.policy_id, m.credit_code, m.amount, m.policy_version, m.as_of, e.name, e.region_code, e.park_id, m.matched_at").
		Joins("LEFT JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.state = ?", store.MatchActive).Order("m.policy_id, m.policy_version, m.credit_code")
	if policyID != "" {
		q = q.Where("m.policy_id = ?", policyID)
	}
	return q
}

// DataTable is the CLI's export layout: machine-readable columns (the JSON keys are the same).
var DataTable = Table{Header: []string{"policy_id", "credit_code", "amount", "policy_version", "as_of", "name", "region_code",
	"park_id", "matched_at"}, Sheet: "matches"}

// DataRecord is a row of DataTable: amount empty (JSON null) when the policy has no amount formula,
// dates as YYYY-MM-DD, matched_at in RFC 3339 UTC.
func DataRecord(m *MatchLine) ([]any, bool) {
	return []any{m.PolicyID, m.CreditCode, m.Amount, m.PolicyVersion, m.AsOf.Format(time.DateOnly), m.Name, m.RegionCode,
		m.ParkID, m.MatchedAt.UTC().Format(time.RFC3339)}, true
}
