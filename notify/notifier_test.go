package notify

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

func TestDigestIsOneMessageAndNothingTwice(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.DigestWindow = 10 * time.Minute })
	h.firm("F1", "o-f1", "13800000001")
	h.firm("F2", "o-f2", "13800000002")
	a := h.match("F1", "p-a", 1000, ChannelWeChat)
	b := h.match("F1", "p-b", 2500.5, ChannelWeChat)
	c := h.match("F2", "p-a", 300, ChannelWeChat)
	h.settle()
	if n := len(h.records(sandbox.WeChatFile)); n != 0 {
		t.Fatalf("%d messages sent inside the digest window", n)
	}
	// A match arriving later in the window joins the open digest.
	h.clock.Advance(5 * time.Minute)
	d := h.match("F1", "p-c", 0, ChannelWeChat)
	h.settle()
	if n := len(h.records(sandbox.WeChatFile)); n != 0 {
		t.Fatalf("%d messages sent inside the digest window", n)
	}
	h.advance(5 * time.Minute)

	recs := h.records(sandbox.WeChatFile)
	if len(recs) != 2 {
		t.Fatalf("want 2 messages (one per firm), got %d", len(recs))
	}
	first := h.itemOf(a.ID, ChannelWeChat)
	for _, m := range []uint64{b.ID, d.ID} {
		if it := h.itemOf(m, ChannelWeChat); it.DeliveryID != first.DeliveryID {
			t.Fatalf("match %d in delivery %d, want the digest %d", m, it.DeliveryID, first.DeliveryID)
		}
	}
	if h.itemOf(c.ID, ChannelWeChat).DeliveryID == first.DeliveryID {
		t.Fatal("another firm's match joined the digest")
	}
	var digest sandbox.Record
	for _, r := range recs {
		if r.DeliveryID == strconv.FormatUint(first.DeliveryID, 10) {
			digest = r
		}
	}
	for _, title := range []string{"稳岗返还", "留工培训补助", "一次性扩岗补助"} {
		if !strings.Contains(digest.Params["keyword1"], title) {
			t.Errorf("digest lists %q, missing %s", digest.Params["keyword1"], title)
		}
	}
	if digest.Params["keyword2"] != "合计3,500.50元" || !strings.Contains(digest.Params["first"], "3项") {
		t.Errorf("digest amount/first line: %q / %q", digest.Params["keyword2"], digest.Params["first"])
	}
	dl := h.delivery(first.DeliveryID)
	if dl.State != store.DeliverySent || dl.Items != 3 || dl.OpenKey != nil {
		t.Fatalf("digest delivery %+v", dl)
	}

	// Every notice again (a relay republishing past the duplicate window): nothing new is sent.
	for _, m := range []uint64{a.ID, b.ID, c.ID, d.ID} {
		data := []byte(`{"match_id":` + strconv.FormatUint(m, 10) + `,"channel":"wechat"}`)
		if _, err := h.bus.JS.PublishMsg(h.ctx, &nats.Msg{Subject: h.bus.NotifySubject(ChannelWeChat), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	h.advance(time.Hour)
	if n := h.exactlyOnce(); n != 2 {
		t.Fatalf("%d records after the repeats, want 2", n)
	}
}

func TestNoDigestWindowSendsAtOnce(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	h.firm("F1", "o-f1", "13800000001")
	m := h.match("F1", "p-a", 10, ChannelWeChat, ChannelSMS)
	h.settle()
	if got := h.exactlyOnce(); got != 2 {
		t.Fatalf("%d records, want one per channel", got)
	}
	d := h.delivery(h.itemOf(m.ID, ChannelSMS).DeliveryID)
	if d.Provider != ProviderTencent || d.SentAt == nil || !slices.Equal(h.events(d.ID), []string{"queued", "sent"}) {
		t.Fatalf("sms delivery %+v, events %v", d, h.events(d.ID))
	}
}

func TestFallbackToSMS(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.DigestWindow = time.Minute })
	h.firm("F1", "o-unfollow-1", "13800000001") // 43004 from WeChat
	h.firm("F2", "", "13800000002")             // no openid
	h.firm("F3", "o-unfollow-3", "13800000003") // asked for SMS too: still one SMS per match
	m1 := h.match("F1", "p-a", 1, ChannelWeChat)
	m1b := h.match("F1", "p-b", 2, ChannelWeChat)
	m2 := h.match("F2", "p-a", 1, ChannelWeChat)
	m3 := h.match("F3", "p-a", 1, ChannelWeChat, ChannelSMS)
	h.advance(time.Minute)
	h.advance(time.Minute)

	wx := h.delivery(h.itemOf(m1.ID, ChannelWeChat).DeliveryID)
	if wx.State != store.DeliverySkipped || wx.LastCode != "43004" || !slices.Contains(h.events(wx.ID), store.EventFallback) {
		t.Fatalf("wechat delivery %+v events %v", wx, h.events(wx.ID))
	}
	for _, m := range []uint64{m1.ID, m1b.ID} {
		if it := h.itemOf(m, ChannelWeChat); it.State != store.ItemFallback {
			t.Fatalf("wechat item of %d: %+v", m, it)
		}
	}
	// Both matches of F1 fell back together and went out as one SMS digest.
	sms1 := h.itemOf(m1.ID, ChannelSMS)
	if !sms1.Fallback || sms1.DeliveryID == 0 || h.itemOf(m1b.ID, ChannelSMS).DeliveryID != sms1.DeliveryID {
		t.Fatalf("sms items of F1: %+v / %+v", sms1, h.itemOf(m1b.ID, ChannelSMS))
	}
	if it := h.itemOf(m2.ID, ChannelWeChat); it.State != store.ItemFallback || it.Note != "no_openid" || it.DeliveryID != 0 {
		t.Fatalf("no-openid item %+v", it)
	}
	if h.delivery(h.itemOf(m2.ID, ChannelSMS).DeliveryID).State != store.DeliverySent {
		t.Fatal("no-openid firm got no SMS")
	}
	if h.delivery(h.itemOf(m3.ID, ChannelSMS).DeliveryID).State != store.DeliverySent {
		t.Fatal("F3 got no SMS")
	}
	if n := h.exactlyOnce(); n != 3 {
		t.Fatalf("%d SMS records, want one per firm", n)
	}
}

