package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/policytext"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// cli is one deployment (data dir + database + bus names) that commands run against.
type cli struct {
	t       *testing.T
	dataDir string
	env     []string
	db      testenv.DB
}

func newCLI(t *testing.T) *cli {
	db := testenv.OpenDB(t)
	c := &cli{t: t, dataDir: t.TempDir(), db: db}
	sfx := testenv.Suffix()
	c.env = processEnv(db.Driver, db.DSN, testenv.NATSURL(t), "PPE2E_"+sfx, "ppe2e"+sfx,
		"POLICYPUSH_NOTIFY_ACK_WAIT=3s", "POLICYPUSH_NOTIFY_SEND_TIMEOUT=2s",
		"POLICYPUSH_NOTIFY_BACKOFF=100ms,200ms", "POLICYPUSH_NOTIFY_DIGEST_WINDOW=1s")
	return c
}

func (c *cli) command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"--data-dir", c.dataDir}, args...)...)
	cmd.Env = c.env
	return cmd
}

// run executes a command that must succeed and returns its stdout.
func (c *cli) run(args ...string) string {
	c.t.Helper()
	cmd := c.command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("policypush %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func (c *cli) records(t *testing.T, file string) []sandbox.Record {
	t.Helper()
	recs, err := sandbox.ReadRecords(filepath.Join(c.dataDir, "sandbox", file))
	if err != nil && !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Fatal(err)
	}
	return recs
}

type key struct{ policy, firm string }

// TestPipelineEndToEnd: import → apply → match → export → deliver → sandbox, then everything again
// without a single new message. Against MariaDB + nats-server when the environment says so.
func TestPipelineEndToEnd(t *testing.T) {
	c := newCLI(t)
	csvPath := filepath.Join(t.TempDir(), "firms.csv")
	if err := registry.SynthCSVFile(csvPath, 1500, 7, true); err != nil {
		t.Fatal(err)
	}
	out := c.run("import", "enterprises", csvPath)
	if !strings.Contains(out, "拒绝 5") || !strings.Contains(out, "警告 2") {
		t.Fatalf("import summary does not report the 5 bad and 2 warned rows: %s", out)
	}
	polDir := fixture.DemoDir(t)
	out = c.run("policy", "apply", polDir)
	if strings.Count(out, "published version 1") != 6 {
		t.Fatalf("want 6 policies published: %s", out)
	}
	if out = c.run("policy", "apply", polDir); strings.Count(out, "unchanged") != 6 {
		t.Fatalf("re-applying the same files must change nothing: %s", out)
	}
	c.run("match", "--as-of", DemoAsOf)

	// Every (policy, firm, amount) agrees with an independent computation in plain Go.
	want := expectedMatches(t, c.db, DemoAsOf)
	exportPath := filepath.Join(t.TempDir(), "m.csv")
	c.run("matches", "export", "--format", "csv", "-o", exportPath)
	got := readExport(t, exportPath)
	compareMatches(t, want, got)

	// Deliver: every match gets exactly one accepted message per channel it asks for, WeChat
	// failures fall back to SMS, nothing for inactive firms.
	c.run("deliver", "--until-idle", "--timeout", "3m")
	checkDeliveries(t, c, want)
	wechat, sms := len(c.records(t, sandbox.WeChatFile)), len(c.records(t, sandbox.SMSFile))

	// Running match and deliver again sends nothing twice.
	out = c.run("match", "--as-of", DemoAsOf, "--json")
	var sum struct {
		Policies []struct {
			PolicyID     string `json:"policy_id"`
			New, Revoked int
		}
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("match --json: %v\n%s", err, out)
	}
	for _, p := range sum.Policies {
		if p.New != 0 || p.Revoked != 0 {
			t.Fatalf("second match changed something: %s", out)
		}
	}
	c.run("deliver", "--until-idle", "--timeout", "1m")
	if w2, s2 := len(c.records(t, sandbox.WeChatFile)), len(c.records(t, sandbox.SMSFile)); w2 != wechat || s2 != sms {
		t.Fatalf("second run sent more: wechat %d→%d, sms %d→%d", wechat, w2, sms, s2)
	}

	var st struct {
		Enterprises    int64                       `json:"enterprises"`
		PoliciesActive int64                       `json:"policies_active"`
		MatchesActive  int64                       `json:"matches_active"`
		OutboxPending  int64                       `json:"outbox_pending"`
		Deliveries     map[string]map[string]int64 `json:"deliveries"`
	}
	out = c.run("status", "--json", "--as-of", DemoAsOf)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Enterprises != 1502 || st.PoliciesActive != 6 || st.MatchesActive != int64(len(want)) || st.OutboxPending != 0 ||
		st.Deliveries["wechat"]["sent"] != int64(wechat) || st.Deliveries["sms"]["sent"] != int64(sms) {
		t.Fatalf("status disagrees: %s (want %d matches, %d wechat, %d sms)", out, len(want), wechat, sms)
	}

	// A firm deregistered after matching is never notified, and its matches are revoked.
	var firm store.Enterprise
	if err := c.db.DB.Where("status = ?", store.StatusActive).Order("credit_code").Take(&firm).Error; err != nil {
		t.Fatal(err)
	}
	c.db.DB.Model(&store.Enterprise{}).Where("credit_code = ?", firm.CreditCode).Update("status", store.StatusDeregistered)
	c.run("status", "recount") // written around the registry: the firm counts are counted again
	c.run("match", "--as-of", DemoAsOf)
	var active int64
	c.db.DB.Model(&store.Match{}).Where("credit_code = ? AND state = ?", firm.CreditCode, store.MatchActive).Count(&active)
	if active != 0 {
		t.Fatalf("deregistered firm still has %d active matches", active)
	}

	// The maintained match counts agree with a recount; one put out of step is found and repaired.
	c.run("status", "recount", "--check")
	if err := c.db.DB.Exec("UPDATE match_counts SET n = n + 2 WHERE state = 'active' AND policy_id = ?", sum.Policies[0].PolicyID).Error; err != nil {
		t.Fatal(err)
	}
	if out, err := c.command("status", "recount", "--check").CombinedOutput(); err == nil || !strings.Contains(string(out), "不一致") {
		t.Fatalf("recount --check missed a counter out of step: %v\n%s", err, out)
	}
	if out := c.run("status", "recount"); !strings.Contains(out, "已按重新统计的结果修复") {
		t.Fatalf("recount did not repair: %s", out)
	}
	c.run("status", "recount", "--check")
}

