package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// TestImportFailsOnGarbage: a file that is not a registry export, or whose every row is rejected,
// makes `import` exit non-zero and stores nothing.
func TestImportFailsOnGarbage(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	write := func(name, content string) string { return testenv.WriteFile(t, dir, name, content) }
	for _, tt := range []struct{ file, want string }{
		{write("garbage.csv", "q\x00\x13\xff\xfe\n"), "nothing was imported"},
		{write("words.csv", "q\nq\n"), "not a registry export"},
		{write("allbad.csv", "credit_code,name,region_code\nNOTACODE,甲,320506\n91320000XXXXXXXXXX,乙,3205\n"), "every one of the 2 rows was rejected"},
	} {
		_, stderr := c.runFail("import", "enterprises", tt.file)
		if !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: stderr %q, want %q", filepath.Base(tt.file), stderr, tt.want)
		}
	}
	var n int64
	c.db.DB.Model(&store.Enterprise{}).Count(&n)
	if n != 0 {
		t.Errorf("%d firms stored from garbage", n)
	}
}

// TestRegistrySyncCommand runs `registry sync` and `registry sync --full` against a platform table
// configured through the environment, as an operator would.
func TestRegistrySyncCommand(t *testing.T) {
	c := newCLI(t)
	firms := registry.Synth(12, 17)
	p := testenv.NewPlatform(t, firms, time.Date(2024, 5, 6, 9, 0, 0, 0, time.UTC))
	c.env = append(c.env, "POLICYPUSH_REGISTRY_SOURCE_DRIVER="+p.Driver, "POLICYPUSH_REGISTRY_SOURCE_DSN="+p.DSN,
		"POLICYPUSH_REGISTRY_SOURCE_QUERY="+p.Query, "POLICYPUSH_REGISTRY_SOURCE_PAGE_SIZE=5")
	out := c.run("registry", "sync")
	if !strings.Contains(out, "共 12 行：新增 12") || !strings.Contains(out, "重新匹配") {
		t.Fatalf("first sync:\n%s", out)
	}
	p.Delete(t, firms[0].CreditCode)
	out = c.run("registry", "sync", "--full")
	if !strings.Contains(out, "未变 11") || !strings.Contains(out, "已不存在的存续企业：1 家") || !strings.Contains(out, firms[0].CreditCode) {
		t.Fatalf("full sync:\n%s", out)
	}
}