func TestQuietHoursHoldSMSUntilMorning(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	h.clock.t = time.Date(2026, 3, 2, 14, 30, 0, 0, time.UTC) // 22:30 in Beijing
	h.firm("F1", "o-f1", "13800000001")
	m := h.match("F1", "p-a", 1, ChannelWeChat, ChannelSMS)
	h.settle()
	if got := len(h.records(sandbox.WeChatFile)); got != 1 {
		t.Fatalf("wechat is not quiet: want 1 record, got %d", got)
	}
	d := h.delivery(h.itemOf(m.ID, ChannelSMS).DeliveryID)
	morning := time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC) // 08:00 Beijing
	if d.State != store.DeliveryQueued || d.DueAt == nil || !d.DueAt.Equal(morning) || d.Attempts != 0 {
		t.Fatalf("sms at night: %+v", d)
	}
	h.advance(4 * time.Hour) // 02:30
	if got := len(h.records(sandbox.SMSFile)); got != 0 {
		t.Fatalf("%d SMS sent at night", got)
	}
	h.advance(6 * time.Hour) // 08:30
	if d = h.delivery(d.ID); d.State != store.DeliverySent {
		t.Fatalf("sms not sent in the morning: %+v", d)
	}
	if evs := h.events(d.ID); !slices.Equal(evs, []string{"queued", "deferred", "sent"}) {
		t.Fatalf("timeline %v", evs)
	}
	h.exactlyOnce()
}