// expectedMatches computes the demo catalog's matches from the texts in plain Go (policytext),
// independent of expr, the size table and the rounding of package rules.
func expectedMatches(t *testing.T, db testenv.DB, asOf string) map[key]*float64 {
	t.Helper()
	var firms []store.Enterprise
	if err := db.DB.Where("status = ?", store.StatusActive).Find(&firms).Error; err != nil {
		t.Fatal(err)
	}
	day, err := time.Parse(time.DateOnly, asOf)
	if err != nil {
		t.Fatal(err)
	}
	out := map[key]*float64{}
	for i := range firms {
		for id, amount := range policytext.Decide(&firms[i], day) {
			out[key{id, firms[i].CreditCode}] = amount
		}
	}
	return out
}

func readExport(t *testing.T, path string) map[key]*float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 || strings.Join(rows[0][:3], ",") != "policy_id,credit_code,amount" {
		t.Fatalf("export header: %v", rows[0])
	}
	out := map[key]*float64{}
	for _, r := range rows[1:] {
		var amt *float64
		if r[2] != "" {
			v, err := strconv.ParseFloat(r[2], 64)
			if err != nil {
				t.Fatalf("amount %q: %v", r[2], err)
			}
			amt = &v
		}
		out[key{r[0], r[1]}] = amt
	}
	return out
}

