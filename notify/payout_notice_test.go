package notify

import (
	"strconv"
	"testing"
	"time"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// payoutTemplates is the default template configuration of config.yaml.
var payoutTemplates = map[string]Template{
	"matched":    {Fields: map[string]string{"thing1": "summary", "amount2": "amount", "time3": "deadline", "thing4": "action"}},
	"publicized": {ID: "TPL-PAYOUT-PUBLICIZED", Fields: map[string]string{"thing1": "summary", "amount2": "amount", "time3": "date", "thing4": "action"}},
	"paid":       {ID: "TPL-PAYOUT-PAID", Fields: map[string]string{"thing1": "summary", "amount2": "amount", "time3": "date", "phrase4": "status"}},
	"failed":     {ID: "TPL-PAYOUT-FAILED", Fields: map[string]string{"thing1": "summary", "amount2": "amount", "thing3": "reason", "thing4": "action"}},
}

// payoutLine stores a line of a batch and queues its notice of the given kind, as package payout
// does in the transaction of the step.
func (h *harness) payoutLine(batch *store.PayoutBatch, m store.Match, fen int64, state, reason string, paidAt *time.Time, kind string, channels ...string) store.PayoutLine {
	h.t.Helper()
	if batch.ID == 0 {
		if err := h.db.Create(batch).Error; err != nil {
			h.t.Fatal(err)
		}
	}
	l := store.PayoutLine{BatchID: batch.ID, CreditCode: m.CreditCode, PolicyID: m.PolicyID, MatchID: m.ID, AmountFen: fen,
		State: state, Reason: reason, PaidAt: paidAt, UpdatedAt: h.clock.Now()}
	if err := h.db.Create(&l).Error; err != nil {
		h.t.Fatal(err)
	}
	for _, ch := range channels {
		job := newOutboxJob(h.bus.SubjectPrefix(), bus.NoticeJob{MatchID: m.ID, Channel: ch, Kind: kind, Ref: l.ID}, nil, h.clock.Now())
		if err := h.db.Create(&job).Error; err != nil {
			h.t.Fatal(err)
		}
	}
	return l
}

// Payout notices travel the match notices' path — digest, fallback, exactly once — each with its
// own template whose every shown value fits WeChat's 20 characters.
func TestPayoutNoticesUseTheirTemplates(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, func(o *Options) { o.DigestWindow = 10 * time.Minute })
	o := h.opts
	o.Bus, o.Senders = h.bus, h.templatedSenders()
	h.n = New(h.db, o)
	h.firm("F1", "o-f1", "13800000001")
	h.firm("F2", "", "13800000002") // no openid: falls back to SMS
	a := h.match("F1", "p-a", 1000, ChannelWeChat)
	b := h.match("F1", "p-b", 2500.5, ChannelWeChat)
	c := h.match("F2", "p-a", 300)
	h.settle()
	h.advance(10 * time.Minute) // the match digest of F1 goes out
	before := len(h.records(sandbox.WeChatFile))

	paidAt := time.Date(2026, 3, 1, 16, 30, 0, 0, time.UTC) // 2026-03-02 00:30 in Beijing
	b1 := &store.PayoutBatch{PolicyID: "p-a", Round: 1, PolicyTitle: "稳岗返还", AsOf: paidAt, State: store.BatchClosed, CreatedBy: "x", CreatedAt: paidAt}
	b2 := &store.PayoutBatch{PolicyID: "p-b", Round: 1, PolicyTitle: "留工培训补助", AsOf: paidAt, State: store.BatchClosed, CreatedBy: "x", CreatedAt: paidAt}
	la := h.payoutLine(b1, a, 100000, store.LinePaid, "", &paidAt, bus.NoticePaid, ChannelWeChat)
	h.payoutLine(b2, b, 250050, store.LinePaid, "", &paidAt, bus.NoticePaid, ChannelWeChat)
	lc := h.payoutLine(b1, c, 30000, store.LineFailed, "收款账户已销户，请更新开户行信息", nil, bus.NoticeFailed, ChannelWeChat)
	h.settle()
	h.advance(10 * time.Minute)

	recs := h.records(sandbox.WeChatFile)[before:]
	if len(recs) != 1 {
		t.Fatalf("%d WeChat payout messages, want one digest for F1: %+v", len(recs), recs)
	}
	r := recs[0]
	want := map[string]string{"thing1": "2项政策合计3,500.50元", "amount2": "合计3,500.50元", "time3": "2026-03-02", "phrase4": "已拨付到账"}
	if r.Template != "TPL-PAYOUT-PAID" || len(r.Truncated) != 0 || len(r.Params) != len(want) {
		t.Errorf("paid digest %+v", r)
	}
	for k, v := range want {
		if r.Shown[k] != v {
			t.Errorf("paid digest shows %s = %q, want %q", k, r.Shown[k], v)
		}
	}
	if it := h.itemOf(a.ID, ChannelWeChat); it.Kind != "" {
		t.Errorf("the match item of a is %+v, want the match notice", it)
	}
	sms := h.records(sandbox.SMSFile)
	if len(sms) != 1 || sms[0].Template != "100004" || sms[0].Params["1"] != "稳岗返还" || sms[0].Params["2"] != "收款账户已销户，请更新…" || sms[0].Params["3"] != "请核对账户后联系经办部门" {
		t.Errorf("failed notice by SMS: %+v", sms)
	}

	// The same notices again (a relay republishing past the duplicate window): nothing new.
	for _, l := range []store.PayoutLine{la, lc} {
		kind := bus.NoticePaid
		if l.ID == lc.ID {
			kind = bus.NoticeFailed
		}
		job := newOutboxJob(h.bus.SubjectPrefix(), bus.NoticeJob{MatchID: l.MatchID, Channel: ChannelWeChat, Kind: kind, Ref: l.ID}, nil, h.clock.Now())
		if err := h.db.Create(&job).Error; err != nil {
			t.Fatal(err)
		}
	}
	h.advance(20 * time.Minute)
	if n := len(h.records(sandbox.WeChatFile)[before:]) + len(h.records(sandbox.SMSFile)); n != 2 {
		t.Errorf("%d payout messages after the repeat, want still 2", n)
	}
	h.exactlyOnce()
	var d store.Delivery
	if err := h.db.Where("kind = ? AND ref = ?", bus.NoticeFailed, lc.ID).Where("channel = ?", ChannelSMS).Take(&d).Error; err != nil {
		t.Fatalf("failed notice delivery: %v", err)
	}
	if d.ProviderID == "" || strconv.FormatUint(d.ID, 10) != sms[0].DeliveryID {
		t.Errorf("failed delivery %+v vs record %+v", d, sms[0])
	}
}

