package audit

import (
	"strings"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

func TestActionsAreDistinct(t *testing.T) {
	t.Parallel()
	seen := map[Action]bool{}
	for _, a := range Actions() {
		if seen[a] || a == "" || strings.TrimSpace(string(a)) != string(a) {
			t.Errorf("action %q repeated or blank", a)
		}
		seen[a] = true
	}
	if !seen[FirmNearMiss] || FirmNearMiss != "firm.near_miss" || FirmExport != "firm.export" {
		t.Fatalf("near-miss and export actions: %q %q", FirmNearMiss, FirmExport)
	}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	long := strings.Repeat("名", 300)
	if err := Write(db, Entry{Actor: long, Action: FirmExport, Object: long, Detail: map[string]any{"format": "csv"}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteAll(db, []Entry{{Actor: "a", Action: RegistryChange}, {Actor: "a", Action: RegistryFirm, Object: "enterprise:1"}}); err != nil {
		t.Fatal(err)
	}
	var rows []store.AuditLog
	if err := db.Order("id").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || len([]rune(rows[0].Actor)) != 64 || len([]rune(rows[0].Object)) != 200 || rows[0].Detail != `{"format":"csv"}` ||
		rows[0].At.IsZero() || rows[1].Detail != "" || rows[2].Action != "registry.firm" {
		t.Fatalf("%+v", rows)
	}
	if err := Write(db, Entry{Action: FirmList, Detail: map[string]any{"bad": func() {}}}); err == nil {
		t.Fatal("an unencodable detail was written")
	}
}
