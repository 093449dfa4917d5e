package admin

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/store"
)

// TestBrowserPayout walks the 公示 in headless Chromium: the author starts it on the batch page,
// anyone reads the public listing (masked codes), a listed firm objects on its phone, the
// reviewer sustains the objection on the batch page, and the firm sees the decision.
func TestBrowserPayout(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	f := newFixture(t)
	dir := artifactsDir(t, "browser-payout")
	b := startBrowser(t, exe, f, dir, 4*time.Minute)
	policy := f.payoutPolicy("省人力资源和社会保障厅")
	var c payout.Created
	f.do(f.session("author"), "POST", "/api/v1/payouts", map[string]any{"policy_id": policy}).json(t, &c)
	if r := f.do(f.session("reviewer"), "POST", fmt.Sprintf("/api/v1/payouts/%d/approve", c.BatchID), map[string]any{}); r.status != 200 {
		t.Fatalf("approve: %d %s", r.status, r.body)
	}
	batchURL := fmt.Sprintf("%s/payouts/%d", f.ts.URL, c.BatchID)

	// 1. The author starts the 公示.
	b.login("author")
	b.do("open the batch", chromedp.Navigate(batchURL), chromedp.WaitVisible(chromedp.ID("publicize")))
	b.click("publicize", "#publicize", chromedp.WaitVisible(chromedp.CSS(".flash")))
	if s := b.text("#batch-state"); s != "公示中" {
		t.Fatalf("after publicizing the batch is %q", s)
	}
	b.shot("01-batch-publicized")
	b.logout()

	// 2. The public listing: names, masked codes, amounts; nobody signs in.
	var line store.PayoutLine
	f.db.Where("batch_id = ?", c.BatchID).Order("credit_code").Take(&line)
	pb := b.phone()
	pb.do("open the 公示", chromedp.Navigate(fmt.Sprintf("%s/publicity/%d", f.ts.URL, c.BatchID)), chromedp.WaitVisible(chromedp.ID("publicity")))
	listing := pb.text("#publicity")
	if strings.Contains(listing, line.CreditCode) || !strings.Contains(listing, payout.MaskCode(line.CreditCode)) || !strings.Contains(listing, line.Name) {
		t.Fatalf("the 公示 shows full codes or lacks the firm:\n%s", listing)
	}
	if n := strings.Count(listing, "\n"); n < c.Firms {
		t.Fatalf("the 公示 lists %d rows for %d firms", n, c.Firms)
	}
	pb.shot("02-publicity-phone")

	// 3. A listed firm objects on its own page.
	link := f.ts.URL + "/e/" + f.link(line.CreditCode, policy, time.Hour)
	objectBtn := fmt.Sprintf("#payout-object-%d", c.BatchID)
	pb.do("open the firm's page", chromedp.Navigate(link), chromedp.WaitReady(chromedp.CSS(objectBtn)),
		chromedp.Click(chromedp.CSS(fmt.Sprintf("#payout-%d details summary", line.ID))),
		chromedp.SetValue(chromedp.CSS(fmt.Sprintf("#payout-%d textarea[name=reason]", line.ID)), "参保人数有误，金额应为 3000 元"))
	pb.click("object", chromedp.CSS(objectBtn), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if s := pb.text(fmt.Sprintf("#payout-%d .payout-state", line.ID)); s != "异议处理中" {
		t.Fatalf("after objecting the line is %q", s)
	}
	pb.do("scroll to the payment", chromedp.ScrollIntoView(chromedp.CSS(fmt.Sprintf("#payout-%d", line.ID))))
	pb.shot("03-firm-objected")

	// 4. The reviewer sustains it on the batch page.
	var o store.PayoutObjection
	f.db.Where("line_id = ?", line.ID).Take(&o)
	b.login("reviewer")
	b.do("open the batch", chromedp.Navigate(batchURL), chromedp.WaitVisible(chromedp.ID(fmt.Sprintf("sustain-%d", o.ID))),
		chromedp.SetValue(chromedp.CSS(fmt.Sprintf("#objection-%d input[name=note]", o.ID)), "核实后金额有误，本批移出，更正后重新办理"))
	b.click("sustain", chromedp.CSS(fmt.Sprintf("#sustain-%d", o.ID)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if s := b.text(fmt.Sprintf("#objection-%d .decision", o.ID)); s != "异议成立" {
		t.Fatalf("decision shown as %q", s)
	}
	if s := b.text(fmt.Sprintf("#line-%s .line-state", line.CreditCode)); s != "已移出" {
		t.Fatalf("the line is %q after the objection was sustained", s)
	}
	b.shot("04-objection-sustained")

	// 5. The firm sees the decision; the 公示 no longer lists it.
	pb.do("reload the firm's page", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID(fmt.Sprintf("payout-objection-%d", o.ID))))
	if s := pb.text(fmt.Sprintf("#payout-objection-%d", o.ID)); !strings.Contains(s, "异议成立") {
		t.Fatalf("the firm sees %q", s)
	}
	pb.do("scroll to the decision", chromedp.ScrollIntoView(chromedp.ID(fmt.Sprintf("payout-objection-%d", o.ID))))
	pb.shot("05-firm-decision")
	pb.do("reload the 公示", chromedp.Navigate(fmt.Sprintf("%s/publicity/%d", f.ts.URL, c.BatchID)), chromedp.WaitVisible(chromedp.ID("publicity")))
	if s := pb.text("#publicity"); strings.Contains(s, payout.MaskCode(line.CreditCode)+"\t") && strings.Contains(s, line.Name) {
		t.Fatalf("the removed firm is still listed:\n%s", s)
	}
	t.Logf("screenshots in %s", dir)
}
