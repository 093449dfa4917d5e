package policies_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// 一次性吸纳就业补贴, which the demo's 一次性扩岗补助 excludes (不得重复享受). It starts earlier, so a
// firm eligible for both gets it.
const xinaPolicy = `id: xina-jiuye-2022
title: 一次性吸纳就业补贴
effective_from: 2022-01-01
effective_to: 2022-12-31
eligibility: graduates_hired > 0 && insured_employees >= graduates_hired
amount: 1000 * graduates_hired
channels: [wechat]
`

func writePolicy(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runMatch(t *testing.T, db *gorm.DB, o matcher.Options) {
	t.Helper()
	if _, err := matcher.Run(context.Background(), db, demoAsOf, "", o); err != nil {
		t.Fatal(err)
	}
}

// The matcher honours 不得重复享受 on every path, and explain names the rule that excluded a firm.
func TestExclusionsInMatching(t *testing.T) {
	for _, path := range []struct {
		name string
		o    matcher.Options
	}{{"engine", matcher.Options{}}, {"plain", matcher.Options{Plain: true}}} {
		t.Run(path.name, func(t *testing.T) {
			ctx := context.Background()
			db := testenv.OpenDB(t).DB
			seedFirms(t, db, registry.Synth(1500, 11))
			fixture.PublishDemo(t, db)
			applyDir(t, db, writePolicy(t, xinaPolicy))
			runMatch(t, db, path.o)
			matched := activeMatches(t, db)
			kuogang, err := policies.LoadPublished(ctx, db, "kuogang-buzhu-2022")
			if err != nil {
				t.Fatal(err)
			}
			both, xina := 0, 0
			for _, env := range allEnvs(t, db, demoAsOf) {
				_, k := matched[pair{"kuogang-buzhu-2022", env.CreditCode}]
				_, x := matched[pair{"xina-jiuye-2022", env.CreditCode}]
				if k && x {
					t.Fatalf("%s has both exclusive policies", env.CreditCode)
				}
				if x {
					xina++
				}
				rule, err := kuogang[0].EvaluateRule(&env)
				if err != nil || !rule.Eligible || env.Status != store.StatusActive {
					continue
				}
				both++
				if k || !x {
					t.Fatalf("%s is eligible for both: it must get xina-jiuye-2022 only (kuogang %v, xina %v)", env.CreditCode, k, x)
				}
				ex, err := rules.Explain(kuogang[0], &env)
				if err != nil {
					t.Fatal(err)
				}
				if ex.Eligible || ex.Excluded == nil || ex.Excluded.PolicyID != "xina-jiuye-2022" || ex.Summary != "不符合："+ex.Excluded.Reason {
					t.Fatalf("%s: explanation %+v", env.CreditCode, ex)
				}
			}
			if both < 50 || xina < both {
				t.Fatalf("only %d firms eligible for both, %d xina matches", both, xina)
			}
		})
	}
}

// once_per: firm — a firm that received version 1, lost it and qualifies again is not matched by
// version 2; firms that kept qualifying move to version 2 silently; a newcomer is matched.
func TestOncePerFirmAcrossVersions(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	firms := registry.Synth(400, 5)
	seedFirms(t, db, firms)
	v1 := "id: once-2022\ntitle: 每个单位一次\neffective_from: 2022-01-01\neligibility: insured_employees >= 10\namount: \"100\"\nonce_per: firm\nchannels: [wechat]\n"
	applyDir(t, db, writePolicy(t, v1))
	runMatch(t, db, matcher.Options{})
	before := activeMatches(t, db)
	var lost, kept, newcomer string
	for _, f := range firms {
		_, ok := before[pair{"once-2022", f.CreditCode}]
		switch {
		case f.Status != store.StatusActive:
		case ok && lost == "":
			lost = f.CreditCode
		case ok && kept == "":
			kept = f.CreditCode
		case !ok && newcomer == "" && f.InsuredEmployees < 10:
			newcomer = f.CreditCode
		}
	}
	if lost == "" || kept == "" || newcomer == "" {
		t.Fatal("the registry lacks the firms this test needs")
	}
	set := func(code string, insured int) {
		if err := db.Model(&store.Enterprise{}).Where("credit_code = ?", code).Update("insured_employees", insured).Error; err != nil {
			t.Fatal(err)
		}
	}
	set(lost, 1)
	runMatch(t, db, matcher.Options{})
	if _, ok := activeMatches(t, db)[pair{"once-2022", lost}]; ok {
		t.Fatal("the firm that no longer qualifies kept its match")
	}
	applyDir(t, db, writePolicy(t, v1+"summary: 第二版\n"))
	set(lost, 50)
	set(newcomer, 50)
	runMatch(t, db, matcher.Options{})
	after := activeMatches(t, db)
	if _, ok := after[pair{"once-2022", lost}]; ok {
		t.Error("a firm that already received version 1 was matched again by version 2")
	}
	if _, ok := after[pair{"once-2022", newcomer}]; !ok {
		t.Error("a firm that never received the policy was not matched by version 2")
	}
	var m store.Match
	if err := db.Where("policy_id = ? AND credit_code = ? AND state = ?", "once-2022", kept, store.MatchActive).Take(&m).Error; err != nil || m.PolicyVersion != 2 {
		t.Errorf("a firm that kept qualifying should hold its match under version 2: %+v %v", m, err)
	}
	ex, err := policies.ExplainFirm(ctx, db, policies.ExplainRequest{PolicyID: "once-2022", CreditCode: lost, AsOf: demoAsOf})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Eligible || ex.Excluded == nil || ex.Excluded.Rule != rules.RuleOncePer || ex.Excluded.Version != 1 {
		t.Errorf("explanation of the once-per exclusion: %+v", ex)
	}
}
