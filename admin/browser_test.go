package admin

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/device"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// chromium finds the browser: $POLICYPUSH_CHROMIUM, Debian's /usr/bin/chromium, or one on PATH.
// Without one the browser test is skipped, except in CI (POLICYPUSH_TEST_REQUIRE_SERVICES=1),
// where it fails.
func chromium(t *testing.T) string {
	for _, c := range []string{os.Getenv("POLICYPUSH_CHROMIUM"), "/usr/bin/chromium"} {
		if c != "" {
			if _, err := os.Stat(c); err == nil {
				return c
			}
		}
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(testenv.EnvRequire) == "1" {
		t.Fatalf("%s=1 but no Chromium found (apt-get install chromium, or set POLICYPUSH_CHROMIUM)", testenv.EnvRequire)
	}
	t.Skip("no Chromium found (apt-get install chromium, or set POLICYPUSH_CHROMIUM)")
	return ""
}

// artifactsDir is where a browser test's screenshots go: $POLICYPUSH_ARTIFACTS/NAME, or
// artifacts/NAME at the module root (ignored by git). It holds the screenshots of the last run only.
func artifactsDir(t *testing.T, name string) string {
	dir := os.Getenv("POLICYPUSH_ARTIFACTS")
	if dir == "" {
		root, err := filepath.Abs("..")
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "artifacts")
	}
	dir = filepath.Join(dir, name)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser drives one tab of a headless Chromium against the fixture's server.
type browser struct {
	t   *testing.T
	ctx context.Context
	f   *fixture
	dir string
	// screen keeps screenshots to what the screen shows (a phone) instead of the whole page.
	screen bool
}

// stepTimeout bounds one step, so that a step that cannot succeed fails with a screenshot instead
// of using up the whole test.
const stepTimeout = 45 * time.Second

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// click clicks an element that loads a new page (a link or a form's submit button) and waits until
// that page has loaded, so that what follows never reads the page it left.
func (b *browser) click(what string, sel chromedp.CSS, then ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(cdppage.LoadEventFired, nil, chromedp.Click(sel))); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
	if len(then) > 0 {
		b.do(what, then...)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (b *browser) number(sel string) int {
	b.t.Helper()
	s := b.text(sel)
	digits := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
	n, err := strconv.Atoi(digits)
	if err != nil {
		b.t.Fatalf("%s: %q is not a number", sel, s)
	}
	return n
}

// eval runs JavaScript (awaiting a promise) and returns its value.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// landed waits until the tab has left the page at path and finished loading wherever it went,
// and returns its address. Not a load event nor a poll: a redirect off this site ends on an error
// page that may fire neither, and a poll does not survive the navigation.
func (b *browser) landed(path string) string {
	b.t.Helper()
	deadline := time.Now().Add(stepTimeout)
	last := "nothing"
	for time.Now().Before(deadline) {
		href, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
			`document.readyState === 'complete' && location.pathname !== '`+path+`' ? location.href : ''`))
		if err == nil && href != "" {
			return href
		}
		last = fmt.Sprint(href, err)
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("the tab did not settle on a page other than %s (last seen: %s)", path, last)
	return ""
}

// poll waits until a JavaScript condition holds.
func (b *browser) poll(what, js string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(stepTimeout))); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) shot(name string) {
	shoot := chromedp.FullScreenshot(100)
	if b.screen {
		shoot = chromedp.CaptureScreenshot()
	}
	buf, err := chromedp.Run(b.ctx, shoot)
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	name = strings.Map(func(r rune) rune {
		if strings.ContainsRune(`/\%?&=:`, r) {
			return '_'
		}
		return r
	}, name)
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.t.Logf("write %s: %v", path, err)
	}
}

// phone opens a second tab emulating a phone (a firm opening its link).
func (b *browser) phone() *browser {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Emulate(device.IPhone12)); err != nil {
		b.t.Fatalf("open a second tab: %v", err)
	}
	return &browser{t: b.t, ctx: ctx, f: b.f, dir: b.dir, screen: true}
}

