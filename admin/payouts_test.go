package admin

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/store"
)

// payoutPolicy is a demo policy of the author's department with paid amounts.
func (f *fixture) payoutPolicy(department string) string {
	var id string
	err := f.db.Table("matches m").Select("m.policy_id").Joins("JOIN policies p ON p.id = m.policy_id").
		Where("m.state = ? AND m.amount > 0 AND p.department = ?", store.MatchActive, department).
		Group("m.policy_id").Order("COUNT(*) DESC").Limit(1).Scan(&id).Error
	if err != nil || id == "" {
		f.t.Fatalf("no policy of %s with amounts: %v", department, err)
	}
	return id
}

// The console and API walk a batch through its steps with the roles and scopes of the console:
// the author creates, publicizes, exports and imports results for the own department only; a
// reviewer approves and decides; park managers read only their park's lines; firms object and
// rate on their own page; the public 公示 shows masked codes.
func TestPayoutConsoleFlow(t *testing.T) {
	f := newFixture(t)
	author, reviewer, park := f.session("author"), f.session("reviewer"), f.session("park_sip")
	policy := f.payoutPolicy("省人力资源和社会保障厅")
	var other string
	f.db.Model(&store.Policy{}).Where("department <> ? AND published_version > 0", "省人力资源和社会保障厅").Order("id").Limit(1).Pluck("id", &other)

	if r := f.do(author, "POST", "/api/v1/payouts", map[string]any{"policy_id": other}); r.status != http.StatusForbidden {
		t.Fatalf("author creating for another department: %d %s", r.status, r.body)
	}
	if r := f.do(reviewer, "POST", "/api/v1/payouts", map[string]any{"policy_id": policy}); r.status != http.StatusForbidden {
		t.Fatalf("reviewer creating: %d", r.status)
	}
	r := f.do(author, "POST", "/api/v1/payouts", map[string]any{"policy_id": policy})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var c payout.Created
	r.json(t, &c)
	base := fmt.Sprintf("/api/v1/payouts/%d", c.BatchID)
	if c.Firms == 0 || c.AmountTotal == "" {
		t.Fatalf("created %+v", c)
	}
	if r := f.do(author, "POST", base+"/approve", map[string]any{}); r.status != http.StatusForbidden {
		t.Fatalf("author approving: %d", r.status)
	}
	// A park manager sees only the lines of the own park.
	var pv struct {
		Lines []store.PayoutLine `json:"lines"`
		Batch store.PayoutBatch  `json:"batch"`
	}
	f.do(park, "GET", base, nil).json(t, &pv)
	for _, l := range pv.Lines {
		var e store.Enterprise
		f.db.Where("credit_code = ?", l.CreditCode).Take(&e)
		if e.ParkID != "SIP" {
			t.Fatalf("park manager sees line of %s in park %q", l.CreditCode, e.ParkID)
		}
	}
	if len(pv.Lines) >= c.Firms {
		t.Errorf("park manager sees %d of %d lines: not narrowed", len(pv.Lines), c.Firms)
	}
	var full struct {
		Lines []store.PayoutLine `json:"lines"`
	}
	f.do(reviewer, "GET", base, nil).json(t, &full)
	victim := full.Lines[0]
	if r := f.do(reviewer, "POST", base+"/approve", map[string]any{"removals": []map[string]string{{"credit_code": victim.CreditCode, "reason": "数据待核实"}}}); r.status != http.StatusOK {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	if r := f.do(author, "POST", base+"/publicize", map[string]any{"days": 5}); r.status != http.StatusOK {
		t.Fatalf("publicize: %d %s", r.status, r.body)
	}

	// The public 公示: masked codes, no removed line.
	pub := f.do(caller{}, "GET", fmt.Sprintf("/publicity/%d", c.BatchID), nil)
	if pub.status != http.StatusOK || strings.Contains(string(pub.body), full.Lines[1].CreditCode) || !strings.Contains(string(pub.body), payout.MaskCode(full.Lines[1].CreditCode)) {
		t.Fatalf("公示 page %d leaks or lacks codes", pub.status)
	}

	// The firm objects on its page; the export waits for the decision and the end of the 公示.
	objector := full.Lines[1]
	token := f.link(objector.CreditCode, policy, time.Hour)
	if r := f.do(caller{}, "POST", "/api/v1/e/"+token+"/payout-objections", map[string]any{"batch_id": c.BatchID, "reason": "金额与实缴不符，请核实"}); r.status != http.StatusCreated {
		t.Fatalf("objection: %d %s", r.status, r.body)
	}
	if r := f.do(author, "POST", base+"/export?format=csv", nil); r.status != http.StatusConflict || !strings.Contains(string(r.body), "公示") {
		t.Fatalf("export during the 公示: %d %s", r.status, r.body)
	}
	// The 公示 ends (its end moved into the past rather than the clock, which would end sessions).
	if err := f.db.Model(&store.PayoutBatch{}).Where("id = ?", c.BatchID).Update("publicize_until", time.Now().Add(-time.Minute)).Error; err != nil {
		t.Fatal(err)
	}
	if r := f.do(author, "POST", base+"/export?format=csv", nil); r.status != http.StatusConflict || !strings.Contains(string(r.body), "objection") {
		t.Fatalf("export with an open objection: %d %s", r.status, r.body)
	}
	var d struct {
		Objections []store.PayoutObjection `json:"objections"`
	}
	f.do(reviewer, "GET", base, nil).json(t, &d)
	if len(d.Objections) != 1 {
		t.Fatalf("objections %+v", d.Objections)
	}
	decide := fmt.Sprintf("/api/v1/payouts/objections/%d/decide", d.Objections[0].ID)
	if r := f.do(reviewer, "POST", decide, map[string]any{"decision": "dismissed", "note": "已核实，金额无误"}); r.status != http.StatusOK {
		t.Fatalf("decide: %d %s", r.status, r.body)
	}
	exp := f.do(author, "POST", base+"/export?format=csv", nil)
	if exp.status != http.StatusOK {
		t.Fatalf("export: %d %s", exp.status, exp.body)
	}
	rows, err := csv.NewReader(strings.NewReader(string(exp.body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, row := range rows[1:] {
		fen, err := payout.ParseFen(row[2])
		if err != nil {
			t.Fatal(err)
		}
		total += fen
	}
	if payout.Yuan(total) != exp.header.Get("X-Amount-Total") || len(rows)-1 != c.Firms-1 {
		t.Errorf("file total %s vs header %s; %d rows for %d firms minus one removed", payout.Yuan(total), exp.header.Get("X-Amount-Total"), len(rows)-1, c.Firms)
	}

	results := "credit_code,status,paid_at,reason\n" + objector.CreditCode + ",paid," + time.Now().Format("2006-01-02") + ",\n" + rows[1][0] + ",failed,,户名不符\nX,paid,,\n"
	if rows[1][0] == objector.CreditCode {
		results = "credit_code,status,paid_at,reason\n" + objector.CreditCode + ",paid," + time.Now().Format("2006-01-02") + ",\n" + rows[2][0] + ",failed,,户名不符\nX,paid,,\n"
	}
	req := f.do(author, "POST", base+"/results?name=bank.csv", []byte(results))
	var sum payout.ResultSummary
	req.json(t, &sum)
	if req.status != http.StatusOK || sum.Paid != 1 || sum.Failed != 1 || len(sum.Issues) != 1 {
		t.Fatalf("results: %d %+v", req.status, sum)
	}

	// The dashboard's payout funnel equals a recount of the lines, for the province and a park.
	for _, who := range []caller{reviewer, park} {
		var db struct {
			Payout payoutFunnel `json:"payout"`
		}
		f.do(who, "GET", "/api/v1/dashboard?policy_id="+policy, nil).json(t, &db)
		var lines []store.PayoutLine
		f.db.Where("batch_id = ?", c.BatchID).Find(&lines)
		var want payoutFunnel
		for _, l := range lines {
			var e store.Enterprise
			f.db.Where("credit_code = ?", l.CreditCode).Take(&e)
			if who.name == "park_sip" && e.ParkID != "SIP" {
				continue
			}
			switch l.State {
			case store.LineRemoved:
			case store.LineFailed:
				want.Failed++
			default:
				want.Approved++
				want.ApprovedFen += l.AmountFen
			}
			if l.State == store.LinePaid {
				want.Paid++
				want.PaidFen += l.AmountFen
			}
		}
		got := db.Payout
		if got.Approved != want.Approved || got.ApprovedFen != want.ApprovedFen || got.Paid != want.Paid || got.PaidFen != want.PaidFen || got.Failed != want.Failed {
			t.Errorf("%s: dashboard payout %+v, recount %+v", who.name, got, want)
		}
		var cities int64
		for _, g := range got.ByCity {
			cities += g.ApprovedFen
		}
		if cities != want.ApprovedFen {
			t.Errorf("%s: amounts by city add up to %d, total %d", who.name, cities, want.ApprovedFen)
		}
	}

	// The firm sees its payment and rates it once.
	var ev struct {
		Payouts []struct {
			Line store.PayoutLine `json:"line"`
		} `json:"payouts"`
	}
	f.do(caller{}, "GET", "/api/v1/e/"+token, nil).json(t, &ev)
	if len(ev.Payouts) != 1 || ev.Payouts[0].Line.State != store.LinePaid {
		t.Fatalf("firm page payouts %+v", ev.Payouts)
	}
	fb := map[string]any{"line_id": ev.Payouts[0].Line.ID, "rating": 5, "comment": "到账很快"}
	if r := f.do(caller{}, "POST", "/api/v1/e/"+token+"/payout-feedback", fb); r.status != http.StatusCreated {
		t.Fatalf("feedback: %d %s", r.status, r.body)
	}
	if r := f.do(caller{}, "POST", "/api/v1/e/"+token+"/payout-feedback", fb); r.status != http.StatusConflict {
		t.Fatalf("second feedback: %d", r.status)
	}
	page := f.do(author, "GET", "/payouts", nil)
	if page.status != http.StatusOK || !strings.Contains(string(page.body), "到账很快") {
		t.Errorf("payouts page %d lacks the feedback", page.status)
	}
	detail := f.do(reviewer, "GET", fmt.Sprintf("/payouts/%d", c.BatchID), nil)
	if detail.status != http.StatusOK || !strings.Contains(string(detail.body), "异议不成立") {
		t.Errorf("batch page %d", detail.status)
	}
	if n := f.auditCount("reviewer", "payout.view", fmt.Sprintf("payout:%d", c.BatchID)); n == 0 {
		t.Error("staff reads of the batch are not audited")
	}
	if n := f.auditCount("author", "payout.export", fmt.Sprintf("payout:%d", c.BatchID)); n != 1 {
		t.Errorf("%d export audit records", n)
	}
	// A form post without the CSRF token is refused like every other console write.
	noCSRF := author
	noCSRF.csrf = ""
	if r := f.do(noCSRF, "POST", fmt.Sprintf("/payouts/%d/publicize", c.BatchID), url.Values{"days": {"1"}}); r.status != http.StatusForbidden {
		t.Errorf("form without CSRF: %d", r.status)
	}
}

// The sandbox page shows, next to what was sent, what WeChat displays and which fields it cut;
// enterprise links stay hidden in both.
func TestSandboxPageShowsWeChatDisplay(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	rec := `{"provider":"wechat","delivery_id":"7","to":"o-abcdefgh12","template":"TPL-PAYOUT-PAID",` +
		`"params":{"thing1":"失业保险稳岗返还、一次性留工培训补助、一次性扩岗补助","thing5":"https://x/e/abc.def"},` +
		`"shown":{"thing1":"失业保险稳岗返还、一次性留工培训补助、…","thing5":"https://x/e/abc.def"},"truncated":["thing1"],"provider_id":"1","at":"2026-03-02T02:00:00Z"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "wechat.jsonl"), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	f.srv.opts.SandboxDir = dir
	page := f.do(f.session("admin"), "GET", "/sandbox", nil)
	body := string(page.body)
	if page.status != http.StatusOK || !strings.Contains(body, "已截断：thing1") || !strings.Contains(body, "一次性留工培训补助、…") || strings.Contains(body, "abc.def") {
		t.Fatalf("sandbox page %d:\n%s", page.status, body)
	}
}
