package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/store"
)

// TestPolicyApplyFollowsTheLifecycle: without staff accounts apply publishes directly and says so
// (output and audit log); once accounts exist --by must name one with the right role and a change
// becomes a version in review that a second person publishes; policy.review: false lets a
// reviewer publish at once. --by on other commands names an account with the permission.
func TestPolicyApplyFollowsTheLifecycle(t *testing.T) {
	c := newCLI(t)
	c.importSynth(100, 4)
	polDir := fixture.DemoDir(t)
	const id = "kuogang-buzhu-2022"
	file := filepath.Join(polDir, id+".yaml")
	published := func() int {
		t.Helper()
		var p store.Policy
		if err := c.db.DB.Where("id = ?", id).Take(&p).Error; err != nil {
			t.Fatal(err)
		}
		return p.PublishedVersion
	}
	version := func(amount int) string {
		b, _ := os.ReadFile(file)
		out := filepath.Join(t.TempDir(), id+".yaml")
		os.WriteFile(out, bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("per_graduate: 1500"), []byte("per_graduate: "+strconv.Itoa(amount))),
			[]byte("amount: 4500"), []byte("amount: "+strconv.Itoa(3*amount))), 0o644)
		return out
	}

	// The single-operator default.
	if out := c.run("policy", "apply", file, "--by", "ops"); !strings.Contains(out, "单人运维模式") || !strings.Contains(out, "published version 1") {
		t.Fatalf("apply without accounts:\n%s", out)
	}
	var row store.AuditLog
	if err := c.db.DB.Where("object = ? AND action = ?", id, "policy.publish").Take(&row).Error; err != nil ||
		!strings.Contains(row.Detail, "single-operator") || row.Actor != "ops" {
		t.Fatalf("the audit row does not say no second person reviewed it: %+v %v", row, err)
	}

	for _, u := range []store.User{{Username: "alice", Role: store.RoleAuthor}, {Username: "bob", Role: store.RoleReviewer},
		{Username: "pm", Role: store.RolePark, ParkID: "SIP"}} {
		u.PasswordHash = "x"
		if err := c.db.DB.Create(&u).Error; err != nil {
			t.Fatal(err)
		}
	}
	v2 := version(2000)
	for _, tc := range []struct{ by, says string }{
		{"ghost-user", "does not exist"},
		{"bob", "only a policy author"},
		{"pm", "only a policy author"},
	} {
		if _, stderr := c.runFail("policy", "apply", v2, "--by", tc.by); !strings.Contains(stderr, tc.says) {
			t.Errorf("apply --by %s: %s", tc.by, stderr)
		}
	}
	if _, stderr := c.runFail("policy", "apply", v2); !strings.Contains(stderr, "does not exist") {
		t.Errorf("apply without --by once accounts exist: %s", stderr)
	}
	if out := c.run("policy", "apply", v2, "--by", "alice"); !strings.Contains(out, "version 2 in review") || published() != 1 {
		t.Fatalf("apply by an author must leave a version in review, published %d:\n%s", published(), out)
	}
	if out := c.run("policy", "apply", v2, "--by", "alice"); !strings.Contains(out, "already in_review") {
		t.Fatalf("applying the same file again:\n%s", out)
	}
	if _, stderr := c.runFail("policy", "review", id, "--approve", "--by", "alice"); !strings.Contains(stderr, "not allowed") {
		t.Errorf("the author approved: %s", stderr)
	}
	c.run("policy", "review", id, "--approve", "--by", "bob")
	c.run("policy", "publish", id, "--by", "bob", "--as-of", DemoAsOf)
	if published() != 2 {
		t.Fatalf("published version %d after review, want 2", published())
	}

	// Review switched off: a reviewer publishes at once, an author cannot.
	c.env = append(c.env, "POLICYPUSH_POLICY_REVIEW=false")
	v3 := version(2500)
	if _, stderr := c.runFail("policy", "apply", v3, "--by", "alice"); !strings.Contains(stderr, "only a reviewer") {
		t.Errorf("review off, apply by an author: %s", stderr)
	}
	if out := c.run("policy", "apply", v3, "--by", "bob"); !strings.Contains(out, "policy.review: false") || published() != 3 {
		t.Fatalf("review off, apply by a reviewer (published %d):\n%s", published(), out)
	}

	// Other commands: --by names an account with the permission.
	var firm store.Enterprise
	c.db.DB.Order("credit_code").Take(&firm)
	for _, args := range [][]string{
		{"explain", "--policy", id, "--firm", firm.CreditCode, "--as-of", DemoAsOf, "--by", "ghost-user"},
		{"explain", "--policy", id, "--firm", firm.CreditCode, "--as-of", DemoAsOf, "--by", "alice"},
		{"deliveries", "resend", "1", "--by", "pm"},
		{"users", "unlock", "alice", "--by", "bob"},
	} {
		if _, stderr := c.runFail(args...); !strings.Contains(stderr, "not allowed") {
			t.Errorf("%v: %s", args, stderr)
		}
	}
	if out := c.run("explain", "--policy", id, "--firm", firm.CreditCode, "--as-of", DemoAsOf, "--by", "pm"); !strings.Contains(out, "结论") {
		t.Errorf("explain by a park manager:\n%s", out)
	}
}
