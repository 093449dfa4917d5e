package matcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// seedRegistry writes firms and publishes policies.
func seedRegistry(t *testing.T, db *gorm.DB, firms []store.Enterprise, defs []*rules.Definition, opts ...rules.Option) {
	t.Helper()
	ctx := context.Background()
	if err := db.WithContext(ctx).CreateInBatches(firms, 25).Error; err != nil {
		t.Fatal(err)
	}
	fixture.Publish(t, db, defs, "test", "tester", opts...)
}

// catchUp runs one catch-up round of e.
func catchUp(ctx context.Context, t *testing.T, e *Engine) {
	t.Helper()
	if err := e.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// bulkEdit adds more to the employees of the firms where selects, as an import of a large share of
// the registry would, and wants at least bulkFloor rows changed.
func bulkEdit(t *testing.T, db *gorm.DB, where string, more int) {
	t.Helper()
	bulk := db.Model(&store.Enterprise{}).Where(where).
		Updates(map[string]any{"employees": gorm.Expr(fmt.Sprintf("employees + %d", more)), "updated_at": time.Now().UTC()})
	if bulk.Error != nil || bulk.RowsAffected < bulkFloor {
		t.Fatalf("bulk edit: %v, %d rows", bulk.Error, bulk.RowsAffected)
	}
}

// storedState renders the stored matches and evaluation errors, for comparing databases.
var storedState = fixture.StoredMatches

func sameStrings(t *testing.T, what string, want, got []string) {
	t.Helper()
	if strings.Join(want, "\n") == strings.Join(got, "\n") {
		return
	}
	w := map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	var diff []string
	for _, s := range got {
		if !w[s] {
			diff = append(diff, "+ "+s)
		}
		delete(w, s)
	}
	for s := range w {
		diff = append(diff, "- "+s)
	}
	sort.Strings(diff)
	t.Fatalf("%s: %d lines differ (want %d, got %d), e.g.\n%s", what, len(diff), len(want), len(got), strings.Join(diff[:min(8, len(diff))], "\n"))
}

// noDifference asserts that a plain full match finds the stored matches current.
func noDifference(t *testing.T, db *gorm.DB, asOf time.Time) {
	t.Helper()
	sum, err := Run(context.Background(), db, asOf, "", Options{Plain: true, SubjectPrefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sum.Policies {
		if p.New+p.Revoked+p.Updated != 0 {
			t.Fatalf("stored matches are not current: a plain match of %s adds %d, revokes %d, updates %d", p.PolicyID, p.New, p.Revoked, p.Updated)
		}
	}
}

// The engine run stores exactly what the plain run stores: matches, amounts, states, errors.
func TestRunStoresWhatPlainRunStores(t *testing.T) {
	ctx := context.Background()
	firms := oddFirms(2500, 3)
	for i := range firms {
		if math.IsNaN(firms[i].AnnualRevenue) || math.IsInf(firms[i].AnnualRevenue, 0) || firms[i].AnnualRevenue > 1e300 {
			firms[i].AnnualRevenue = 0 // databases hold no NaN or infinities
		}
	}
	g := &ruleGen{}
	defs := append(fixture.DemoDefinitions(t), SynthCatalog(40, 2)...)
	for i, src := range []string{`employees % graduates_hired == 0 || is_high_tech`, `int(industry_code) > 0 || in_region("3205")`} {
		g.params = map[string]any{}
		defs = append(defs, &rules.Definition{ID: fmt.Sprintf("odd-%d", i), Title: "odd", EffectiveFrom: rules.Date{Time: testAsOf},
			Channels: []string{"sms"}, Eligibility: src, Amount: "employees / 2"})
	}
	engineDB, plainDB := testenv.OpenDB(t).DB, testenv.OpenDB(t).DB
	seedRegistry(t, engineDB, firms, defs)
	seedRegistry(t, plainDB, firms, defs)
	// The engine's run into the empty table is a bulk load (it builds the firm index after the
	// rows): it must store what the plain run stores.
	got, err := Run(ctx, engineDB, testAsOf, "", Options{SubjectPrefix: "t", BulkLoadFirms: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got.Phases.Index <= 0 {
		t.Fatalf("bulk load on %s built no index afterwards", engineDB.Dialector.Name())
	}
	names := []string{store.MatchFirmIndex, store.MatchPlaceIndex, "ux_match"}
	if engineDB.Dialector.Name() == "sqlite" {
		names = append(names, store.RecentMatchIndex)
	}
	for _, name := range names {
		if !engineDB.Migrator().HasIndex(&store.Match{}, name) {
			t.Fatalf("index %s of matches is missing after the bulk load", name)
		}
	}
	want, err := Run(ctx, plainDB, testAsOf, "", Options{Plain: true, SubjectPrefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Firms != want.Firms || len(got.Policies) != len(want.Policies) {
		t.Fatalf("summaries differ: %d firms, %d policies vs %d, %d", got.Firms, len(got.Policies), want.Firms, len(want.Policies))
	}
	errs := 0
	for i := range got.Policies {
		g, w := got.Policies[i], want.Policies[i]
		if g != w {
			t.Fatalf("policy results differ:\nengine %+v\nplain  %+v", g, w)
		}
		errs += g.Errors
	}
	if errs == 0 {
		t.Fatal("no rule failed for any firm: the test no longer covers evaluation errors")
	}
	sameStrings(t, "stored state", storedState(t, plainDB), storedState(t, engineDB))
	// The engine writes the new matches of many policies together, so its notice batches group
	// matches differently: the notices they hold are the same.
	noticesP := noticeSet(t, plainDB)
	if len(noticesP) == 0 {
		t.Fatal("the plain run queued no notice")
	}
	sameStrings(t, "queued notices", noticesP, noticeSet(t, engineDB))
	again, err := Run(ctx, engineDB, testAsOf, "", Options{SubjectPrefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range again.Policies {
		if p.New+p.Revoked+p.Updated != 0 {
			t.Fatalf("second run changed %s: %+v", p.PolicyID, p)
		}
	}
}

func loadedEngine(t *testing.T, db *gorm.DB, asOf *time.Time) *Engine {
	t.Helper()
	e := NewEngine(db, EngineOptions{SubjectPrefix: "t", AsOf: func() time.Time { return *asOf }})
	if err := e.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

func firmByCode(t *testing.T, db *gorm.DB, code string) store.Enterprise {
	t.Helper()
	var f store.Enterprise
	if err := db.Where("credit_code = ?", code).Take(&f).Error; err != nil {
		t.Fatal(err)
	}
	return f
}

func matchState(t *testing.T, db *gorm.DB, policy, code string) (state string, amount *float64) {
	t.Helper()
	var ms []store.Match
	db.Where("policy_id = ? AND credit_code = ?", policy, code).Order("id DESC").Find(&ms)
	if len(ms) == 0 {
		return "", nil
	}
	return ms[0].State, ms[0].Amount
}

func outboxCount(db *gorm.DB) int64 {
	var n int64
	db.Model(&store.Outbox{}).Count(&n)
	return n
}

// A change event re-matches one firm: a new match with its notice, a lost one revoked, a returning
// one reactivated without a second notice — and afterwards the stored matches are exactly what a
// full plain match would store.
func TestApplyChangesRematchesTheFirm(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	seedRegistry(t, db, registry.Synth(1500, 4), fixture.DemoDefinitions(t))
	asOf := testAsOf
	e := loadedEngine(t, db, &asOf)
	noDifference(t, db, asOf)

	var m store.Match
	if err := db.Where("policy_id = ? AND state = ?", "wengang-fanhuan-2022", store.MatchActive).Order("credit_code").Take(&m).Error; err != nil {
		t.Fatal(err)
	}
	firm := firmByCode(t, db, m.CreditCode)
	before := outboxCount(db)

	// Rated D: every policy that excludes D-rated firms revokes.
	changed := firm
	changed.TaxCreditRating = "D"
	res, err := e.ApplyChanges(ctx, []store.Enterprise{changed})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := matchState(t, db, "wengang-fanhuan-2022", firm.CreditCode); st != store.MatchRevoked || res.Revoked == 0 || res.Changed != 1 {
		t.Fatalf("after rating D: state %s, result %+v", st, res)
	}
	if outboxCount(db) != before {
		t.Fatal("revoking queued a notice")
	}
	if got := firmByCode(t, db, firm.CreditCode); got.TaxCreditRating != "D" || !got.UpdatedAt.After(firm.UpdatedAt) {
		t.Fatalf("firm not stored: rating %s, updated %v", got.TaxCreditRating, got.UpdatedAt)
	}
	noDifference(t, db, asOf)

	// Back to B and hiring graduates: the old match returns silently, 扩岗补助 is new and notified.
	changed.TaxCreditRating, changed.GraduatesHired, changed.InsuredEmployees = firm.TaxCreditRating, 2, max(changed.InsuredEmployees, 2)
	res, err = e.ApplyChanges(ctx, []store.Enterprise{changed})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := matchState(t, db, "wengang-fanhuan-2022", firm.CreditCode); st != store.MatchActive {
		t.Fatalf("wengang not reactivated: %s", st)
	}
	if st, amount := matchState(t, db, "kuogang-buzhu-2022", firm.CreditCode); st != store.MatchActive || amount == nil || *amount != 3000 {
		t.Fatalf("kuogang: %s %v", st, amount)
	}
	if n := outboxCount(db); n != before+1 { // kuogang notifies on wechat only
		t.Fatalf("outbox grew by %d, want 1 (the new match; the reactivated one is not notified again)", n-before)
	}
	noDifference(t, db, asOf)

	// The same data again: nothing to do.
	res, err = e.ApplyChanges(ctx, []store.Enterprise{changed})
	if err != nil || res.Changed != 0 || res.New+res.Revoked != 0 {
		t.Fatalf("unchanged firm re-matched: %+v %v", res, err)
	}

	// Deregistered: every match revoked; a firm that was never active does nothing.
	changed.Status = store.StatusDeregistered
	if _, err := e.ApplyChanges(ctx, []store.Enterprise{changed}); err != nil {
		t.Fatal(err)
	}
	var active int64
	db.Model(&store.Match{}).Where("credit_code = ? AND state = ?", firm.CreditCode, store.MatchActive).Count(&active)
	if active != 0 {
		t.Fatalf("deregistered firm keeps %d active matches", active)
	}
	noDifference(t, db, asOf)

	// Invalid firms are rejected, the valid ones of the batch applied.
	bad := changed
	bad.CreditCode = "91320000XXXX"
	newFirm := registry.Synth(1501, 4)[1500]
	newFirm.Status, newFirm.TaxCreditRating, newFirm.InsuredEmployees, newFirm.UnemploymentInsurancePaid, newFirm.LayoffRate = store.StatusActive, "A", 10, 5000, 0
	res, err = e.ApplyChanges(ctx, []store.Enterprise{bad, newFirm})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) != 1 || !strings.Contains(res.Rejected[0], "credit_code") || res.New == 0 {
		t.Fatalf("batch with a bad firm: %+v", res)
	}
	noDifference(t, db, asOf)
}

// A change message of the data-sharing platform carries only some fields; the others are kept.
func TestApplyChangeJSONMergesFields(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	firms := registry.Synth(800, 5)
	seedRegistry(t, db, firms, fixture.DemoDefinitions(t))
	asOf := testAsOf
	e := loadedEngine(t, db, &asOf)
	var f store.Enterprise
	if err := db.Where("status = ? AND graduates_hired = 0 AND insured_employees >= 5 AND tax_credit_rating <> 'D'", store.StatusActive).Order("credit_code").Take(&f).Error; err != nil {
		t.Fatal(err)
	}
	msg := fmt.Sprintf(`{"credit_code": %q, "graduates_hired": 3, "registered_at": "2019-03-01"}`, strings.ToLower(f.CreditCode))
	res, err := e.ApplyChangeJSON(ctx, []byte(msg))
	if err != nil || res.Changed != 1 || res.New != 1 {
		t.Fatalf("result %+v, err %v", res, err)
	}
	got := firmByCode(t, db, f.CreditCode)
	if got.GraduatesHired != 3 || got.Name != f.Name || got.InsuredEmployees != f.InsuredEmployees || got.RegisteredAt.Format(time.DateOnly) != "2019-03-01" {
		t.Fatalf("merged firm: %+v", got)
	}
	if st, _ := matchState(t, db, "kuogang-buzhu-2022", f.CreditCode); st != store.MatchActive {
		t.Fatalf("kuogang not matched: %q", st)
	}

	// A firm the registry does not know yet starts from the defaults.
	code := registry.Synth(801, 5)[800].CreditCode
	res, err = e.ApplyChangeJSON(ctx, []byte(fmt.Sprintf(`{"firms": [{"credit_code": %q, "name": "新企业", "region_code": "320506", "taxpayer_type": "small_scale"}]}`, code)))
	if err != nil || res.Changed != 1 {
		t.Fatalf("new firm: %+v %v", res, err)
	}
	if nf := firmByCode(t, db, code); nf.Status != store.StatusActive || nf.SpecializedLevel != "none" {
		t.Fatalf("new firm defaults: %+v", nf)
	}
	if st, _ := matchState(t, db, "liushui-liangfei-2022", code); st != store.MatchActive {
		t.Fatal("new small-scale taxpayer not matched to 六税两费")
	}
	noDifference(t, db, asOf)

	for _, bad := range []string{`not json`, `{"name": "x"}`, `[{"credit_code": 5}]`, `[]`, `null`, `{}`, `{"firms": []}`, ``} {
		if _, err := e.ApplyChangeJSON(ctx, []byte(bad)); !errors.Is(err, ErrBadChange) {
			t.Errorf("%s: err %v, want ErrBadChange", bad, err)
		}
	}
	res, err = e.ApplyChangeJSON(ctx, []byte(fmt.Sprintf(`[{"credit_code": %q, "shoe_size": 3}, {"credit_code": %q, "status": "gone"}]`, f.CreditCode, code)))
	if err != nil || len(res.Rejected) != 2 {
		t.Fatalf("unknown key and bad enum: %+v %v", res, err)
	}
}

// Changes that bypass the engine (an import, another process) are caught up by updated_at; a
// policy published meanwhile is evaluated; a new date re-evaluates date-dependent rules and
// policies whose window opens.
func TestCatchUpFollowsRegistryPoliciesAndDate(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	firms := registry.Synth(1200, 6)
	young := &rules.Definition{ID: "young-firms", Title: "成立不满三年", EffectiveFrom: rules.Date{Time: testAsOf.AddDate(-1, 0, 0)},
		Channels: []string{"wechat"}, Eligibility: "years_since(registered_at) < 3", Amount: "1000 * (3 - years_since(registered_at))"}
	later := &rules.Definition{ID: "starts-tomorrow", Title: "明日生效", EffectiveFrom: rules.Date{Time: testAsOf.AddDate(0, 0, 1)},
		Channels: []string{"wechat"}, Eligibility: "employees >= 10"}
	seedRegistry(t, db, firms, append(fixture.DemoDefinitions(t), young, later))
	asOf := testAsOf
	e := loadedEngine(t, db, &asOf)
	noDifference(t, db, asOf)

	// Edited behind the engine's back.
	var victims []store.Enterprise
	db.Where("status = ?", store.StatusActive).Order("credit_code").Limit(20).Find(&victims)
	for _, v := range victims {
		db.Model(&store.Enterprise{}).Where("credit_code = ?", v.CreditCode).Updates(map[string]any{"tax_credit_rating": "D", "updated_at": time.Now().UTC()})
	}
	var def *rules.Definition // a new version of one policy
	for _, d := range fixture.DemoDefinitions(t) {
		if d.ID == "kuogang-buzhu-2022" {
			def = d
		}
	}
	def.Params = map[string]any{"per_graduate": 2000}
	if _, err := policies.Apply(ctx, db, def, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	catchUp(ctx, t, e)
	noDifference(t, db, asOf)
	var v2 int64
	db.Model(&store.Match{}).Where("policy_id = ? AND policy_version = 2 AND state = ?", def.ID, store.MatchActive).Count(&v2)
	if v2 == 0 {
		t.Fatal("the new version of kuogang was not evaluated")
	}

	// A bulk edit (a third of the registry, as an import would): every policy is evaluated again.
	bulkEdit(t, db, "employees % 3 = 0", 7)
	catchUp(ctx, t, e)
	noDifference(t, db, asOf)

	// The next day: the window of starts-tomorrow opens; young firms age.
	asOf = asOf.AddDate(0, 0, 1)
	catchUp(ctx, t, e)
	noDifference(t, db, asOf)
	var tomorrow int64
	db.Model(&store.Match{}).Where("policy_id = ?", "starts-tomorrow").Count(&tomorrow)
	if tomorrow == 0 {
		t.Fatal("a policy whose window opened was not evaluated")
	}
	// A year later young firms have aged: the sweep re-evaluates the date-dependent rule.
	asOf = asOf.AddDate(1, 0, 0)
	catchUp(ctx, t, e)
	noDifference(t, db, asOf)
}

// A transaction that fails leaves neither the database nor the snapshot changed.
func TestFailedChangeLeavesSnapshotAsItWas(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	seedRegistry(t, db, registry.Synth(600, 7), fixture.DemoDefinitions(t))
	asOf := testAsOf
	e := loadedEngine(t, db, &asOf)
	var f store.Enterprise
	if err := db.Where("status = ? AND graduates_hired = 0 AND insured_employees >= 5 AND tax_credit_rating <> 'D'", store.StatusActive).Order("credit_code").Take(&f).Error; err != nil {
		t.Fatal(err)
	}
	failing := errors.New("disk full")
	if err := db.Callback().Create().Before("gorm:create").Register("test:fail-outbox", func(tx *gorm.DB) {
		if tx.Statement.Table == "outboxes" {
			_ = tx.AddError(failing)
		}
	}); err != nil {
		t.Fatal(err)
	}
	changed := f
	changed.GraduatesHired = 4
	if _, err := e.ApplyChanges(ctx, []store.Enterprise{changed}); !errors.Is(err, failing) {
		t.Fatalf("err %v, want the outbox failure", err)
	}
	if got := firmByCode(t, db, f.CreditCode); got.GraduatesHired != 0 {
		t.Fatal("the firm was stored although its matches were not")
	}
	row, _ := e.snap.row(f.CreditCode)
	var env rules.Env
	e.snap.fill(row, &env)
	if env.GraduatesHired != 0 {
		t.Fatal("the snapshot kept the change of a failed transaction")
	}
	if err := db.Callback().Create().Remove("test:fail-outbox"); err != nil {
		t.Fatal(err)
	}
	res, err := e.ApplyChanges(ctx, []store.Enterprise{changed})
	if err != nil || res.New == 0 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	noDifference(t, db, asOf)
}

// Extra fields (config fields.extra) reach the rules through the snapshot as they do through the
// plain path.
func TestExtraFieldsMatchLikePlain(t *testing.T) {
	ctx := context.Background()
	voc, err := rules.NewVocabulary(registry.Field{Key: "rd_staff", Label: "研发人员数", Type: registry.TypeInt})
	if err != nil {
		t.Fatal(err)
	}
	firms := registry.Synth(500, 8)
	var csv strings.Builder
	csv.WriteString("credit_code,rd_staff\n")
	for i, f := range firms {
		if i%3 == 0 {
			fmt.Fprintf(&csv, "%s,%d\n", f.CreditCode, i%40)
		}
	}
	def := &rules.Definition{ID: "rd", Title: "研发", EffectiveFrom: rules.Date{Time: testAsOf}, Channels: []string{"wechat"},
		Eligibility: "rd_staff >= 10 && employees > 5", Amount: "rd_staff * 100.0"}
	engineDB, plainDB := testenv.OpenDB(t).DB, testenv.OpenDB(t).DB
	for _, db := range []*gorm.DB{engineDB, plainDB} {
		seedRegistry(t, db, firms, []*rules.Definition{def}, rules.WithVocabulary(voc))
		if _, err := policies.ImportFacts(ctx, db, strings.NewReader(csv.String()), rules.WithVocabulary(voc)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Run(ctx, engineDB, testAsOf, "", Options{Vocabulary: voc}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, plainDB, testAsOf, "", Options{Plain: true, Vocabulary: voc}); err != nil {
		t.Fatal(err)
	}
	want := storedState(t, plainDB)
	if len(want) < 20 {
		t.Fatalf("only %d matches on the extra field", len(want))
	}
	sameStrings(t, "extra fields", want, storedState(t, engineDB))
}

// Combination rules (不得重复享受): a firm eligible for two exclusive policies gets the preferred
// one, on the engine as on the plain path; publishing a new version of one re-decides the other.
func TestCombinationRulesMatchLikePlain(t *testing.T) {
	ctx := context.Background()
	from := rules.Date{Time: testAsOf.AddDate(0, -1, 0)}
	a := &rules.Definition{ID: "stable-jobs", Title: "稳岗", EffectiveFrom: from, Channels: []string{"wechat"},
		Eligibility: "insured_employees >= 10", Amount: "100 * insured_employees"}
	b := &rules.Definition{ID: "new-jobs", Title: "扩岗", EffectiveFrom: from, Channels: []string{"sms"}, Priority: 1,
		Excludes: []string{"stable-jobs"}, Params: map[string]any{"min": 1}, Eligibility: "graduates_hired >= params.min"}
	firms := registry.Synth(1500, 10)
	engineDB, plainDB := testenv.OpenDB(t).DB, testenv.OpenDB(t).DB
	seedRegistry(t, engineDB, firms, []*rules.Definition{a, b})
	seedRegistry(t, plainDB, firms, []*rules.Definition{a, b})
	if _, err := Run(ctx, plainDB, testAsOf, "", Options{Plain: true}); err != nil {
		t.Fatal(err)
	}
	asOf := testAsOf
	e := loadedEngine(t, engineDB, &asOf)
	want := storedState(t, plainDB)
	sameStrings(t, "combination", want, storedState(t, engineDB))
	var both int64
	engineDB.Model(&store.Match{}).Where("policy_id = ? AND state = ? AND credit_code IN (?)", "stable-jobs", store.MatchActive,
		engineDB.Model(&store.Match{}).Select("credit_code").Where("policy_id = ? AND state = ?", "new-jobs", store.MatchActive)).Count(&both)
	if both != 0 {
		t.Fatalf("%d firms hold both exclusive policies", both)
	}
	// Fewer firms get new-jobs: those that lose it get stable-jobs back.
	b.Params = map[string]any{"min": 3}
	if _, err := policies.Apply(ctx, engineDB, b, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PolicyChanged(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	noDifference(t, engineDB, asOf)
}

// On a new date, a rule that reads the date through a founding-date table re-matches only the
// firms whose entry changed (an anniversary crossed); a boundary not crossed changes nothing; a
// rule whose date-reading part is not planned is evaluated for everyone. The stored matches are
// those of a full match on the new date.
func TestDailySweepRematchesOnlyFirmsWhoseAnswerCanChange(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	from := rules.Date{Time: testAsOf.AddDate(-1, 0, 0)}
	defs := []*rules.Definition{
		{ID: "young", Title: "成立不满三年", EffectiveFrom: from, Channels: []string{"wechat"},
			Eligibility: "years_since(registered_at) < 3", Amount: "1000 * (3 - years_since(registered_at))"},
		{ID: "seasoned", Title: "成立月数", EffectiveFrom: from, Channels: []string{"wechat"}, Eligibility: "months_since(registered_at) > employees"},
		{ID: "from-october-2nd", Title: "十月二日起", EffectiveFrom: from, Channels: []string{"wechat"},
			Eligibility: `as_of >= date("2022-10-02") && employees >= 10`},
		{ID: "opaque", Title: "不可拆分", EffectiveFrom: from, Channels: []string{"wechat"},
			Eligibility: "employees % max(graduates_hired, 1) >= 0 && years_since(registered_at) >= 1"},
	}
	seedRegistry(t, db, registry.Synth(3000, 11), defs)
	asOf := testAsOf // 2022-09-30
	e := loadedEngine(t, db, &asOf)
	step := func(day time.Time) sweepStats {
		t.Helper()
		asOf = day
		e.mu.Lock()
		st, err := e.sweep(ctx, day)
		e.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		catchUp(ctx, t, e)
		noDifference(t, db, day)
		return st
	}
	st := step(testAsOf.AddDate(0, 0, 1))
	if st.byFirm != 3 || st.whole != 1 || st.firms == 0 || st.firms > 300 {
		t.Fatalf("2022-10-01: %+v (want young, seasoned and from-october-2nd by firm, opaque whole, a few firms)", st)
	}
	st = step(testAsOf.AddDate(0, 0, 2)) // from-october-2nd's boundary
	if st.byFirm != 2 || st.whole != 2 {
		t.Fatalf("2022-10-02: %+v (want from-october-2nd whole: its date condition changed)", st)
	}
	var n int64
	db.Model(&store.Match{}).Where("policy_id = ? AND state = ?", "from-october-2nd", store.MatchActive).Count(&n)
	if n == 0 {
		t.Fatal("from-october-2nd matched nobody after its boundary")
	}
}

// An idle catch-up is idle: after a bulk edit has been evaluated once, later rounds re-read the
// overlap but evaluate nothing and write nothing (the probe saw "evaluating every policy" every
// 10–50 s on an unchanged registry).
func TestIdleCatchUpEvaluatesNothing(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	seedRegistry(t, db, registry.Synth(900, 9), fixture.DemoDefinitions(t))
	asOf := testAsOf
	var logs bytes.Buffer
	e := NewEngine(db, EngineOptions{SubjectPrefix: "t", AsOf: func() time.Time { return asOf },
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := e.Load(ctx); err != nil {
		t.Fatal(err)
	}
	bulkEdit(t, db, "employees % 2 = 0", 3)
	catchUp(ctx, t, e)
	if n := strings.Count(logs.String(), "evaluating every policy"); n != 1 {
		t.Fatalf("the bulk edit was evaluated %d times, want once:\n%s", n, logs.String())
	}
	noDifference(t, db, asOf)
	var writes int
	countWrites := func(tx *gorm.DB) { writes++ }
	db.Callback().Create().Before("gorm:create").Register("test:count-create", countWrites)
	db.Callback().Update().Before("gorm:update").Register("test:count-update", countWrites)
	db.Callback().Delete().Before("gorm:delete").Register("test:count-delete", countWrites)
	logs.Reset()
	for range 3 { // the rows of the bulk edit are still inside the overlap window
		catchUp(ctx, t, e)
	}
	if strings.Contains(logs.String(), "evaluating every policy") || strings.Contains(logs.String(), "re-matched") {
		t.Fatalf("idle rounds evaluated again:\n%s", logs.String())
	}
	if writes != 0 {
		t.Fatalf("idle rounds wrote %d times", writes)
	}
}

// The console asks the engine's date on every page: AsOf answers while the engine holds its lock
// for a load, a catch-up or a policy's evaluation.
func TestAsOfDoesNotWaitForTheEngine(t *testing.T) {
	e := &Engine{}
	if !e.AsOf().IsZero() {
		t.Fatal("a date before the first load")
	}
	d := time.Date(2022, 6, 30, 0, 0, 0, 0, time.FixedZone("CST", 8*3600))
	e.mu.Lock()
	defer e.mu.Unlock()
	e.setAsOf(d)
	got := make(chan time.Time, 1)
	go func() { got <- e.AsOf() }()
	select {
	case g := <-got:
		if !g.Equal(d) || g.Location() != d.Location() {
			t.Fatalf("AsOf %v, want %v", g, d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AsOf waited for the engine's lock")
	}
}