func TestRevokedOptedOutAndInactiveGetNothing(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.DigestWindow = time.Minute })
	h.firm("F1", "o-f1", "13800000001")
	h.firm("F2", "o-f2", "13800000002")
	h.firm("F3", "o-f3", "13800000003")
	h.firm("F4", "o-f4", "13800000004")
	m1 := h.match("F1", "p-a", 1, ChannelWeChat)
	m2 := h.match("F2", "p-a", 1, ChannelWeChat)
	m3 := h.match("F3", "p-a", 1, ChannelWeChat)
	m4a := h.match("F4", "p-a", 1, ChannelWeChat)
	m4b := h.match("F4", "p-b", 1, ChannelWeChat)
	h.settle() // queued in their digests
	// After queueing, before sending: F1 deregistered, F2 unsubscribes, F3 no longer qualifies,
	// one of F4's two matches is revoked.
	h.db.Model(&store.Enterprise{}).Where("credit_code = ?", "F1").Update("status", store.StatusDeregistered)
	if err := (Ops{DB: h.db}).Unsubscribe(h.ctx, "F2", ChannelWeChat, "api"); err != nil {
		t.Fatal(err)
	}
	h.db.Model(&store.Match{}).Where("id IN ?", []uint64{m3.ID, m4b.ID}).Update("state", store.MatchRevoked)
	h.advance(time.Minute)

	for m, code := range map[uint64]string{m1.ID: "firm_deregistered", m2.ID: "opted_out", m3.ID: "match_revoked"} {
		d := h.delivery(h.itemOf(m, ChannelWeChat).DeliveryID)
		if d.State != store.DeliverySkipped || d.LastCode != code {
			t.Errorf("match %d: delivery %s/%s, want skipped/%s", m, d.State, d.LastCode, code)
		}
	}
	recs := h.records(sandbox.WeChatFile)
	if len(recs) != 1 || recs[0].To != "o-f4" || strings.Contains(recs[0].Params["keyword1"], "留工") {
		t.Fatalf("records %+v", recs)
	}
	if it := h.itemOf(m4b.ID, ChannelWeChat); it.State != store.ItemSkipped || it.Note != "match_revoked" {
		t.Fatalf("revoked item of the digest: %+v", it)
	}
	if d := h.delivery(h.itemOf(m4a.ID, ChannelWeChat).DeliveryID); d.Items != 1 {
		t.Fatalf("digest still counts the revoked match: %+v", d)
	}
	// Unsubscribed before queueing: never even queued.
	m2b := h.match("F2", "p-b", 1, ChannelWeChat)
	h.advance(time.Minute)
	if it := h.itemOf(m2b.ID, ChannelWeChat); it.State != store.ItemSkipped || it.Note != "opted_out" {
		t.Fatalf("item after unsubscribe: %+v", it)
	}
	h.exactlyOnce()
}

