package notify

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

func TestMatchNoticesAndResendDead(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.MaxAttempts = 1 })
	h.firm("F1", "o-user-1", "13800000001")
	h.firm("F2", "", "")
	m1 := h.match("F1", "p-a", 1, ChannelWeChat)
	m2 := h.match("F2", "p-a", 1, ChannelWeChat) // no openid → SMS → no phone → dead
	h.settle()
	ops := Ops{DB: h.db, SubjectPrefix: h.bus.SubjectPrefix(), Now: h.clock.Now}
	got, err := ops.MatchNotices(h.ctx, []uint64{m1.ID, m2.ID, 999})
	if err != nil {
		t.Fatal(err)
	}
	if n := got[m1.ID]; len(n) != 1 || n[0].State != store.DeliverySent || n[0].SentAt == nil || n[0].Digest != 1 {
		t.Fatalf("m1 notices %+v", n)
	}
	byChannel := map[string]MatchNotice{}
	for _, n := range got[m2.ID] {
		byChannel[n.Channel] = n
	}
	if byChannel[ChannelWeChat].State != store.ItemFallback || byChannel[ChannelSMS].State != store.DeliveryDead {
		t.Fatalf("m2 notices %+v", got[m2.ID])
	}
	if len(got[999]) != 0 {
		t.Fatal("notices for an unknown match")
	}
	res, err := ops.ResendDead(h.ctx, ChannelSMS, "ops")
	if err != nil || len(res) != 1 || !res[0].OK {
		t.Fatalf("resend dead: %+v %v", res, err)
	}
	h.settle()
	if d := h.delivery(byChannel[ChannelSMS].DeliveryID); d.State != store.DeliveryDead || d.LastCode != "no_phone" {
		t.Fatalf("resent delivery without a phone: %+v", d)
	}
}

func TestUnsubscribeTakesEffectAtOnce(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	ops := Ops{DB: h.db}
	h.firm("F1", "o-user-1", "13800000001")
	if err := ops.Unsubscribe(h.ctx, "F1", "fax", "api"); err == nil {
		t.Fatal("unknown channel accepted")
	}
	if err := ops.Unsubscribe(h.ctx, "F1", ChannelSMS, "link"); err != nil {
		t.Fatal(err)
	}
	if err := ops.Unsubscribe(h.ctx, "F1", ChannelSMS, "page"); err != nil {
		t.Fatalf("unsubscribing twice: %v", err)
	}
	m := h.match("F1", "p-a", 1, ChannelWeChat, ChannelSMS)
	h.settle()
	if it := h.itemOf(m.ID, ChannelSMS); it.State != store.ItemSkipped || it.Note != "opted_out" {
		t.Fatalf("sms item %+v", it)
	}
	if err := ops.Resubscribe(h.ctx, "F1", ChannelSMS); err != nil {
		t.Fatal(err)
	}
	m2 := h.match("F1", "p-b", 1, ChannelSMS)
	h.settle()
	if d := h.delivery(h.itemOf(m2.ID, ChannelSMS).DeliveryID); d.State != store.DeliverySent {
		t.Fatalf("after resubscribing: %+v", d)
	}
}

func TestMaxDeliveriesBecomesADeadLetter(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	stop, err := h.n.watchDeadLetters(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	d := store.Delivery{MatchID: 1, Channel: ChannelWeChat, Recipient: "o-x", CreditCode: "F1", PolicyID: "p-a", State: store.DeliveryFailed}
	h.db.Create(&d)
	data, _ := json.Marshal(bus.NoticeJob{Channel: ChannelWeChat, DeliveryID: d.ID})
	if _, err := h.bus.JS.PublishMsg(h.ctx, &nats.Msg{Subject: h.bus.NotifySubject(ChannelWeChat), Data: data}); err != nil {
		t.Fatal(err)
	}
	cons, err := h.bus.Consumer(h.ctx, ChannelWeChat, bus.ConsumerOptions{AckWait: 10 * time.Second, MaxDeliver: 2, MaxAckPending: 10})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a message that every notifier fails on
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		_ = msg.Nak()
	}
	// JetStream gives up (and tells) when it would hand the message out a third time.
	if _, err := cons.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err == nil {
		t.Fatal("the message was delivered a third time")
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.delivery(d.ID).State != store.DeliveryDead {
		if time.Now().After(deadline) {
			t.Fatalf("delivery not dead after MAX_DELIVERIES: %+v", h.delivery(d.ID))
		}
		time.Sleep(20 * time.Millisecond)
	}
	letters, err := (Ops{DB: h.db}).DeadLetters(h.ctx, 10)
	if err != nil || len(letters) != 1 || letters[0].Deliveries != 2 || !strings.Contains(string(letters[0].Payload), "delivery_id") {
		t.Fatalf("dead letters %+v %v", letters, err)
	}
	if n, _ := h.bus.Backlog(h.ctx, ChannelWeChat); n != 0 {
		t.Fatalf("backlog %d after the dead letter was removed", n)
	}
}

func TestMetricsAreServed(t *testing.T) {
	deliveryOutcomes.WithLabelValues("wechat", "sent", "").Add(0)
	retries.WithLabelValues("wechat").Add(0)
	deadLetters.WithLabelValues("wechat", "").Add(0)
	providerLatency.WithLabelValues("wechat", "ok").Observe(0)
	rec := httptest.NewRecorder()
	MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, name := range []string{"policypush_deliveries_total", "policypush_outbox_lag_seconds", "policypush_provider_request_seconds",
		"policypush_dead_letters_total", "policypush_delivery_retries_total", "go_goroutines"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}
