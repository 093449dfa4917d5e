package core

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

func exportOf(t *testing.T, s *Service, f Format, policyID string) (*bytes.Buffer, ExportSummary) {
	t.Helper()
	var buf bytes.Buffer
	sum, err := s.ExportMatches(context.Background(), &buf, MatchExport{Actor: "alice", Format: f, Table: DataTable,
		Query: s.ActiveMatches(context.Background(), policyID), Record: DataRecord, Filter: map[string]any{"policy_id": policyID}})
	if err != nil {
		t.Fatalf("export %s: %v", f, err)
	}
	return &buf, sum
}

func exportAudits(t *testing.T, db *gorm.DB) []store.AuditLog {
	t.Helper()
	var rows []store.AuditLog
	if err := db.Where("action = ?", string(audit.FirmExport)).Order("id").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestExportMatches(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	seedMatches(t, db, 30, 3)
	s := New(db, Options{})

	t.Run("csv", func(t *testing.T) {
		buf, sum := exportOf(t, s, FormatCSV, "")
		recs, err := csv.NewReader(buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if sum.Rows != 90 || len(recs) != 91 || strings.Join(recs[0], ",") != strings.Join(DataTable.Header, ",") {
			t.Fatalf("rows %d, records %d, header %v", sum.Rows, len(recs), recs[0])
		}
		first := recs[1] // p00 (no amount), firm 0 (a formula as name)
		if first[0] != "p00" || first[1] != code(0) || first[2] != "" || first[3] != "1" || first[4] != "2022-06-30" ||
			first[5] != `'=HYPERLINK("http://evil.example","点我")` || first[8] != "2022-06-30T08:00:00Z" {
			t.Errorf("first row %q", first)
		}
		if recs[31][0] != "p01" || recs[31][2] != "10000.00" {
			t.Errorf("row of p01: %q", recs[31])
		}
		for _, r := range recs[1:] {
			if r[0] == "revoked-policy" {
				t.Errorf("revoked match exported: %q", r)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		buf, _ := exportOf(t, s, FormatJSON, "p00")
		var rows []map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
			t.Fatalf("%v: %s", err, buf)
		}
		if len(rows) != 30 || rows[0]["amount"] != nil || rows[0]["policy_version"] != float64(1) || rows[0]["credit_code"] != code(0) {
			t.Fatalf("%d rows, first %v", len(rows), rows[0])
		}
	})

	t.Run("xlsx", func(t *testing.T) {
		buf, _ := exportOf(t, s, FormatXLSX, "p01")
		f, err := excelize.OpenReader(buf)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rows, err := f.GetRows("matches")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 31 || rows[1][0] != "p01" || rows[1][2] != "10000" || rows[1][5] != `=HYPERLINK("http://evil.example","点我")` {
			t.Fatalf("%d rows, first %q", len(rows), rows[1])
		}
		if formula, _ := f.GetCellFormula("matches", "F2"); formula != "" {
			t.Fatalf("a firm name became a formula: %q", formula)
		}
	})

	t.Run("audit", func(t *testing.T) {
		before := len(exportAudits(t, db))
		exportOf(t, s, FormatCSV, "p02")
		got := exportAudits(t, db)
		if len(got) != before+1 {
			t.Fatalf("%d export audit records, want %d", len(got), before+1)
		}
		last := got[len(got)-1]
		if last.Actor != "alice" || last.Object != "matches" || !strings.Contains(last.Detail, `"format":"csv"`) ||
			!strings.Contains(last.Detail, `"policy_id":"p02"`) {
			t.Fatalf("audit record %+v", last)
		}
	})

	t.Run("refused before writing", func(t *testing.T) {
		before := len(exportAudits(t, db))
		var buf bytes.Buffer
		_, err := s.ExportMatches(context.Background(), &buf, MatchExport{Actor: "alice", Format: "pdf", Table: DataTable,
			Query: s.ActiveMatches(context.Background(), ""), Record: DataRecord})
		if !errors.Is(err, ErrInvalid) || buf.Len() != 0 || len(exportAudits(t, db)) != before {
			t.Fatalf("bad format: %v, %d bytes written, audit records %d → %d", err, buf.Len(), before, len(exportAudits(t, db)))
		}
		_, err = s.ExportMatches(context.Background(), &buf, MatchExport{Actor: "alice", Format: FormatCSV, Table: DataTable,
			Query: db.Table("matches").Select("policy_id, state"), Record: DataRecord})
		if err == nil || !strings.Contains(err.Error(), `"state"`) || buf.Len() != 0 {
			t.Fatalf("unknown column: %v, %d bytes", err, buf.Len())
		}
	})

	t.Run("record filters rows", func(t *testing.T) {
		var buf bytes.Buffer
		sum, err := s.ExportMatches(context.Background(), &buf, MatchExport{Actor: "alice", Format: FormatCSV, Table: DataTable,
			Query: s.ActiveMatches(context.Background(), ""), Record: func(m *MatchLine) ([]any, bool) {
				rec, _ := DataRecord(m)
				return rec, m.Employees == 0 && strings.HasSuffix(m.CreditCode, "7")
			}})
		if err != nil || sum.Rows != 9 || strings.Count(buf.String(), "\n") != 10 {
			t.Fatalf("%d rows, %v:\n%s", sum.Rows, err, buf.String())
		}
	})
}

func TestSafeCell(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"=1+1": "'=1+1", "+86": "'+86", "-5": "'-5", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx",
		"\rx": "'\rx", "苏州": "苏州", "": "", "a=b": "a=b"} {
		if got := SafeCell(in); got != want {
			t.Errorf("SafeCell(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cellText(-5.0); got != "-5.00" { // numbers stay numbers
		t.Errorf("cellText(-5.0) = %q", got)
	}
}

// A half-written CSV is the caller's to signal; a cancelled context stops the cursor.
func TestExportStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	seedMatches(t, db, 3000, 1)
	s := New(db, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := s.ExportMatches(ctx, &bytes.Buffer{}, MatchExport{Actor: "alice", Format: FormatCSV, Table: DataTable,
		Query: s.ActiveMatches(ctx, ""), Record: func(m *MatchLine) ([]any, bool) {
			if n++; n == 1500 {
				cancel()
			}
			return DataRecord(m)
		}})
	if !errors.Is(err, context.Canceled) || n >= 3000 {
		t.Fatalf("after %d rows: %v", n, err)
	}
}
