package notify

import (
	"context"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// Deliveries stuck in sent past the receipt window are settled with the providers that can say
// (the sandbox answers Tencent's and Aliyun's status queries like the real services), marked
// unknown where they cannot (WeChat, or no record), and a late report still moves an unknown one.
func TestReconcileSettlesDeliveriesStuckInSent(t *testing.T) {
	sb := startSandbox(t, t.TempDir(), sandbox.Options{})
	db := testenv.OpenDB(t).DB
	ctx := sendCtx(t)
	tc, al := newTencentFor(t, sb), newAliyunFor(t, sb)
	old := time.Now().UTC().Add(-2 * time.Hour)
	recent := time.Now().UTC().Add(-time.Minute)
	mk := func(match uint64, channel, provider, recipient string, sentAt time.Time) store.Delivery {
		d := store.Delivery{MatchID: match, Channel: channel, Recipient: recipient, CreditCode: "91320500MA1X000001", PolicyID: "p",
			State: store.DeliverySent, Provider: provider, ProviderID: "pid", SentAt: &sentAt, AttemptedAt: &sentAt}
		if err := db.Create(&d).Error; err != nil {
			t.Fatal(err)
		}
		return d
	}
	viaTencent := mk(1, ChannelSMS, ProviderTencent, "13800138001", old)
	viaAliyun := mk(2, ChannelSMS, ProviderAliyun, "13800138002", old)
	neverSent := mk(3, ChannelSMS, ProviderTencent, "13800138003", old)
	wechat := mk(4, ChannelWeChat, ChannelWeChat, "o-user-4", old)
	young := mk(5, ChannelSMS, ProviderTencent, "13800138005", recent)
	for _, s := range []struct {
		sender Sender
		d      store.Delivery
	}{{tc, viaTencent}, {al, viaAliyun}, {tc, young}} {
		n := notice(idText(s.d.ID))
		n.Phone = s.d.Recipient
		if _, err := s.sender.Send(ctx, n); err != nil {
			t.Fatalf("send %d: %v", s.d.ID, err)
		}
	}
	c := ReceiptConfig{DB: db}
	sum, err := Reconcile(context.Background(), c, []Sender{tc, al}, time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	if sum != (ReconcileSummary{Checked: 4, Delivered: 2, Unknown: 2}) {
		t.Fatalf("summary %+v", sum)
	}
	state := func(d store.Delivery) string {
		var got store.Delivery
		db.Take(&got, d.ID)
		return got.State
	}
	for _, tc := range []struct {
		d    store.Delivery
		want string
	}{{viaTencent, store.DeliveryDelivered}, {viaAliyun, store.DeliveryDelivered}, {neverSent, store.DeliveryUnknown},
		{wechat, store.DeliveryUnknown}, {young, store.DeliverySent}} {
		if got := state(tc.d); got != tc.want {
			t.Errorf("delivery %d (%s/%s): %s, want %s", tc.d.ID, tc.d.Channel, tc.d.Provider, got, tc.want)
		}
	}
	var events int64
	db.Model(&store.DeliveryEvent{}).Where("kind = ?", store.EventUnknown).Count(&events)
	if events != 2 {
		t.Errorf("%d unknown events, want 2", events)
	}
	// Shown: the failed-delivery log lists unknown ones.
	list, total, err := Ops{DB: db}.Failed(context.Background(), FailedQuery{})
	if err != nil || total != 2 || list[0].State != store.DeliveryUnknown {
		t.Fatalf("failed-delivery log: %d %+v %v", total, list, err)
	}
	// A late report still counts.
	if _, err := RecordReceipts(context.Background(), c, []Receipt{{Provider: ChannelWeChat, ProviderID: "late", DeliveryID: wechat.ID,
		Recipient: wechat.Recipient, Delivered: true, ReportedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if got := state(wechat); got != store.DeliveryDelivered {
		t.Fatalf("a late report left the unknown delivery %s", got)
	}
	// Nothing is left to reconcile but the young one, which is not due.
	if sum, err := Reconcile(context.Background(), c, []Sender{tc, al}, time.Hour, 100); err != nil || sum.Checked != 0 {
		t.Fatalf("second round: %+v %v", sum, err)
	}
}