func TestTransientRetriesThenDeadThenResend(t *testing.T) {
	h := newHarness(t, sandbox.Options{WeChat: sandbox.Faults{ErrorRate: 1, Codes: []string{"-1"}}},
		func(o *Options) { o.MaxAttempts = 3 })
	h.firm("F1", "o-user-f1", "13800000001")
	m := h.match("F1", "p-a", 1, ChannelWeChat)
	h.settle()
	id := h.itemOf(m.ID, ChannelWeChat).DeliveryID
	d := h.delivery(id)
	if d.State != store.DeliveryFailed || d.Attempts != 1 || d.LastCode != "-1" || !d.DueAt.Equal(h.clock.Now().Add(time.Minute)) {
		t.Fatalf("after one failure: %+v", d)
	}
	h.advance(time.Minute)
	h.advance(5 * time.Minute)
	d = h.delivery(id)
	if d.State != store.DeliveryDead || d.Attempts != 3 || !strings.Contains(d.LastError, "gave up after 3 attempts") {
		t.Fatalf("after three failures: %+v", d)
	}
	ops := Ops{DB: h.db, SubjectPrefix: h.bus.SubjectPrefix(), Now: h.clock.Now}
	failed, total, err := ops.Failed(h.ctx, FailedQuery{})
	if err != nil || total != 1 || failed[0].ID != id || failed[0].Attempts != 3 || failed[0].Code != "-1" ||
		!failed[0].Resendable || !slices.Equal(failed[0].MatchIDs, []uint64{m.ID}) || failed[0].Recipient != "o-us****" {
		t.Fatalf("failed list %+v (%d, %v)", failed, total, err)
	}

	h.sb.SetFaults(sandbox.ProviderWeChat, sandbox.Faults{})
	res, err := ops.Resend(h.ctx, []uint64{id, 999999}, "operator")
	if err != nil || !res[0].OK || res[1].OK {
		t.Fatalf("resend %+v %v", res, err)
	}
	h.settle()
	if d = h.delivery(id); d.State != store.DeliverySent || d.Attempts != 1 {
		t.Fatalf("after resend: %+v", d)
	}
	// A sent delivery is not resent.
	if res, _ := ops.Resend(h.ctx, []uint64{id}, "operator"); res[0].OK {
		t.Fatal("a sent delivery was accepted for resend")
	}
	tl, err := ops.Timeline(h.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	kinds := make([]string, len(tl.Events))
	for i, e := range tl.Events {
		kinds[i] = e.Kind
	}
	if !slices.Equal(kinds, []string{"queued", "failed", "failed", "dead", "resend", "sent"}) || len(tl.Items) != 1 ||
		tl.Steps[len(tl.Steps)-1].Name != "sent" {
		t.Fatalf("timeline %v %+v", kinds, tl.Steps)
	}
	h.exactlyOnce()
}

func TestQuotaPausesWithoutUsingAttempts(t *testing.T) {
	h := newHarness(t, sandbox.Options{WeChat: sandbox.Faults{ErrorRate: 1, Codes: []string{"45009"}}}, nil)
	h.firm("F1", "o-f1", "13800000001")
	h.firm("F2", "o-f2", "13800000002")
	m1 := h.match("F1", "p-a", 1, ChannelWeChat)
	h.settle()
	d1 := h.delivery(h.itemOf(m1.ID, ChannelWeChat).DeliveryID)
	pauseEnd := h.clock.Now().Add(30 * time.Minute)
	if d1.State != store.DeliveryFailed || d1.Attempts != 0 || d1.DueAt == nil || !d1.DueAt.Equal(pauseEnd) {
		t.Fatalf("after 45009: %+v (events %v)", d1, h.events(d1.ID))
	}
	// While paused, a new notice is not even tried.
	m2 := h.match("F2", "p-a", 1, ChannelWeChat)
	h.settle()
	d2 := h.delivery(h.itemOf(m2.ID, ChannelWeChat).DeliveryID)
	if d2.State != store.DeliveryQueued || d2.Attempts != 0 || !d2.DueAt.Equal(pauseEnd) {
		t.Fatalf("new notice during the pause: %+v", d2)
	}
	h.sb.SetFaults(sandbox.ProviderWeChat, sandbox.Faults{})
	h.advance(30 * time.Minute)
	for _, id := range []uint64{d1.ID, d2.ID} {
		if d := h.delivery(id); d.State != store.DeliverySent || d.Attempts != 1 {
			t.Fatalf("after the pause: %+v", d)
		}
	}
	h.exactlyOnce()
}

func TestFailoverToSecondProviderAfterThreshold(t *testing.T) {
	h := newHarness(t, sandbox.Options{Tencent: sandbox.Faults{ErrorRate: 1, Codes: []string{"InternalError"}}}, nil)
	var ms []store.Match
	for i := range 3 {
		code := "F" + strconv.Itoa(i)
		h.firm(code, "", "1380000000"+strconv.Itoa(i))
		ms = append(ms, h.match(code, "p-a", 1, ChannelSMS))
		h.settle()
	}
	// Two definite failures open Tencent's breaker (threshold 2): the third notice and the retries
	// of the first two go to Aliyun.
	third := h.delivery(h.itemOf(ms[2].ID, ChannelSMS).DeliveryID)
	if third.State != store.DeliverySent || third.Provider != ProviderAliyun {
		t.Fatalf("third notice: %+v", third)
	}
	h.advance(time.Minute)
	for _, m := range ms[:2] {
		if d := h.delivery(h.itemOf(m.ID, ChannelSMS).DeliveryID); d.State != store.DeliverySent || d.Provider != ProviderAliyun || d.Attempts != 2 {
			t.Fatalf("retried notice: %+v", d)
		}
	}
	if recs := h.records(sandbox.SMSFile); len(recs) != 3 || recs[0].Provider != ProviderAliyun {
		t.Fatalf("records %+v", recs)
	}
	h.exactlyOnce()
}

func TestProviderLimitOnANumberWaitsWithoutAnAttempt(t *testing.T) {
	h := newHarness(t, sandbox.Options{Tencent: sandbox.Faults{ErrorRate: 1, Codes: []string{"LimitExceeded.PhoneNumberOneHourLimit"}}}, nil)
	h.firm("F1", "", "13800000001")
	m := h.match("F1", "p-a", 1, ChannelSMS)
	h.settle()
	d := h.delivery(h.itemOf(m.ID, ChannelSMS).DeliveryID)
	if d.State != store.DeliveryFailed || d.Attempts != 0 || !d.DueAt.Equal(h.clock.Now().Add(time.Hour)) {
		t.Fatalf("after a per-number limit: %+v", d)
	}
	h.sb.SetFaults(sandbox.ProviderTencent, sandbox.Faults{})
	h.advance(time.Hour)
	if d = h.delivery(d.ID); d.State != store.DeliverySent || d.Provider != ProviderTencent {
		t.Fatalf("after the limit: %+v", d)
	}
}

func TestThrottlePacesAFirm(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.Throttle = Throttle{MinInterval: 10 * time.Minute, PerDay: 2} })
	h.firm("F1", "o-f1", "13800000001")
	var ids []uint64
	for _, p := range []string{"p-a", "p-b", "p-c"} {
		m := h.match("F1", p, 1, ChannelWeChat)
		h.settle()
		ids = append(ids, h.itemOf(m.ID, ChannelWeChat).DeliveryID)
	}
	sent := func() (n int) {
		for _, id := range ids {
			if h.delivery(id).State == store.DeliverySent {
				n++
			}
		}
		return n
	}
	if got := sent(); got != 1 {
		t.Fatalf("%d sent at once, want 1", got)
	}
	h.advance(10 * time.Minute)
	if got := sent(); got != 2 {
		t.Fatalf("%d sent after the interval, want 2", got)
	}
	h.advance(10 * time.Minute)
	if got := sent(); got != 2 {
		t.Fatalf("%d sent, the daily cap is 2", got)
	}
	h.advance(24 * time.Hour)
	if got := sent(); got != 3 {
		t.Fatalf("%d sent the next day, want 3", got)
	}
	h.exactlyOnce()
}

