package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

func init() { addCommand(benchCmd) }

func benchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks that print their figures"}
	var o benchOptions
	var asJSON bool
	deliver := &cobra.Command{
		Use:   "deliver",
		Short: "Throughput and latency of matches → relay → notifiers → sandbox over HTTP",
		Long: `Commits matches (with their outbox rows, as the matcher does) at --rate per second into a fresh
database, runs the outbox relay and the notifiers in this process against the sandbox providers
over HTTP, and measures until every notice was accepted: notices per second, and the latency from
match commit to provider acceptance (p50, p99, max). No digest window, no quiet hours, no pacing:
one message per match. --database sqlite (a new file) or mysql (a new database on --mysql-dsn,
dropped afterwards); NATS is embedded unless nats.url is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			if o.mysqlDSN == "" && cfg.Database.Driver == "mysql" {
				o.mysqlDSN = cfg.Database.DSN
			}
			res, err := runDeliverBench(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(os.Stdout, res)
			}
			fmt.Printf("%s / %s: %d notices in %.1f s = %.0f notices/s (offered %s); commit → provider acceptance p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
				res.Database, res.NATS, res.Notices, res.Seconds, res.PerSecond, res.Offered, res.P50ms, res.P99ms, res.MaxMs)
			var phases []string
			for _, p := range []string{"intake", "claim", "prepare", "send", "record"} {
				phases = append(phases, fmt.Sprintf("%s %.1f", p, res.PhaseMs[p]))
			}
			fmt.Printf("where the time goes: %d batches of %.0f notices on average, %.0f ms each (ms per phase: %s); provider call %.1f ms; outbox lag up to %.0f ms\n",
				res.Batches, res.BatchMean, res.BatchMs, strings.Join(phases, ", "), res.ProviderMs, res.MaxOutboxMs)
			return nil
		},
	}
	f := deliver.Flags()
	f.IntVar(&o.matches, "matches", 20000, "matches to deliver")
	f.IntVar(&o.rate, "rate", 2500, "matches committed per second (0: all before the pipeline starts, i.e. drain a backlog)")
	f.StringVar(&o.database, "database", "sqlite", "sqlite or mysql")
	f.StringVar(&o.mysqlDSN, "mysql-dsn", "", "MySQL server to create the bench database on (default database.dsn)")
	f.StringVar(&o.channel, "channel", notify.ChannelWeChat, "wechat or sms")
	f.IntVar(&o.workers, "workers", 0, "concurrent provider calls (default notify.workers)")
	f.IntVar(&o.batchSize, "batch-size", 0, "notice messages per notifier batch (default notify.batch_size)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	f.BoolVar(&o.keep, "keep", false, "keep the data directory (SQLite file, sandbox records) for inspection")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(deliver)
	return cmd
}

type benchOptions struct {
	matches, rate, workers int
	batchSize              int
	database, mysqlDSN     string
	channel                string
	timeout                time.Duration
	keep                   bool
	cpuProfile             string
}

// benchResult is what `bench deliver` prints.
type benchResult struct {
	Database  string  `json:"database"`
	NATS      string  `json:"nats"`
	CPUs      int     `json:"cpus"`
	Notices   int     `json:"notices"`
	Offered   string  `json:"offered"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"notices_per_second"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	// Where the time goes, from the notifier's own metrics: batches handled, their mean size and
	// duration, the mean milliseconds a batch spends in each phase, and the mean provider call.
	Batches     int                `json:"batches"`
	BatchMean   float64            `json:"batch_mean_notices"`
	BatchMs     float64            `json:"batch_mean_ms"`
	PhaseMs     map[string]float64 `json:"phase_mean_ms"`
	ProviderMs  float64            `json:"provider_call_mean_ms"`
	MaxOutboxMs float64            `json:"max_outbox_lag_ms"`
}