func (h *harness) templatedSenders() map[string][]Sender {
	t := h.t
	w, err := NewWeChat(WeChatConfig{AppID: "wx-test", AppSecret: "secret", TemplateID: "TPL-1", BaseURL: h.sb.URL(), Templates: payoutTemplates})
	if err != nil {
		t.Fatal(err)
	}
	sms := map[string]SMSTemplate{"failed": {Tencent: "100004", Aliyun: "SMS_100004", Params: []string{"summary", "reason", "action", "url"}}}
	tc, err := NewTencentSMS(TencentSMSConfig{SecretID: "id", SecretKey: "key", SdkAppID: "1400000000", SignName: "政策直达",
		TemplateID: "100001", Endpoint: h.sb.HostPort(), Templates: sms})
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]Sender{ChannelWeChat: {w}, ChannelSMS: {tc}}
}

func TestTemplateConfigErrors(t *testing.T) {
	for _, c := range []map[string]Template{
		{"paid!": {Fields: map[string]string{"thing1": "summary"}}},
		{"paid": {Fields: map[string]string{"thing1": "nonsense"}}},
		{"paid": {Fields: map[string]string{"": "summary"}}},
	} {
		if err := CheckTemplates("wechat.templates", c); err == nil {
			t.Errorf("%v accepted", c)
		}
	}
	if err := CheckTemplates("wechat.templates", payoutTemplates); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}
