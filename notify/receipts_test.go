package notify

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// aesKey is a valid 43-character EncodingAESKey.
var aesKey = strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")), "=")

// receiptServer mounts the handlers as the console does and points the sandbox at it.
func receiptServer(h *harness, aes string, failRate float64) (ReceiptConfig, *httptest.Server) {
	rc := ReceiptConfig{DB: h.db, SubjectPrefix: h.bus.SubjectPrefix(), Token: "cb-token", EncodingAESKey: aes, AppID: "wx-test",
		SMSToken: "sms-token", FallbackToSMS: true}
	mux := http.NewServeMux()
	mux.Handle(WeChatCallbackPath, WeChatCallbackHandler(rc))
	mux.Handle(TencentReceiptPath, SMSReceiptHandler(rc, ProviderTencent))
	mux.Handle(AliyunReceiptPath, SMSReceiptHandler(rc, ProviderAliyun))
	srv := httptest.NewServer(mux)
	h.t.Cleanup(srv.Close)
	h.sb.SetReceipts(sandbox.ReceiptOptions{WeChatURL: srv.URL + WeChatCallbackPath,
		TencentURL: srv.URL + TencentReceiptPath + "?token=sms-token", AliyunURL: srv.URL + AliyunReceiptPath + "?token=sms-token",
		WeChatToken: "cb-token", WeChatAESKey: aes, WeChatAppID: "wx-test", Delay: time.Millisecond, FailRate: failRate,
		DuplicateRate: 1})
	return rc, srv
}

// waitState polls a delivery until it reaches state: the sandbox reports asynchronously.
func waitState(h *harness, id uint64, state string) store.Delivery {
	h.t.Helper()
	var d store.Delivery
	for range 500 {
		if d = h.delivery(id); d.State == state {
			return d
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("delivery %d stayed %s (want %s)", id, d.State, state)
	return d
}

func TestReceiptsMarkDeliveredOnceEach(t *testing.T) {
	for _, aes := range []string{"", aesKey} {
		name := "plain"
		if aes != "" {
			name = "safe mode"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, sandbox.Options{}, nil)
			receiptServer(h, aes, 0)
			h.firm("F1", "o-user-1", "13800000001")
			h.firm("F2", "", "13800000002")
			m1 := h.match("F1", "p-a", 1, ChannelWeChat, ChannelSMS)
			h.settle()
			wx := waitState(h, h.itemOf(m1.ID, ChannelWeChat).DeliveryID, store.DeliveryDelivered)
			sms := waitState(h, h.itemOf(m1.ID, ChannelSMS).DeliveryID, store.DeliveryDelivered)
			// Aliyun as well, by failing Tencent over.
			h.n.routes[ChannelSMS].providers[0].observe(h.clock.Now(), Quota, false, h.opts.Failover, time.Hour)
			m2 := h.match("F2", "p-a", 1, ChannelSMS)
			h.settle()
			ali := waitState(h, h.itemOf(m2.ID, ChannelSMS).DeliveryID, store.DeliveryDelivered)
			if ali.Provider != ProviderAliyun || wx.DeliveredAt == nil || sms.DeliveredAt == nil {
				t.Fatalf("deliveries %+v / %+v / %+v", wx, sms, ali)
			}
			// Every report came twice (DuplicateRate 1): one row per message and recipient.
			var n int64
			h.db.Model(&store.DeliveryReceipt{}).Count(&n)
			if n != 3 {
				t.Fatalf("%d receipt rows, want 3", n)
			}
			if evs := h.events(wx.ID); strings.Count(strings.Join(evs, ","), "delivered") != 1 {
				t.Fatalf("timeline %v", evs)
			}
		})
	}
}

func TestWeChatBlockedReportFallsBackToSMS(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	receiptServer(h, "", 1) // every report says "failed:user block"
	h.firm("F1", "o-user-1", "13800000001")
	m := h.match("F1", "p-a", 1, ChannelWeChat)
	h.settle()
	wx := waitState(h, h.itemOf(m.ID, ChannelWeChat).DeliveryID, store.DeliveryUndelivered)
	if wx.LastCode != "failed:user block" || h.itemOf(m.ID, ChannelWeChat).State != store.ItemFallback {
		t.Fatalf("blocked wechat delivery %+v", wx)
	}
	h.settle()
	if d := waitState(h, h.itemOf(m.ID, ChannelSMS).DeliveryID, store.DeliveryUndelivered); d.Provider != ProviderTencent {
		t.Fatalf("sms fallback %+v", d)
	}
}

