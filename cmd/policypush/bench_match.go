package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/store"
)

func init() { addSubcommand("bench", benchMatchCmd) }

func benchMatchCmd(g *globals) *cobra.Command {
	o := matcher.BenchOptions{Seed: 1}
	var asJSON bool
	var dbPath, mysqlDSN string
	cmd := &cobra.Command{
		Use:   "match",
		Short: "Engine against the plain expr loop on a synthetic province: speed, identical results, memory, load, incremental latency",
		Long: `Seeds a database with --firms synthetic Jiangsu firms (registry.Synth) unless it already holds exactly
that many, builds --policies synthetic policies (about 60% scoped to a city, districts or a park,
20% to industries, 20% province-wide on numbers; 30% with amount formulas, 10% with a founding-date
condition), then in one run:

  - loads the snapshot from the database (keyset pagination) and states its bytes per firm;
  - evaluates every policy over every firm with the engine (plans included in the time);
  - evaluates every policy over a sample of --baseline-firms firms with the plain expr loop
    (rules.Policy.Evaluate on every core), scales that to the whole registry, and checks that both
    decide every sampled (firm, policy) pair identically — eligibility, amount and errors;
  - changes --incremental firms one at a time and times their re-match against every policy, in
    the engine alone and through ApplyChanges with the database transaction storing the difference.

The database is SQLite (--db FILE, default a temporary file) or MySQL/MariaDB (--mysql-dsn; the
database in the DSN is created when missing). It must be empty or hold this synthetic registry:
the benchmark writes firms, matches and outbox rows. Other work on the machine shows in the times.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			db, done, err := benchMatchDB(ctx, dbPath, mysqlDSN)
			if err != nil {
				return err
			}
			defer done()
			if !asJSON {
				o.Progress = os.Stderr
			}
			res, err := matcher.Benchmark(ctx, db, o)
			return report(res, err, asJSON, printBenchMatch)
		},
	}
	cmd.Flags().IntVar(&o.Firms, "firms", 100000, "synthetic firms")
	cmd.Flags().IntVar(&o.Policies, "policies", 1000, "synthetic policies")
	cmd.Flags().Int64Var(&o.Seed, "seed", 1, "seed of firms and policies")
	cmd.Flags().IntVar(&o.BaselineFirms, "baseline-firms", 0, "firms the plain expr loop evaluates (default min(firms, 20000))")
	cmd.Flags().IntVar(&o.Incremental, "incremental", 500, "firms re-matched one at a time for the latency figures")
	cmd.Flags().IntVar(&o.Workers, "workers", 0, "goroutines of engine and baseline (default one per core)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the figures as JSON")
	cmd.Flags().StringVar(&dbPath, "db", "", "SQLite file to use (kept; default a temporary file)")
	cmd.Flags().StringVar(&mysqlDSN, "mysql-dsn", "", "MySQL/MariaDB DSN, e.g. root@tcp(127.0.0.1:3306)/ppbench")
	return cmd
}

// benchMatchDB opens the benchmark's database and returns how to close it.
func benchMatchDB(ctx context.Context, path, dsn string) (*gorm.DB, func(), error) {
	if dsn != "" {
		if err := createMySQLDatabase(dsn); err != nil {
			return nil, nil, err
		}
		db, err := store.Open(ctx, store.Options{Driver: "mysql", DSN: dsn, MaxOpen: 8})
		if err != nil {
			return nil, nil, err
		}
		return db, func() { closeGorm(db) }, nil
	}
	remove := ""
	if path == "" {
		dir, err := os.MkdirTemp("", "policypush-bench")
		if err != nil {
			return nil, nil, err
		}
		path, remove = filepath.Join(dir, "bench.db"), dir
	}
	db, err := store.Open(ctx, store.Options{Driver: "sqlite", DSN: path})
	if err != nil {
		return nil, nil, err
	}
	return db, func() {
		closeGorm(db)
		if remove != "" {
			_ = os.RemoveAll(remove)
		}
	}, nil
}

// createMySQLDatabase creates the database a MySQL DSN names, when it does not exist yet.
func createMySQLDatabase(dsn string) error {
	slash := strings.LastIndex(dsn, "/")
	if slash < 0 {
		return fmt.Errorf("--mysql-dsn %q names no database (…/dbname)", dsn)
	}
	name := strings.SplitN(dsn[slash+1:], "?", 2)[0]
	if name == "" || strings.ContainsAny(name, "`'\" ;") {
		return fmt.Errorf("--mysql-dsn: %q is not a database name", name)
	}
	server, err := gorm.Open(mysql.Open(dsn[:slash+1]+strings.TrimPrefix(dsn[slash+1:], name)), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return fmt.Errorf("connect to MySQL: %w", err)
	}
	err = server.Exec("CREATE DATABASE IF NOT EXISTS `" + name + "` CHARACTER SET utf8mb4").Error
	if s, e := server.DB(); e == nil {
		_ = s.Close()
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func closeGorm(db *gorm.DB) {
	if s, err := db.DB(); err == nil {
		_ = s.Close()
	}
}

func printBenchMatch(w io.Writer, r matcher.BenchResult) {
	seeded := "reused"
	if r.Seeded {
		seeded = fmt.Sprintf("seeded in %.1f s", r.SeedSeconds)
	}
	fmt.Fprintf(w, "匹配基准：%d 家企业 × %d 项政策，%s（%s），%d 个 goroutine\n", r.Firms, r.Policies, r.Database, seeded, r.Workers)
	fmt.Fprintf(w, "snapshot      load %.2f s, %.1f bytes/firm (Go heap growth %.1f bytes/firm)\n", r.LoadSeconds, r.BytesPerFirm, r.HeapBytesPerFirm)
	fmt.Fprintf(w, "engine        %.3f s for all firms (plans %.3f s), %.2f ns per (firm, policy), VM share %.4f%%, %d eligible pairs\n",
		r.EngineSeconds, r.PlanSeconds, r.EngineNsPerEval, 100*r.VMShare, r.Eligible)
	fmt.Fprintf(w, "plain expr    %.3f s on %d firms, %.1f ns per (firm, policy); %.1f s for all firms (scaled)\n",
		r.BaselineSeconds, r.BaselineFirms, r.BaselineNsPerEval, r.BaselineFullSeconds)
	fmt.Fprintf(w, "ratio         %.1f× (CPU time: engine %.2f, plain %.1f ns per pair, %.1f×), identical on %d sampled pairs: %t (%d differences)\n",
		r.Ratio, r.EngineCPUNsPerEval, r.BaselineCPUNsPerEval, r.CPURatio, r.Compared, r.Identical, r.Differences)
	fmt.Fprintf(w, "incremental   %d firms: engine p50 %.3f ms, p99 %.3f ms; with the %s transaction p50 %.2f ms, p99 %.2f ms (%d matches added or revoked)\n",
		r.IncrementalFirms, r.IncrementalP50Ms, r.IncrementalP99Ms, r.Database, r.IncrementalDBP50Ms, r.IncrementalDBP99Ms, r.IncrementalChanges)
	fmt.Fprintf(w, "baseline      %s\n", r.Baseline)
}