func (b *browser) login(user string) {
	b.t.Helper()
	b.do("login as "+user,
		chromedp.Navigate(b.f.ts.URL+"/login"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SetValue(chromedp.ID("username"), user),
		chromedp.SetValue(chromedp.ID("password"), testPassword),
	)
	b.click("sign in as "+user, "#login", chromedp.WaitVisible(chromedp.CSS("header.top .who")))
}

func (b *browser) logout() {
	b.t.Helper()
	b.click("logout", "header.top form button", chromedp.WaitVisible(chromedp.ID("login")))
}

// startBrowser starts a headless Chromium with one tab, closed when the test ends.
func startBrowser(t *testing.T, exe string, f *fixture, dir string, limit time.Duration) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("lang", "zh-CN"), chromedp.WindowSize(1366, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	ctx, cancel := context.WithTimeout(ctx, limit)
	t.Cleanup(cancel)
	// Start the browser on the test's context: a tab belongs to the context that first runs on it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return &browser{t: t, ctx: ctx, f: f, dir: dir}
}

// TestBrowserRedirectAfterSignIn signs in through the form with next values a browser would
// resolve to another site (the tab of the issue, a backslash, encoded slashes): the browser ends
// on this site every time.
func TestBrowserRedirectAfterSignIn(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	f := newFixture(t)
	b := startBrowser(t, exe, f, t.TempDir(), 2*time.Minute)
	site, err := url.Parse(f.ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, next := range []string{"/%09/evil.example", "/%5C/evil.example", "/%2F/evil.example", "%2F%2Fevil.example", "/firms"} {
		b.do("open the sign-in page with next="+next,
			chromedp.Navigate(f.ts.URL+"/login?next="+next),
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SetValue(chromedp.ID("username"), "park_sip"),
			chromedp.SetValue(chromedp.ID("password"), testPassword))
		b.do("sign in with next="+next, chromedp.Click(chromedp.ID("login")))
		href := b.landed("/login")
		u, err := url.Parse(href)
		if err != nil || u.Host != site.Host {
			t.Fatalf("next=%s: after signing in the browser is at %q, not on %s", next, href, site.Host)
		}
		want := "/"
		if next == "/firms" {
			want = "/firms"
		}
		if u.Path != want {
			t.Fatalf("next=%s: after signing in the browser is at %s, want %s", next, u.Path, want)
		}
		b.logout()
	}
}

// TestBrowserJourney walks the whole console in headless Chromium: an author writes and tests a
// rule and submits it; a reviewer reads the diff and the preview, approves and publishes; after
// matching, the park manager sees the newly qualified firms and exports them; a firm opens its
// link on a phone and confirms; the dashboard counts move. Screenshots of each step are kept.
func TestBrowserJourney(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	f := newFixture(t)
	b := startBrowser(t, exe, f, artifactsDir(t, "browser"), 4*time.Minute)
	dir := b.dir
	pol := authorPolicy
	countSIP := func() int64 { return f.countActive("e.park_id = ? AND m.policy_id = ?", "SIP", pol) }
	before := countSIP()

	// 1. The author writes a new version: a typo is pointed at, then fixed, tested and saved.
	b.login("author")
	b.do("open the editor", chromedp.Navigate(f.ts.URL+"/policies/new?from="+pol), chromedp.WaitVisible(chromedp.ID("f-eligibility")))
	eval[chromedp.Void](b, `(() => { const a = document.getElementById('f-eligibility');
		window.goodRule = a.value; a.value = a.value.replace('layoff_rate', 'layof_rate');
		a.dispatchEvent(new Event('input', {bubbles: true})); })()`)
	b.poll("compile error shown at its position", `!!document.querySelector('#err-eligibility pre.caret')`)
	if caret := b.text("#err-eligibility pre.caret"); !strings.Contains(caret, "layof_rate") || !strings.Contains(caret, "^") {
		t.Fatalf("compile error marker: %q", caret)
	}
	b.shot("01-editor-compile-error")
	eval[chromedp.Void](b, `(() => { const e = document.getElementById('f-eligibility'); e.value = window.goodRule;
		const p = document.getElementById('f-params'); p.value = p.value.replace('small_layoff_cap: 0.2', 'small_layoff_cap: 0.35');
		p.dispatchEvent(new Event('input', {bubbles: true})); })()`)
	b.poll("compiles again", `document.getElementById('check-status').textContent.startsWith('编译通过')`)
	b.do("run the tests", chromedp.Click(chromedp.ID("run-tests")))
	b.poll("tests pass", `document.querySelectorAll('#tests li.ok').length > 0 && document.querySelectorAll('#tests li.bad').length === 0`)
	b.shot("02-editor-tests-pass")
	b.click("save the draft", "#save-draft", chromedp.WaitVisible(chromedp.ID("submit-review")))
	b.click("submit for review", "#submit-review", chromedp.WaitVisible(chromedp.CSS(".flash")))
	if s := b.text("#version-state"); s != "待审核" {
		t.Fatalf("after submitting the version is %q", s)
	}
	b.shot("03-version-submitted")
	b.logout()

	// 2. The reviewer reads the change and its effect, approves and publishes.
	b.login("reviewer")
	b.do("open the queue", chromedp.Navigate(f.ts.URL+"/review"))
	b.click("open the submitted version", "#queue a", chromedp.WaitVisible(chromedp.ID("diff")))
	if d := b.text("#diff"); !strings.Contains(d, "small_layoff_cap") {
		t.Fatalf("diff does not show the changed parameter: %q", d)
	}
	b.shot("04-review-diff")
	versionURL := eval[string](b, `location.href`)
	b.click("open the preview", "#preview-link", chromedp.WaitVisible(chromedp.ID("preview-new")))
	if n := b.number("#preview-new"); n == 0 {
		t.Fatal("the preview shows no newly qualifying firm")
	}
	b.shot("05-preview")
	b.do("back to the version", chromedp.Navigate(versionURL), chromedp.WaitVisible(chromedp.ID("approve")))
	b.click("approve", "#approve", chromedp.WaitVisible(chromedp.ID("publish")))
	b.click("publish", "#publish", chromedp.WaitVisible(chromedp.CSS(".flash")))
	if s := b.text("#version-state"); s != "已发布" {
		t.Fatalf("after publishing the version is %q", s)
	}
	b.shot("06-published")
	b.logout()

	// The matcher evaluates the published version (in serve and demo its service does this).
	day, _ := rules.ParseDate(demoAsOf)
	if _, err := matcher.Run(context.Background(), f.db, day.Time, pol, matcher.Options{Workers: 2}); err != nil {
		t.Fatal(err)
	}
	after := countSIP()
	if after <= before {
		t.Fatalf("no new SIP firm qualifies: %d before, %d after", before, after)
	}

	// 3. The park manager sees the new firms and exports what the filter shows.
	b.login("park_sip")
	b.do("dashboard before", chromedp.Navigate(f.ts.URL+"/"), chromedp.WaitVisible(chromedp.ID("count-confirmed")))
	opened0, confirmed0 := b.number("#count-opened"), b.number("#count-confirmed")
	b.do("firms list", chromedp.Navigate(f.ts.URL+"/firms?policy_id="+pol), chromedp.WaitVisible(chromedp.ID("matches")))
	if n := b.number("#match-total"); int64(n) != after {
		t.Fatalf("the list shows %d matches, the park has %d", n, after)
	}
	b.shot("07-park-firms")
	csv := eval[string](b, `fetch(document.getElementById('export-csv').href).then(r => r.text())`)
	if lines := strings.Count(strings.TrimSpace(csv), "\n"); int64(lines) != after || !strings.Contains(csv, "统一社会信用代码") {
		t.Fatalf("the CSV export has %d rows, want %d", lines, after)
	}
	xlsxType := eval[string](b, `fetch(document.getElementById('export-xlsx').href).then(r => r.headers.get('Content-Type'))`)
	if !strings.Contains(xlsxType, "spreadsheetml") {
		t.Fatalf("xlsx export content type %q", xlsxType)
	}
	b.click("open a firm", "#matches td a", chromedp.WaitVisible(chromedp.ID("timeline")))
	if page := b.text("main"); !strings.Contains(page, "符合") || !strings.Contains(page, "跟进记录") {
		t.Fatalf("the firm page lacks explanations or notes:\n%s", page)
	}
	b.do("write a follow-up note", chromedp.SetValue(chromedp.CSS("#note-form textarea"), "已电话联系企业财务，确认对公账户"))
	b.click("save the note", "#note-form button", chromedp.WaitVisible(chromedp.CSS(".timeline li.k-note")))
	b.shot("08-firm")

	// 4. A newly qualified firm opens its link on a phone and confirms.
	var firm store.Enterprise
	if err := f.db.Table("enterprises AS e").Select("e.*").Joins("JOIN matches m ON m.credit_code = e.credit_code").
		Where("m.policy_id = ? AND m.policy_version = 2 AND m.state = ? AND e.park_id = ?", pol, store.MatchActive, "SIP").
		Order("e.credit_code").Limit(1).Scan(&firm).Error; err != nil || firm.CreditCode == "" {
		t.Fatalf("no firm matched by version 2: %v", err)
	}
	pb := b.phone()
	link := f.ts.URL + "/e/" + f.link(firm.CreditCode, pol, time.Hour)
	pb.do("open the enterprise link", chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("confirm-"+pol)))
	page := pb.text("main")
	if !strings.Contains(page, firm.Name) || !strings.Contains(page, "为什么贵单位符合") || !strings.Contains(page, "元") {
		t.Fatalf("the enterprise page lacks the firm, the reasons or the amount:\n%s", page)
	}
	pb.shot("09-enterprise-phone")
	pb.do("fill in the confirmation",
		chromedp.Click(chromedp.CSS("#policy-"+pol+" input[name=agree]")),
		chromedp.SetValue(chromedp.CSS("#policy-"+pol+" input[name=signer]"), "王会计"))
	pb.click("confirm", chromedp.CSS("#confirm-"+pol), chromedp.WaitVisible(chromedp.ID("answer-"+pol)))
	if s := pb.text(".flash"); !strings.Contains(s, "已确认") {
		t.Fatalf("confirmation message %q", s)
	}
	pb.do("scroll to the answer", chromedp.ScrollIntoView(chromedp.ID("answer-"+pol)))
	pb.shot("10-enterprise-confirmed")

	// 5. The dashboard counts moved.
	b.do("dashboard after", chromedp.Navigate(f.ts.URL+"/"), chromedp.WaitVisible(chromedp.ID("count-confirmed")))
	if o, c := b.number("#count-opened"), b.number("#count-confirmed"); o != opened0+1 || c != confirmed0+1 {
		t.Fatalf("dashboard: opened %d→%d, confirmed %d→%d", opened0, o, confirmed0, c)
	}
	b.shot("11-dashboard")
	if n := f.auditCount("park_sip", "firm.export", "matches"); n != 2 {
		t.Fatalf("exports audited: %d", n)
	}
	t.Logf("screenshots in %s", dir)
}
