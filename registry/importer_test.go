package registry

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding/simplifiedchinese"
	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// mysqlEnv names a MySQL/MariaDB DSN to run the import tests against as well, e.g.
// "root@tcp(127.0.0.1:3306)/test". The tests empty the enterprises table of that database.
const mysqlEnv = "POLICYPUSH_TEST_MYSQL_DSN"

// forEachDB runs test against a fresh SQLite file and, when mysqlEnv is set, against MySQL.
func forEachDB(t *testing.T, test func(t *testing.T, db *gorm.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		test(t, openDB(t, store.Options{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "t.db")}))
	})
	t.Run("mysql", func(t *testing.T) {
		dsn := os.Getenv(mysqlEnv)
		if dsn == "" {
			t.Skip(mysqlEnv + " is not set")
		}
		db := openDB(t, store.Options{Driver: "mysql", DSN: dsn})
		cleanEnterprises(t, db)
		t.Cleanup(func() { cleanEnterprises(t, db) })
		test(t, db)
	})
}

func openDB(t testing.TB, o store.Options) *gorm.DB {
	t.Helper()
	db, err := store.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

func cleanEnterprises(t testing.TB, db *gorm.DB) {
	t.Helper()
	if err := db.Exec("DELETE FROM enterprises").Error; err != nil {
		t.Fatal(err)
	}
}

// testFile is an import file with every kind of line, and the line numbers the tests expect.
type testFile struct {
	path  string
	firms []store.Enterprise // 21 valid firms: lines 2–21 and line 33
	dup   store.Enterprise   // line 29: firms[1] (line 3) again, renamed
}

// writeTestFile writes:
//
//	line 1      header
//	lines 2–21  20 valid firms
//	lines 22–26 WriteBadRows' five rejects; 27–28 its two checksum warnings
//	line 29     firms[1] again with another name (duplicate of line 3)
//	line 30     blank
//	line 31     too few fields
//	line 32     a bare quote
//	line 33     one more valid firm
func writeTestFile(t *testing.T) testFile {
	t.Helper()
	tf := testFile{path: filepath.Join(t.TempDir(), "firms.csv"), firms: Synth(21, 7)}
	tf.dup = tf.firms[1]
	tf.dup.Name = "江苏重复行覆盖科技有限公司"
	var b bytes.Buffer
	if err := WriteCSV(&b, tf.firms[:20]); err != nil {
		t.Fatal(err)
	}
	if err := WriteBadRows(&b); err != nil {
		t.Fatal(err)
	}
	if err := writeRecords(&b, nil, []store.Enterprise{tf.dup}, nil); err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n")
	b.WriteString("91320571MA1QQQQQ1,too short\n")
	b.WriteString(`91310000MA1FL0007C,恒"瑞,320506` + strings.Repeat(",", len(Catalog)-3) + "\n")
	if err := writeRecords(&b, nil, tf.firms[20:], nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tf.path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return tf
}

type issueKey struct {
	line    int
	column  string
	warning bool
}

func issueKeys(issues []Issue) []issueKey {
	var ks []issueKey
	for _, is := range issues {
		ks = append(ks, issueKey{is.Line, is.Column, is.Warning})
	}
	return ks
}

// checkSummary compares counts; Issues are checked separately.
func checkSummary(t *testing.T, got, want Summary) {
	t.Helper()
	got.Issues, want.Issues = nil, nil
	got.Changes, got.Encoding = nil, ""
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("summary\n got %+v\nwant %+v", got, want)
	}
	if got.Rows != got.Inserted+got.Updated+got.Unchanged+got.Superseded+got.Rejected {
		t.Errorf("counts do not add up to Rows: %+v", got)
	}
}

func loadFirm(t *testing.T, db *gorm.DB, code string) store.Enterprise {
	t.Helper()
	var e store.Enterprise
	if err := db.Where("credit_code = ?", code).Take(&e).Error; err != nil {
		t.Fatalf("load %s: %v", code, err)
	}
	return e
}

func TestImportCSV(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		ctx := context.Background()
		tf := writeTestFile(t)
		s, err := ImportFile(ctx, db, tf.path, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 31, Inserted: 23, Superseded: 1, Warned: 2, Rejected: 7})
		wantIssues := []issueKey{
			{22, "employees", false}, {23, "status", false}, {24, "registered_at", false},
			{25, "credit_code", false}, {26, "layoff_rate", false},
			{27, "credit_code", true}, {28, "credit_code", true},
			{29, "credit_code", true}, {31, "", false}, {32, "", false},
		}
		if got := issueKeys(s.Issues); fmt.Sprint(got) != fmt.Sprint(wantIssues) {
			t.Errorf("issues\n got %v\nwant %v\n%v", got, wantIssues, s.Issues)
		}
		if dup := s.Issues[7].String(); !strings.Contains(dup, "line 3") || !strings.Contains(dup, "line 29 wins") {
			t.Errorf("duplicate warning does not name both lines: %s", dup)
		}
		for _, i := range []int{8, 9} {
			if s.Issues[i].Reason == "" || !strings.Contains(s.Issues[i].Reason, "skipped") {
				t.Errorf("malformed line issue %v", s.Issues[i])
			}
		}
		if want := "共 31 行：新增 23，更新 0，未变 0，重复覆盖 1，警告 2，拒绝 7；问题 10 条"; s.String() != want {
			t.Errorf("String() = %s, want %s", s, want)
		}

		var n, warned int64
		db.Model(&store.Enterprise{}).Count(&n)
		db.Model(&store.Enterprise{}).Where("code_warning = ?", true).Count(&warned)
		if n != 23 || warned != 2 {
			t.Errorf("table holds %d firms (%d flagged), want 23 (2)", n, warned)
		}
		if got := loadFirm(t, db, tf.dup.CreditCode); !SameData(got, tf.dup) {
			t.Errorf("duplicate: the later line should win\n got %+v\nwant %+v", got, tf.dup)
		}
		first := loadFirm(t, db, tf.firms[0].CreditCode)
		for _, f := range []store.Enterprise{tf.firms[0], tf.firms[19], tf.firms[20]} {
			if got := loadFirm(t, db, f.CreditCode); !SameData(got, f) {
				t.Errorf("stored firm differs from the file\n got %+v\nwant %+v", got, f)
			}
		}

		// The same file again changes nothing: no row is rewritten, so updated_at (backdated here to
		// tell a rewrite apart) stays.
		backdated := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
		if err := db.Exec("UPDATE enterprises SET updated_at = ?", backdated).Error; err != nil {
			t.Fatal(err)
		}
		s, err = ImportFile(ctx, db, tf.path, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 31, Unchanged: 23, Superseded: 1, Warned: 2, Rejected: 7})
		var moved int64
		db.Model(&store.Enterprise{}).Where("updated_at <> ?", backdated).Count(&moved)
		if moved != 0 {
			t.Errorf("%d unchanged rows were rewritten", moved)
		}

		// A changed value is an update; created_at stays.
		changed := tf.firms[0]
		changed.Employees++
		var b bytes.Buffer
		if err := WriteCSV(&b, []store.Enterprise{changed, tf.firms[2]}); err != nil {
			t.Fatal(err)
		}
		s, err = Import(ctx, db, &b, "changed.csv", ImportOptions{Progress: &bytes.Buffer{}})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 2, Updated: 1, Unchanged: 1})
		got := loadFirm(t, db, changed.CreditCode)
		if !SameData(got, changed) || !got.CreatedAt.Equal(first.CreatedAt) || !got.UpdatedAt.After(backdated) {
			t.Errorf("update: got %+v, created_at %v → %v", got, first.CreatedAt, got.CreatedAt)
		}
	})
}

