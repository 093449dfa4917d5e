package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/admin"
	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// app holds the long-lived parts a command needs, opened on demand and closed in reverse order.
type app struct {
	cfg      config.Config
	log      *slog.Logger
	db       *gorm.DB
	bus      *bus.Bus
	sandbox  *sandbox.Server
	relay    *bus.Relay
	notifier *notify.Notifier
	matcher  *matcher.Engine // the running matcher engine (serve, demo); nil otherwise
	closers  []func()
	bulk     bool // the command writes in bulk (withBulkDB)

	// stages are the long-running parts this process runs (relay, notifier, matcher service,
	// console, sandbox; internal/stage); close stops them, waits for every one and closes them
	// before the database and the bus.
	stages stage.Group
	// gate gives the console's requests precedence over the relay's and notifiers' batches.
	gate stage.Gate
}

// start runs a stage until ctx ends or close is called.
func (a *app) start(ctx context.Context, name string, s stage.Stage) {
	a.stages.Log = a.log
	a.stages.Go(ctx, name, s)
}

// startFunc runs a loop of this process (one without a Ready or Close) like start.
func (a *app) startFunc(ctx context.Context, name string, fn func(context.Context) error) {
	a.stages.Log = a.log
	a.stages.GoFunc(ctx, name, fn)
}

// wait blocks until every stage started has stopped (their contexts ended); errors were logged.
func (a *app) wait() { _ = a.stages.Wait() }

