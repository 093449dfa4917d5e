package testenv

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/store"
)

// Platform is a table shaped like a provincial data-sharing platform's enterprise table (一企一档):
// pinyin column names, Chinese status words, industry classes without the section letter, DECIMAL
// money and a DATE founding day, plus the row's last-change time. It lives in the CI MariaDB when
// one is configured (in the database of POLICYPUSH_TEST_MYSQL_DSN, dropped at cleanup), else in a
// SQLite file.
type Platform struct {
	Driver, DSN string
	Table       string
	DB          *sql.DB
	// Query is the registry.source.query that reads the table with catalog keys as aliases.
	Query string
}

// platformStatus writes stored statuses the way the platform does.
var platformStatus = map[string]string{store.StatusActive: "存续", store.StatusRevoked: "吊销，未注销",
	store.StatusDeregistered: "注销", store.StatusMovedOut: "迁出"}

// NewPlatform creates the table and fills it with firms, all changed at changedAt.
func NewPlatform(t testing.TB, firms []store.Enterprise, changedAt time.Time) *Platform {
	t.Helper()
	p := &Platform{Table: "qy_jbxx_" + Suffix()}
	if dsn := MySQLDSN(t); dsn != "" {
		p.Driver, p.DSN = "mysql", dsn
	} else {
		p.Driver, p.DSN = "sqlite", filepath.Join(t.TempDir(), "platform.db")
	}
	db, err := sql.Open(p.Driver, p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	p.DB = db
	t.Cleanup(func() {
		db.Exec("DROP TABLE IF EXISTS " + p.Table)
		db.Close()
	})
	p.exec(t, `CREATE TABLE `+p.Table+` (
		tyshxydm VARCHAR(18) NOT NULL PRIMARY KEY,
		qymc VARCHAR(200) NOT NULL,
		xzqhdm CHAR(6) NOT NULL,
		hydm VARCHAR(5) NOT NULL,
		djzt VARCHAR(20) NOT NULL,
		clrq DATE NULL,
		cyrs INT NULL,
		cbrs INT NULL,
		yysr DECIMAL(18,2) NULL,
		zcze DECIMAL(18,2) NULL,
		sfgx CHAR(1) NULL,
		yqid VARCHAR(20) NULL,
		lxdh VARCHAR(20) NULL,
		gxsj DATETIME NOT NULL)`)
	p.exec(t, "CREATE INDEX "+p.Table+"_gxsj ON "+p.Table+" (gxsj, tyshxydm)")
	p.Query = `SELECT tyshxydm AS credit_code, qymc AS 企业名称, xzqhdm AS region_code, hydm AS industry_code,
		djzt AS status, clrq AS registered_at, cyrs AS employees, cbrs AS insured_employees,
		yysr AS annual_revenue, zcze AS total_assets, sfgx AS is_high_tech, yqid AS park_id,
		lxdh AS contact_phone, gxsj AS updated_at FROM ` + p.Table
	for _, f := range firms {
		p.Put(t, f, changedAt)
	}
	return p
}

func (p *Platform) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := p.DB.Exec(q, args...); err != nil {
		t.Fatalf("platform table: %v\n%s", err, q)
	}
}

// Put inserts or replaces a firm's row, changed at changedAt.
func (p *Platform) Put(t testing.TB, f store.Enterprise, changedAt time.Time) {
	t.Helper()
	p.exec(t, "DELETE FROM "+p.Table+" WHERE tyshxydm = ?", f.CreditCode)
	var reg any
	if f.RegisteredAt != nil {
		reg = f.RegisteredAt.Format(time.DateOnly)
	}
	hightech := "N"
	if f.IsHighTech {
		hightech = "Y"
	}
	p.exec(t, "INSERT INTO "+p.Table+" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		f.CreditCode, f.Name, f.RegionCode, strings.TrimLeft(f.IndustryCode, "ABCDEFGHIJKLMNOPQRST"),
		platformStatus[f.Status], reg, f.Employees, f.InsuredEmployees,
		fmt.Sprintf("%.2f", f.AnnualRevenue), fmt.Sprintf("%.2f", f.TotalAssets), hightech, f.ParkID, f.ContactPhone,
		changedAt.UTC().Format(time.DateTime))
}

// Delete removes a firm's row, as a platform does when a record is withdrawn.
func (p *Platform) Delete(t testing.TB, code string) {
	t.Helper()
	p.exec(t, "DELETE FROM "+p.Table+" WHERE tyshxydm = ?", code)
}

// Columns are the catalog keys the platform table carries (Query's aliases, as keys).
var PlatformColumns = []string{"credit_code", "name", "region_code", "industry_code", "status", "registered_at",
	"employees", "insured_employees", "annual_revenue", "total_assets", "is_high_tech", "park_id", "contact_phone"}
