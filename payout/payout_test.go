package payout

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// seed writes a published policy and n active matches with the given amounts (元) on a fresh
// database, and returns a service whose clock the test moves.
type env struct {
	db    *gorm.DB
	svc   *Service
	now   time.Time
	codes []string
}

var (
	alice = Actor{Name: "alice", Role: store.RoleAuthor, Department: "人社局"}
	bob   = Actor{Name: "bob", Role: store.RoleReviewer}
)

func seed(t *testing.T, amounts []float64, budget *float64) *env {
	t.Helper()
	db := testenv.OpenDB(t).DB
	def := &rules.Definition{ID: "p1", Title: "稳岗返还", Department: "人社局", Eligibility: "true", Channels: []string{"wechat", "sms"},
		EffectiveFrom: rules.Date{Time: time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)}, Budget: budget}
	must(t, db.Create(&store.Policy{ID: "p1", Title: def.Title, Department: def.Department, PublishedVersion: 1}).Error)
	must(t, db.Create(&store.PolicyVersion{PolicyID: "p1", Version: 1, ContentHash: "x", Source: string(def.Canonical()), Title: def.Title,
		EffectiveFrom: def.EffectiveFrom.Time, State: store.VersionPublished}).Error)
	e := &env{db: db, now: time.Date(2022, 10, 7, 9, 0, 0, 0, time.UTC)} // a Friday
	e.svc = New(db, Options{SubjectPrefix: "pp", Now: func() time.Time { return e.now }})
	asOf := time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)
	for i, a := range amounts {
		code := fmt.Sprintf("91320500MA%07dX", i)
		e.codes = append(e.codes, code)
		must(t, db.Create(&store.Enterprise{CreditCode: code, Name: fmt.Sprintf("企业%d", i), Status: store.StatusActive}).Error)
		amt := a
		must(t, db.Create(&store.Match{PolicyID: "p1", PolicyVersion: 1, CreditCode: code, State: store.MatchActive, Amount: &amt,
			AsOf: asOf, MatchedAt: asOf}).Error)
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFen(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"1.005", 101}, {"1.004", 100}, {"-1.005", -101}, {"12,345.67", 1234567}, {"0.5", 50}, {"3", 300}, {".125", 13}} {
		got, err := ParseFen(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseFen(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "abc", "1.2.3", "1e5", "12345678901234"} {
		if _, err := ParseFen(bad); err == nil {
			t.Errorf("ParseFen(%q) accepted", bad)
		}
	}
	if got, _ := Fen(1.005); got != 101 {
		t.Errorf("Fen(1.005) = %d, want 101 (decimal rounding, not binary)", got)
	}
	if YuanGrouped(2217126) != "22,171.26" || Yuan(-5) != "-0.05" {
		t.Errorf("formatting: %s %s", YuanGrouped(2217126), Yuan(-5))
	}
	if MaskCode("91320500MA0000001X") != "913205********001X" {
		t.Errorf("MaskCode = %s", MaskCode("91320500MA0000001X"))
	}
}

func TestPublicizeUntil(t *testing.T) {
	s := New(nil, Options{Holidays: []string{"2022-10-10"}})
	fri := time.Date(2022, 10, 7, 15, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		days int
		want string
	}{{0, "2022-10-07 15:00"}, {1, "2022-10-12 00:00"}, {5, "2022-10-18 00:00"}} {
		if got := s.publicizeUntil(fri, c.days).Format("2006-01-02 15:04"); got != c.want {
			t.Errorf("%d working days from Friday (Monday a holiday): %s, want %s", c.days, got, c.want)
		}
	}
}

// TestFlow walks a batch through every step: create, two-person approval with a removal, 公示
// with an objection and its decision, export refused then written, results with a failure and
// errors, idempotent re-import, re-batching of the failure, and the notices queued on the way.
func TestFlow(t *testing.T) {
	ctx := context.Background()
	e := seed(t, []float64{1000.005, 2500, 333.33, 800, 120.5}, nil)
	// Firm 4 objected on its page before any batch: it is left out.
	must(t, e.db.Create(&store.EnterpriseResponse{CreditCode: e.codes[4], PolicyID: "p1", PolicyVersion: 1, Kind: store.ResponseObject,
		Reason: "不需要", At: e.now}).Error)

	c, err := e.svc.Create(ctx, CreateRequest{PolicyID: "p1", By: alice})
	must(t, err)
	if c.Firms != 4 || c.AmountTotal != "4633.34" || c.Excluded[ExclObjected] != 1 {
		t.Fatalf("created %+v, want 4 firms, 4633.34 (1000.01+2500+333.33+800), 1 objected", c)
	}
	if _, err := e.svc.Create(ctx, CreateRequest{PolicyID: "p1", By: alice}); !errors.Is(err, ErrState) {
		t.Fatalf("second batch with every firm already batched: %v, want ErrState", err)
	}
	if err := e.svc.Approve(ctx, c.BatchID, alice, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("creator approving: %v, want ErrForbidden", err)
	}
	if err := e.svc.Approve(ctx, c.BatchID, bob, []Removal{{CreditCode: e.codes[3]}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("removal without reason: %v", err)
	}
	if _, err := e.svc.Export(ctx, c.BatchID, FormatCSV, &bytes.Buffer{}, bob); !errors.Is(err, ErrState) {
		t.Fatalf("export before approval: %v", err)
	}
	must(t, e.svc.Approve(ctx, c.BatchID, bob, []Removal{{CreditCode: e.codes[3], Reason: "已注销待核实"}}))
	must(t, e.svc.Publicize(ctx, c.BatchID, 5, alice))
	if notices := countNotices(t, e.db)[NoticePublicized]; notices != 3*2 {
		t.Errorf("publicized notices: %d, want 3 lines × 2 channels", notices)
	}

	pub, err := e.svc.PublicListing(ctx, c.BatchID)
	must(t, err)
	if len(pub.Lines) != 3 || pub.Total != "3,833.34" || strings.Contains(pub.Lines[0].CreditCode, e.codes[0][6:14]) {
		t.Errorf("公示 %+v", pub)
	}

	o, err := e.svc.Object(ctx, c.BatchID, e.codes[2], "金额与实缴不符")
	must(t, err)
	if _, err := e.svc.Object(ctx, c.BatchID, e.codes[2], "再次"); !errors.Is(err, ErrState) {
		t.Errorf("second objection to a held line: %v", err)
	}
	e.now = e.now.AddDate(0, 0, 10) // past the 5 working days
	if _, err := e.svc.Export(ctx, c.BatchID, FormatCSV, &bytes.Buffer{}, alice); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "objection") {
		t.Fatalf("export with an undecided objection: %v", err)
	}
	if err := e.svc.Decide(ctx, o.ID, store.ObjectionSustained, "核实无误", alice); !errors.Is(err, ErrForbidden) {
		t.Fatalf("creator deciding: %v", err)
	}
	must(t, e.svc.Decide(ctx, o.ID, store.ObjectionSustained, "核实后金额有误，移出本批", bob))

	var buf bytes.Buffer
	sum, err := e.svc.Export(ctx, c.BatchID, FormatCSV, &buf, alice)
	must(t, err)
	recs, err := csv.NewReader(bytes.NewReader(buf.Bytes())).ReadAll()
	must(t, err)
	var fileFen int64
	for _, r := range recs[1:] {
		f, err := ParseFen(r[2])
		must(t, err)
		fileFen += f
	}
	if sum.Rows != 2 || len(recs) != 3 || fileFen != sum.AmountFen || sum.AmountTotal != "3500.01" {
		t.Fatalf("export %+v, file %v (total %d)", sum, recs, fileFen)
	}
	var xbuf bytes.Buffer
	xs, err := e.svc.Export(ctx, c.BatchID, FormatXLSX, &xbuf, alice)
	must(t, err)
	x, err := excelize.OpenReader(&xbuf)
	must(t, err)
	rows, err := x.GetRows("付款清单")
	must(t, err)
	if len(rows) != 3 || rows[0][2] != "amount" || xs.AmountFen != sum.AmountFen {
		t.Errorf("xlsx rows %v", rows)
	}

	results := "credit_code,status,paid_at,reason\n" +
		e.codes[0] + ",paid,2022-10-14,\n" +
		e.codes[1] + ",failed,,账户已销户\n" +
		e.codes[2] + ",paid,2022-10-14,\n" + // removed by the objection
		"NOPE,paid,2022-10-14,\n" +
		e.codes[0] + ",weird,,\n"
	rs, err := e.svc.ImportResults(ctx, c.BatchID, "bank.csv", strings.NewReader(results), alice)
	must(t, err)
	if rs.Paid != 1 || rs.Failed != 1 || !rs.Closed || len(rs.Issues) != 3 {
		t.Fatalf("results %+v", rs)
	}
	if rs.Issues[0].Line != 6 || rs.Issues[0].Column != "credit_code" {
		t.Errorf("first issue %v: want line 6 (the repeated code)", rs.Issues[0])
	}
	again, err := e.svc.ImportResults(ctx, c.BatchID, "bank.csv", strings.NewReader(results), alice)
	must(t, err)
	if again.Paid+again.Failed != 0 || again.Unchanged != 2 {
		t.Errorf("re-import %+v, want nothing changed", again)
	}
	for kind, want := range map[string]int{NoticePaid: 2, NoticeFailed: 2} {
		if n := countNotices(t, e.db)[kind]; n != want {
			t.Errorf("%s notices: %d, want %d", kind, n, want)
		}
	}

	// The failed firm and the reviewer's removal come back in the next batch; the paid firm and the
	// sustained objection do not.
	c2, err := e.svc.Create(ctx, CreateRequest{PolicyID: "p1", By: alice})
	must(t, err)
	if c2.Firms != 2 || c2.Round != 2 || c2.AmountTotal != "3300.00" {
		t.Errorf("re-batch %+v, want the failed (2500) and removed (800) firms", c2)
	}
	figs, err := e.svc.Figures(ctx)
	must(t, err)
	if len(figs) != 1 || figs[0].Paid != 1 || figs[0].PaidAmount != "1000.01" || figs[0].Failed != 1 || figs[0].Batched != 4 {
		t.Errorf("figures %+v", figs)
	}
	d, err := e.svc.Get(ctx, c.BatchID, nil)
	must(t, err)
	var kinds []string
	for _, ev := range d.Events {
		kinds = append(kinds, ev.Kind)
	}
	if got := strings.Join(kinds, ","); got != "created,removed,approved,publicized,objected,objection_sustained,exported,exported,paid,failed,closed" {
		t.Errorf("history %s", got)
	}
	if d.Batch.State != store.BatchClosed || d.Batch.Firms != 2 || d.Batch.AmountFen != 350001 {
		t.Errorf("batch %+v", d.Batch)
	}
	var audits int64
	e.db.Model(&store.AuditLog{}).Where("object = ?", batchObject(c.BatchID)).Count(&audits)
	if audits < 8 {
		t.Errorf("%d audit records, want one per write", audits)
	}
}

// countNotices counts queued notices by kind, checking each names its match and line.
func countNotices(t *testing.T, db *gorm.DB) map[string]int {
	t.Helper()
	var rows []store.Outbox
	must(t, db.Find(&rows).Error)
	out := map[string]int{}
	for _, r := range rows {
		var job bus.NoticeJob
		must(t, json.Unmarshal(r.Payload, &job))
		if job.Kind != "" && (job.Ref == 0 || job.MatchID == 0) {
			t.Errorf("%s notice %+v lacks its line or match", job.Kind, job)
		}
		out[job.Kind]++
	}
	return out
}

func TestBudget(t *testing.T) {
	ctx := context.Background()
	budget := 3000.0
	e := seed(t, []float64{1000, 2500}, &budget)
	_, err := e.svc.Create(ctx, CreateRequest{PolicyID: "p1", By: alice})
	if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "short by 500.00元") {
		t.Fatalf("over budget: %v", err)
	}
	b, err := e.svc.BudgetOf(ctx, "p1")
	must(t, err)
	if !b.Declared || b.RemainingFen != 300000 {
		t.Errorf("budget %+v", b)
	}
	if c := CheckBudget(&budget, 3500.004); !c.Over || c.Shortfall != "500.00" || c.BudgetAmount != "3000.00" {
		t.Errorf("preview check %+v", c)
	}
	if c := CheckBudget(nil, 10); c.Over || c.Total != "10.00" {
		t.Errorf("no budget %+v", c)
	}
	neg := -5.0
	def := rules.Definition{ID: "x", Title: "x", Eligibility: "true", Channels: []string{"sms"}, Budget: &neg}
	if err := def.Validate(); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Errorf("negative budget accepted: %v", err)
	}
}

