package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/registry"
)

func init() { addCommand(registryCmd) }

func registryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "registry", Short: "企业名录：从数据共享平台同步"}
	var full bool
	sync := &cobra.Command{
		Use:   "sync",
		Short: "Sync the registry from the platform's table (registry.source.*)",
		Long: `Reads the SQL source configured under registry.source in keyset pages ordered by
(updated_at, credit_code) — only rows changed since the last sync unless --full — and runs every row
through the same checks as an import line. Each page is upserted and the firms that changed are
re-matched against every active policy in the same transaction. Prints the import summary; --full
also reports active firms the source no longer has (marked deregistered only when
registry.source.deregister_vanished is true). The source is read in read-only transactions and its
password never appears in any message.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				src := a.registrySource()
				if a.cfg.Registry.Source.Driver == "" {
					return errors.New("no registry source configured: set registry.source.driver, dsn and query (README \"Registry source\")")
				}
				e := a.newMatcher(db, nil)
				if err := e.Load(cmd.Context()); err != nil {
					return err
				}
				sink := &matchingSink{e: e}
				sum, err := registry.Sync(cmd.Context(), db, src, registry.SyncOptions{Full: full,
					DeregisterVanished: a.cfg.Registry.Source.DeregisterVanished, Sink: sink, Progress: os.Stderr})
				printVanished(os.Stdout, sum, full)
				if rerr := reportImport(os.Stdout, os.Stderr, "registry source", sum.Summary, err); rerr != nil {
					return rerr
				}
				m := sink.res
				fmt.Printf("重新匹配：企业 %d，新增匹配 %d，撤销 %d，金额或版本变化 %d\n", m.Changed, m.New, m.Revoked, m.Updated)
				return nil
			})
		},
	}
	sync.Flags().BoolVar(&full, "full", false, "read every row, not only those changed since the last sync, and report firms the source no longer has")
	cmd.AddCommand(sync)
	return cmd
}

func (a *app) registrySource() registry.Source {
	s := a.cfg.Registry.Source
	return registry.Source{Driver: s.Driver, DSN: s.DSN, Query: s.Query, PageSize: s.PageSize}
}

func printVanished(w io.Writer, sum registry.SyncSummary, full bool) {
	if !full {
		return
	}
	fmt.Fprintf(w, "源表中已不存在的存续企业：%d 家", len(sum.Vanished))
	if sum.Deregistered > 0 {
		fmt.Fprintf(w, "，已标记为注销 %d 家", sum.Deregistered)
	} else if len(sum.Vanished) > 0 {
		fmt.Fprint(w, "（仅报告；registry.source.deregister_vanished: true 时标记为注销）")
	}
	fmt.Fprintln(w)
	for i, c := range sum.Vanished {
		if i == 20 {
			fmt.Fprintf(w, "  … 另有 %d 家\n", len(sum.Vanished)-20)
			break
		}
		fmt.Fprintln(w, "  "+c)
	}
}

// matchingSink writes each page through the matcher engine (upsert and re-match in one
// transaction) and adds up what the re-matching did.
type matchingSink struct {
	e   *matcher.Engine
	res matcher.ChangeResult
}

func (s *matchingSink) Write(ctx context.Context, recs []registry.Record) (registry.WriteResult, error) {
	r, err := s.e.ApplyRecords(ctx, recs, nil)
	if err == nil {
		s.res.Add(r)
	}
	return r.WriteResult(), err
}

// runSourceSync syncs the registry source every registry.source.interval through the running
// matcher engine, as a loop of this process's stages, until ctx ends or the app is closed; it does
// nothing without a source or with interval 0. A sync that fails is logged (with the DSN's password
// masked) and tried again at the next interval.
func (a *app) runSourceSync(ctx context.Context) {
	cfg := a.cfg.Registry.Source
	if cfg.Driver == "" || cfg.Interval == 0 {
		return
	}
	src := a.registrySource()
	db := a.db
	a.startFunc(ctx, "registry source sync", func(ctx context.Context) error {
		wait := time.Duration(0)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			sum, err := registry.Sync(ctx, db, src, registry.SyncOptions{DeregisterVanished: cfg.DeregisterVanished, Sink: a.matcher})
			switch {
			case errors.Is(err, matcher.ErrNotLoaded):
				wait = 10 * time.Second // the engine is still loading the snapshot
				continue
			case err != nil && ctx.Err() == nil:
				a.log.Warn("registry source sync failed", "err", err)
			case err == nil:
				a.log.Info("registry source synced", "summary", sum.String(), "issues", len(sum.Issues)+sum.IssuesDropped,
					"high_water", sum.HighWater.Format(time.DateTime))
			}
			wait = cfg.Interval
		}
	})
}
