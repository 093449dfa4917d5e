package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/store"
)

// refused runs a command that must fail and returns its stderr.
func (c *cli) refused(args ...string) string {
	c.t.Helper()
	_, stderr := c.runFail(args...)
	return stderr
}

// TestPayoutEndToEnd: match → batch → second-person approval → 公示 with an objection → export →
// bank results with failures → paid notices exactly once in the sandbox → status equals a
// recount; the payment file's total equals its rows. Against MariaDB + nats-server when the
// environment says so.
func TestPayoutEndToEnd(t *testing.T) {
	c := newCLI(t)
	c.importSynth(400, 5)
	c.matchDemo()
	const policy = "liugong-peixun-2022" // amounts, WeChat and SMS

	var created payout.Created
	if err := json.Unmarshal([]byte(c.run("payout", "create", "--policy", policy, "--as-of", DemoAsOf, "--by", "alice", "--json")), &created); err != nil {
		t.Fatal(err)
	}
	if created.Firms < 6 {
		t.Fatalf("batch %+v too small for the test", created)
	}
	id := strconv.FormatUint(created.BatchID, 10)
	if msg := c.refused("payout", "approve", id, "--by", "alice"); !strings.Contains(msg, "two-person") {
		t.Fatalf("creator approving: %s", msg)
	}
	var lines []store.PayoutLine
	c.db.DB.Where("batch_id = ?", created.BatchID).Order("credit_code").Find(&lines)
	c.run("payout", "approve", id, "--by", "bob", "--remove", lines[0].CreditCode+"=营业执照信息待核实")
	c.run("payout", "publicize", id, "--days", "5", "--by", "alice")

	// A firm objects on its page during the 公示 (the console's path, tested in package admin).
	svc := payout.New(c.db.DB, payout.Options{})
	o, err := svc.Object(context.Background(), created.BatchID, lines[1].CreditCode, "金额计算有误，参保人数应为实缴人数")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pay.csv")
	if msg := c.refused("payout", "export", id, "--format", "csv", "-o", out, "--by", "alice"); !strings.Contains(msg, "公示") {
		t.Fatalf("export during the 公示: %s", msg)
	}
	c.run("payout", "decide", strconv.FormatUint(o.ID, 10), "--decision", "sustained", "--note", "核实后移出本批", "--by", "bob")
	c.db.DB.Model(&store.PayoutBatch{}).Where("id = ?", created.BatchID).Update("publicize_until", time.Now().Add(-time.Minute))
	printed := c.run("payout", "export", id, "--format", "csv", "-o", out, "--by", "alice")
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var fileFen int64
	for _, r := range rows[1:] {
		fen, err := payout.ParseFen(r[2])
		if err != nil {
			t.Fatal(err)
		}
		fileFen += fen
	}
	var batch store.PayoutBatch
	c.db.DB.Where("id = ?", created.BatchID).Take(&batch)
	if len(rows)-1 != created.Firms-2 || fileFen != batch.AmountFen || !strings.Contains(printed, "total "+payout.Yuan(fileFen)) {
		t.Fatalf("payment file: %d rows (batch %d firms − 2), total %s, batch %s; printed %s", len(rows)-1, created.Firms, payout.Yuan(fileFen), payout.Yuan(batch.AmountFen), printed)
	}

	// The bank pays all but two rows; one line of the file is wrong.
	var res strings.Builder
	res.WriteString("credit_code,status,paid_at,reason\n")
	failed := map[string]bool{}
	for i, r := range rows[1:] {
		if i < 2 {
			failed[r[0]] = true
			res.WriteString(r[0] + ",failed,,账户已冻结\n")
		} else {
			res.WriteString(r[0] + ",paid,2022-10-28,\n")
		}
	}
	res.WriteString("91000000000000000X,paid,2022-10-28,\n")
	resPath := filepath.Join(t.TempDir(), "bank.csv")
	if err := os.WriteFile(resPath, []byte(res.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var sum payout.ResultSummary
	if err := json.Unmarshal([]byte(c.run("payout", "results", id, resPath, "--by", "alice", "--json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Paid != len(rows)-3 || sum.Failed != 2 || len(sum.Issues) != 1 || !sum.Closed {
		t.Fatalf("results %+v", sum)
	}
	if err := json.Unmarshal([]byte(c.run("payout", "results", id, resPath, "--by", "alice", "--json")), &sum); err != nil || sum.Paid+sum.Failed != 0 {
		t.Fatalf("re-import changed something: %+v %v", sum, err)
	}

	// Every notice goes out exactly once: the 公示 notices, then paid and failed.
	c.run("deliver", "--until-idle", "--timeout", "3m")
	c.run("deliver", "--until-idle", "--timeout", "1m")
	var ds []store.Delivery
	c.db.DB.Where("kind <> ''").Find(&ds)
	byID := map[string]store.Delivery{}
	for _, d := range ds {
		byID[strconv.FormatUint(d.ID, 10)] = d
	}
	paidLines := map[uint64]bool{}
	var paid []store.PayoutLine
	c.db.DB.Where("batch_id = ? AND state = ?", created.BatchID, store.LinePaid).Find(&paid)
	for _, l := range paid {
		paidLines[l.ID] = true
	}
	reached := map[uint64]int{} // paid line → accepted messages announcing it
	seen := map[string]bool{}
	for _, file := range []string{sandbox.WeChatFile, sandbox.SMSFile} {
		for _, r := range c.records(t, file) {
			d, ok := byID[r.DeliveryID]
			if !ok {
				continue // a match notice
			}
			if seen[r.DeliveryID] {
				t.Fatalf("payout delivery %s accepted twice", r.DeliveryID)
			}
			seen[r.DeliveryID] = true
			if d.Kind != bus.NoticePaid {
				continue
			}
			var items []store.DeliveryItem
			c.db.DB.Where("delivery_id = ?", d.ID).Find(&items)
			for _, it := range items {
				reached[it.Ref]++
			}
			if file == sandbox.WeChatFile && (len(r.Truncated) != 0 || r.Shown["phrase4"] != "已拨付到账") {
				t.Errorf("paid notice shows %v (cut %v)", r.Shown, r.Truncated)
			}
		}
	}
	var firms []store.Enterprise
	c.db.DB.Where("credit_code IN ?", codesOf(paid)).Find(&firms)
	reachable := 0
	for _, e := range firms {
		if e.WechatOpenID != "" || e.ContactPhone != "" {
			reachable++
		}
	}
	for l, n := range reached {
		if !paidLines[l] || n > 2 {
			t.Errorf("paid notice for line %d: %d messages", l, n)
		}
	}
	if len(reached) < reachable-1 || len(reached) == 0 {
		t.Errorf("paid notices reached %d of %d paid firms with a contact", len(reached), reachable)
	}

	// status --json counts what a recount of the lines gives.
	var st struct {
		Payouts []payout.PolicyFigures `json:"payouts"`
	}
	if err := json.Unmarshal([]byte(c.run("status", "--json", "--as-of", DemoAsOf)), &st); err != nil {
		t.Fatal(err)
	}
	var paidFen int64
	for _, l := range paid {
		paidFen += l.AmountFen
	}
	want := payout.PolicyFigures{PolicyID: policy, Batched: int64(created.Firms - 2), Approved: int64(created.Firms - 2),
		Publicized: int64(created.Firms - 2), Paid: int64(len(paid)), PaidFen: paidFen, PaidAmount: payout.Yuan(paidFen), Failed: 2}
	if len(st.Payouts) != 1 || st.Payouts[0] != want {
		t.Fatalf("status payouts %+v, recount %+v", st.Payouts, want)
	}

	// The failed firms and the reviewer's removal come back in the next round; the sustained
	// objection and the paid firms do not.
	var again payout.Created
	if err := json.Unmarshal([]byte(c.run("payout", "create", "--policy", policy, "--as-of", DemoAsOf, "--by", "alice", "--json")), &again); err != nil {
		t.Fatal(err)
	}
	if again.Firms != 3 || again.Round != 2 {
		t.Errorf("re-batch %+v, want the 2 failed firms and the removed one", again)
	}
	show := c.run("payout", "show", strconv.FormatUint(created.BatchID, 10))
	for _, step := range []string{"created", "removed", "approved", "publicized", "objected", "objection_sustained", "exported", "paid", "failed", "closed"} {
		if !strings.Contains(show, step) {
			t.Errorf("history lacks %s:\n%s", step, show)
		}
	}
}

func codesOf(lines []store.PayoutLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.CreditCode
	}
	return out
}