// breakdown reads the notifier's and relay's metrics into res.
func breakdown(res *benchResult, maxLag float64) {
	res.PhaseMs = map[string]float64{}
	res.MaxOutboxMs = maxLag * 1000
	mfs, err := notify.Registry().Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil || h.GetSampleCount() == 0 {
				continue
			}
			mean := h.GetSampleSum() / float64(h.GetSampleCount()) * 1000
			switch mf.GetName() {
			case "policypush_notify_batch_seconds":
				res.Batches, res.BatchMs = int(h.GetSampleCount()), mean
			case "policypush_notify_phase_seconds":
				for _, l := range m.GetLabel() {
					if l.GetName() == "phase" {
						res.PhaseMs[l.GetValue()] = mean
					}
				}
			case "policypush_provider_request_seconds":
				res.ProviderMs = mean
			}
		}
	}
	if res.Batches > 0 {
		res.BatchMean = float64(res.Notices) / float64(res.Batches)
	}
}

// outboxLag reads the relay's outbox lag gauge (seconds).
func outboxLag() float64 {
	mfs, err := notify.Registry().Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "policypush_outbox_lag_seconds" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

func runDeliverBench(ctx context.Context, g *globals, o benchOptions) (benchResult, error) {
	res := benchResult{CPUs: runtime.NumCPU(), Notices: o.matches, Offered: "backlog"}
	if o.rate > 0 {
		res.Offered = fmt.Sprintf("%d/s", o.rate)
	}
	cfg, err := g.load()
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "policypush-bench")
	if err != nil {
		return res, err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "bench data kept in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	cfg.DataDir = dir
	sfx := strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg.NATS.Stream, cfg.NATS.SubjectPrefix = "PPBENCH_"+sfx, "ppbench"+sfx
	cfg.Sandbox.Enabled, cfg.Sandbox.Addr, cfg.Sandbox.Receipts.Enabled = true, "127.0.0.1:0", false
	cfg.Sandbox.Faults = config.SandboxFaults{}
	cfg.Notify.DigestWindow, cfg.Notify.QuietHours.Channels = 0, nil
	cfg.Notify.Throttle.MinInterval, cfg.Notify.Throttle.PerDay = 0, 0
	cfg.Relay.Interval = 50 * time.Millisecond
	if o.workers > 0 {
		cfg.Notify.Workers = o.workers
	}
	if o.batchSize > 0 {
		cfg.Notify.BatchSize = o.batchSize
	}
	cfg.WeChat.Enabled, cfg.SMS.Enabled = o.channel == notify.ChannelWeChat, o.channel == notify.ChannelSMS
	switch o.database {
	case "sqlite":
		cfg.Database.Driver, cfg.Database.DSN = "sqlite", filepath.Join(dir, "bench.db")
	case "mysql":
		if o.mysqlDSN == "" {
			return res, errors.New("--database mysql needs --mysql-dsn or database.dsn")
		}
		dsn, drop, err := benchMySQL(o.mysqlDSN, "ppbench_"+sfx)
		if err != nil {
			return res, err
		}
		defer drop()
		cfg.Database.Driver, cfg.Database.DSN = "mysql", dsn
	default:
		return res, fmt.Errorf("--database %q: sqlite or mysql", o.database)
	}
	res.Database, res.NATS = cfg.Database.Driver, describeNATS(cfg.NATS.URL)

	a := newApp(cfg)
	a.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	defer a.close()
	db, err := a.openDB(ctx)
	if err != nil {
		return res, err
	}
	firms, err := seedBench(ctx, db, o.matches)
	if err != nil {
		return res, err
	}
	commits := newCommitLog()
	if o.rate == 0 {
		if err := produce(ctx, db, cfg.NATS.SubjectPrefix, o.channel, firms, o.matches, 0, commits); err != nil {
			return res, err
		}
	}
	if cfg.NATS.URL != "" {
		defer func() {
			if a.bus != nil {
				_ = a.bus.JS.DeleteStream(context.Background(), cfg.NATS.Stream)
			}
		}()
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile()
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	wait, err := a.startPipeline(pctx)
	if err != nil {
		return res, err
	}
	defer wait()
	defer stop()
	prodErr := make(chan error, 1)
	if o.rate > 0 {
		go func() {
			prodErr <- produce(pctx, db, cfg.NATS.SubjectPrefix, o.channel, firms, o.matches, o.rate, commits)
		}()
	} else {
		prodErr <- nil
	}
	deadline := time.Now().Add(o.timeout)
	maxLag := 0.0
	for a.sandbox.Counts()[providerOf(o.channel)] < o.matches {
		maxLag = max(maxLag, outboxLag())
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d notices accepted after %s", a.sandbox.Counts()[providerOf(o.channel)], o.matches, o.timeout)
		}
		select {
		case err := <-prodErr:
			if err != nil {
				return res, err
			}
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	file := sandbox.WeChatFile
	if o.channel == notify.ChannelSMS {
		file = sandbox.SMSFile
	}
	recs, err := sandbox.ReadRecords(filepath.Join(dir, "sandbox", file))
	if err != nil {
		return res, err
	}
	res, err = measure(ctx, db, o.channel, recs, commits, res)
	breakdown(&res, maxLag)
	return res, err
}

func providerOf(channel string) string {
	if channel == notify.ChannelSMS {
		return sandbox.ProviderTencent
	}
	return sandbox.ProviderWeChat
}

// benchMySQL creates a database for the bench on a MySQL server and returns its DSN and a function
// that drops it.
func benchMySQL(serverDSN, name string) (string, func(), error) {
	admin, err := gorm.Open(mysql.Open(serverDSN), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return "", nil, fmt.Errorf("MySQL at %s: %w", serverDSN, err)
	}
	if err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin").Error; err != nil {
		return "", nil, fmt.Errorf("create bench database: %w", err)
	}
	drop := func() {
		admin.Exec("DROP DATABASE IF EXISTS " + name)
		if s, err := admin.DB(); err == nil {
			_ = s.Close()
		}
	}
	slash := strings.LastIndex(serverDSN, "/")
	if slash < 0 {
		return serverDSN + "/" + name, drop, nil
	}
	rest := ""
	if q := strings.Index(serverDSN[slash:], "?"); q >= 0 {
		rest = serverDSN[slash+q:]
	}
	return serverDSN[:slash+1] + name + rest, drop, nil
}

// benchPolicies are the policies the bench matches firms for (three per firm).
var benchPolicies = []string{"bench-a", "bench-b", "bench-c"}

// seedBench writes the firms (one per three matches) and the published policies.
// benchRegions are where the benchmark's firms are registered (a firm has a region code).
var benchRegions = []string{"320102", "320505", "320571", "320211", "321002"}

func seedBench(ctx context.Context, db *gorm.DB, matches int) ([]string, error) {
	n := (matches + len(benchPolicies) - 1) / len(benchPolicies)
	firms := make([]store.Enterprise, n)
	codes := make([]string, n)
	for i := range firms {
		codes[i] = fmt.Sprintf("91320000BENCH%05d", i)
		firms[i] = store.Enterprise{CreditCode: codes[i], Name: fmt.Sprintf("压测企业%d", i), Status: store.StatusActive,
			RegionCode: benchRegions[i%len(benchRegions)], WechatOpenID: fmt.Sprintf("o-bench-%d", i), ContactPhone: fmt.Sprintf("139%08d", i)}
		if i%4 == 0 {
			firms[i].ParkID = "SIP"
		}
	}
	if err := db.WithContext(ctx).CreateInBatches(firms, 1000).Error; err != nil {
		return nil, fmt.Errorf("seed firms: %w", err)
	}
	counts := store.FirmCounts{}
	for i := range firms {
		counts.Add(&firms[i], 1)
	}
	if err := store.ApplyFirmCounts(db.WithContext(ctx), counts); err != nil {
		return nil, fmt.Errorf("seed firms: %w", err)
	}
	for _, id := range benchPolicies {
		src, _ := json.Marshal(map[string]any{"id": id, "title": "压测政策 " + id, "deadline": "2026-12-31", "channels": []string{"wechat"}})
		if err := db.WithContext(ctx).Create(&store.PolicyVersion{PolicyID: id, Version: 1, ContentHash: id, Source: string(src),
			Title: "压测政策 " + id, EffectiveFrom: time.Now(), State: store.VersionPublished}).Error; err != nil {
			return nil, fmt.Errorf("seed policies: %w", err)
		}
	}
	return codes, nil
}

// commitLog remembers when each match was committed.
type commitLog struct {
	mu sync.Mutex
	at map[uint64]time.Time
}

func newCommitLog() *commitLog { return &commitLog{at: map[uint64]time.Time{}} }

// produce commits matches with their outbox rows in transactions of a tick's worth, at rate per
// second (0: as fast as possible).
func produce(ctx context.Context, db *gorm.DB, prefix, channel string, firms []string, total, rate int, log *commitLog) error {
	const tick = 50 * time.Millisecond
	chunk := 500
	if rate > 0 {
		chunk = max(1, rate*int(tick/time.Millisecond)/1000)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for done := 0; done < total; {
		n := min(chunk, total-done)
		rows := make([]store.Match, n)
		now := time.Now().UTC()
		for i := range rows {
			k := done + i
			rows[i] = store.Match{PolicyID: benchPolicies[k%len(benchPolicies)], PolicyVersion: 1, CreditCode: firms[k/len(benchPolicies)],
				State: store.MatchActive, AsOf: now, Notified: true, MatchedAt: now}
		}
		err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			// the firms' places in one read, as the matcher's writer does (else each row's
			// BeforeCreate reads its own)
			if _, _, err := store.PlaceMatches(tx, rows, nil); err != nil {
				return err
			}
			if err := tx.Create(&rows).Error; err != nil {
				return err
			}
			out := make([]store.Outbox, n)
			for i, m := range rows {
				payload, _ := json.Marshal(bus.NoticeJob{MatchID: m.ID, Channel: channel})
				out[i] = store.Outbox{Subject: bus.NotifySubject(prefix, channel), Payload: payload, CreatedAt: now}
			}
			return tx.Create(&out).Error
		})
		if err != nil {
			return fmt.Errorf("commit matches: %w", err)
		}
		committed := time.Now()
		log.mu.Lock()
		for _, m := range rows {
			log.at[m.ID] = committed
		}
		log.mu.Unlock()
		done += n
		if rate > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
	}
	return nil
}

// measure joins provider records (acceptance time) to matches (commit time) through the items.
func measure(ctx context.Context, db *gorm.DB, channel string, recs []sandbox.Record, commits *commitLog, res benchResult) (benchResult, error) {
	var items []store.DeliveryItem
	if err := db.WithContext(ctx).Where("channel = ?", channel).Find(&items).Error; err != nil {
		return res, err
	}
	byDelivery := map[string][]uint64{}
	for _, it := range items {
		id := strconv.FormatUint(it.DeliveryID, 10)
		byDelivery[id] = append(byDelivery[id], it.MatchID)
	}
	var lat []float64
	var first, last time.Time
	for _, r := range recs {
		for _, m := range byDelivery[r.DeliveryID] {
			c, ok := commits.at[m]
			if !ok {
				continue
			}
			lat = append(lat, float64(r.At.Sub(c))/float64(time.Millisecond))
			if first.IsZero() || c.Before(first) {
				first = c
			}
			if r.At.After(last) {
				last = r.At
			}
		}
	}
	if len(lat) == 0 {
		return res, errors.New("no accepted notice could be matched to its commit")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	res.Notices = len(lat)
	res.Seconds = last.Sub(first).Seconds()
	res.PerSecond = float64(len(lat)) / res.Seconds
	res.P50ms, res.P99ms, res.MaxMs = pct(0.50), pct(0.99), lat[len(lat)-1]
	return res, nil
}