// With small batches the duplicate's first line is already committed when the later line arrives:
// the later line is applied on top and counted as an update.
func TestImportDuplicateAcrossBatches(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		tf := writeTestFile(t)
		s, err := ImportFile(context.Background(), db, tf.path, ImportOptions{BatchSize: 5})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 31, Inserted: 23, Updated: 1, Warned: 2, Rejected: 7})
		if got := loadFirm(t, db, tf.dup.CreditCode); got.Name != tf.dup.Name {
			t.Errorf("name %q, want the later line's %q", got.Name, tf.dup.Name)
		}
	})
}

func TestImportXLSX(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		firms := Synth(3, 5)
		path := filepath.Join(t.TempDir(), "firms.xlsx")
		f := excelize.NewFile()
		defer f.Close()
		const sheet = "Sheet1"
		thousands, _ := f.NewStyle(&excelize.Style{NumFmt: 3}) // #,##0
		percent, _ := f.NewStyle(&excelize.Style{NumFmt: 9})   // 0%
		dateStyle, _ := f.NewStyle(&excelize.Style{NumFmt: 14})
		header := []any{"credit_code", "企业名称", "region_code", "registered_at", "employees",
			"annual_revenue", "is_high_tech", "layoff_rate", "wechat_openid"}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(f.SetSheetRow(sheet, "A1", &header))
		reg := time.Date(2018, 7, 9, 0, 0, 0, 0, time.UTC)
		// Row 2: typed cells (a date, formatted numbers, a boolean) and no openid, so excelize
		// returns a short row.
		must(f.SetSheetRow(sheet, "A2", &[]any{firms[0].CreditCode, firms[0].Name, "320571", reg, 1234, 12345678.9, true, 0.05}))
		must(f.SetCellStyle(sheet, "D2", "D2", dateStyle))
		must(f.SetCellStyle(sheet, "E2", "E2", thousands))
		must(f.SetCellStyle(sheet, "H2", "H2", percent))
		// Row 3 is empty. Row 4 has a bad count, row 5 text values.
		must(f.SetSheetRow(sheet, "A4", &[]any{firms[1].CreditCode, firms[1].Name, "320571", "2019/05/06", "abc"}))
		must(f.SetSheetRow(sheet, "A5", &[]any{firms[2].CreditCode, firms[2].Name, "320102", "2019/05/06", "7", "100.5", "否", "0", "oOpenID"}))
		_, err := f.NewSheet("Other")
		must(err)
		must(f.SetCellValue("Other", "A1", "not the registry"))
		must(f.SaveAs(path))

		var progress bytes.Buffer
		s, err := ImportFile(context.Background(), db, path, ImportOptions{Progress: &progress})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 3, Inserted: 2, Rejected: 1})
		if len(s.Issues) != 1 || s.Issues[0].Line != 4 || s.Issues[0].Column != "employees" {
			t.Errorf("issues %v, want line 4 employees", s.Issues)
		}
		if !strings.Contains(progress.String(), "导入 firms.xlsx") {
			t.Errorf("no progress bar drawn: %q", progress.String())
		}
		a := loadFirm(t, db, firms[0].CreditCode)
		if a.Employees != 1234 || a.AnnualRevenue != 12345678.9 || !a.IsHighTech || a.LayoffRate != 0.05 ||
			a.RegisteredAt == nil || a.RegisteredAt.Format(time.DateOnly) != "2018-07-09" || a.WechatOpenID != "" {
			t.Errorf("typed cells: %+v", a)
		}
		c := loadFirm(t, db, firms[2].CreditCode)
		if c.Employees != 7 || c.AnnualRevenue != 100.5 || c.IsHighTech || c.WechatOpenID != "oOpenID" || c.Name != firms[2].Name {
			t.Errorf("text cells: %+v", c)
		}
	})
}

