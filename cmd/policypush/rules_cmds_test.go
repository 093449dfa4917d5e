package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// runFail executes a command that must fail and returns its stdout and stderr.
func (c *cli) runFail(args ...string) (string, string) {
	c.t.Helper()
	cmd := c.command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		c.t.Fatalf("policypush %s succeeded, want a failure\nstdout:\n%s", strings.Join(args, " "), stdout.String())
	}
	return stdout.String(), stderr.String()
}

func (c *cli) importSynth(n int, seed int64) {
	c.t.Helper()
	path := filepath.Join(c.t.TempDir(), "firms.csv")
	if err := registry.SynthCSVFile(path, n, seed, false); err != nil {
		c.t.Fatal(err)
	}
	c.run("import", "enterprises", path)
}

// matchDemo publishes the demo catalog and matches the registry as of DemoAsOf.
func (c *cli) matchDemo() {
	c.t.Helper()
	c.run("policy", "apply", fixture.DemoDir(c.t))
	c.run("match", "--as-of", DemoAsOf)
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHostileRulesThroughTheCLI is the sandbox's done-when: every hostile or malformed rule of the
// corpus is rejected by `policy apply` with a located error, or accepted and then evaluated by
// `match` over a 5,000-firm registry — the process finishes, runtime errors are recorded per firm
// and policy, and nothing crashes or hangs (the test binary's timeout guards the run).
func TestHostileRulesThroughTheCLI(t *testing.T) {
	c := newCLI(t)
	c.importSynth(5000, 3)
	dir := t.TempDir()
	copyDir(t, "../../rules/testdata/hostile", dir)
	million := "# want: reject: at most 4000\nid: hostile-million-parens\ntitle: 一百万层括号\neffective_from: 2022-01-01\nchannels: [wechat]\neligibility: \"" +
		strings.Repeat("(", 1_000_000) + "1" + strings.Repeat(")", 1_000_000) + " > 0\"\n"
	if err := os.WriteFile(filepath.Join(dir, "million-parens.yaml"), []byte(million), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr := c.runFail("policy", "apply", dir, "--by", "red-team")
	entries, _ := os.ReadDir(dir)
	rejected, accepted, errorPolicies := 0, 0, []string{}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		want, _, _ := strings.Cut(strings.TrimPrefix(string(b), "# want: "), "\n")
		id := "hostile-" + strings.TrimSuffix(e.Name(), ".yaml")
		if mention, ok := strings.CutPrefix(want, "reject:"); ok {
			rejected++
			line := lineWith(stderr, e.Name()+":")
			if line == "" || !strings.Contains(line, strings.TrimSpace(mention)) || !strings.Contains(line, "policy "+id) {
				t.Errorf("%s: stderr line %q does not say %q", e.Name(), line, strings.TrimSpace(mention))
			}
			continue
		}
		accepted++
		if !strings.Contains(stdout, id+": published version 1") {
			t.Errorf("%s was not published:\n%s", id, stdout)
		}
		if want == "accept errors" {
			errorPolicies = append(errorPolicies, id)
		}
	}
	if rejected < 45 || accepted < 20 {
		t.Fatalf("%d rejected, %d accepted", rejected, accepted)
	}

	var sum struct {
		Firms    int
		Policies []struct {
			PolicyID string `json:"policy_id"`
			Errors   int
			Skipped  string
		}
	}
	out := c.run("match", "--as-of", DemoAsOf, "--json")
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("match --json: %v\n%s", err, out)
	}
	if sum.Firms < 4500 || len(sum.Policies) != accepted {
		t.Fatalf("match evaluated %d firms and %d policies, want ~5000 and %d", sum.Firms, len(sum.Policies), accepted)
	}
	errs := map[string]int{}
	for _, p := range sum.Policies {
		errs[p.PolicyID] = p.Errors
	}
	for _, id := range errorPolicies {
		var rows int64
		c.db.DB.Model(&store.EvalError{}).Where("policy_id = ?", id).Count(&rows)
		if errs[id] == 0 || rows == 0 {
			t.Errorf("%s: %d errors reported, %d recorded; want the runtime errors recorded per firm", id, errs[id], rows)
		}
	}
	var audit int64
	c.db.DB.Model(&store.AuditLog{}).Where("actor = ? AND action = ?", "red-team", "policy.publish").Count(&audit)
	if audit != int64(accepted) {
		t.Errorf("%d publish audit records by red-team, want %d", audit, accepted)
	}
}

