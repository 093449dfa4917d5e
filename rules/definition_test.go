package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodPolicy = `id: p1
title: 测试政策
effective_from: 2022-01-01
effective_to: 2022-12-31
params:
  cut: 10
eligibility: |
  insured_employees >= params.cut
  && in_region("3205")
amount: 100 * insured_employees
channels: [wechat]
tests:
  - firm: {insured_employees: 10, region_code: "320571"}
    eligible: true
    amount: 1000
`

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDirReportsPositionsAndKeepsGoodFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", goodPolicy)
	writeFile(t, dir, "b.yaml", strings.Replace(strings.Replace(goodPolicy, "p1", "p2", 1), "&& in_region", "&& in_regio", 1))
	writeFile(t, dir, "c.yaml", strings.Replace(strings.Replace(goodPolicy, "p1", "p3", 1), "amount: 100 * insured_employees", `amount: 100 * name`, 1))
	writeFile(t, dir, "d.yaml", strings.Replace(goodPolicy, "p1", "p4", 1)+"unknown_key: 1\n")
	writeFile(t, dir, "e.yaml", strings.Replace(goodPolicy, "id: p1", "id: p5\nchannels_x: []", 1))
	writeFile(t, dir, "f.yaml", strings.Replace(goodPolicy, "channels: [wechat]", "channels: [fax]", 1))
	writeFile(t, dir, "g.yaml", goodPolicy) // same id as a.yaml
	defs, errs := LoadDir(dir)
	if len(defs) != 1 || defs[0].ID != "p1" {
		t.Fatalf("want only p1 loaded, got %d", len(defs))
	}
	want := map[string]struct {
		id        string
		line, col int
		msg       string
	}{
		"b.yaml": {"p2", 9, 6, "in_regio"},
		"c.yaml": {"p3", 10, 13, "mismatched types"},
		"d.yaml": {"p4", 16, 1, "unknown_key"},
		"e.yaml": {"p5", 2, 1, "channels_x"},
		"f.yaml": {"p1", 11, 11, "fax"},
		"g.yaml": {"p1", 0, 0, "also defined"},
	}
	if len(errs) != len(want) {
		t.Fatalf("want %d errors, got %d: %v", len(want), len(errs), errs)
	}
	for _, err := range errs {
		var fe *FileError
		if !errors.As(err, &fe) {
			t.Fatalf("not a FileError: %v", err)
		}
		w, ok := want[filepath.Base(fe.File)]
		if !ok {
			t.Fatalf("unexpected error %v", err)
		}
		if fe.PolicyID != w.id || fe.Line != w.line || (w.col != 0 && fe.Column != w.col) || !strings.Contains(fe.Message, w.msg) {
			t.Errorf("%s: got %q (policy %s at %d:%d), want policy %s at %d:%d mentioning %q", fe.File, fe.Message, fe.PolicyID, fe.Line, fe.Column, w.id, w.line, w.col, w.msg)
		}
	}
}

func TestHashChangesWithContentOnly(t *testing.T) {
	a, err := Parse("a", []byte(goodPolicy))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b", []byte("# a comment\n"+goodPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Error("a comment changed the content hash")
	}
	c, _ := Parse("c", []byte(strings.Replace(goodPolicy, "cut: 10", "cut: 11", 1)))
	if a.Hash() == c.Hash() {
		t.Error("a parameter change kept the content hash")
	}
	back, err := FromCanonical(a.Canonical())
	if err != nil || back.Hash() != a.Hash() {
		t.Fatalf("canonical round trip changed the hash: %v", err)
	}
}
