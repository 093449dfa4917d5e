package policies_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

const lifecyclePolicy = `id: wengang-test
title: 稳岗返还（测试）
department: 人社厅
effective_from: 2022-01-01
params:
  cut: 10
eligibility: insured_employees >= params.cut && tax_credit_rating != "D"
amount: 100 * insured_employees
channels: [wechat]
tests:
  - firm: {insured_employees: 10, tax_credit_rating: B}
    eligible: true
    amount: 1000
`

func parseDef(t *testing.T, body string) *rules.Definition {
	t.Helper()
	d, err := rules.Parse("policy.yaml", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func auditActions(t *testing.T, db *gorm.DB, object string) []string {
	t.Helper()
	var rows []store.AuditLog
	if err := db.Where("object = ?", object).Order("id").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.Actor+":"+r.Action)
	}
	return out
}

func users(t *testing.T, db *gorm.DB, list ...store.User) {
	t.Helper()
	for _, u := range list {
		u.PasswordHash = "x"
		if err := db.Create(&u).Error; err != nil {
			t.Fatal(err)
		}
	}
}

func actor(t *testing.T, db *gorm.DB, name string) policies.Actor {
	t.Helper()
	a, err := policies.ResolveActor(context.Background(), db, name)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	seedFirms(t, db, registry.Synth(600, 8))
	users(t, db,
		store.User{Username: "alice", Role: store.RoleAuthor, Department: "人社厅"},
		store.User{Username: "carol", Role: store.RoleAuthor, Department: "税务局"},
		store.User{Username: "bob", Role: store.RoleReviewer},
		store.User{Username: "root", Role: store.RoleAdmin})
	alice, bob, carol, root := actor(t, db, "alice"), actor(t, db, "bob"), actor(t, db, "carol"), actor(t, db, "root")
	if _, err := policies.ResolveActor(ctx, db, "mallory"); !errors.Is(err, policies.ErrForbidden) {
		t.Fatalf("an unknown user: %v", err)
	}

	def := parseDef(t, lifecyclePolicy)
	for _, who := range []policies.Actor{bob, carol, root} {
		if _, err := policies.SaveDraft(ctx, db, def, who, "policy.yaml"); !errors.Is(err, policies.ErrForbidden) {
			t.Errorf("%s (%s) saved a draft: %v", who.Name, who.Role, err)
		}
	}
	v1, err := policies.SaveDraft(ctx, db, def, alice, "policy.yaml")
	if err != nil || v1.Version != 1 || v1.State != store.VersionDraft || v1.Author != "alice" {
		t.Fatalf("draft: %+v %v", v1, err)
	}
	if again, err := policies.SaveDraft(ctx, db, def, alice, "policy.yaml"); err != nil || again.Version != 1 {
		t.Fatalf("the same draft again must be a no-op: %+v %v", again, err)
	}
	if _, err := policies.Review(ctx, db, def.ID, 0, bob, true, ""); !errors.Is(err, policies.ErrNotFound) {
		t.Fatalf("reviewing a draft that was not submitted: %v", err)
	}
	if _, err := policies.Submit(ctx, db, def.ID, 0, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.Review(ctx, db, def.ID, 0, alice, true, ""); !errors.Is(err, policies.ErrForbidden) {
		t.Fatalf("the author approved her own draft: %v", err)
	}
	if _, err := policies.Review(ctx, db, def.ID, 0, bob, false, ""); err == nil || !strings.Contains(err.Error(), "--reason") {
		t.Fatalf("a rejection without a reason: %v", err)
	}
	if v, err := policies.Review(ctx, db, def.ID, 0, bob, true, "符合文件"); err != nil || v.State != store.VersionApproved || v.Reviewer != "bob" {
		t.Fatalf("approve: %+v %v", v, err)
	}
	if _, err := policies.Publish(ctx, db, def.ID, 0, alice, demoAsOf); !errors.Is(err, policies.ErrForbidden) {
		t.Fatalf("the author published: %v", err)
	}
	res, err := policies.Publish(ctx, db, def.ID, 0, bob, demoAsOf)
	if err != nil || res.Version != 1 || res.OldVersion != 0 || res.Preview.New == 0 || !res.Preview.TestsPassed {
		t.Fatalf("publish: %+v %v", res, err)
	}
	published, err := policies.LoadPublished(ctx, db, def.ID)
	if err != nil || len(published) != 1 || published[0].Version != 1 {
		t.Fatalf("published: %v %v", published, err)
	}

	// Version 2 raises the cut; it is rejected once, then fixed, approved and published. Version 1
	// is never edited.
	v1Row := loadVersion(t, db, def.ID, 1)
	def2 := parseDef(t, strings.Replace(lifecyclePolicy, "cut: 10", "cut: 20", 1))
	if _, err := policies.SaveDraft(ctx, db, def2, alice, "policy.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.Submit(ctx, db, def.ID, 0, alice); err == nil || !strings.Contains(err.Error(), "test case(s) fail") {
		t.Fatalf("a draft whose tests fail was submitted: %v", err)
	}
	def3 := parseDef(t, strings.NewReplacer("cut: 10", "cut: 20", "insured_employees: 10,", "insured_employees: 20,", "amount: 1000", "amount: 2000").Replace(lifecyclePolicy))
	v3, err := policies.SaveDraft(ctx, db, def3, alice, "policy.yaml")
	if err != nil || v3.Version != 3 || loadVersion(t, db, def.ID, 2).State != store.VersionWithdrawn {
		t.Fatalf("a new draft withdraws the open one: %+v %v", v3, err)
	}
	if _, err := policies.Submit(ctx, db, def.ID, 0, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.Review(ctx, db, def.ID, 0, bob, false, "请注明依据"); err != nil {
		t.Fatal(err)
	}
	if loadVersion(t, db, def.ID, 3).State != store.VersionRejected {
		t.Fatal("rejected version not marked")
	}
	def4 := parseDef(t, strings.Replace(def3Body(), "title: 稳岗返还（测试）", "title: 稳岗返还（测试，依据 23 号文）", 1))
	if _, err := policies.SaveDraft(ctx, db, def4, alice, "policy.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := policies.Submit(ctx, db, def.ID, 0, alice); return err },
		func() error { _, err := policies.Review(ctx, db, def.ID, 0, bob, true, ""); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	res, err = policies.Publish(ctx, db, def.ID, 0, bob, demoAsOf)
	if err != nil || res.Version != 4 || res.OldVersion != 1 || res.Preview.Dropped == 0 || res.Preview.CurrentVersion != 1 {
		t.Fatalf("publish v4: %+v %v", res, err)
	}
	if got := loadVersion(t, db, def.ID, 1); got.State != store.VersionReplaced || got.Source != v1Row.Source || got.ContentHash != v1Row.ContentHash {
		t.Fatalf("version 1 changed: %+v", got)
	}

	diff, err := policies.Diff(ctx, db, def.ID, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, c := range diff.Changes {
		fields = append(fields, c.Field)
	}
	if strings.Join(fields, ",") != "title,params.cut,tests[0]" {
		t.Errorf("diff fields %v", fields)
	}
	reviews, _ := policies.Reviews(ctx, db, def.ID)
	if len(reviews) != 3 || reviews[1].Decision != store.VersionRejected || reviews[1].Reason != "请注明依据" {
		t.Errorf("reviews %+v", reviews)
	}

	if _, err := policies.Retire(ctx, db, def.ID, alice, ""); !errors.Is(err, policies.ErrForbidden) {
		t.Fatalf("an author retired: %v", err)
	}
	if err := db.Create(&store.Match{PolicyID: def.ID, PolicyVersion: 4, CreditCode: "X", State: store.MatchActive, AsOf: demoAsOf, MatchedAt: demoAsOf}).Error; err != nil {
		t.Fatal(err)
	}
	// The firm in the registry and the match counted (store.MatchCount), so retiring moves a count.
	if err := db.Create(&store.Enterprise{CreditCode: "X", RegionCode: "320505", ParkID: "SIP"}).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.Recount(ctx, db, true); err != nil {
		t.Fatal(err)
	}
	ret, err := policies.Retire(ctx, db, def.ID, bob, "政策到期")
	if err != nil || ret.MatchesRevoked != 1 {
		t.Fatalf("retire: %+v %v", ret, err)
	}
	if rep, err := store.Recount(ctx, db, false); err != nil || len(rep.Diffs) > 0 || rep.Matches != 1 {
		t.Fatalf("match counts after retiring: %+v %v", rep, err)
	}
	if ps, _ := policies.LoadPublished(ctx, db, def.ID); len(ps) != 0 {
		t.Error("a retired policy is still loaded for matching")
	}

	want := []string{"alice:policy.draft", "alice:policy.submit", "bob:policy.approve", "bob:policy.publish",
		"alice:policy.draft", "alice:policy.draft", "alice:policy.submit", "bob:policy.reject", "alice:policy.draft",
		"alice:policy.submit", "bob:policy.approve", "bob:policy.publish", "bob:policy.retire"}
	if got := auditActions(t, db, def.ID); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("audit trail:\n got %v\nwant %v", got, want)
	}
	var pub store.AuditLog
	db.Where("object = ? AND action = ?", def.ID, "policy.publish").Order("id DESC").Take(&pub)
	var detail map[string]any
	if err := json.Unmarshal([]byte(pub.Detail), &detail); err != nil || detail["old_version"] != 1.0 || detail["new_version"] != 4.0 || detail["preview"] == nil {
		t.Errorf("publish audit detail: %s", pub.Detail)
	}
}

func def3Body() string {
	return strings.NewReplacer("cut: 10", "cut: 20", "insured_employees: 10,", "insured_employees: 20,", "amount: 1000", "amount: 2000").Replace(lifecyclePolicy)
}

func loadVersion(t *testing.T, db *gorm.DB, id string, v int) store.PolicyVersion {
	t.Helper()
	var row store.PolicyVersion
	if err := db.Where("policy_id = ? AND version = ?", id, v).Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	return row
}

// Without accounts the CLI runs as an operator; the two-person rule still holds by name.
func TestLifecycleOperatorMode(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	ops := actor(t, db, "ops")
	if ops.Role != policies.RoleOperator {
		t.Fatalf("role %q", ops.Role)
	}
	def := parseDef(t, lifecyclePolicy)
	if _, err := policies.SaveDraft(ctx, db, def, ops, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.Submit(ctx, db, def.ID, 0, ops); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.Review(ctx, db, def.ID, 0, ops, true, ""); !errors.Is(err, policies.ErrForbidden) || !strings.Contains(err.Error(), "two-person rule") {
		t.Fatalf("self-review in operator mode: %v", err)
	}
	if _, err := policies.Review(ctx, db, def.ID, 0, actor(t, db, "ops2"), true, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := policies.ResolveActor(ctx, db, " "); err == nil {
		t.Fatal("an empty --by was accepted")
	}
}

// The preview counts new, kept and dropped firms exactly as matching would decide them.
func TestPreviewCounts(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	seedFirms(t, db, registry.Synth(800, 9))
	applyDir(t, db, writePolicy(t, lifecyclePolicy))
	cand := parseDef(t, def3Body())
	rep, err := policies.Preview(ctx, db, cand, demoAsOf, 3)
	if err != nil {
		t.Fatal(err)
	}
	var newN, kept, dropped, active int
	for _, env := range allEnvs(t, db, demoAsOf) {
		if env.Status != store.StatusActive {
			continue
		}
		active++
		before := env.InsuredEmployees >= 10 && env.TaxCreditRating != "D"
		after := env.InsuredEmployees >= 20 && env.TaxCreditRating != "D"
		switch {
		case after && !before:
			newN++
		case after:
			kept++
		case before:
			dropped++
		}
	}
	if rep.Firms != active || rep.New != newN || rep.Kept != kept || rep.Dropped != dropped || rep.CurrentVersion != 1 || rep.Version != 2 {
		t.Fatalf("preview %+v; independently %d firms, new %d kept %d dropped %d", rep, active, newN, kept, dropped)
	}
	if dropped == 0 || len(rep.Samples.Dropped) != 3 || rep.Samples.Dropped[0].Why == "" || !rep.TestsPassed {
		t.Fatalf("samples %+v", rep.Samples)
	}
	for _, groups := range [][]rules.PreviewGroup{rep.ByRegion, rep.ByPark, rep.ByIndustry, rep.ByDivision} {
		n, k, d := 0, 0, 0
		for _, g := range groups {
			n, k, d = n+g.New, k+g.Kept, d+g.Dropped
		}
		if n != rep.New || k != rep.Kept || d != rep.Dropped {
			t.Fatalf("groups do not add up: %+v", groups)
		}
	}
	if len(rep.ByRegion[0].Key) != 4 || len(rep.ByIndustry[0].Key) != 1 {
		t.Errorf("group keys: %+v %+v", rep.ByRegion[0], rep.ByIndustry[0])
	}
}

// Extra field values are imported by CSV, attached to firms and matched on.
func TestFactsImport(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	voc, err := rules.NewVocabulary(registry.Field{Key: "rd_staff", Label: "研发人员数", Type: "int"},
		registry.Field{Key: "park_rating", Label: "园区信用评级", Type: "enum", Enum: []string{"A", "B"}})
	if err != nil {
		t.Fatal(err)
	}
	withVoc := rules.WithVocabulary(voc)
	firms := registry.Synth(3, 1)
	seedFirms(t, db, firms)
	csv := "credit_code,rd_staff,园区信用评级\n" +
		firms[0].CreditCode + ",12,A\n" +
		firms[1].CreditCode + ",abc,C\n" +
		firms[2].CreditCode + ",3,\n" +
		"NOTACODE,1,A\n"
	sum, err := policies.ImportFacts(ctx, db, strings.NewReader(csv), withVoc)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 4 || sum.Stored != 3 || len(sum.Problems) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	envs := allEnvs(t, db, demoAsOf)
	if err := policies.AttachExtraFacts(ctx, db, envs, withVoc); err != nil {
		t.Fatal(err)
	}
	byCode := map[string]rules.Env{}
	for _, e := range envs {
		byCode[e.CreditCode] = e
	}
	if e := byCode[firms[0].CreditCode]; e.Extra["rd_staff"] != 12 || e.Extra["park_rating"] != "A" {
		t.Errorf("firm 0 facts %v", e.Extra)
	}
	if e := byCode[firms[2].CreditCode]; e.Extra["rd_staff"] != 3 || e.Extra["park_rating"] != nil {
		t.Errorf("firm 2 facts %v", e.Extra)
	}
	if _, err := policies.ImportFacts(ctx, db, strings.NewReader("credit_code,unknown\n"), withVoc); err == nil || !strings.Contains(err.Error(), "not an extra field") {
		t.Errorf("unknown column: %v", err)
	}
}