// A notifier that crashed after the provider accepted and before the delivery was recorded leaves
// it "sending"; the next attempt settles it with the provider instead of sending again.
func TestInDoubtAttemptIsSettledWithTheProvider(t *testing.T) {
	for _, provider := range []string{ProviderTencent, ProviderAliyun} {
		t.Run(provider, func(t *testing.T) {
			// The sandbox files what it accepts under the real time, which its lookup APIs search.
			h := newHarness(t, sandbox.Options{}, func(o *Options) { o.QuietHours = QuietHours{} })
			h.clock.t = time.Now().UTC().Truncate(time.Millisecond) // what MySQL keeps
			h.firm("F1", "", "13800000001")
			h.firm("F2", "", "13800000002")
			m1 := h.match("F1", "p-a", 1, ChannelSMS)
			m2 := h.match("F2", "p-a", 1, ChannelSMS)
			if _, err := h.relay.Once(h.ctx); err != nil {
				t.Fatal(err)
			}
			// Drop the notices (the process died right after taking them) and leave their deliveries
			// as a crash mid-send does.
			route := h.n.routes[ChannelSMS]
			cons, _ := h.bus.Consumer(h.ctx, ChannelSMS, h.opts.Consumer)
			batch, _ := cons.FetchNoWait(10)
			for msg := range batch.Messages() {
				_ = msg.Ack()
			}
			stuck := func(m store.Match) store.Delivery {
				d := store.Delivery{MatchID: m.ID, Channel: ChannelSMS, Recipient: "1380000000" + m.CreditCode[1:], CreditCode: m.CreditCode,
					PolicyID: m.PolicyID, State: store.DeliverySending, Provider: provider, Claim: "dead-process", Items: 1, Attempts: 1}
				at := h.clock.Now()
				lease := at.Add(time.Second)
				d.AttemptedAt, d.LeaseUntil, d.CreatedAt, d.UpdatedAt = &at, &lease, at, at
				h.db.Create(&d)
				h.db.Create(&store.DeliveryItem{MatchID: m.ID, Channel: ChannelSMS, DeliveryID: d.ID, CreditCode: m.CreditCode,
					PolicyID: m.PolicyID, QueuedAt: at})
				return d
			}
			accepted, lost := stuck(m1), stuck(m2)
			// The provider got the first one before the crash.
			if _, err := route.byName(provider).sender.Send(h.ctx, Notice{DeliveryID: strconv.FormatUint(accepted.ID, 10), Phone: accepted.Recipient, PolicyTitle: "稳岗返还"}); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(2 * time.Second) // the lease ran out
			answers, err := h.n.dispatch(h.ctx, route, []uint64{accepted.ID, lost.ID}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if answers[accepted.ID] != 0 || answers[lost.ID] != 0 {
				t.Fatalf("answers %v", answers)
			}
			if d := h.delivery(accepted.ID); d.State != store.DeliverySent || !slices.Contains(h.events(d.ID), store.EventResolved) {
				t.Fatalf("accepted in-doubt delivery: %+v %v", d, h.events(d.ID))
			}
			// Not listed: trusted only after the grace period, then sent once by the same provider.
			d := h.delivery(lost.ID)
			if d.State != store.DeliveryFailed || !d.InDoubt || !d.DueAt.Equal(accepted.AttemptedAt.Add(10*time.Minute)) {
				t.Fatalf("lost in-doubt delivery: %+v", d)
			}
			h.advance(10 * time.Minute)
			if d = h.delivery(lost.ID); d.State != store.DeliverySent || d.Provider != provider || d.InDoubt {
				t.Fatalf("after the grace: %+v", d)
			}
			h.exactlyOnce()
		})
	}
}

func TestQuietHoursUntil(t *testing.T) {
	cst := time.FixedZone("CST", 8*3600)
	q, err := ParseQuietHours("22:00", "08:00", []string{ChannelSMS}, cst)
	if err != nil {
		t.Fatal(err)
	}
	day := func(h, m int) time.Time { return time.Date(2026, 3, 2, h, m, 0, 0, cst) }
	cases := []struct {
		at    time.Time
		ch    string
		quiet bool
		until time.Time
	}{
		{day(21, 59), ChannelSMS, false, time.Time{}},
		{day(22, 0), ChannelSMS, true, day(32, 0)},
		{day(23, 30), ChannelSMS, true, day(32, 0)},
		{day(3, 0), ChannelSMS, true, day(8, 0)},
		{day(8, 0), ChannelSMS, false, time.Time{}},
		{day(23, 0), ChannelWeChat, false, time.Time{}},
	}
	for _, c := range cases {
		until, quiet := q.Until(c.ch, c.at)
		if quiet != c.quiet || !until.Equal(c.until) {
			t.Errorf("%s %s: %v %s, want %v %s", c.ch, c.at, quiet, until, c.quiet, c.until)
		}
	}
	day2, _ := ParseQuietHours("12:00", "13:30", []string{ChannelWeChat}, cst)
	if until, quiet := day2.Until(ChannelWeChat, day(12, 45)); !quiet || !until.Equal(day(13, 30)) {
		t.Errorf("daytime window: %v %s", quiet, until)
	}
	if _, err := ParseQuietHours("25:00", "08:00", nil, cst); err == nil {
		t.Error("25:00 accepted")
	}
	secs, _ := ParseQuietHours("12:00:10", "12:00:40", []string{ChannelSMS}, cst)
	if until, quiet := secs.Until(ChannelSMS, day(12, 0).Add(20*time.Second)); !quiet || !until.Equal(day(12, 0).Add(40*time.Second)) {
		t.Errorf("window in seconds: %v %s", quiet, until)
	}
}

func TestListTitles(t *testing.T) {
	if got := listTitles([]string{"甲", "乙"}); got != "甲、乙" {
		t.Errorf("short list %q", got)
	}
	long := []string{strings.Repeat("长", 30), strings.Repeat("名", 30), "短"}
	if got := listTitles(long); !strings.HasSuffix(got, "等3项") || strings.Contains(got, "名") {
		t.Errorf("long list %q", got)
	}
}

func TestMaskRecipient(t *testing.T) {
	for in, want := range map[[2]string]string{
		{ChannelSMS, "13800138000"}: "138****8000", {ChannelWeChat, "oAbCdEfG"}: "oAbC****", {ChannelSMS, ""}: "",
	} {
		if got := MaskRecipient(in[0], in[1]); got != want {
			t.Errorf("%v: %q, want %q", in, got, want)
		}
	}
}

// Two notifiers can hold the same notice: a batch that outlasts AckWait has its messages handed out
// again. When the other one claims the delivery first, this one's claim changes nothing; were it to
// acknowledge the message, JetStream would drop it for both, and a crash of the other notifier before
// it recorded its attempt would leave the delivery "sending" with nothing to bring it back (a fault
// run on SQLite stranded 65 deliveries so). The loser keeps the message until the other's lease is
// over; then the delivery is settled like any abandoned attempt, and sent once.
func TestLostClaimKeepsTheMessageUntilTheOthersLeaseIsOver(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.DigestWindow = 10 * time.Minute })
	h.firm("F1", "o-f1", "13800000001")
	m := h.match("F1", "p-a", 10, ChannelWeChat)
	h.settle()
	id := h.itemOf(m.ID, ChannelWeChat).DeliveryID
	h.clock.Advance(10 * time.Minute) // due

	route := h.n.routes[ChannelWeChat]
	// The other notifier claims the delivery between this one's read and its claim, and dies.
	const hook = "test:another-notifier-claims-first"
	armed := true
	if err := h.db.Callback().Update().Before("gorm:update").Register(hook, func(db *gorm.DB) {
		set, ok := db.Statement.Dest.(map[string]any)
		if !armed || !ok || db.Statement.Table != "deliveries" || set["state"] != store.DeliverySending {
			return
		}
		armed = false
		now := h.clock.Now()
		lease := now.Add(h.opts.SendTimeout + leaseMargin)
		if err := h.db.Session(&gorm.Session{NewDB: true}).Model(&store.Delivery{}).Where("id = ?", id).Updates(map[string]any{
			"state": store.DeliverySending, "claim": "another-notifier", "provider": route.providers[0].name(), "lease_until": lease,
			"attempted_at": now, "attempts": gorm.Expr("attempts + 1"), "open_key": nil, "due_at": nil, "updated_at": now}).Error; err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.db.Callback().Update().Remove(hook) })

	answers, err := h.n.dispatch(h.ctx, route, []uint64{id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if armed {
		t.Fatal("the dispatch made no claim")
	}
	if got := answers[id]; got != h.n.leaseWait() {
		t.Fatalf("the dispatch that lost the claim answers %s for its message, want a nak until the other's lease is over (%s)", got, h.n.leaseWait())
	}
	if d := h.delivery(id); d.State != store.DeliverySending || d.Claim != "another-notifier" || len(h.records(sandbox.WeChatFile)) != 0 {
		t.Fatalf("after the lost claim: %+v, %d records", d, len(h.records(sandbox.WeChatFile)))
	}

	// The message comes back once the lease is over: the other notifier never recorded, so the
	// attempt is settled in doubt (WeChat drops a repeat of the same client_msg_id) and sent.
	h.clock.Advance(answers[id])
	if answers, err = h.n.dispatch(h.ctx, route, []uint64{id}, nil); err != nil || answers[id] != 0 {
		t.Fatalf("answers %v, %v", answers, err)
	}
	if d := h.delivery(id); d.State != store.DeliverySent {
		t.Fatalf("after the lease: %+v", d)
	}
	if n := h.exactlyOnce(); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// A delivery left open with nothing to bring it back (its message lost) is found by the sweep once
// no outbox row is due, queued again, and sent once; one that something still brings back is not.
func TestSweepBringsBackAStrandedDelivery(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.DigestWindow = 10 * time.Minute })
	h.firm("F1", "o-f1", "13800000001")
	h.firm("F2", "o-f2", "13800000002")
	stranded := h.match("F1", "p-a", 10, ChannelWeChat)
	waiting := h.match("F2", "p-a", 10, ChannelWeChat)
	h.settle()
	route := h.n.routes[ChannelWeChat]
	// Both digests are due in 10 minutes. The first one's job is lost: its row was published and
	// JetStream dropped the message (a claim by a notifier that died, whose message is gone).
	id := h.itemOf(stranded.ID, ChannelWeChat).DeliveryID
	other := h.itemOf(waiting.ID, ChannelWeChat).DeliveryID
	now := h.clock.Now()
	lease := now.Add(h.opts.SendTimeout + leaseMargin)
	if err := h.db.Model(&store.Delivery{}).Where("id = ?", id).Updates(map[string]any{"state": store.DeliverySending,
		"claim": "dead-notifier", "provider": route.providers[0].name(), "lease_until": lease, "attempted_at": now,
		"attempts": 1, "open_key": nil, "due_at": nil}).Error; err != nil {
		t.Fatal(err)
	}
	var rows []store.Outbox
	h.db.Where("published_at IS NULL").Find(&rows)
	published := 0
	for _, row := range rows {
		var job bus.NoticeJob
		if json.Unmarshal(row.Payload, &job) == nil && job.DeliveryID == id {
			h.db.Model(&row).Update("published_at", now)
			published++
		}
	}
	if published != 1 {
		t.Fatalf("%d rows of the stranded delivery's job, want 1", published)
	}
	count := func() (n int64) {
		h.db.Model(&store.Outbox{}).Where("published_at IS NULL").Count(&n)
		return n
	}
	before := count()

	h.clock.Advance(5 * time.Minute) // the lease is long over; the other digest's row is not due yet
	if err := h.n.sweep(h.ctx, route, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != before+1 {
		t.Fatalf("%d outbox rows waiting after the sweep, want %d (the stranded delivery's job)", got, before+1)
	}
	h.settle()
	if d := h.delivery(id); d.State != store.DeliverySent {
		t.Fatalf("stranded delivery after the sweep: %+v", d)
	}
	if d := h.delivery(other); d.State != store.DeliveryQueued {
		t.Fatalf("the other digest: %+v, want it still waiting for its window", d)
	}

	// The other digest is due now and its row is not published yet: the row brings it back, so
	// the sweep leaves it alone.
	h.clock.Advance(10 * time.Minute)
	before = count()
	if err := h.n.sweep(h.ctx, route, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != before {
		t.Fatalf("the sweep queued %d jobs while a row was due", got-before)
	}
	h.settle()
	if n := h.exactlyOnce(); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
}

// Deferrals of one batch are written together (one UPDATE, each delivery's own due time in a
// CASE), and each delivery still waits until its own time: four firms paced from four different
// last sends.
func TestThrottleDefersABatchEachToItsOwnTime(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.Throttle = Throttle{MinInterval: 10 * time.Minute} })
	var grouped atomic.Int32
	if err := h.db.Callback().Update().After("gorm:update").Register("test:grouped_defers", func(db *gorm.DB) {
		if strings.Contains(db.Statement.SQL.String(), "due_at`=CASE") {
			grouped.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	start := h.clock.Now()
	firms := []string{"F1", "F2", "F3", "F4"}
	for i, f := range firms {
		h.firm(f, "o-"+f, fmt.Sprintf("1380000000%d", i+1))
		h.match(f, "p-a", 1, ChannelWeChat)
		h.advance(2 * time.Minute) // F1 sent at +2, F2 at +4, F3 at +6, F4 at +8
	}
	var second []store.Match
	for _, f := range firms {
		second = append(second, h.match(f, "p-b", 1, ChannelWeChat))
	}
	h.settle() // at +8: every second notice is paced
	var ids []uint64
	for _, m := range second {
		ids = append(ids, h.itemOf(m.ID, ChannelWeChat).DeliveryID)
	}
	for i, id := range ids {
		d := h.delivery(id)
		want := start.Add(time.Duration(2*i+12) * time.Minute)
		if d.State != store.DeliveryQueued || d.DueAt == nil || !d.DueAt.Equal(want) {
			t.Fatalf("%s's second notice: %+v, want queued until %v", firms[i], d, want)
		}
		if evs := h.events(id); !slices.Equal(evs, []string{"queued", "deferred"}) {
			t.Fatalf("%s's timeline %v", firms[i], evs)
		}
	}
	if grouped.Load() == 0 {
		t.Fatal("the batch's deferrals were written one by one")
	}
	h.advance(5 * time.Minute) // +13: F1's is due
	if d := h.delivery(ids[0]); d.State != store.DeliverySent {
		t.Fatalf("F1's second notice at its time: %+v", d)
	}
	if d := h.delivery(ids[1]); d.State != store.DeliveryQueued {
		t.Fatalf("F2's second notice before its time: %+v", d)
	}
	h.advance(6 * time.Minute) // +19: all due
	for i, id := range ids {
		if d := h.delivery(id); d.State != store.DeliverySent {
			t.Fatalf("%s's second notice: %+v", firms[i], d)
		}
	}
	h.exactlyOnce()
}