func TestImportUnknownColumnReportedOnce(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		firms := Synth(3, 9)
		var b strings.Builder
		b.WriteString("credit_code,name,region_code,备注\n")
		for _, e := range firms {
			fmt.Fprintf(&b, "%s,%s,%s,note\n", e.CreditCode, e.Name, e.RegionCode)
		}
		s, err := Import(context.Background(), db, strings.NewReader(b.String()), "notes.csv", ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 3, Inserted: 3})
		if len(s.Issues) != 1 || s.Issues[0].Line != 1 || s.Issues[0].Column != "备注" || !s.Issues[0].Warning {
			t.Errorf("issues %v, want one warning for the unknown header", s.Issues)
		}
		// Columns absent from the file take their defaults.
		if e := loadFirm(t, db, firms[0].CreditCode); e.Status != store.StatusActive || e.SpecializedLevel != "none" {
			t.Errorf("defaults: %+v", e)
		}
	})
}

func TestImportAborts(t *testing.T) {
	db := openDB(t, store.Options{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "t.db")})
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, content string) string { return testenv.WriteFile(t, dir, name, content) }
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		path   string
		errHas string
	}{
		{"unsupported type", ctx, write("firms.txt", "x"), "unsupported file type"},
		{"missing file", ctx, filepath.Join(dir, "nope.csv"), "no such file"},
		{"empty file", ctx, write("empty.csv", ""), "the file is empty"},
		{"no credit_code column", ctx, write("nokey.csv", "name,employees\n恒瑞,3\n"), "has no credit_code column"},
		{"repeated column", ctx, write("dup.csv", "credit_code,name,NAME\n"), "header columns 2 and 3"},
		{"unterminated header", ctx, write("quote.csv", "credit_code,\"name\n"), "header"},
		{"neither UTF-8 nor GB18030", ctx, write("latin.csv", "credit_code,name\n91310000MA1FL0007C,\x81\x20caf\xe9\n"), "line 2 is neither UTF-8 nor GB18030"},
		{"binary", ctx, write("garbage.csv", "credit_code,name\n\x00\x01q\n"), "line 2 holds control characters"},
		{"not a registry export", ctx, write("garbage2.csv", "q\nq\n"), "not a registry export"},
		{"not a workbook", ctx, write("bad.xlsx", "not a zip"), "bad.xlsx"},
		{"canceled", canceled, write("ok.csv", "credit_code,name,region_code\n91310000MA1FL0007C,恒瑞,320506\n"), "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ImportFile(tt.ctx, db, tt.path, ImportOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("error %v, want it to mention %q", err, tt.errHas)
			}
		})
	}
	var n int64
	db.Model(&store.Enterprise{}).Count(&n)
	if n != 0 {
		t.Errorf("aborted imports wrote %d firms", n)
	}
}

