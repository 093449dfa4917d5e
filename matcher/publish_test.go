package matcher

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// fieldRule writes a random rule over a random set of catalog fields, with constants taken from a
// real firm so that some firms match.
func fieldRule(r *rand.Rand, firm *store.Enterprise) string {
	specs, _ := envSpecs()
	keys := make([]string, 0, len(specs))
	for k := range specs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	env := policies.EnvOf(firm, testAsOf)
	v := reflect.ValueOf(env)
	var parts []string
	for range 1 + r.IntN(3) {
		s := specs[keys[r.IntN(len(keys))]]
		f := v.Field(s.index)
		var cond string
		switch s.kind {
		case kindInt:
			cond = fmt.Sprintf("%s %s %d", s.key, []string{"==", ">=", "<="}[r.IntN(3)], f.Int())
		case kindFloat:
			cond = fmt.Sprintf("%s %s %v", s.key, []string{">=", "<="}[r.IntN(2)], f.Float())
		case kindBool:
			cond = fmt.Sprintf("%s == %t", s.key, f.Bool())
		case kindString:
			cond = fmt.Sprintf("%s %s %q", s.key, []string{"==", "!="}[r.IntN(2)], f.String())
		case kindTime:
			cond = fmt.Sprintf("%s != nil", s.key)
		}
		parts = append(parts, cond)
	}
	return strings.Join(parts, " && ")
}

// Publishing, changing and retiring policies in a running engine, over fields no other policy
// reads, leaves the stored matches exactly as a fresh match computes them — at once, through both
// the policy-change path and the catch-up.
func TestPublishedPoliciesMatchAtOnceInARunningEngine(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	firms := registry.Synth(500, 11)
	narrow := &rules.Definition{ID: "narrow", Title: "只读地区", EffectiveFrom: rules.Date{Time: testAsOf.AddDate(-1, 0, 0)},
		Channels: []string{"wechat"}, Eligibility: `hasPrefix(region_code, "32")`}
	seedRegistry(t, db, firms, []*rules.Definition{narrow})
	// Registry data older than the last match, as in a deployment that restarts: the engine's
	// catch-up has no reason to read these firms again.
	if err := db.Model(&store.Enterprise{}).Where("1 = 1").Update("updated_at", time.Now().UTC().AddDate(0, -1, 0)).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&store.MatcherCursor{Name: cursorRegistry, At: time.Now().UTC().AddDate(0, 0, -1)}).Error; err != nil {
		t.Fatal(err)
	}
	asOf := testAsOf
	e := loadedEngine(t, db, &asOf)
	if got := e.Info().Fields; len(got) > 3 {
		t.Fatalf("the engine loaded %v; the test needs a narrow snapshot to start from", got)
	}
	r := rand.New(rand.NewPCG(14, 2))
	var published []string
	for step := range 14 {
		firm := &firms[r.IntN(len(firms))]
		var id string
		switch {
		case len(published) > 2 && r.IntN(4) == 0:
			id = published[r.IntN(len(published))]
			if _, err := policies.Retire(ctx, db, id, policies.Actor{Name: "test", Role: policies.RoleOperator}, "test"); err != nil {
				t.Fatal(err)
			}
			published = slices.DeleteFunc(published, func(s string) bool { return s == id })
		default:
			id = fmt.Sprintf("gen-%d", r.IntN(step+1))
			def := &rules.Definition{ID: id, Title: "随机", EffectiveFrom: rules.Date{Time: testAsOf.AddDate(-1, 0, 0)},
				Channels: []string{"wechat"}, Eligibility: fieldRule(r, firm)}
			if r.IntN(2) == 0 {
				def.Amount = "1000"
			}
			if _, err := policies.Apply(ctx, db, def, "test", "tester"); err != nil {
				t.Fatalf("apply %s: %v", def.Eligibility, err)
			}
			if !slices.Contains(published, id) {
				published = append(published, id)
			}
		}
		var err error
		if step%2 == 0 {
			_, err = e.PolicyChanged(ctx, id)
		} else {
			err = e.CatchUp(ctx)
		}
		if err != nil {
			t.Fatalf("step %d (%s): %v", step, id, err)
		}
		noDifference(t, db, asOf)
	}
}

// A shard worker's cached snapshot gains the columns a new policy reads, with the firms' data, and
// gains nothing when no column is missing.
func TestAddFieldsLoadsOnlyWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	firms := registry.Synth(50, 3)
	seedRegistry(t, db, firms, nil)
	snap, err := LoadSnapshot(ctx, db, LoadOptions{Fields: []string{statusKey, "region_code"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		add  []string
		want []string
	}{
		{add: []string{statusKey, "region_code"}, want: []string{"region_code", statusKey}},
		{add: nil, want: []string{"region_code", statusKey}},
		{add: []string{"employees"}, want: []string{"employees", "region_code", statusKey}},
	} {
		if err := snap.addFields(ctx, db, step.add, nil); err != nil {
			t.Fatal(err)
		}
		if got := snap.Fields(); !slices.Equal(got, step.want) {
			t.Fatalf("after adding %v the snapshot holds %v, want %v", step.add, got, step.want)
		}
	}
	for i := range firms {
		row, ok := snap.row(firms[i].CreditCode)
		if !ok {
			continue
		}
		var env rules.Env
		snap.fill(row, &env)
		if env.Employees != firms[i].Employees {
			t.Fatalf("%s: employees %d in the snapshot, %d in the registry", firms[i].CreditCode, env.Employees, firms[i].Employees)
		}
	}
}