func TestResultsFileErrors(t *testing.T) {
	e := seed(t, nil, nil)
	for _, c := range []struct{ name, body, want string }{
		{"r.csv", "", "empty"},
		{"r.csv", "code,status\n", `lacks column "credit_code"`},
		{"r.xlsx", "not a zip", "not a readable xlsx"},
	} {
		if _, _, err := e.svc.parseResults(c.name, strings.NewReader(c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: %v, want %q", c.name, c.body, err, c.want)
		}
	}
	rows, issues, err := e.svc.parseResults("r.csv", strings.NewReader("credit_code,status,paid_at,reason\nA,paid,2022-13-01,\nB,failed,,\nC,paid,2022/10/3,\n"))
	must(t, err)
	if len(rows) != 1 || len(issues) != 2 || issues[0].Column != "paid_at" || issues[1].Column != "reason" {
		t.Errorf("rows %v issues %v", rows, issues)
	}
}

func TestFeedbackOncePerPaidLine(t *testing.T) {
	ctx := context.Background()
	e := seed(t, []float64{100, 200}, nil)
	c, err := e.svc.Create(ctx, CreateRequest{PolicyID: "p1", By: alice})
	must(t, err)
	must(t, e.svc.Approve(ctx, c.BatchID, bob, nil))
	must(t, e.svc.Publicize(ctx, c.BatchID, 0, alice))
	_, err = e.svc.Export(ctx, c.BatchID, FormatCSV, &bytes.Buffer{}, alice)
	must(t, err)
	d, err := e.svc.Get(ctx, c.BatchID, nil)
	must(t, err)
	if err := e.svc.Feedback(ctx, d.Lines[0].ID, e.codes[0], 5, "很快"); !errors.Is(err, ErrState) {
		t.Fatalf("feedback before payment: %v", err)
	}
	_, err = e.svc.ImportResults(ctx, c.BatchID, "r.csv", strings.NewReader("credit_code,status,paid_at\n"+e.codes[0]+",paid,2022-10-07\n"), alice)
	must(t, err)
	if err := e.svc.Feedback(ctx, d.Lines[0].ID, e.codes[1], 5, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("another firm's line: %v", err)
	}
	if err := e.svc.Feedback(ctx, d.Lines[0].ID, e.codes[0], 6, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("rating 6: %v", err)
	}
	must(t, e.svc.Feedback(ctx, d.Lines[0].ID, e.codes[0], 4, "到账及时"))
	if err := e.svc.Feedback(ctx, d.Lines[0].ID, e.codes[0], 5, ""); !errors.Is(err, ErrState) {
		t.Errorf("second rating: %v", err)
	}
	fs, err := e.svc.FeedbackByPolicy(ctx, nil)
	must(t, err)
	if len(fs) != 1 || fs[0].Ratings != 1 || fs[0].Average != 4 || len(fs[0].Comments) != 1 {
		t.Errorf("feedback %+v", fs)
	}
}
