package policies_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
)

// sqlRecorder is a gorm logger that keeps the statements it sees.
type sqlRecorder struct {
	mu  sync.Mutex
	sql []string
}

func (r *sqlRecorder) LogMode(logger.LogLevel) logger.Interface      { return r }
func (r *sqlRecorder) Info(context.Context, string, ...interface{})  {}
func (r *sqlRecorder) Warn(context.Context, string, ...interface{})  {}
func (r *sqlRecorder) Error(context.Context, string, ...interface{}) {}
func (r *sqlRecorder) Trace(_ context.Context, _ time.Time, fc func() (string, int64), _ error) {
	s, _ := fc()
	r.mu.Lock()
	r.sql = append(r.sql, s)
	r.mu.Unlock()
}

// catalogReads are the statements of r that read policy_versions, and how many of them read the
// versions' sources (every column).
func (r *sqlRecorder) catalogReads() (reads, withSources int) {
	for _, s := range r.sql {
		if strings.Contains(s, "policy_versions") {
			reads++
			if strings.Contains(s, "v.*") {
				withSources++
			}
		}
	}
	return reads, withSources
}

func versionsOf(ps []*rules.Policy) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s@%d", p.Def.ID, p.Version))
	}
	slices.Sort(out)
	return out
}

// LoadPublished reads the published versions' sources only when one of them is not compiled yet:
// once the catalog is compiled, a call reads the versions' keys alone (the firm page loads the
// catalog at every request), and a newly published version brings the full read back once.
func TestLoadPublishedReadsSourcesOnlyForNewVersions(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	fixture.PublishDemo(t, db)
	first, err := policies.LoadPublished(ctx, db, "")
	if err != nil {
		t.Fatal(err)
	}
	load := func() ([]*rules.Policy, *sqlRecorder) {
		t.Helper()
		rec := &sqlRecorder{}
		ps, err := policies.LoadPublished(ctx, db.Session(&gorm.Session{Logger: rec}), "")
		if err != nil {
			t.Fatal(err)
		}
		return ps, rec
	}

	again, rec := load()
	if reads, full := rec.catalogReads(); reads != 1 || full != 0 {
		t.Errorf("compiled catalog: %d reads of policy_versions, %d with sources, want 1 and 0:\n%s", reads, full, strings.Join(rec.sql, "\n"))
	}
	if got, want := versionsOf(again), versionsOf(first); !slices.Equal(got, want) {
		t.Errorf("catalog from the keys: %v, want %v", got, want)
	}
	for _, p := range again {
		if p.Eligibility == nil {
			t.Errorf("%s: no program", p.Def.ID)
		}
	}

	// a policy no test of this process has compiled (the compiled versions are the process's)
	id := fmt.Sprintf("cache-probe-%d", time.Now().UnixNano())
	applyDir(t, db, writePolicy(t, strings.Replace(xinaPolicy, "id: xina-jiuye-2022", "id: "+id, 1)))
	withNew, rec := load()
	if _, full := rec.catalogReads(); full != 1 {
		t.Errorf("a new version: %d reads with sources, want 1:\n%s", full, strings.Join(rec.sql, "\n"))
	}
	if got := versionsOf(withNew); !slices.Contains(got, id+"@1") || len(got) != len(first)+1 {
		t.Errorf("catalog with the new policy: %v", got)
	}
	_, rec = load()
	if _, full := rec.catalogReads(); full != 0 {
		t.Errorf("the new version was not kept compiled:\n%s", strings.Join(rec.sql, "\n"))
	}
}
