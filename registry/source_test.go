package registry

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// TestSyncFromPlatformTable reads a platform-shaped table (pinyin columns, Chinese status words,
// letterless industry codes, DECIMAL and DATE columns) in keyset pages smaller than the table, then
// incrementally, then in full with a withdrawn row. The source is the CI MariaDB when configured;
// the state database is SQLite, or MySQL when configured.
func TestSyncFromPlatformTable(t *testing.T) {
	ctx := context.Background()
	state := testenv.OpenDB(t).DB
	firms := Synth(23, 31)
	t0 := time.Date(2024, 5, 6, 9, 0, 0, 0, time.UTC)
	p := testenv.NewPlatform(t, firms, t0) // every row shares one updated_at: pages must break ties by code
	bad := firms[5]
	bad.Employees = -1
	p.Put(t, bad, t0)
	src := Source{Driver: p.Driver, DSN: p.DSN, Query: p.Query, PageSize: 5}

	sum, err := Sync(ctx, state, src, SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 23 || sum.Inserted != 22 || sum.Rejected != 1 || !sum.HighWater.Equal(t0) {
		t.Fatalf("first sync: %s, high water %s", sum.String(), sum.HighWater)
	}
	if len(sum.Issues) != 1 || !strings.Contains(sum.Issues[0].String(), "("+bad.CreditCode+"), column employees") ||
		!strings.HasPrefix(sum.Issues[0].String(), "row ") {
		t.Errorf("issues %v, want one naming the row, firm and column employees", sum.Issues)
	}
	for i, f := range firms {
		if i == 5 {
			continue
		}
		got := firmOf(t, state, f.CreditCode)
		want := platformView(t, f)
		if !SameData(got, want) {
			t.Errorf("stored firm differs from the source\n got %+v\nwant %+v", got, want)
		}
	}

	// Nothing changed: only the rows at the high-water mark are read again, all unchanged.
	sum, err = Sync(ctx, state, src, SyncOptions{})
	if err != nil || sum.Inserted+sum.Updated != 0 || sum.Unchanged != 22 {
		t.Fatalf("repeat sync: %s, %v", sum.String(), err)
	}
	// Two rows change later: the next sync updates them and moves the mark; the one after reads
	// only the rows at the new mark.
	t1 := t0.Add(time.Hour)
	a, b := firms[1], firms[3]
	a.Employees += 7
	b.Status = store.StatusRevoked
	p.Put(t, a, t1)
	p.Put(t, b, t1)
	sum, err = Sync(ctx, state, src, SyncOptions{})
	if err != nil || sum.Updated != 2 || sum.Inserted != 0 || !sum.HighWater.Equal(t1) {
		t.Fatalf("incremental sync: %s, high water %s, %v", sum.String(), sum.HighWater, err)
	}
	if got := firmOf(t, state, b.CreditCode); got.Status != store.StatusRevoked {
		t.Errorf("吊销，未注销 stored as %q", got.Status)
	}
	sum, err = Sync(ctx, state, src, SyncOptions{})
	if err != nil || sum.Rows != 2 || sum.Unchanged != 2 {
		t.Fatalf("sync after the mark moved: %s, %v", sum.String(), err)
	}
	b.Status = store.StatusActive
	p.Put(t, b, t1)

	// A withdrawn row is reported by a full sync, and deregistered only when configured.
	p.Delete(t, firms[4].CreditCode)
	sum, err = Sync(ctx, state, src, SyncOptions{Full: true})
	if err != nil || !slices.Equal(sum.Vanished, []string{firms[4].CreditCode}) || sum.Deregistered != 0 {
		t.Fatalf("full sync: %s vanished %v deregistered %d, %v", sum.String(), sum.Vanished, sum.Deregistered, err)
	}
	if got := firmOf(t, state, firms[4].CreditCode); got.Status != store.StatusActive {
		t.Fatalf("vanished firm changed without deregister_vanished: %q", got.Status)
	}
	sum, err = Sync(ctx, state, src, SyncOptions{Full: true, DeregisterVanished: true})
	if err != nil || sum.Deregistered != 1 {
		t.Fatalf("full sync deregistering: %+v, %v", sum, err)
	}
	if got := firmOf(t, state, firms[4].CreditCode); got.Status != store.StatusDeregistered || got.Name != firms[4].Name {
		t.Fatalf("vanished firm after deregister_vanished: %+v", got)
	}
}

// platformView is a synthetic firm as the platform table carries it: the columns it has, the rest
// at their defaults, the entity type derived.
func platformView(t *testing.T, f store.Enterprise) store.Enterprise {
	t.Helper()
	e := store.Enterprise{CreditCode: f.CreditCode, Name: f.Name, RegionCode: f.RegionCode, IndustryCode: f.IndustryCode,
		Status: f.Status, RegisteredAt: f.RegisteredAt, Employees: f.Employees, InsuredEmployees: f.InsuredEmployees,
		AnnualRevenue: f.AnnualRevenue, TotalAssets: f.TotalAssets, IsHighTech: f.IsHighTech, ParkID: f.ParkID,
		ContactPhone: f.ContactPhone, SpecializedLevel: "none", EntityType: EntityTypeOf(f.CreditCode), CodeWarning: f.CodeWarning}
	return e
}

func firmOf(t *testing.T, db *gorm.DB, code string) store.Enterprise {
	t.Helper()
	var e store.Enterprise
	if err := db.Where("credit_code = ?", code).Take(&e).Error; err != nil {
		t.Fatalf("load %s: %v", code, err)
	}
	return e
}

func TestSourceNeverShowsThePassword(t *testing.T) {
	src := Source{Driver: "mysql", DSN: "reader:s3cr3t-pw@tcp(127.0.0.1:1)/yiqiyidang?timeout=1s", Query: "SELECT 1 AS credit_code, 1 AS updated_at"}
	db := openDB(t, store.Options{Driver: "sqlite", DSN: t.TempDir() + "/t.db"})
	_, err := Sync(context.Background(), db, src, SyncOptions{})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "reader:****@") {
		t.Errorf("error %v: want the host and user named, the password masked", err)
	}
	for _, tt := range []struct{ driver, dsn, want string }{
		{"mysql", "u:p@ss@tcp(h:3306)/db", "u:****@tcp(h:3306)/db"},
		{"mysql", "u@tcp(h:3306)/db", "u@tcp(h:3306)/db"},
		{"sqlite", "/var/lib/platform.db", "/var/lib/platform.db"},
	} {
		if got := MaskDSN(tt.driver, tt.dsn); got != tt.want {
			t.Errorf("MaskDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
	}
}

func TestSourceCheck(t *testing.T) {
	for _, tt := range []struct {
		src  Source
		want string
	}{
		{Source{Driver: "postgres", DSN: "x", Query: "SELECT 1"}, "not mysql"},
		{Source{Driver: "mysql", Query: "SELECT 1"}, "dsn is empty"},
		{Source{Driver: "mysql", DSN: "x", Query: "DELETE FROM qy_jbxx"}, "one SELECT"},
		{Source{Driver: "mysql", DSN: "x", Query: "SELECT 1; DROP TABLE qy_jbxx"}, "one SELECT"},
	} {
		if err := tt.src.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.src, err, tt.want)
		}
	}
}