func TestWeChatCallbackRejectsForgeriesAndReplays(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	_, srv := receiptServer(h, aesKey, 0)
	post := func(q url.Values, body string) int {
		resp, err := http.Post(srv.URL+WeChatCallbackPath+"?"+q.Encode(), "text/xml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	signed := func(ts time.Time, token string) url.Values {
		s := strconv.FormatInt(ts.Unix(), 10)
		return url.Values{"timestamp": {s}, "nonce": {"n1"}, "signature": {util.Signature(token, s, "n1")}}
	}
	event := `<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgType>event</MsgType><MsgID>1</MsgID><Status>success</Status></xml>`
	if got := post(signed(time.Now(), "wrong-token"), event); got != http.StatusForbidden {
		t.Errorf("forged signature: %d", got)
	}
	if got := post(signed(time.Now().Add(-time.Hour), "cb-token"), event); got != http.StatusForbidden {
		t.Errorf("replayed timestamp: %d", got)
	}
	q := signed(time.Now(), "cb-token")
	q.Set("encrypt_type", "aes")
	q.Set("msg_signature", "bad")
	enc, _ := xml.Marshal(struct {
		XMLName xml.Name `xml:"xml"`
		Encrypt string   `xml:"Encrypt"`
	}{Encrypt: "Zm9v"})
	if got := post(q, string(enc)); got != http.StatusForbidden {
		t.Errorf("bad msg_signature: %d", got)
	}
	// URL verification echoes echostr.
	v := signed(time.Now(), "cb-token")
	v.Set("echostr", "hello")
	resp, err := http.Get(srv.URL + WeChatCallbackPath + "?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _ := resp.Body.Read(buf)
	resp.Body.Close()
	if string(buf[:n]) != "hello" {
		t.Errorf("echostr answered %q", buf[:n])
	}
}

func TestSMSReceiptsNeedTheToken(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	_, srv := receiptServer(h, "", 0)
	for _, path := range []string{TencentReceiptPath, AliyunReceiptPath} {
		for token, want := range map[string]int{"": http.StatusForbidden, "nope": http.StatusForbidden, "sms-token": http.StatusOK} {
			resp, err := http.Post(srv.URL+path+"?token="+token, "application/json", strings.NewReader(`[]`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s token %q: %d, want %d", path, token, resp.StatusCode, want)
			}
		}
	}
}

func TestReceiptBeforeItsSendIsLinkedLater(t *testing.T) {
	h := newHarness(t, sandbox.Options{}, nil)
	rc, _ := receiptServer(h, "", 0)
	h.sb.SetReceipts(sandbox.ReceiptOptions{}) // reports below are made by hand
	h.firm("F1", "", "13800000001")
	m := h.match("F1", "p-a", 1, ChannelSMS)
	early := Receipt{Provider: ProviderTencent, ProviderID: "3369:42", Recipient: "13800000001", Delivered: true, Code: "DELIVRD",
		ReportedAt: time.Now()}
	sum, err := RecordReceipts(h.ctx, rc, []Receipt{early})
	if err != nil || sum.Unmatched != 1 {
		t.Fatalf("early report: %+v %v", sum, err)
	}
	h.settle()
	id := h.itemOf(m.ID, ChannelSMS).DeliveryID
	h.db.Model(&store.Delivery{}).Where("id = ?", id).Update("provider_id", "3369:42")
	if sum, err = RecordReceipts(h.ctx, rc, []Receipt{early}); err != nil || sum.Duplicates != 1 {
		t.Fatalf("repeat: %+v %v", sum, err)
	}
	if d := h.delivery(id); d.State != store.DeliveryDelivered {
		t.Fatalf("early report not linked: %+v", d)
	}
}

// A receipt that cannot be stored is an error, unless its request ended first (the provider hung
// up, or the process is stopping): the handler answers 503 either way and the provider sends it
// again, so only the first is worth an operator's attention.
func TestReceiptNotRecordedLevel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel bool
		want   string
	}{{"request alive", false, "level=ERROR"}, {"request ended", true, "level=INFO"}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			log := slog.New(slog.NewTextHandler(&buf, nil))
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			}
			defer cancel()
			receiptNotRecorded(ctx, log, errors.New("load waiting receipts: context canceled"), "record wechat receipt", "msgid", "1")
			if out := buf.String(); !strings.Contains(out, tc.want) || !strings.Contains(out, "msgid=1") {
				t.Fatalf("logged %q, want %s with the receipt's id", out, tc.want)
			}
		})
	}
}