func TestSummaryIssueCap(t *testing.T) {
	var s Summary
	for range maxIssues + 5 {
		s.addIssues(Issue{Line: 2, Reason: "x"})
	}
	if len(s.Issues) != maxIssues || s.IssuesDropped != 5 {
		t.Errorf("kept %d, dropped %d", len(s.Issues), s.IssuesDropped)
	}
	if !strings.Contains(s.String(), "问题 10005 条（仅列出前 10000 条）") {
		t.Errorf("String() = %s", s)
	}
}

// BenchmarkImportCSV imports the 20,000-firm demo registry into an empty enterprises table per
// iteration: a fresh SQLite file, and MySQL when mysqlEnv is set.
func BenchmarkImportCSV(b *testing.B) {
	const n = 20000
	dir := b.TempDir()
	path := filepath.Join(dir, "registry.csv")
	if err := SynthCSVFile(path, n, 1, false); err != nil {
		b.Fatal(err)
	}
	bench := func(b *testing.B, open func(i int) *gorm.DB) {
		i := 0
		for b.Loop() {
			b.StopTimer()
			i++
			db := open(i)
			b.StartTimer()
			s, err := ImportFile(context.Background(), db, path, ImportOptions{})
			if err != nil || s.Inserted != n {
				b.Fatalf("%v: %s", err, s)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	}
	b.Run("sqlite", func(b *testing.B) {
		bench(b, func(i int) *gorm.DB {
			return openDB(b, store.Options{Driver: "sqlite", DSN: filepath.Join(dir, fmt.Sprintf("b%d.db", i))})
		})
	})
	b.Run("mysql", func(b *testing.B) {
		dsn := os.Getenv(mysqlEnv)
		if dsn == "" {
			b.Skip(mysqlEnv + " is not set")
		}
		db := openDB(b, store.Options{Driver: "mysql", DSN: dsn})
		b.Cleanup(func() { cleanEnterprises(b, db) })
		bench(b, func(int) *gorm.DB {
			cleanEnterprises(b, db)
			return db
		})
	})
}

// TestImportXLSXFormulaCells: a formula cell imports its cached value; one saved without a value
// (written by a program, never opened in Excel) rejects the row naming line, column and formula,
// instead of importing 0.
func TestImportXLSXFormulaCells(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		firms := Synth(2, 21)
		path := filepath.Join(t.TempDir(), "formulas.xlsx")
		f := excelize.NewFile()
		defer f.Close()
		const sheet = "Sheet1"
		rows := [][]any{{"credit_code", "name", "region_code", "employees", "annual_revenue"}}
		for _, e := range firms {
			rows = append(rows, []any{e.CreditCode, e.Name, e.RegionCode, nil, 1000})
		}
		for i, r := range rows {
			cell, _ := excelize.CoordinatesToCellName(1, i+1)
			if err := f.SetSheetRow(sheet, cell, &r); err != nil {
				t.Fatal(err)
			}
		}
		// Row 2: a cached value (as Excel saves it). Row 3: the formula alone.
		if err := f.SetCellValue(sheet, "D2", 42); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"D2", "D3"} {
			if err := f.SetCellFormula(sheet, c, "SUM(E2:E3)/100+22"); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.SaveAs(path); err != nil {
			t.Fatal(err)
		}
		s, err := ImportFile(context.Background(), db, path, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkSummary(t, s, Summary{Rows: 2, Inserted: 1, Rejected: 1})
		if e := loadFirm(t, db, firms[0].CreditCode); e.Employees != 42 {
			t.Errorf("cached formula value: employees %d, want 42", e.Employees)
		}
		if len(s.Issues) != 1 || s.Issues[0].Line != 3 || s.Issues[0].Column != "employees" ||
			!strings.Contains(s.Issues[0].Reason, "=SUM(E2:E3)/100+22") || !strings.Contains(s.Issues[0].Reason, "without its computed value") {
			t.Errorf("issues %v, want line 3 employees naming the formula", s.Issues)
		}
	})
}

// TestImportGB18030WithChineseHeaders: what Excel on Chinese Windows saves — GB18030 text,
// Chinese headers, 4-digit industry classes without the section letter, Chinese status words —
// imports fully, and the summary says which encoding was detected.
func TestImportGB18030WithChineseHeaders(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		firms := Synth(30, 13)
		var b strings.Builder
		b.WriteString("统一社会信用代码,企业名称,行政区划代码,所属行业,登记状态,成立日期,从业人数,参保人数,营业收入（元）,资产总额\r\n")
		words := map[string]string{store.StatusActive: "存续（在营、开业、在册）", store.StatusRevoked: "吊销，未注销",
			store.StatusDeregistered: "注销", store.StatusMovedOut: "迁出"}
		for _, e := range firms {
			fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s,%d,%d,%s,%s\r\n", e.CreditCode, e.Name, e.RegionCode, e.IndustryCode[1:],
				words[e.Status], e.RegisteredAt.Format("2006/1/2"), e.Employees, e.InsuredEmployees,
				Text(e, "annual_revenue"), Text(e, "total_assets"))
		}
		gb, err := simplifiedchinese.GB18030.NewEncoder().String(b.String())
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "名录.csv")
		if err := os.WriteFile(path, []byte(gb), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := ImportFile(context.Background(), db, path, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Encoding != "GB18030" || s.Inserted != len(firms) || s.Rejected != 0 || len(s.Issues) != 0 {
			t.Fatalf("encoding %q, %s, issues %v", s.Encoding, s.String(), s.Issues)
		}
		for _, e := range firms {
			got := loadFirm(t, db, e.CreditCode)
			if got.Name != e.Name || got.IndustryCode != e.IndustryCode || got.Status != e.Status || got.AnnualRevenue != e.AnnualRevenue ||
				got.EntityType != EntityTypeOf(e.CreditCode) {
				t.Errorf("stored %+v\nfrom    %+v", got, e)
			}
		}
	})
}

