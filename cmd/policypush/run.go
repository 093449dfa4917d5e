package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/policypush/policypush/admin"
	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// DemoAsOf is inside the windows of all six 2022 demo policies (they have expired in real time).
const DemoAsOf = "2022-09-30"

func demoCmd(g *globals) *cobra.Command {
	var httpAddr, asOf, demoPassword string
	var firms int
	var seedOnly bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole flow on the embedded default and serve the console",
		Long: `Embedded everything: SQLite in --data-dir, NATS JetStream inside the process and local WeChat/SMS
sandbox servers. On first start it seeds a deterministic synthetic registry of Jiangsu firms (with a
few bad rows, reported and skipped) and the six real 2022 policies, matches them as of ` + DemoAsOf + `
(the real 2022 policies have expired), delivers the notices, prints a summary and serves the console
until interrupted. Started again on the same data dir it resumes: no reseeding, nothing sent twice. A
seeding that was killed is reported and done again on the next start (never a silently partial registry).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			// The demo always runs on the embedded components, whatever the config file says.
			cfg.Database.Driver, cfg.Database.DSN, cfg.NATS.URL, cfg.Sandbox.Enabled = "sqlite", "", "", true
			if httpAddr != "" {
				cfg.HTTP.Addr = httpAddr
			}
			day, err := rules.ParseDate(asOf)
			if err != nil {
				return fmt.Errorf("--as-of: %w", err)
			}
			a := newApp(cfg)
			defer a.close()
			ctx := cmd.Context()
			db, err := a.openDB(ctx)
			if err != nil {
				return err
			}
			if err := seedDemo(ctx, a, firms); err != nil {
				return err
			}
			password, err := seedDemoAccounts(ctx, db, demoPassword)
			if err != nil {
				return err
			}
			if seedOnly {
				fmt.Println("演示数据已就绪（--seed-only）。")
				printDemoAccounts(os.Stdout, password)
				return nil
			}
			demoDelivery(cmd, &a.cfg) // demo_delivery.go
			if _, err := a.startPipeline(ctx); err != nil {
				return err
			}
			a.newMatcher(db, func() time.Time { return day.Time }) // matcher_cmds.go
			console, err := a.serveHTTP(ctx)
			if err != nil {
				return err
			}
			fmt.Printf("评估日期 %s（2022 年政策已到期，演示按政策有效期内的日期匹配）\n", day)
			sum, err := matcher.Run(ctx, db, day.Time, "", matcher.Options{Workers: cfg.Matcher.Workers,
				SubjectPrefix: cfg.NATS.SubjectPrefix, Progress: os.Stderr, Log: a.log, Vocabulary: a.vocabulary()})
			if err != nil {
				return err
			}
			printMatchSummary(os.Stdout, sum)
			if err := a.runMatcher(ctx); err != nil { // change events and catch-up from here on
				return err
			}
			if err := a.waitIdle(ctx, 2*time.Minute); err != nil && ctx.Err() == nil {
				a.log.Warn("delivery not finished yet; it goes on in the background", "err", err)
			}
			_, err = store.DrainDeliveries(ctx, db) // the delivery counts as of now
			var st store.Status
			if err == nil {
				st, err = store.ReadStatus(ctx, db, day.Time, store.FirmScope{})
			}
			if err == nil {
				fmt.Println()
				printStatus(os.Stdout, st, day.Time)
			}
			printDemoDelivery(ctx, os.Stdout, a)
			if a.sandbox != nil {
				fmt.Printf("沙箱记录: %s （微信 %d 条，短信 %d 条）\n", filepath.Join(cfg.DataDir, "sandbox"),
					a.sandbox.Counts()["wechat"], a.sandbox.Counts()["tencent"]+a.sandbox.Counts()["aliyun"])
			}
			fmt.Printf("\n控制台: http://%s/  （Ctrl-C 退出）\n", console.Addr())
			printDemoAccounts(os.Stdout, password)
			waitForSignal(ctx)
			fmt.Fprintln(os.Stderr, "正在停止…")
			a.wait() // console, matcher, relay, notifiers, sandbox: every stage stops with ctx
			return nil
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "", "console address (default http.addr, 127.0.0.1:8080)")
	cmd.Flags().StringVar(&asOf, "as-of", DemoAsOf, "evaluation date of the demo")
	cmd.Flags().IntVar(&firms, "firms", 20000, "size of the synthetic registry on first start")
	cmd.Flags().BoolVar(&seedOnly, "seed-only", false, "seed the data dir (registry, policies, accounts) and exit")
	addDemoDeliveryFlags(cmd)
	cmd.Flags().StringVar(&demoPassword, "demo-password", "", "password of the demo accounts (default: a new random one, printed at start)")
	return cmd
}

// seedDemo imports the synthetic registry (until one seeding has finished) and applies the demo
// catalog (a no-op when unchanged). Seeding is a recorded run (command_runs, "demo.seed"): a seed
// that was killed leaves its run open, and the next start reports it and imports the same
// deterministic registry again — an upsert by credit code, so the firms already imported are
// rewritten, not doubled — with the size the killed run was asked for. A data dir with firms but
// no finished seed (killed before runs were recorded) is seeded again the same way, and says so.
func seedDemo(ctx context.Context, a *app, firms int) error {
	db := a.db
	done, err := store.LastRun(ctx, db, demoSeed)
	if err != nil {
		return err
	}
	if done == nil {
		var n int64
		if err := db.WithContext(ctx).Model(&store.Enterprise{}).Count(&n).Error; err != nil {
			return err
		}
		err := tracked(ctx, db, os.Stdout, demoSeed, "firms="+strconv.Itoa(firms), func(interrupted []store.CommandRun) error {
			for _, r := range interrupted {
				if asked, ok := strings.CutPrefix(r.Detail, "firms="); ok {
					if k, err := strconv.Atoi(asked); err == nil && k != firms {
						fmt.Printf("按被中断的播种继续：%d 家（本次 --firms %d 不适用于未完成的名录）\n", k, firms)
						firms = k
					}
				}
			}
			if n > 0 {
				fmt.Printf("企业名录不完整：已有 %d 家，演示播种没有完成；重新导入演示名录（按信用代码覆盖，不会重复）。\n", n)
			}
			return importDemoRegistry(ctx, a, firms)
		})
		if err != nil {
			return err
		}
	}
	return applyDemoCatalog(ctx, a)
}

// demoSeed names the demo's seeding in command_runs.
const demoSeed = "demo.seed"

// importDemoRegistry writes the deterministic synthetic registry and imports it.
func importDemoRegistry(ctx context.Context, a *app, firms int) error {
	path := filepath.Join(a.cfg.DataDir, "seed", "enterprises.csv")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := registry.SynthCSVFile(path, firms, 2022, true); err != nil {
		return fmt.Errorf("write synthetic registry: %w", err)
	}
	fmt.Printf("生成演示企业名录 %s（%d 家，含少量错误行）\n", path, firms)
	sum, err := registry.ImportFile(ctx, a.db, path, registry.ImportOptions{Progress: os.Stderr})
	if err != nil {
		return err
	}
	for _, is := range sum.Issues {
		fmt.Println("  " + is.String())
	}
	fmt.Println(sum.String())
	return nil
}

// applyDemoCatalog publishes the demo's policies (a no-op when unchanged).
func applyDemoCatalog(ctx context.Context, a *app) error {
	db := a.db
	dir, err := rules.WriteDemoCatalog(filepath.Join(a.cfg.DataDir, "policies"))
	if err != nil {
		return err
	}
	defs, errs := rules.LoadDir(dir, a.vocab())
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, d := range defs {
		res, err := policies.Apply(ctx, db, d, filepath.Join(dir, d.ID+".yaml"), "demo", a.vocab())
		if err != nil {
			return err
		}
		if res.Changed {
			fmt.Printf("发布政策 %s 版本 %d：%s\n", d.ID, res.Version, d.Title)
		}
	}
	return nil
}

func serveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the relay, notifiers and console from config (production: MySQL + external NATS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withApp(func(a *app) error {
				ctx := cmd.Context()
				if _, err := a.startPipeline(ctx); err != nil {
					return err
				}
				db, err := a.openDB(ctx)
				if err != nil {
					return err
				}
				a.newMatcher(db, nil) // matcher_cmds.go
				if err := a.runMatcher(ctx); err != nil {
					return err
				}
				a.runSourceSync(ctx) // registry_cmds.go
				console, err := a.serveHTTP(ctx)
				if err != nil {
					return err
				}
				a.log.Info("serving", "http", console.Addr(), "database", a.cfg.Database.Driver, "nats", describeNATS(a.cfg.NATS.URL))
				waitForSignal(ctx)
				a.wait() // console, matcher, relay, notifiers, sandbox: every stage stops with ctx
				return nil
			})
		},
	}
	return cmd
}

func describeNATS(url string) string {
	if url == "" {
		return "embedded"
	}
	return url
}

func deliverCmd(g *globals) *cobra.Command {
	var untilIdle bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "deliver",
		Short: "Run the outbox relay and notifiers (without the console)",
		Long: `Publishes pending outbox rows to JetStream and sends the notices. With --until-idle it returns
once the outbox is empty and no notice is waiting or in flight (retries scheduled for later count as
waiting), or fails after --timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withApp(func(a *app) error {
				ctx, cancel := context.WithCancel(cmd.Context())
				defer cancel()
				wait, err := a.startPipeline(ctx)
				if err != nil {
					return err
				}
				if untilIdle {
					err = a.waitIdle(ctx, timeout)
					cancel()
				} else {
					waitForSignal(ctx)
				}
				wait()
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&untilIdle, "until-idle", false, "stop when everything queued has been handled")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --until-idle: give up after this long")
	return cmd
}

// waitIdle waits until the outbox is empty and the channel consumers have nothing pending.
func (a *app) waitIdle(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		idle, err := a.idle(ctx)
		if err == nil && idle {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("still busy")
			}
			return fmt.Errorf("not idle after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (a *app) idle(ctx context.Context) (bool, error) {
	pending, err := store.PendingOutbox(ctx, a.db)
	if err != nil {
		return false, err
	}
	if pending.Rows > 0 {
		return false, nil
	}
	n, err := a.backlog(ctx)
	return n == 0, err
}

// serveHTTP runs the console (and the delivery routes in its route table) on http.addr as a stage of this process
// until ctx ends or the app is closed; the stage is returned for its address.
func (a *app) serveHTTP(ctx context.Context) (*stage.HTTP, error) {
	opts, err := a.consoleOptions()
	if err != nil {
		return nil, err
	}
	if opts.DB, err = a.openConsoleDB(ctx); err != nil {
		return nil, err
	}
	opts.Gate = &a.gate
	opts.Delivery = a.deliveryHandlers()
	// started before the console, so that it stops after the console's last request
	if opts.AuditJournal, err = audit.OpenJournal(opts.DB, filepath.Join(a.cfg.DataDir, "console"), a.log); err != nil {
		return nil, err
	}
	a.start(ctx, "audit_journal", opts.AuditJournal)
	h, err := admin.New(opts)
	if err != nil {
		return nil, err
	}
	console, err := stage.NewHTTP("console", a.cfg.HTTP.Addr, func(addr string) http.Handler {
		a.sandboxReceipts(addr)
		return h
	})
	if err != nil {
		return nil, fmt.Errorf("http.addr %s: %w", a.cfg.HTTP.Addr, err)
	}
	a.start(ctx, "console", console)
	if err := a.runNameIndex(ctx); err != nil {
		return nil, err
	}
	return console, nil
}

// runNameIndex keeps the name index of the console's search up to date (store.IndexNames: a pass
// at once, then every store.NameIndexInterval), as a loop of this process's stages, yielding to
// the console's requests between its transactions.
func (a *app) runNameIndex(ctx context.Context) error {
	db, err := a.openDB(ctx)
	if err != nil {
		return err
	}
	pass := func(ctx context.Context) error {
		p, err := store.IndexNames(ctx, db, a.gate.Yield)
		if err == nil && p.Changed > 0 {
			a.log.Info("indexed firm names for the search", "read", p.Read, "changed", p.Changed, "seconds", p.Seconds)
		}
		return err
	}
	warn := func(err error) { a.log.Warn("index firm names", "err", err) }
	a.startFunc(ctx, "name index", func(ctx context.Context) error {
		if err := pass(ctx); err != nil && ctx.Err() == nil {
			warn(err)
		}
		stage.Every(ctx, store.NameIndexInterval, pass, warn)
		return nil
	})
	return nil
}