func compareMatches(t *testing.T, want, got map[key]*float64) {
	t.Helper()
	var problems []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("missing %v", k))
		case (w == nil) != (g == nil) || (w != nil && *w != *g):
			problems = append(problems, fmt.Sprintf("%v: amount %v, want %v", k, fmtAmt(g), fmtAmt(w)))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			problems = append(problems, fmt.Sprintf("unexpected %v", k))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Fatalf("%d differences from the independent computation, e.g.:\n%s", len(problems), strings.Join(problems[:min(10, len(problems))], "\n"))
	}
	if len(want) < 100 {
		t.Fatalf("only %d matches: the synthetic registry no longer exercises the demo policies", len(want))
	}
}

func fmtAmt(a *float64) string {
	if a == nil {
		return "none"
	}
	return strconv.FormatFloat(*a, 'f', 2, 64)
}

// checkDeliveries: one accepted message per (match, channel asked for); WeChat-unreachable firms
// got an SMS instead; provider records and delivery rows agree one to one.
func checkDeliveries(t *testing.T, c *cli, want map[key]*float64) {
	t.Helper()
	var deliveries []store.Delivery
	if err := c.db.DB.Find(&deliveries).Error; err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.Delivery{}
	for _, d := range deliveries {
		byID[strconv.FormatUint(d.ID, 10)] = d
	}
	seen := map[string]bool{}
	for _, file := range []string{sandbox.WeChatFile, sandbox.SMSFile} {
		for _, r := range c.records(t, file) {
			d, ok := byID[r.DeliveryID]
			if !ok {
				t.Fatalf("sandbox record %s has no delivery row", r.DeliveryID)
			}
			if seen[r.DeliveryID] {
				t.Fatalf("delivery %s accepted twice", r.DeliveryID)
			}
			seen[r.DeliveryID] = true
			if d.State != store.DeliverySent {
				t.Fatalf("delivery %s accepted by the provider but in state %s", r.DeliveryID, d.State)
			}
		}
	}
	sent := 0
	for _, d := range deliveries {
		if d.State == store.DeliverySent {
			sent++
			if !seen[strconv.FormatUint(d.ID, 10)] {
				t.Fatalf("delivery %d marked sent but the provider has no record", d.ID)
			}
		}
	}
	var matches []store.Match
	c.db.DB.Where("state = ?", store.MatchActive).Find(&matches)
	if len(matches) != len(want) {
		t.Fatalf("%d active matches, want %d", len(matches), len(want))
	}
	reached := map[uint64]bool{}
	for _, d := range deliveries {
		if d.State == store.DeliverySent {
			reached[d.MatchID] = true
		}
	}
	var unreached []uint64
	for _, m := range matches {
		if !reached[m.ID] {
			unreached = append(unreached, m.ID)
		}
	}
	// A match is unreachable only when the firm has neither a usable openid nor a phone.
	for _, id := range unreached {
		var d []store.Delivery
		c.db.DB.Where("match_id = ?", id).Find(&d)
		for _, x := range d {
			if x.State != store.DeliveryDead && x.State != store.DeliverySkipped {
				t.Fatalf("match %d not delivered: delivery %d in state %s (%s)", id, x.ID, x.State, x.LastError)
			}
		}
	}
	t.Logf("%d matches, %d deliveries sent, %d unreachable", len(matches), sent, len(unreached))
}

// TestKillMidDeliveryResendsNothing: SIGKILL the deliverer while it sends, restart it, and every
// notice is accepted exactly once.
func TestKillMidDeliveryResendsNothing(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	c := newCLI(t)
	csvPath := filepath.Join(t.TempDir(), "firms.csv")
	if err := registry.SynthCSVFile(csvPath, 1200, 11, false); err != nil {
		t.Fatal(err)
	}
	c.run("import", "enterprises", csvPath)
	c.matchDemo()
	want := expectedMatches(t, c.db, DemoAsOf)

	for round := 0; round < 3; round++ {
		cmd := c.command("deliver")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it get into the middle of sending, then kill it without warning.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var n int64
			c.db.DB.Model(&store.Delivery{}).Where("state = ?", store.DeliverySent).Count(&n)
			if n > int64(200*(round+1)) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	c.run("deliver", "--until-idle", "--timeout", "3m")
	checkDeliveries(t, c, want)
}