// TestImportMapping: a mapping file binds unknown headers, converts 万元 exactly and accepts
// thousands separators, only for the columns it names; a header that carries another unit is not
// taken at face value without one.
func TestImportMapping(t *testing.T) {
	dir := t.TempDir()
	mapping := filepath.Join(dir, "map.yaml")
	if err := os.WriteFile(mapping, []byte(`columns:
  纳税人识别号: credit_code
  纳税人名称: name
  区划: region_code
  营业收入（万元）: {key: annual_revenue, unit: 万元, thousands: true}
  从业人数: {key: employees, thousands: true}
values:
  status: {正常: active, 非正常: revoked}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMapping(mapping)
	if err != nil {
		t.Fatal(err)
	}
	firms := Synth(2, 3)
	csvText := "纳税人识别号,纳税人名称,区划,营业收入（万元）,从业人数,登记状态,资产总额（万元）\n" +
		fmt.Sprintf("%s,甲,320506,\"1,234.5678\",\"1,200\",正常,5\n", firms[0].CreditCode) +
		fmt.Sprintf("%s,乙,320506,0.01,7,非正常,5\n", firms[1].CreditCode)
	forEachDB(t, func(t *testing.T, db *gorm.DB) {
		s, err := Import(context.Background(), db, strings.NewReader(csvText), "tax.csv", ImportOptions{Mapping: m})
		if err != nil {
			t.Fatal(err)
		}
		if s.Inserted != 2 || s.Rejected != 0 {
			t.Fatalf("%s %v", s.String(), s.Issues)
		}
		// 资产总额（万元） is a catalog column in another unit: ignored with a warning naming the fix.
		if len(s.Issues) != 1 || !strings.Contains(s.Issues[0].Reason, "unit: 万元") {
			t.Errorf("issues %v, want one warning about 资产总额 in 万元", s.Issues)
		}
		a, b := loadFirm(t, db, firms[0].CreditCode), loadFirm(t, db, firms[1].CreditCode)
		if a.AnnualRevenue != 12345678 || a.Employees != 1200 || a.Status != store.StatusActive || a.TotalAssets != 0 ||
			b.AnnualRevenue != 100 || b.Status != store.StatusRevoked {
			t.Errorf("mapped values: %+v / %+v", a, b)
		}
	})

	for _, tt := range []struct{ yaml, want string }{
		{"columns: {x: shoe_size}", "not a catalog key"},
		{"columns: {x: {key: employees, unit: 万元}}", "cannot be converted"},
		{"columns: {x: {key: name, thousands: true}}", "apply to numbers"},
		{"values: {status: {正常: alive}}", "is not one of"},
		{"colums: {}", "field colums not found"},
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(tt.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadMapping(p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.yaml, err, tt.want)
		}
	}
}