func lineWith(s, needle string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, needle) {
			return l
		}
	}
	return ""
}

// explainJSON is the contract of `explain --json`.
type explainJSON struct {
	Eligible   bool     `json:"eligible"`
	Amount     *float64 `json:"amount"`
	Version    int      `json:"version"`
	Summary    string   `json:"summary"`
	Conditions []struct {
		Text   string         `json:"text"`
		Label  string         `json:"label"`
		Holds  *bool          `json:"holds"`
		Values map[string]any `json:"values"`
	} `json:"conditions"`
	ExcludedBy *struct {
		PolicyID string `json:"policy_id"`
	} `json:"excluded_by"`
}

// TestExplainAndCalcCLI: `explain --json` agrees with the stored matches on a sample of pairs and
// carries the documented fields; `calc` answers from partial facts.
func TestExplainAndCalcCLI(t *testing.T) {
	c := newCLI(t)
	c.importSynth(600, 21)
	c.matchDemo()
	exportPath := filepath.Join(t.TempDir(), "m.csv")
	c.run("matches", "export", "-o", exportPath)
	matched := readExport(t, exportPath)
	var firms []store.Enterprise
	c.db.DB.Order("credit_code").Limit(15).Find(&firms)
	policies := []string{"liugong-peixun-2022", "wengang-fanhuan-2022", "liudi-tuishui-2022"}
	for _, f := range firms {
		for _, p := range policies {
			var ex explainJSON
			out := c.run("explain", "--policy", p, "--firm", f.CreditCode, "--as-of", DemoAsOf, "--json", "--by", "auditor1")
			if err := json.Unmarshal([]byte(out), &ex); err != nil {
				t.Fatalf("explain --json: %v\n%s", err, out)
			}
			amount, ok := matched[key{p, f.CreditCode}]
			if ex.Eligible != ok || (ok && (ex.Amount == nil) != (amount == nil)) {
				t.Fatalf("%s / %s: explain %v %v, match %v %v", p, f.CreditCode, ex.Eligible, ex.Amount, ok, amount)
			}
			if len(ex.Conditions) < 3 || ex.Version != 1 || ex.Summary == "" {
				t.Fatalf("explain output: %s", out)
			}
			for _, cond := range ex.Conditions {
				if cond.Text == "" || cond.Label == "" || cond.Holds == nil || cond.Values == nil {
					t.Fatalf("condition without text, label, holds or values: %s", out)
				}
			}
		}
	}
	var reads int64
	c.db.DB.Model(&store.AuditLog{}).Where("actor = ? AND action = ?", "auditor1", "firm.explain").Count(&reads)
	if reads != int64(len(firms)*len(policies)) {
		t.Errorf("%d audited reads, want %d", reads, len(firms)*len(policies))
	}
	text := c.run("explain", "--policy", "liugong-peixun-2022", "--firm", firms[0].CreditCode, "--as-of", DemoAsOf)
	if !strings.Contains(text, "结论：") || !strings.Contains(text, "规则：insured_employees > 0") {
		t.Errorf("explain text:\n%s", text)
	}
	_, stderr := c.runFail("explain", "--policy", "no-such-policy", "--firm", firms[0].CreditCode)
	if !strings.Contains(stderr, "not published") {
		t.Errorf("unknown policy: %s", stderr)
	}

	facts := filepath.Join(t.TempDir(), "facts.json")
	os.WriteFile(facts, []byte(`{"as_of": "2022-09-30", "region_code": "320571", "insured_employees": 40, "tax_credit_rating": "A"}`), 0o644)
	var rep rules.CalcReport
	if err := json.Unmarshal([]byte(c.run("calc", facts, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]string{}
	for _, r := range rep.Results {
		outcomes[r.PolicyID] = r.Outcome
		if r.PolicyID == "liugong-peixun-2022" && (r.Amount == nil || *r.Amount != 20000) {
			t.Errorf("calc amount %v", r.Amount)
		}
	}
	if len(rep.Results) != 6 || outcomes["liugong-peixun-2022"] != rules.CalcEligible || outcomes["liushui-liangfei-2022"] != rules.CalcUndecided {
		t.Errorf("calc outcomes %v", outcomes)
	}
	os.WriteFile(facts, []byte(`{"insured_employes": 40}`), 0o644)
	if _, stderr := c.runFail("calc", facts); !strings.Contains(stderr, "unknown field insured_employes") {
		t.Errorf("calc with a misspelt field: %s", stderr)
	}
	if out := c.run("near-misses", "--policy", "kuogang-buzhu-2022", "--as-of", DemoAsOf, "--json"); !strings.Contains(out, `"total"`) {
		t.Errorf("near-misses: %s", out)
	}
}

// TestLifecycleCLI: draft → submit → review → publish through the CLI, with the two-person rule,
// roles from the users table, the preview, versions, diff and retirement.
func TestLifecycleCLI(t *testing.T) {
	c := newCLI(t)
	c.importSynth(400, 5)
	polDir := fixture.DemoDir(t)
	file := filepath.Join(polDir, "kuogang-buzhu-2022.yaml")
	c.run("policy", "apply", file)
	b, _ := os.ReadFile(file)
	v2 := filepath.Join(t.TempDir(), "kuogang-v2.yaml")
	os.WriteFile(v2, bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("per_graduate: 1500"), []byte("per_graduate: 2000")),
		[]byte("amount: 4500"), []byte("amount: 6000")), 0o644)

	for _, u := range []store.User{{Username: "alice", Role: store.RoleAuthor}, {Username: "bob", Role: store.RoleReviewer}} {
		u.PasswordHash = "x"
		if err := c.db.DB.Create(&u).Error; err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr := c.runFail("policy", "draft", v2, "--by", "mallory"); !strings.Contains(stderr, "does not exist") {
		t.Errorf("unknown user: %s", stderr)
	}
	if _, stderr := c.runFail("policy", "draft", v2, "--by", "bob"); !strings.Contains(stderr, "only a policy author") {
		t.Errorf("a reviewer drafted: %s", stderr)
	}
	if out := c.run("policy", "draft", v2, "--by", "alice"); !strings.Contains(out, "draft version 2") {
		t.Fatalf("draft: %s", out)
	}
	c.run("policy", "submit", "kuogang-buzhu-2022", "--by", "alice")
	if _, stderr := c.runFail("policy", "review", "kuogang-buzhu-2022", "--approve", "--by", "alice"); !strings.Contains(stderr, "not allowed") {
		t.Errorf("the author reviewed: %s", stderr)
	}
	c.run("policy", "review", "kuogang-buzhu-2022", "--approve", "--by", "bob")
	preview := c.run("policy", "preview", "kuogang-buzhu-2022", "--as-of", DemoAsOf, "--json")
	var rep rules.PreviewReport
	if err := json.Unmarshal([]byte(preview), &rep); err != nil || rep.Version != 2 || rep.CurrentVersion != 1 || rep.Kept == 0 || rep.AmountAfter <= rep.AmountBefore {
		t.Fatalf("preview: %v %s", err, preview)
	}
	if out := c.run("policy", "publish", "kuogang-buzhu-2022", "--by", "bob", "--as-of", DemoAsOf); !strings.Contains(out, "published version 2 (was 1)") || !strings.Contains(out, "继续符合") {
		t.Fatalf("publish: %s", out)
	}
	versions := c.run("policy", "versions", "kuogang-buzhu-2022")
	if !strings.Contains(versions, "superseded") || !strings.Contains(versions, "published") || !strings.Contains(versions, "alice") {
		t.Errorf("versions:\n%s", versions)
	}
	if diff := c.run("policy", "diff", "kuogang-buzhu-2022", "1", "2"); !strings.Contains(diff, "params.per_graduate:\n  - 1500\n  + 2000") {
		t.Errorf("diff:\n%s", diff)
	}
	c.run("match", "--as-of", DemoAsOf)
	var m store.Match
	c.db.DB.Where("policy_id = ? AND state = ?", "kuogang-buzhu-2022", store.MatchActive).Take(&m)
	if m.PolicyVersion != 2 {
		t.Fatalf("match did not move to version 2: %+v", m)
	}
	if out := c.run("policy", "retire", "kuogang-buzhu-2022", "--by", "bob", "--reason", "到期"); !strings.Contains(out, "retired") {
		t.Fatalf("retire: %s", out)
	}
	var active int64
	c.db.DB.Model(&store.Match{}).Where("policy_id = ? AND state = ?", "kuogang-buzhu-2022", store.MatchActive).Count(&active)
	if active != 0 {
		t.Errorf("%d active matches after retiring", active)
	}
	var steps []string
	c.db.DB.Model(&store.AuditLog{}).Where("object = ?", "kuogang-buzhu-2022").Order("id").Pluck("action", &steps)
	if strings.Join(steps, ",") != "policy.publish,policy.draft,policy.submit,policy.approve,policy.publish,policy.retire" {
		t.Errorf("audit trail %v", steps)
	}
}

// TestExtraFieldsCLI: a field declared in config becomes a typed variable: listed by `fields`,
// imported by `facts import`, matched on and explained with its label.
func TestExtraFieldsCLI(t *testing.T) {
	c := newCLI(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("fields:\n  extra:\n    - {key: rd_staff, label: 研发人员数, type: int, unit: 人, source: 科技部门}\n"), 0o644)
	c.env = append(c.env, "POLICYPUSH_CONFIG="+cfg)
	if out := c.run("fields"); !strings.Contains(out, "rd_staff") || !strings.Contains(out, "研发人员数") {
		t.Fatalf("fields does not list the extra field:\n%s", out)
	}
	c.importSynth(300, 4)
	var firms []store.Enterprise
	c.db.DB.Where("status = ?", store.StatusActive).Order("credit_code").Limit(40).Find(&firms)
	var csv strings.Builder
	csv.WriteString("credit_code,研发人员数\n")
	for i, f := range firms {
		fmt.Fprintf(&csv, "%s,%d\n", f.CreditCode, i)
	}
	factsPath := filepath.Join(t.TempDir(), "facts.csv")
	os.WriteFile(factsPath, []byte(csv.String()), 0o644)
	c.run("facts", "import", factsPath)
	pol := filepath.Join(t.TempDir(), "rd.yaml")
	os.WriteFile(pol, []byte("id: rd-2022\ntitle: 研发补助\neffective_from: 2022-01-01\neligibility: rd_staff >= 10\namount: 100 * rd_staff\nchannels: [wechat]\n"), 0o644)
	c.run("policy", "apply", pol)
	c.run("match", "--as-of", DemoAsOf)
	var n int64
	c.db.DB.Model(&store.Match{}).Where("policy_id = ? AND state = ?", "rd-2022", store.MatchActive).Count(&n)
	if n != int64(len(firms)-10) {
		t.Fatalf("%d matches, want %d (firms with rd_staff >= 10)", n, len(firms)-10)
	}
	var ex explainJSON
	json.Unmarshal([]byte(c.run("explain", "--policy", "rd-2022", "--firm", firms[9].CreditCode, "--as-of", DemoAsOf, "--json")), &ex)
	if ex.Eligible || len(ex.Conditions) != 1 || ex.Conditions[0].Label != "研发人员数 9 < 10" {
		t.Fatalf("explanation: %+v", ex)
	}
}
