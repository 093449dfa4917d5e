package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/store"
)

// Long commands (demo seeding, import, match) record each run in command_runs: a row when they
// start, completed when they end. A run killed on the way leaves its row open; the next run of the
// same command reports it on w, marks it interrupted and goes on (what it does about the partial
// work is the command's business: demo seeding imports again, import and match are idempotent).
// A run whose process still lives is not touched: the new run refuses to start beside it.

// tracked runs fn as a recorded run of command. interrupted lists the earlier runs found unfinished.
func tracked(ctx context.Context, db *gorm.DB, w io.Writer, command, detail string, fn func(interrupted []store.CommandRun) error) error {
	open, err := store.UnfinishedRuns(ctx, db, command)
	if err != nil {
		return err
	}
	for i := range open {
		r := &open[i]
		if stillRunning(*r) {
			return fmt.Errorf("%s is already running (pid %d on %s since %s); wait for it to finish or stop it first",
				command, r.PID, r.Host, r.StartedAt.Local().Format(time.DateTime))
		}
		fmt.Fprintf(w, "注意：上次 %s（%s 开始，%s，进程 %d）没有完成——进程被终止或崩溃；本次重新执行。\n",
			command, r.StartedAt.Local().Format(time.DateTime), r.Detail, r.PID)
		if err := store.MarkInterrupted(ctx, db, r, fmt.Sprintf("pid %d", os.Getpid())); err != nil {
			return err
		}
	}
	run, err := store.StartRun(ctx, db, command, detail)
	if err != nil {
		return err
	}
	err = fn(open)
	if ferr := store.FinishRun(db, run, err); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// stillRunning reports whether the process of a run is alive on this host and is a policypush
// (a recycled pid after a reboot belongs to something else).
func stillRunning(r store.CommandRun) bool {
	host, _ := os.Hostname()
	if r.Host != host || r.PID <= 0 || r.PID == os.Getpid() {
		return false
	}
	if err := syscall.Kill(r.PID, 0); err != nil && err != syscall.EPERM {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(r.PID) + "/cmdline")
	return err != nil || strings.Contains(string(cmdline), "policypush")
}
