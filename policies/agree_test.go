package policies_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/policytext"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// These tests run against the real database (SQLite, or MariaDB when POLICYPUSH_TEST_MYSQL_DSN is
// set) and the real matcher, the way `match` and `explain` meet in production.

var demoAsOf = time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)

func seedFirms(t *testing.T, db *gorm.DB, firms []store.Enterprise) {
	t.Helper()
	if err := db.CreateInBatches(firms, 200).Error; err != nil {
		t.Fatal(err)
	}
}

func applyDir(t *testing.T, db *gorm.DB, dir string) []*rules.Definition {
	t.Helper()
	defs, errs := rules.LoadDir(dir)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	fixture.Publish(t, db, defs, dir, "test")
	return defs
}

type pair struct{ policy, firm string }

// activeMatches reads the active matches with their amounts.
func activeMatches(t *testing.T, db *gorm.DB) map[pair]*float64 {
	t.Helper()
	var rows []store.Match
	if err := db.Where("state = ?", store.MatchActive).Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[pair]*float64{}
	for _, m := range rows {
		out[pair{m.PolicyID, m.CreditCode}] = m.Amount
	}
	return out
}

func allEnvs(t *testing.T, db *gorm.DB, asOf time.Time) []rules.Env {
	t.Helper()
	var firms []store.Enterprise
	if err := db.Order("credit_code").Find(&firms).Error; err != nil {
		t.Fatal(err)
	}
	envs := make([]rules.Env, len(firms))
	for i := range firms {
		envs[i] = policies.EnvOf(&firms[i], asOf)
	}
	return envs
}

// sameAmount: amounts are exact to the fen, so equal means equal.
func sameAmount(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// TestExplainAgreesWithMatch: for every (policy, firm) pair of the demo catalog over a synthetic
// registry — firms in business or not — explain's verdict and amount are what `match` stored.
func TestExplainAgreesWithMatch(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	seedFirms(t, db, registry.Synth(1500, 11))
	fixture.PublishDemo(t, db)
	if _, err := matcher.Run(ctx, db, demoAsOf, "", matcher.Options{}); err != nil {
		t.Fatal(err)
	}
	matched := activeMatches(t, db)
	published, err := policies.LoadPublished(ctx, db, "")
	if err != nil {
		t.Fatal(err)
	}
	envs := allEnvs(t, db, demoAsOf)
	pairs, eligible := 0, 0
	for _, p := range published {
		for i := range envs {
			ex, err := rules.Explain(p, &envs[i])
			if err != nil {
				t.Fatal(err)
			}
			amount, ok := matched[pair{p.Def.ID, envs[i].CreditCode}]
			if ex.Eligible != ok || (ok && !sameAmount(ex.Amount, amount)) {
				t.Fatalf("%s / %s: explain says %v %v, match stored %v %v (%s)", p.Def.ID, envs[i].CreditCode,
					ex.Eligible, ex.Amount, ok, amount, ex.Summary)
			}
			pairs++
			if ex.Eligible {
				eligible++
			}
		}
	}
	if eligible != len(matched) || eligible < 1000 {
		t.Fatalf("%d eligible pairs explained, %d matches stored", eligible, len(matched))
	}
	t.Logf("%d pairs agree, %d eligible", pairs, eligible)

	// The database path the CLI and the console use, on a sample: published version, and a replay
	// of a stored match.
	var m store.Match
	if err := db.Where("state = ?", store.MatchActive).Order("id").Take(&m).Error; err != nil {
		t.Fatal(err)
	}
	for _, req := range []policies.ExplainRequest{{PolicyID: m.PolicyID, CreditCode: m.CreditCode, AsOf: demoAsOf}, {MatchID: m.ID}} {
		ex, err := policies.ExplainFirm(ctx, db, req)
		if err != nil {
			t.Fatal(err)
		}
		if !ex.Eligible || ex.Version != m.PolicyVersion || !sameAmount(ex.Amount, m.Amount) || ex.AsOf != "2022-09-30" {
			t.Fatalf("ExplainFirm(%+v): %+v, match %+v", req, ex, m)
		}
	}
	if _, err := policies.ExplainFirm(ctx, db, policies.ExplainRequest{PolicyID: m.PolicyID, CreditCode: "91000000000000000X", AsOf: demoAsOf}); err == nil ||
		!strings.Contains(err.Error(), "not in the registry") {
		t.Fatalf("unknown firm: %v", err)
	}

	// The firm page explains a firm's matches together: each as ExplainFirm explains it alone.
	var ms []store.Match
	if err := db.Where("state = ?", store.MatchActive).Order("credit_code, policy_id").Limit(60).Find(&ms).Error; err != nil {
		t.Fatal(err)
	}
	ids := []uint64{}
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	ids = append(ids, 999999999)
	got, errs := policies.ExplainMatches(ctx, db, ids)
	for i, id := range ids[:len(ids)-1] {
		want, err := policies.ExplainFirm(ctx, db, policies.ExplainRequest{MatchID: id})
		if err != nil || errs[i] != nil {
			t.Fatalf("match %d: %v / %v", id, err, errs[i])
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Fatalf("match %d explained together:\n%+v\nalone:\n%+v", id, got[i], want)
		}
	}
	if !errors.Is(errs[len(ids)-1], policies.ErrNotFound) {
		t.Fatalf("a match that does not exist: %v", errs[len(ids)-1])
	}
}

// TestExplainAgainstIndependentComputation: on a held-out registry (a seed no other test uses),
// every condition of every demo policy, the verdict and the amount agree with plain Go.
func TestExplainAgainstIndependentComputation(t *testing.T) {
	demo := demoCatalog(t)
	rules.Link(demo)
	firms := registry.Synth(1200, 20220930)
	eligible := map[string]int{}
	texts := map[string]*policytext.Policy{}
	for i := range policytext.Policies {
		texts[policytext.Policies[i].ID] = &policytext.Policies[i]
	}
	for _, p := range demo {
		want, ok := texts[p.Def.ID]
		if !ok {
			t.Fatalf("no expectation for %s", p.Def.ID)
		}
		for _, f := range firms {
			env := policies.EnvOf(&f, demoAsOf)
			ex, err := rules.Explain(p, &env)
			if err != nil {
				t.Fatal(err)
			}
			conds := want.Conditions(&f, demoAsOf)
			if len(conds) != len(ex.Conditions) {
				t.Fatalf("%s: %d conditions, expected %d", p.Def.ID, len(ex.Conditions), len(conds))
			}
			for i, c := range conds {
				if ex.Conditions[i].Holds == nil || *ex.Conditions[i].Holds != c {
					t.Fatalf("%s / %s: condition %q = %v, independently %v", p.Def.ID, f.CreditCode, ex.Conditions[i].Text, ex.Conditions[i].Holds, c)
				}
			}
			holds := want.Holds(&f, demoAsOf)
			if ex.Eligible != holds {
				t.Fatalf("%s / %s: eligible %v, independently %v", p.Def.ID, f.CreditCode, ex.Eligible, holds)
			}
			if holds {
				eligible[p.Def.ID]++
				var amount *float64
				if want.Amount != nil {
					amount = want.Amount(&f)
				}
				if !sameAmount(ex.Amount, amount) {
					t.Fatalf("%s / %s: amount %v, independently %v", p.Def.ID, f.CreditCode, ex.Amount, amount)
				}
			}
		}
	}
	for id, n := range eligible {
		if n < 20 {
			t.Errorf("%s: only %d eligible firms in the held-out set: it no longer exercises the policy", id, n)
		}
	}
}