func newApp(cfg config.Config) *app {
	return &app{cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
}

func (a *app) openDB(ctx context.Context) (*gorm.DB, error) {
	if a.db != nil {
		return a.db, nil
	}
	o := store.Options{Driver: a.cfg.Database.Driver, DSN: a.cfg.Database.DSN, MaxOpen: a.cfg.Database.MaxOpen,
		LogSQL: a.cfg.Database.LogSQL, SlowQuery: a.cfg.Database.SlowQuery, Log: a.log, CheckpointBeside: a.bulk}
	if o.Driver == "sqlite" {
		o.DSN = a.cfg.SQLitePath()
	}
	db, err := store.Open(ctx, o)
	if err != nil {
		return nil, err
	}
	a.db = db
	a.closers = append(a.closers, func() {
		if s, err := db.DB(); err == nil {
			_ = s.Close()
		}
	})
	return db, nil
}

// openConsoleDB opens the console's own connection pool (database.max_open connections) on the
// database openDB opened. Sharing one pool, the console's requests waited for a connection behind
// the pipeline's: with a backlog to deliver, the relay and the notifier's lanes held every
// connection of the pool (on SQLite most of them waiting for the write lock), and a sign-in's
// one-row session lookup took a second (bench api, docs/console.md).
func (a *app) openConsoleDB(ctx context.Context) (*gorm.DB, error) {
	if _, err := a.openDB(ctx); err != nil {
		return nil, err
	}
	o := store.Options{Driver: a.cfg.Database.Driver, DSN: a.cfg.Database.DSN, MaxOpen: a.cfg.Database.MaxOpen,
		LogSQL: a.cfg.Database.LogSQL, SlowQuery: a.cfg.Database.SlowQuery, Log: a.log, Pool: true}
	if o.Driver == "sqlite" {
		o.DSN = a.cfg.SQLitePath()
	}
	db, err := store.Open(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("open the console's connection pool: %w", err)
	}
	a.closers = append(a.closers, func() {
		if s, err := db.DB(); err == nil {
			_ = s.Close()
		}
	})
	return db, nil
}

func (a *app) openBus(ctx context.Context) (*bus.Bus, error) {
	if a.bus != nil {
		return a.bus, nil
	}
	b, err := bus.Open(ctx, bus.Options{
		URL: a.cfg.NATS.URL, StoreDir: filepath.Join(a.cfg.DataDir, "jetstream"), Stream: a.cfg.NATS.Stream,
		SubjectPrefix: a.cfg.NATS.SubjectPrefix, Replicas: a.cfg.NATS.Replicas, DuplicateWindow: a.cfg.NATS.DuplicateWindow,
	})
	if err != nil {
		return nil, err
	}
	a.bus = b
	a.closers = append(a.closers, b.Close)
	return b, nil
}

// sandboxOptions are the sandbox settings of the config: faults and receipts.
func sandboxOptions(c config.Config) sandbox.Options {
	pf := func(f config.ProviderFaults, seed int64) sandbox.Faults {
		return sandbox.Faults{ErrorRate: f.ErrorRate, Codes: f.Codes, Latency: f.Latency, TimeoutRate: f.TimeoutRate, Seed: seed}
	}
	f := c.Sandbox.Faults
	seed := int64(f.Seed)
	return sandbox.Options{Addr: c.Sandbox.Addr, WeChat: pf(f.WeChat, seed), Tencent: pf(f.Tencent, seed+1),
		Aliyun: pf(f.Aliyun, seed+2), ExpireTokenEvery: f.ExpireTokenEvery}
}

// startSandbox runs the local provider servers when configured and points the senders at them.
// The callback token and the SMS report token, when not configured, get random values for this
// run: the sandbox signs its reports with them and the console checks them.
func (a *app) startSandbox(ctx context.Context) error {
	if !a.cfg.Sandbox.Enabled || a.sandbox != nil {
		return nil
	}
	o := sandboxOptions(a.cfg)
	o.Dir = filepath.Join(a.cfg.DataDir, "sandbox")
	s, err := sandbox.New(o)
	if err != nil {
		return fmt.Errorf("start sandbox providers: %w", err)
	}
	a.sandbox = s
	a.start(ctx, "sandbox", s)
	a.cfg.WeChat.BaseURL = s.URL()
	a.cfg.SMS.Tencent.Endpoint = s.HostPort()
	a.cfg.SMS.Aliyun.Endpoint = s.HostPort()
	if a.cfg.WeChat.CallbackToken == "" {
		a.cfg.WeChat.CallbackToken = randomToken()
	}
	if a.cfg.Notify.ReceiptToken == "" {
		a.cfg.Notify.ReceiptToken = randomToken()
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// senders builds the providers of each enabled channel, SMS in the priority order of
// sms.providers. Senders talking to the in-process sandbox know that it dedupes on the delivery id.
func (a *app) senders() (map[string][]notify.Sender, error) {
	out := map[string][]notify.Sender{}
	if a.cfg.WeChat.Enabled {
		w, err := notify.NewWeChat(notify.WeChatConfig{AppID: a.cfg.WeChat.AppID, AppSecret: a.cfg.WeChat.AppSecret,
			TemplateID: a.cfg.WeChat.TemplateID, BaseURL: a.cfg.WeChat.BaseURL, Templates: wechatTemplates(a.cfg)})
		if err != nil {
			return nil, fmt.Errorf("wechat: %w", err)
		}
		out[notify.ChannelWeChat] = []notify.Sender{w}
	}
	if a.cfg.SMS.Enabled {
		t, al := a.cfg.SMS.Tencent, a.cfg.SMS.Aliyun
		dedupes := a.sandbox != nil
		tpls := smsTemplates(a.cfg)
		if err := notify.CheckSMSTemplates("sms.templates", tpls); err != nil {
			return nil, err
		}
		for _, name := range a.cfg.SMS.Providers {
			var s notify.Sender
			var err error
			switch name {
			case notify.ProviderTencent:
				s, err = notify.NewTencentSMS(notify.TencentSMSConfig{SecretID: t.SecretID, SecretKey: t.SecretKey, Region: t.Region,
					SdkAppID: t.SdkAppID, SignName: t.SignName, TemplateID: t.TemplateID, Endpoint: t.Endpoint, Dedupes: dedupes, Templates: tpls})
			case notify.ProviderAliyun:
				s, err = notify.NewAliyunSMS(notify.AliyunSMSConfig{AccessKeyID: al.AccessKeyID, AccessKeySecret: al.AccessKeySecret,
					Region: al.Region, SignName: al.SignName, TemplateCode: al.TemplateCode, Endpoint: al.Endpoint, Dedupes: dedupes, Templates: tpls})
			}
			if err != nil {
				return nil, fmt.Errorf("sms %s: %w", name, err)
			}
			out[notify.ChannelSMS] = append(out[notify.ChannelSMS], s)
		}
	}
	return out, nil
}

// notifierOptions maps the config onto the notifier. Notice links are the console's signed
// enterprise links when a link secret is available.
func (a *app) notifierOptions() (notify.Options, error) {
	n := a.cfg.Notify
	quiet, err := notify.ParseQuietHours(n.QuietHours.Start, n.QuietHours.End, n.QuietHours.Channels, a.cfg.Location())
	if err != nil {
		return notify.Options{}, err
	}
	o := notify.Options{
		Workers: n.Workers, BatchSize: n.BatchSize,
		Consumer: bus.ConsumerOptions{AckWait: n.AckWait, MaxDeliver: n.MaxDeliver, MaxAckPending: n.MaxAckPending},
		Backoff:  n.Backoff, MaxAttempts: n.MaxAttempts, SendTimeout: n.SendTimeout, DigestWindow: n.DigestWindow,
		QuietHours: quiet,
		Throttle:   notify.Throttle{MinInterval: n.Throttle.MinInterval, PerDay: n.Throttle.PerDay},
		QuotaPause: n.QuotaPause,
		Failover:   notify.Failover{Threshold: a.cfg.SMS.Failover.Threshold, Cooldown: a.cfg.SMS.Failover.Cooldown},
		InDoubt:    n.InDoubt, InDoubtGrace: n.InDoubtGrace,
		PublicURL: a.publicURL(), SubjectPrefix: a.cfg.NATS.SubjectPrefix, Log: a.log,
		Gate: &a.gate,
	}
	if secret, err := a.linkSecret(); err == nil {
		base, ttl := a.publicURL(), a.cfg.Console.LinkTTL
		o.NoticeURL = func(creditCode, policyID string) string {
			return admin.EnterpriseLink(secret, base, creditCode, policyID, ttl)
		}
	} else {
		a.log.Warn("notices link to the policy page: no enterprise link secret", "err", err)
	}
	return o, nil
}

// startRelay runs the outbox relay until ctx ends; wait blocks until the process's stages stopped.
func (a *app) startRelay(ctx context.Context) (wait func(), err error) {
	db, err := a.openDB(ctx)
	if err != nil {
		return nil, err
	}
	b, err := a.openBus(ctx)
	if err != nil {
		return nil, err
	}
	a.relay = bus.NewRelay(bus.RelayOptions{DB: db, JS: b.JS, Interval: a.cfg.Relay.Interval, BatchSize: a.cfg.Relay.BatchSize, Log: a.log, Gate: &a.gate})
	a.start(ctx, "relay", a.relay)
	return a.wait, nil
}

// startNotifier runs the channel consumers (and the reconciliation of deliveries without a report)
// until ctx ends; wait blocks until the process's stages stopped.
func (a *app) startNotifier(ctx context.Context) (wait func(), err error) {
	db, err := a.openDB(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.startSandbox(ctx); err != nil {
		return nil, err
	}
	b, err := a.openBus(ctx)
	if err != nil {
		return nil, err
	}
	senders, err := a.senders()
	if err != nil {
		return nil, err
	}
	opts, err := a.notifierOptions()
	if err != nil {
		return nil, err
	}
	opts.Bus, opts.Senders = b, senders
	a.notifier = notify.New(db, opts)
	a.start(ctx, "notifier", a.notifier)
	// Deliveries left sent without a report (deliveries.go).
	a.startFunc(ctx, "reconcile", func(ctx context.Context) error {
		stage.Every(ctx, a.cfg.Notify.ReceiptWindow/4, func(ctx context.Context) error {
			sum, err := a.reconcile(ctx, db, 10000)
			if err == nil && sum.Checked > 0 {
				a.log.Info("reconciled deliveries without a report", "checked", sum.Checked, "delivered", sum.Delivered,
					"undelivered", sum.Undelivered, "unknown", sum.Unknown, "errors", sum.Errors)
			}
			return err
		}, func(err error) { a.log.Warn("reconcile deliveries", "err", err) })
		return nil
	})
	return a.wait, nil
}

// startPipeline runs the outbox relay and the notifiers until ctx ends; wait blocks until the
// process's stages stopped.
func (a *app) startPipeline(ctx context.Context) (wait func(), err error) {
	if _, err := a.startNotifier(ctx); err != nil {
		return nil, err
	}
	if _, err := a.startRelay(ctx); err != nil {
		return nil, err
	}
	return a.wait, nil
}

func (a *app) publicURL() string {
	if a.cfg.HTTP.PublicURL != "" {
		return a.cfg.HTTP.PublicURL
	}
	return "http://" + a.cfg.HTTP.Addr
}

// receiptConfig is the setting of the receipt handlers.
func (a *app) receiptConfig() notify.ReceiptConfig {
	return notify.ReceiptConfig{DB: a.db, SubjectPrefix: a.cfg.NATS.SubjectPrefix, Token: a.cfg.WeChat.CallbackToken,
		EncodingAESKey: a.cfg.WeChat.EncodingAESKey, AppID: a.cfg.WeChat.AppID, SMSToken: a.cfg.Notify.ReceiptToken,
		FallbackToSMS: a.cfg.SMS.Enabled, Log: a.log}
}

// deliveryHandlers are the delivery path's endpoints the console serves from its route table
// (admin.DeliveryHandlers): provider callbacks (receipts), /metrics and /readyz/delivery.
func (a *app) deliveryHandlers() admin.DeliveryHandlers {
	rc := a.receiptConfig()
	return admin.DeliveryHandlers{
		WeChatCallback: notify.WeChatCallbackHandler(rc),
		TencentReceipt: notify.SMSReceiptHandler(rc, notify.ProviderTencent),
		AliyunReceipt:  notify.SMSReceiptHandler(rc, notify.ProviderAliyun),
		Metrics:        notify.MetricsHandler(),
		Ready:          http.HandlerFunc(a.deliveryReady),
	}
}

// sandboxReceipts points the sandbox's delivery reports, when it runs, at the callbacks of the
// console listening on addr.
func (a *app) sandboxReceipts(addr string) {
	if a.sandbox != nil && a.cfg.Sandbox.Receipts.Enabled {
		base := "http://" + addr
		r := a.cfg.Sandbox.Receipts
		a.sandbox.SetReceipts(sandbox.ReceiptOptions{
			WeChatURL:   base + notify.WeChatCallbackPath,
			TencentURL:  base + notify.TencentReceiptPath + "?token=" + a.cfg.Notify.ReceiptToken,
			AliyunURL:   base + notify.AliyunReceiptPath + "?token=" + a.cfg.Notify.ReceiptToken,
			WeChatToken: a.cfg.WeChat.CallbackToken, WeChatAESKey: a.cfg.WeChat.EncodingAESKey, WeChatAppID: a.cfg.WeChat.AppID,
			Delay: r.Delay, FailRate: r.FailRate, DuplicateRate: r.DuplicateRate, Seed: int64(a.cfg.Sandbox.Faults.Seed),
		})
	}
}

// readiness is the health of this process's dependencies (stage.Readiness): the database and, when
// nats.url is set, the external NATS (connected within 5 s; an embedded server lives only inside
// serve, demo and the pipeline commands, so a one-shot command reports it as unused).
func (a *app) readiness(ctx context.Context) stage.Health {
	var nats stage.Checker
	if a.cfg.NATS.URL != "" {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := a.openBus(bctx)
		cancel()
		if err != nil {
			nats = stage.CheckFunc(func(context.Context) stage.Check { return stage.Down("nats", err, nil) })
		} else {
			nats = b
		}
	}
	return stage.Readiness(ctx, a.db, nats)
}

// deliveryHealth is the database, NATS, the relay's last round and the notifier's consumers and
// providers; not ready when the database or NATS is unreachable or a channel is not consumed.
func (a *app) deliveryHealth(ctx context.Context) stage.Health {
	h := stage.Readiness(ctx, a.db, a.bus)
	if a.relay != nil {
		h = append(h, a.relay.Ready(ctx))
	}
	if a.notifier != nil {
		h = append(h, a.notifier.Ready(ctx))
	}
	return h
}

// deliveryReady answers /readyz/delivery (deliveryHealth): 503 unless ready.
func (a *app) deliveryReady(w http.ResponseWriter, r *http.Request) {
	a.deliveryHealth(r.Context()).ServeHTTP(w, r)
}

// close stops the stages, waits for every one of them and closes them, then closes the bus and the
// database (in reverse order of opening).
func (a *app) close() {
	_ = a.stages.Stop() // in the reverse order of their start; their errors were logged
	if err := a.stages.Close(); err != nil {
		a.log.Warn("close", "err", err)
	}
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}
