package audit_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

func storedActions(t *testing.T, db *gorm.DB) []string {
	t.Helper()
	var out []string
	if err := db.Model(&store.AuditLog{}).Order("id").Pluck("action", &out).Error; err != nil {
		t.Fatal(err)
	}
	return out
}

func sameList(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Reads go to the journal and reach the database at the next flush, with what they recorded;
// changes are written at once.
func TestJournalStoresReadsAtTheFlushAndChangesAtOnce(t *testing.T) {
	db := testenv.OpenDB(t).DB
	dir := t.TempDir()
	j, err := audit.OpenJournal(db, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	for _, a := range []audit.Action{audit.FirmList, audit.FirmView, audit.PolicyPublish, audit.FirmExport} {
		if err := audit.Record(db, j, audit.Entry{At: at, Actor: "park_sip", Action: a, Object: "x", Detail: map[string]any{"rows": 3}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := storedActions(t, db); !sameList(got, []string{"policy.publish"}) {
		t.Fatalf("before the flush the database holds %v, want only the change", got)
	}
	if err := j.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := storedActions(t, db); !sameList(got, []string{"policy.publish", "firm.list", "firm.view", "firm.export"}) {
		t.Fatalf("after the flush: %v", got)
	}
	var row store.AuditLog
	if err := db.Where("action = ?", "firm.view").Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	if row.Actor != "park_sip" || row.Object != "x" || row.Detail != `{"rows":3}` || !row.At.Equal(at) {
		t.Fatalf("journalled record stored as %+v", row)
	}
	// A second flush has nothing to store.
	if err := j.Flush(context.Background()); err != nil || len(storedActions(t, db)) != 4 {
		t.Fatalf("second flush: %v, %d records", err, len(storedActions(t, db)))
	}
}

// Records of a process that stopped before its flush, and a batch whose flush it did not finish,
// are stored by the next one; a line cut off during its append is skipped.
func TestJournalKeepsRecordsAcrossAStop(t *testing.T) {
	db := testenv.OpenDB(t).DB
	dir := t.TempDir()
	j, err := audit.OpenJournal(db, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []audit.Action{audit.FirmList, audit.DeliveryList} {
		if err := j.Append(audit.Entry{Actor: "admin", Action: a}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(audit.Entry{Actor: "admin", Action: audit.FirmView}); err == nil {
		t.Fatal("a closed journal took a record")
	}
	// An unfinished batch of an earlier flush, its last line cut off.
	batch := `{"at":"2026-12-07T01:00:00Z","actor":"auditor","action":"sandbox.view","object":"","detail":""}` + "\n" + `{"at":"2026-12-07T01:0`
	if err := os.WriteFile(filepath.Join(dir, "audit-journal.flushing.jsonl"), []byte(batch), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err = audit.OpenJournal(db, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := storedActions(t, db); !sameList(got, []string{"sandbox.view", "firm.list", "delivery.list"}) {
		t.Fatalf("after the restart: %v", got)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		if st, err := os.Stat(filepath.Join(dir, e.Name())); err != nil || e.Name() != "audit-journal.jsonl" || st.Size() != 0 {
			t.Fatalf("left in the journal's folder: %s (%v)", e.Name(), err)
		}
	}
}

// While the database refuses the records the journal keeps them, is not ready, and stores them
// once the database takes them again; stopping its stage flushes what is left.
func TestJournalRetriesAndFlushesWhenStopped(t *testing.T) {
	db := testenv.OpenDB(t).DB
	j, err := audit.OpenJournal(db, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Append(audit.Entry{Actor: "admin", Action: audit.PayoutView}); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrator().RenameTable("audit_logs", "audit_logs_away"); err != nil {
		t.Fatal(err)
	}
	if err := j.Flush(context.Background()); err == nil {
		t.Fatal("flush into a missing table succeeded")
	}
	if c := j.Ready(context.Background()); !c.Down {
		t.Fatalf("journal ready while its records cannot be stored: %+v", c)
	}
	if err := j.Append(audit.Entry{Actor: "admin", Action: audit.FirmList}); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrator().RenameTable("audit_logs_away", "audit_logs"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the stage stops at once: its final flush stores both records
	if err := j.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := storedActions(t, db); !sameList(got, []string{"payout.view", "firm.list"}) {
		t.Fatalf("after the stop: %v", got)
	}
	if c := j.Ready(context.Background()); c.Down {
		t.Fatalf("journal down after a good flush: %+v", c)
	}
}
