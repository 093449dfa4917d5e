package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/policypush/policypush/store"
)

// TestKilledDemoSeedIsDetectedAndRedone kills `demo` with SIGKILL in the middle of importing its
// registry: the next start reports the unfinished seeding and imports again, ending with the whole
// registry; the start after that seeds nothing. The runs are recorded in command_runs.
func TestKilledDemoSeedIsDetectedAndRedone(t *testing.T) {
	c := newCLI(t)
	const firms = 20000
	seed := func() *exec.Cmd {
		return c.command("demo", "--seed-only", "--firms", "20000", "--demo-password", "a-long-password-1")
	}
	path := filepath.Join(c.dataDir, "policypush.db")
	count := func() int64 {
		db, err := gorm.Open(sqlite.Open(path+"?_pragma=busy_timeout(5000)"), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
		if err != nil {
			return -1
		}
		defer func() {
			if s, err := db.DB(); err == nil {
				s.Close()
			}
		}()
		var n int64
		if err := db.Model(&store.Enterprise{}).Count(&n).Error; err != nil {
			return -1
		}
		return n
	}

	first := seed()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for count() <= 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	partial := count()
	if partial <= 0 || partial >= firms-100 {
		t.Fatalf("the kill did not land during the import: %d firms", partial)
	}

	out := c.run("demo", "--seed-only", "--firms", "20000", "--demo-password", "a-long-password-1")
	if !strings.Contains(out, "没有完成") || !strings.Contains(out, "企业名录不完整") || !strings.Contains(out, "生成演示企业名录") {
		t.Fatalf("the restart after a killed seed did not report and redo it:\n%s", out)
	}
	full := count()
	if full <= partial || full < firms-100 {
		t.Fatalf("after the restart %d firms (killed at %d), want the whole registry", full, partial)
	}

	out = c.run("demo", "--seed-only", "--firms", "20000", "--demo-password", "a-long-password-1")
	if strings.Contains(out, "生成演示企业名录") || strings.Contains(out, "没有完成") || count() != full {
		t.Fatalf("a finished seed was done again:\n%s", out)
	}
	db, err := gorm.Open(sqlite.Open(path), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatal(err)
	}
	var runs []store.CommandRun
	db.Where("command = ?", demoSeed).Order("id").Find(&runs)
	if len(runs) != 2 || runs[0].Outcome != store.RunInterrupted || runs[1].Outcome != store.RunOK || runs[1].FinishedAt == nil {
		t.Fatalf("recorded runs: %+v", runs)
	}
}

// A long command that finds an earlier run of itself unfinished (its process gone) reports it and
// marks it interrupted; one whose process still runs is refused.
func TestUnfinishedRunsAreReported(t *testing.T) {
	c := newCLI(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, r := range []store.CommandRun{
		{Command: "match", Detail: "as_of=2022-09-30 policy=", Host: host, PID: dead.ProcessState.Pid(), Outcome: store.RunRunning, StartedAt: time.Now().UTC()},
	} {
		if err := c.db.DB.Create(&r).Error; err != nil {
			t.Fatal(err)
		}
	}
	cmd := c.command("match", "--as-of", DemoAsOf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("match: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "上次 match") || !strings.Contains(stderr.String(), "没有完成") {
		t.Fatalf("match did not report the killed run:\n%s", stderr.String())
	}
	var runs []store.CommandRun
	c.db.DB.Where("command = ?", "match").Order("id").Find(&runs)
	if len(runs) != 2 || runs[0].Outcome != store.RunInterrupted || runs[1].Outcome != store.RunOK {
		t.Fatalf("recorded runs: %+v", runs)
	}
}
