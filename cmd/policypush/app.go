package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// app holds the long-lived parts a command needs, opened on demand and closed in reverse order.
type app struct {
	cfg     config.Config
	log     *slog.Logger
	db      *gorm.DB
	bus     *bus.Bus
	sandbox *sandbox.Server
	closers []func()
}

func newApp(cfg config.Config) *app {
	return &app{cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
}

func (a *app) openDB(ctx context.Context) (*gorm.DB, error) {
	if a.db != nil {
		return a.db, nil
	}
	o := store.Options{Driver: a.cfg.Database.Driver, DSN: a.cfg.Database.DSN, MaxOpen: a.cfg.Database.MaxOpen}
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

// startSandbox runs the local provider servers when configured and points the senders at them.
func (a *app) startSandbox(ctx context.Context) error {
	if !a.cfg.Sandbox.Enabled || a.sandbox != nil {
		return nil
	}
	s, err := sandbox.Start(ctx, sandbox.Options{Addr: a.cfg.Sandbox.Addr, Dir: filepath.Join(a.cfg.DataDir, "sandbox")})
	if err != nil {
		return fmt.Errorf("start sandbox providers: %w", err)
	}
	a.sandbox = s
	a.closers = append(a.closers, func() { _ = s.Close() })
	a.cfg.WeChat.BaseURL = s.URL()
	a.cfg.SMS.Tencent.Endpoint = s.HostPort()
	a.cfg.SMS.Aliyun.Endpoint = s.HostPort()
	return nil
}

// senders builds one sender per enabled channel. SMS uses the first provider in priority order.
func (a *app) senders() (map[string]notify.Sender, error) {
	out := map[string]notify.Sender{}
	if a.cfg.WeChat.Enabled {
		w, err := notify.NewWeChat(notify.WeChatConfig{AppID: a.cfg.WeChat.AppID, AppSecret: a.cfg.WeChat.AppSecret,
			TemplateID: a.cfg.WeChat.TemplateID, BaseURL: a.cfg.WeChat.BaseURL})
		if err != nil {
			return nil, fmt.Errorf("wechat: %w", err)
		}
		out[notify.ChannelWeChat] = w
	}
	if a.cfg.SMS.Enabled {
		t, al := a.cfg.SMS.Tencent, a.cfg.SMS.Aliyun
		var s notify.Sender
		var err error
		switch a.cfg.SMS.Providers[0] {
		case "tencent":
			s, err = notify.NewTencentSMS(notify.TencentSMSConfig{SecretID: t.SecretID, SecretKey: t.SecretKey, Region: t.Region,
				SdkAppID: t.SdkAppID, SignName: t.SignName, TemplateID: t.TemplateID, Endpoint: t.Endpoint})
		case "aliyun":
			s, err = notify.NewAliyunSMS(notify.AliyunSMSConfig{AccessKeyID: al.AccessKeyID, AccessKeySecret: al.AccessKeySecret,
				Region: al.Region, SignName: al.SignName, TemplateCode: al.TemplateCode, Endpoint: al.Endpoint})
		}
		if err != nil {
			return nil, fmt.Errorf("sms %s: %w", a.cfg.SMS.Providers[0], err)
		}
		out[notify.ChannelSMS] = s
	}
	return out, nil
}

// startPipeline runs the outbox relay and the notifiers until ctx ends; wait blocks until both stopped.
func (a *app) startPipeline(ctx context.Context) (wait func(), err error) {
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
	relay := &bus.Relay{DB: db, JS: b.JS, Interval: a.cfg.Relay.Interval, BatchSize: a.cfg.Relay.BatchSize, Log: a.log}
	n := notify.New(db, b, senders, notify.Options{
		Workers: a.cfg.Notify.Workers,
		Consumer: bus.ConsumerOptions{AckWait: a.cfg.Notify.AckWait, MaxDeliver: a.cfg.Notify.MaxDeliver,
			MaxAckPending: a.cfg.Notify.MaxAckPending},
		Backoff: a.cfg.Notify.Backoff, SendTimeout: a.cfg.Notify.SendTimeout, PublicURL: a.publicURL(),
		SubjectPrefix: a.cfg.NATS.SubjectPrefix, Log: a.log,
	})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); relay.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := n.Run(ctx); err != nil {
			a.log.Error("notifier stopped", "err", err)
		}
	}()
	return wg.Wait, nil
}

func (a *app) publicURL() string {
	if a.cfg.HTTP.PublicURL != "" {
		return a.cfg.HTTP.PublicURL
	}
	return "http://" + a.cfg.HTTP.Addr
}

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}
