package notify

import (
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/silenceper/wechat/v2/util"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// The notifier tests run the real pieces (database, JetStream, the SDK senders against the sandbox)
// but step them by hand: the relay publishes what is due on a fake clock, and drain hands every
// message that is ready to the notifier's batch handler. Nothing waits on wall-clock time.

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	db    *gorm.DB
	bus   *bus.Bus
	sb    *sandbox.Server
	dir   string
	clock *fakeClock
	relay *bus.Relay
	n     *Notifier
	opts  Options
}

// policyTitles are the policies every harness publishes.
var policyTitles = map[string]string{"p-a": "稳岗返还", "p-b": "留工培训补助", "p-c": "一次性扩岗补助"}

// newHarness builds the pieces. The clock starts at 10:00 Beijing time (outside quiet hours).
func newHarness(t *testing.T, sbo sandbox.Options, tweak func(*Options)) *harness {
	t.Helper()
	return newHarnessOn(t, testenv.OpenBus(t), sbo, tweak)
}

// newHarnessOn builds the pieces on a bus the test opened itself.
func newHarnessOn(t *testing.T, b *bus.Bus, sbo sandbox.Options, tweak func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), dir: t.TempDir(), bus: b}
	h.db = testenv.OpenDB(t).DB
	t.Cleanup(h.checkDeliveryCounts)
	h.clock = &fakeClock{t: time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)}
	sbo.Dir = h.dir
	sb, err := sandbox.Start(h.ctx, sbo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	h.sb = sb
	h.opts = Options{Workers: 8, BatchSize: 50, Backoff: []time.Duration{time.Minute, 5 * time.Minute}, MaxAttempts: 5,
		SendTimeout: 3 * time.Second, QuotaPause: 30 * time.Minute, InDoubtGrace: 10 * time.Minute,
		Consumer:      bus.ConsumerOptions{AckWait: 10 * time.Second, MaxDeliver: 20, MaxAckPending: 1000},
		SubjectPrefix: h.bus.SubjectPrefix(), PublicURL: "https://policy.example", Now: h.clock.Now,
		QuietHours: QuietHours{Start: 22 * time.Hour, End: 8 * time.Hour, Channels: []string{ChannelSMS}, Location: time.FixedZone("CST", 8*3600)},
		Failover:   Failover{Threshold: 2, Cooldown: time.Hour}}
	if tweak != nil {
		tweak(&h.opts)
	}
	h.relay = bus.NewRelay(bus.RelayOptions{DB: h.db, JS: h.bus.JS, Interval: time.Second, BatchSize: 500, Log: h.opts.Log, Now: h.clock.Now})
	o := h.opts
	o.Bus, o.Senders = h.bus, h.senders()
	h.n = New(h.db, o)
	for id, title := range policyTitles {
		src, _ := json.Marshal(map[string]any{"id": id, "title": title, "deadline": "2026-06-30", "channels": []string{"wechat"}})
		if err := h.db.Create(&store.PolicyVersion{PolicyID: id, Version: 1, ContentHash: id, Source: string(src), Title: title,
			EffectiveFrom: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), State: store.VersionPublished}).Error; err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// checkDeliveryCounts fails unless the delivery counts, once the queue is drained (what the
// notifier's drain loop does every drainEvery), equal a count of the deliveries: every transition
// the test made queued its deliveries.
func (h *harness) checkDeliveryCounts() {
	if _, err := store.DrainDeliveries(h.ctx, h.db); err != nil {
		h.t.Fatal(err)
	}
	stored, err := store.StoredDeliveryCounts(h.ctx, h.db)
	if err != nil {
		h.t.Fatal(err)
	}
	recount, err := store.RecountDeliveries(h.ctx, h.db)
	if err != nil {
		h.t.Fatal(err)
	}
	if !maps.Equal(stored, recount) {
		h.t.Errorf("the delivery counts %v differ from a count of the deliveries %v", stored, recount)
	}
}

func (h *harness) senders() map[string][]Sender {
	t := h.t
	w, err := NewWeChat(WeChatConfig{AppID: "wx-test", AppSecret: "secret", TemplateID: "TPL-1", BaseURL: h.sb.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { util.SetURIModifier(nil) })
	tc, err := NewTencentSMS(TencentSMSConfig{SecretID: "id", SecretKey: "key", SdkAppID: "1400000000", SignName: "政策直达",
		TemplateID: "100001", Endpoint: h.sb.HostPort()})
	if err != nil {
		t.Fatal(err)
	}
	al, err := NewAliyunSMS(AliyunSMSConfig{AccessKeyID: "id", AccessKeySecret: "secret", SignName: "政策直达",
		TemplateCode: "SMS_100001", Endpoint: h.sb.HostPort()})
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]Sender{ChannelWeChat: {w}, ChannelSMS: {tc, al}}
}

// firm adds an active firm. openid "" has none; one containing "unfollow" gets 43004 from the sandbox.
func (h *harness) firm(code, openid, phone string) {
	h.t.Helper()
	if err := h.db.Create(&store.Enterprise{CreditCode: code, Name: "企业" + code, Status: store.StatusActive,
		WechatOpenID: openid, ContactPhone: phone}).Error; err != nil {
		h.t.Fatal(err)
	}
}

// match commits a match with its outbox rows, as the matcher does.
func (h *harness) match(code, policy string, amount float64, channels ...string) store.Match {
	h.t.Helper()
	m := store.Match{PolicyID: policy, PolicyVersion: 1, CreditCode: code, State: store.MatchActive, Amount: &amount,
		AsOf: h.clock.Now(), Notified: true, MatchedAt: h.clock.Now()}
	err := h.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&m).Error; err != nil {
			return err
		}
		for _, ch := range channels {
			job := newOutboxJob(h.bus.SubjectPrefix(), bus.NoticeJob{MatchID: m.ID, Channel: ch}, nil, h.clock.Now())
			if err := tx.Create(&job).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// drain hands every message that is ready on a channel to the notifier, batch by batch.
func (h *harness) drain(ch string) int {
	h.t.Helper()
	cons, err := h.bus.Consumer(h.ctx, ch, h.opts.Consumer)
	if err != nil {
		h.t.Fatal(err)
	}
	total := 0
	for {
		batch, err := cons.FetchNoWait(h.opts.BatchSize)
		if err != nil {
			h.t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			return total
		}
		total += len(msgs)
		h.n.process(h.ctx, h.n.routes[ch], msgs)
	}
}

// settle publishes what is due and handles it, until nothing moves.
func (h *harness) settle() {
	h.t.Helper()
	for range 50 {
		published, err := h.relay.Once(h.ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		handled := h.drain(ChannelWeChat) + h.drain(ChannelSMS)
		if published == 0 && handled == 0 {
			return
		}
	}
	h.t.Fatal("pipeline did not settle")
}

// advance moves the clock and lets what became due happen.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	h.settle()
}

func (h *harness) records(file string) []sandbox.Record {
	h.t.Helper()
	recs, err := sandbox.ReadRecords(filepath.Join(h.dir, file))
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}

func (h *harness) delivery(id uint64) store.Delivery {
	h.t.Helper()
	var d store.Delivery
	if err := h.db.Where("id = ?", id).Take(&d).Error; err != nil {
		h.t.Fatal(err)
	}
	return d
}

// itemOf returns the item of a match on a channel.
func (h *harness) itemOf(matchID uint64, ch string) store.DeliveryItem {
	h.t.Helper()
	var it store.DeliveryItem
	if err := h.db.Where("match_id = ? AND channel = ?", matchID, ch).Take(&it).Error; err != nil {
		h.t.Fatalf("item of match %d on %s: %v", matchID, ch, err)
	}
	return it
}

// events lists the kinds of a delivery's timeline.
func (h *harness) events(id uint64) []string {
	tl, err := (Ops{DB: h.db}).Timeline(h.ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	out := make([]string, len(tl.Events))
	for i, e := range tl.Events {
		out[i] = e.Kind
	}
	return out
}

// exactlyOnce checks the invariant on the sandbox records: every item carried by a delivery in a
// sent state has exactly one record of that delivery id, and no record is of anything else.
func (h *harness) exactlyOnce() (records int) {
	h.t.Helper()
	recs := append(h.records(sandbox.WeChatFile), h.records(sandbox.SMSFile)...)
	perDelivery := map[string]int{}
	for _, r := range recs {
		perDelivery[r.DeliveryID]++
	}
	var ds []store.Delivery
	h.db.Find(&ds)
	for _, d := range ds {
		id := strconv.FormatUint(d.ID, 10)
		accepted := d.State == store.DeliverySent || d.State == store.DeliveryDelivered || d.State == store.DeliveryUndelivered
		switch {
		case accepted && perDelivery[id] != 1:
			h.t.Errorf("delivery %d is %s but has %d provider records", d.ID, d.State, perDelivery[id])
		case !accepted && perDelivery[id] != 0:
			h.t.Errorf("delivery %d is %s but has %d provider records", d.ID, d.State, perDelivery[id])
		}
		delete(perDelivery, id)
	}
	for id, n := range perDelivery {
		h.t.Errorf("%d provider record(s) for unknown delivery %s", n, id)
	}
	return len(recs)
}
