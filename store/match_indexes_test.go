package store_test

import (
	"context"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// A database created when matches had ix_match_state loses it at migrate time; deferring and
// restoring the bulk-load indexes leaves the table with every index it had.
func TestMatchIndexes(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	m := db.Migrator()
	if err := db.Exec("CREATE INDEX ix_match_state ON matches (policy_id, state)").Error; err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if m.HasIndex(&store.Match{}, "ix_match_state") {
		t.Fatal("migrate kept ix_match_state")
	}
	empty, err := store.MatchesEmpty(ctx, db)
	if err != nil || !empty {
		t.Fatalf("a new database's matches: empty %v, %v", empty, err)
	}
	restore, err := store.DeferMatchIndexes(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if m.HasIndex(&store.Match{}, store.MatchFirmIndex) {
		t.Fatal("the firm index is still there during the bulk load")
	}
	for _, name := range []string{"ux_match", "ix_match_recent"} {
		if !m.HasIndex(&store.Match{}, name) {
			t.Fatalf("the bulk load dropped %s, which it keeps in step", name)
		}
	}
	// Another process's migration may have created it meanwhile: restoring is still no error.
	if err := m.CreateIndex(&store.Match{}, store.MatchFirmIndex); err != nil {
		t.Fatal(err)
	}
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{store.MatchFirmIndex, "ix_match_recent", "ux_match"} {
		if !m.HasIndex(&store.Match{}, name) {
			t.Fatalf("%s is missing after the bulk load", name)
		}
	}
}
