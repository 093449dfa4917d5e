package notify

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/policypush/policypush/notify/sandbox"
)

// These tests drive the real SDK clients against a local sandbox. The WeChat ones install the
// process-wide URI modifier, so none of them runs in parallel.

func startSandbox(t *testing.T, dir string, o sandbox.Options) *sandbox.Server {
	t.Helper()
	o.Dir = dir
	sb, err := sandbox.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	return sb
}

func newWeChatFor(t *testing.T, sb *sandbox.Server) *WeChat {
	t.Helper()
	w, err := NewWeChat(WeChatConfig{AppID: "wx-test", AppSecret: "secret", TemplateID: "TPL-1", BaseURL: sb.URL()})
	if err != nil {
		t.Fatalf("NewWeChat: %v", err)
	}
	t.Cleanup(func() { util.SetURIModifier(nil) })
	return w
}

func newTencentFor(t *testing.T, sb *sandbox.Server) *TencentSMS {
	t.Helper()
	s, err := NewTencentSMS(TencentSMSConfig{SecretID: "id", SecretKey: "key", SdkAppID: "1400000000",
		SignName: "政策直达", TemplateID: "100001", Endpoint: sb.HostPort()})
	if err != nil {
		t.Fatalf("NewTencentSMS: %v", err)
	}
	return s
}

func newAliyunFor(t *testing.T, sb *sandbox.Server) *AliyunSMS {
	t.Helper()
	s, err := NewAliyunSMS(AliyunSMSConfig{AccessKeyID: "id", AccessKeySecret: "secret",
		SignName: "政策直达", TemplateCode: "SMS_100001", Endpoint: sb.HostPort()})
	if err != nil {
		t.Fatalf("NewAliyunSMS: %v", err)
	}
	return s
}

func notice(id string) Notice {
	return Notice{
		DeliveryID:  id,
		OpenID:      "o-user-" + id,
		Phone:       "13800138000",
		FirmName:    "示例科技有限公司",
		PolicyTitle: "高新技术企业认定奖励",
		Amount:      "200,000.00元",
		Deadline:    "2026-12-31",
		URL:         "https://policy.example.com/e/1",
	}
}

func sendCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantSendError(t *testing.T, err error, class ErrorClass, code string) *SendError {
	t.Helper()
	var se *SendError
	if !errors.As(err, &se) {
		t.Fatalf("want *SendError %s/%s, got %v", class, code, err)
	}
	if se.Class != class || (code != "" && se.Code != code) {
		t.Fatalf("want %s/%s, got %s/%s (%s)", class, code, se.Class, se.Code, se.Message)
	}
	return se
}

func readRecords(t *testing.T, path string) []sandbox.Record {
	t.Helper()
	recs, err := sandbox.ReadRecords(path)
	if err != nil {
		t.Fatalf("read records: %v", err)
	}
	return recs
}

func TestWeChatSendRecordsOnceAndDedupes(t *testing.T) {
	dir := t.TempDir()
	sb := startSandbox(t, dir, sandbox.Options{})
	w := newWeChatFor(t, sb)
	if w.Name() != "wechat" {
		t.Fatalf("name %q", w.Name())
	}
	n := notice("d-1")
	n.Amount, n.Deadline = "", ""
	first, err := w.Send(sendCtx(t), n)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	again, err := w.Send(sendCtx(t), n)
	if err != nil {
		t.Fatalf("repeat send: %v", err)
	}
	if first.Provider != "wechat" || first.ProviderID == "" || again != first {
		t.Fatalf("results %+v then %+v; want the same msgid twice", first, again)
	}
	recs := readRecords(t, filepath.Join(dir, sandbox.WeChatFile))
	if len(recs) != 1 {
		t.Fatalf("want 1 record, got %d", len(recs))
	}
	r := recs[0]
	if r.DeliveryID != "d-1" || r.To != n.OpenID || r.Template != "TPL-1" || r.ProviderID != first.ProviderID {
		t.Fatalf("record %+v", r)
	}
	want := map[string]string{"keyword1": n.PolicyTitle, "keyword2": defaultAmount, "keyword3": defaultDeadline}
	for k, v := range want {
		if r.Params[k] != v {
			t.Errorf("param %s = %q, want %q", k, r.Params[k], v)
		}
	}
	if !strings.HasPrefix(r.Params["first"], n.FirmName) || r.Params["remark"] == "" {
		t.Errorf("first/remark = %q / %q", r.Params["first"], r.Params["remark"])
	}
	if got := sb.Counts()["wechat"]; got != 1 {
		t.Fatalf("count %d", got)
	}
}

func TestWeChatRefreshesExpiredToken(t *testing.T) {
	dir := t.TempDir()
	sb := startSandbox(t, dir, sandbox.Options{ExpireTokenEvery: 2})
	w := newWeChatFor(t, sb)
	for i := range 6 {
		if _, err := w.Send(sendCtx(t), notice("tok-"+string(rune('a'+i)))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if got := len(readRecords(t, filepath.Join(dir, sandbox.WeChatFile))); got != 6 {
		t.Fatalf("want 6 records, got %d", got)
	}
}

func TestWeChatInjectedTokenErrorRetriesOnce(t *testing.T) {
	sb := startSandbox(t, t.TempDir(), sandbox.Options{})
	w := newWeChatFor(t, sb)
	sb.SetFaults("wechat", sandbox.Faults{ErrorRate: 1, Codes: []string{"40001"}})
	_, err := w.Send(sendCtx(t), notice("stale"))
	wantSendError(t, err, Transient, "40001")

	// The token the failed sends used is gone; the next send must fetch a new one and succeed.
	sb.SetFaults("wechat", sandbox.Faults{})
	if _, err := w.Send(sendCtx(t), notice("fresh")); err != nil {
		t.Fatalf("send after refresh: %v", err)
	}
}

func TestWeChatTokenFetchFailure(t *testing.T) {
	sb := startSandbox(t, t.TempDir(), sandbox.Options{})
	addr := sb.URL()
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	w, err := NewWeChat(WeChatConfig{AppID: "wx", AppSecret: "topsecret", TemplateID: "T", BaseURL: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { util.SetURIModifier(nil) })
	_, err = w.Send(sendCtx(t), notice("down"))
	se := wantSendError(t, err, Transient, "http")
	if strings.Contains(se.Message, "topsecret") {
		t.Fatalf("message leaks the app secret: %s", se.Message)
	}
}

// smsCase is one SMS provider under test: how to open its sender and what it must record.
type smsCase struct {
	name     string
	open     func(*testing.T, *sandbox.Server) Sender
	notice   func() Notice
	to       func(Notice) string
	template string
	params   func(Notice) map[string]string
}

func smsCases() []smsCase {
	return []smsCase{
		{
			name:     "tencent",
			open:     func(t *testing.T, sb *sandbox.Server) Sender { return newTencentFor(t, sb) },
			notice:   func() Notice { return notice("t-1") },
			to:       func(Notice) string { return "+8613800138000" },
			template: "100001",
			params: func(n Notice) map[string]string {
				return map[string]string{"1": n.PolicyTitle, "2": n.Amount, "3": n.Deadline, "4": n.URL}
			},
		},
		{
			name: "aliyun",
			open: func(t *testing.T, sb *sandbox.Server) Sender { return newAliyunFor(t, sb) },
			notice: func() Notice {
				n := notice("a-1")
				n.Deadline = ""
				return n
			},
			to:       func(n Notice) string { return n.Phone },
			template: "SMS_100001",
			params: func(n Notice) map[string]string {
				return map[string]string{"policy": n.PolicyTitle, "amount": n.Amount, "deadline": defaultDeadline, "url": n.URL}
			},
		},
	}
}

func TestSMSSendAndDedupe(t *testing.T) {
	for _, c := range smsCases() {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sb := startSandbox(t, dir, sandbox.Options{})
			s := c.open(t, sb)
			if s.Name() != c.name {
				t.Fatalf("name %q", s.Name())
			}
			n := c.notice()
			first, err := s.Send(sendCtx(t), n)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			again, err := s.Send(sendCtx(t), n)
			if err != nil {
				t.Fatalf("repeat: %v", err)
			}
			if first.Provider != c.name || first.ProviderID == "" || again != first {
				t.Fatalf("results %+v then %+v", first, again)
			}
			recs := readRecords(t, filepath.Join(dir, sandbox.SMSFile))
			if len(recs) != 1 {
				t.Fatalf("want 1 record, got %d", len(recs))
			}
			r := recs[0]
			if r.Provider != c.name || r.DeliveryID != n.DeliveryID || r.To != c.to(n) || r.Template != c.template || r.ProviderID != first.ProviderID {
				t.Fatalf("record %+v", r)
			}
			for k, v := range c.params(n) {
				if r.Params[k] != v {
					t.Errorf("param %s = %q, want %q", k, r.Params[k], v)
				}
			}
		})
	}
}

// TestInjectedErrors makes each provider's sandbox answer with one error code at a time and checks the
// class the sender gives it; then it sends to recipients the provider refuses.
func TestInjectedErrors(t *testing.T) {
	type injected struct {
		code  string
		class ErrorClass
		want  string
	}
	type refused struct {
		set   func(*Notice)
		class ErrorClass
		want  string
	}
	phone := func(p string) func(*Notice) { return func(n *Notice) { n.Phone = p } }
	openID := func(o string) func(*Notice) { return func(n *Notice) { n.OpenID = o } }
	cases := []struct {
		name     string
		open     func(*testing.T, *sandbox.Server) Sender
		injected []injected
		leak     string // a secret no error message may contain
		refused  []refused
	}{
		{
			name: "wechat",
			open: func(t *testing.T, sb *sandbox.Server) Sender { return newWeChatFor(t, sb) },
			injected: []injected{
				{"45009", Quota, "45009"},
				{"-1", Transient, "-1"},
				{"5xx", Transient, "http"},
				{"40037", Permanent, "40037"},
				{"47003", Permanent, "47003"},
				{"43101", Fallback, "43101"},
				{"99999", Permanent, "99999"},
			},
			leak: "SANDBOX_", // the access token
			refused: []refused{
				{openID(""), Fallback, "no_openid"},
				{openID("o-unfollow-42"), Fallback, "43004"},
				{openID("not-an-openid"), Fallback, "40003"},
			},
		},
		{
			name: "tencent",
			open: func(t *testing.T, sb *sandbox.Server) Sender { return newTencentFor(t, sb) },
			injected: []injected{
				{"LimitExceeded.PhoneNumberDailyLimit", Throttled, "LimitExceeded.PhoneNumberDailyLimit"},
				{"LimitExceeded.DeliveryFrequencyLimit", Throttled, "LimitExceeded.DeliveryFrequencyLimit"},
				{"LimitExceeded.AppDailyLimit", Quota, "LimitExceeded.AppDailyLimit"},
				{"InternalError", Transient, "InternalError"},
				{"InternalError.Timeout", Transient, "InternalError.Timeout"},
				{"RequestLimitExceeded", Transient, "RequestLimitExceeded"},
				// The SDK parses the body before looking at the status, so a non-JSON 503 surfaces as a parse error.
				{"5xx", Transient, "ClientError.ParseJsonError"},
				{"FailedOperation.PhoneNumberInBlacklist", Permanent, "FailedOperation.PhoneNumberInBlacklist"},
				{"UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber", Permanent, ""},
				{"FailedOperation.SignatureIncorrectOrUnapproved", Permanent, ""},
			},
			refused: []refused{
				{phone("+86abc"), Permanent, "InvalidParameterValue.IncorrectPhoneNumber"},
				{phone(" "), Permanent, "no_phone"},
			},
		},
		{
			name: "aliyun",
			open: func(t *testing.T, sb *sandbox.Server) Sender { return newAliyunFor(t, sb) },
			injected: []injected{
				{"isv.BUSINESS_LIMIT_CONTROL", Throttled, "isv.BUSINESS_LIMIT_CONTROL"},
				{"isv.DAY_LIMIT_CONTROL", Throttled, "isv.DAY_LIMIT_CONTROL"},
				{"isv.AMOUNT_NOT_ENOUGH", Quota, "isv.AMOUNT_NOT_ENOUGH"},
				{"isp.SYSTEM_ERROR", Transient, "isp.SYSTEM_ERROR"},
				{"Throttling.User", Transient, "Throttling.User"},
				{"5xx", Transient, "http_503"},
				{"isv.MOBILE_NUMBER_ILLEGAL", Permanent, "isv.MOBILE_NUMBER_ILLEGAL"},
				{"isv.BLACK_KEY_CONTROL_LIMIT", Permanent, "isv.BLACK_KEY_CONTROL_LIMIT"},
				{"isv.SOMETHING_NEW", Permanent, "isv.SOMETHING_NEW"},
				{"SomethingElse", Transient, "SomethingElse"},
			},
			refused: []refused{
				{phone("12345"), Permanent, "isv.MOBILE_NUMBER_ILLEGAL"},
				{phone(""), Permanent, "no_phone"},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sb := startSandbox(t, t.TempDir(), sandbox.Options{})
			s := c.open(t, sb)
			for _, in := range c.injected {
				sb.SetFaults(c.name, sandbox.Faults{ErrorRate: 1, Codes: []string{in.code}})
				_, err := s.Send(sendCtx(t), notice("inj-"+in.code))
				se := wantSendError(t, err, in.class, in.want)
				if c.leak != "" && strings.Contains(se.Message, c.leak) {
					t.Errorf("%s: message leaks a secret: %s", in.code, se.Message)
				}
			}
			sb.SetFaults(c.name, sandbox.Faults{})
			for _, r := range c.refused {
				n := notice("refused")
				r.set(&n)
				_, err := s.Send(sendCtx(t), n)
				wantSendError(t, err, r.class, r.want)
			}
			if got := sb.Counts()[c.name]; got != 0 {
				t.Fatalf("failed sends were recorded: %d", got)
			}
		})
	}
}

// TestSendersHonourContext makes each provider's sandbox hang and checks that the send gives up when
// its context does, as a transient error that leaks nothing of the request.
func TestSendersHonourContext(t *testing.T) {
	hang := sandbox.Faults{TimeoutRate: 1}
	cases := []struct {
		name  string
		opts  sandbox.Options
		open  func(*testing.T, *sandbox.Server) Sender
		code  string
		leaks []string
	}{
		{"wechat", sandbox.Options{WeChat: hang}, func(t *testing.T, sb *sandbox.Server) Sender { return newWeChatFor(t, sb) }, "http", nil},
		{"tencent", sandbox.Options{Tencent: hang}, func(t *testing.T, sb *sandbox.Server) Sender { return newTencentFor(t, sb) }, "ClientError.NetworkError", nil},
		{"aliyun", sandbox.Options{Aliyun: hang}, func(t *testing.T, sb *sandbox.Server) Sender { return newAliyunFor(t, sb) }, "", []string{"13800138000", "AccessKeyId=id"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sb := startSandbox(t, t.TempDir(), c.opts)
			s := c.open(t, sb)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := s.Send(ctx, notice("slow"))
			se := wantSendError(t, err, Transient, c.code)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("send ignored its context: took %s", d)
			}
			for _, leak := range c.leaks {
				if strings.Contains(se.Message, leak) {
					t.Fatalf("message leaks request details: %s", se.Message)
				}
			}
		})
	}
}

func TestRecordsSurviveSandboxRestart(t *testing.T) {
	dir := t.TempDir()
	sb, err := sandbox.Start(context.Background(), sandbox.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	type sent struct {
		s   Sender
		res Result
	}
	senders := func(sb *sandbox.Server) []Sender {
		return []Sender{newWeChatFor(t, sb), newTencentFor(t, sb), newAliyunFor(t, sb)}
	}
	var before []sent
	for _, s := range senders(sb) {
		res, err := s.Send(sendCtx(t), notice("r-1"))
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
		before = append(before, sent{s, res})
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}

	sb2 := startSandbox(t, dir, sandbox.Options{})
	if got := sb2.Counts(); got["wechat"] != 1 || got["tencent"] != 1 || got["aliyun"] != 1 {
		t.Fatalf("counts after restart %v", got)
	}
	for i, s := range senders(sb2) {
		res, err := s.Send(sendCtx(t), notice("r-1"))
		if err != nil {
			t.Fatalf("%s after restart: %v", s.Name(), err)
		}
		if res != before[i].res {
			t.Fatalf("%s: repeat after restart got %+v, want %+v", s.Name(), res, before[i].res)
		}
	}
	if n := len(readRecords(t, filepath.Join(dir, sandbox.WeChatFile))); n != 1 {
		t.Fatalf("wechat records %d", n)
	}
	if n := len(readRecords(t, filepath.Join(dir, sandbox.SMSFile))); n != 2 {
		t.Fatalf("sms records %d", n)
	}
	if got := sb2.Counts(); got["wechat"] != 1 || got["tencent"] != 1 || got["aliyun"] != 1 {
		t.Fatalf("counts after repeats %v", got)
	}
}

func TestClassifiers(t *testing.T) {
	wx := map[int64]ErrorClass{-1: Transient, 45009: Quota, 43004: Fallback, 43101: Fallback, 40003: Fallback,
		40037: Permanent, 47003: Permanent, 12345: Permanent}
	for code, want := range wx {
		if got := classifyWeChat(code); got != want {
			t.Errorf("wechat %d: %s, want %s", code, got, want)
		}
	}
	tc := map[string]ErrorClass{
		"LimitExceeded.PhoneNumberThirtySecondLimit":      Throttled,
		"LimitExceeded.AppGlobalDailyLimit":               Quota,
		"FailedOperation.InsufficientBalanceInSmsPackage": Quota,
		"LimitExceeded.PhoneNumberCountLimit":             Permanent,
		"InternalError.SendAndRecvFail":                   Transient,
		"RequestLimitExceeded.UinLimitExceeded":           Transient,
		"InvalidParameterValue.IncorrectPhoneNumber":      Permanent,
		"UnsupportedOperation.UnsupportedRegion":          Permanent,
		"AuthFailure.SecretIdNotFound":                    Permanent,
		"InternalErrorish":                                Permanent,
	}
	for code, want := range tc {
		if got := classifyTencent(code); got != want {
			t.Errorf("tencent %s: %s, want %s", code, got, want)
		}
	}
	ali := map[string]ErrorClass{
		"isv.BUSINESS_LIMIT_CONTROL": Throttled, "isv.AMOUNT_NOT_ENOUGH": Quota, "isp.SYSTEM_ERROR": Transient,
		"Throttling.Api": Transient, "isv.TEMPLATE_MISSING_PARAMETERS": Permanent,
		"SignatureDoesNotMatch": Permanent, "ServiceUnavailable": Transient,
	}
	for code, want := range ali {
		if got := classifyAliyun(code); got != want {
			t.Errorf("aliyun %s: %s, want %s", code, got, want)
		}
	}
}

func TestE164CN(t *testing.T) {
	cases := map[string]string{
		"13800138000":       "+8613800138000",
		"138 0013 8000":     "+8613800138000",
		"8613800138000":     "+8613800138000",
		"008613800138000":   "+8613800138000",
		"+8613800138000":    "+8613800138000",
		"+85291234567":      "+85291234567",
		"":                  "",
		"  ":                "",
		"+86-138-0013-8000": "+8613800138000",
	}
	for in, want := range cases {
		if got := e164CN(in); got != want {
			t.Errorf("e164CN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitEndpoint(t *testing.T) {
	cases := []struct {
		in    string
		host  string
		plain bool
		bad   bool
	}{
		{in: "127.0.0.1:8080", host: "127.0.0.1:8080", plain: true},
		{in: "localhost:9", host: "localhost:9", plain: true},
		{in: "[::1]:9", host: "[::1]:9", plain: true},
		{in: "sms.tencentcloudapi.com", host: "sms.tencentcloudapi.com"},
		{in: "http://10.0.0.5:80", host: "10.0.0.5:80", plain: true},
		{in: "https://127.0.0.1:443/", host: "127.0.0.1:443"},
		{in: "http://", bad: true},
		{in: "host/path", bad: true},
	}
	for _, c := range cases {
		host, plain, err := splitEndpoint(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: want error", c.in)
			}
			continue
		}
		if err != nil || host != c.host || plain != c.plain {
			t.Errorf("%q: got %q %v %v", c.in, host, plain, err)
		}
	}
}

func TestRedact(t *testing.T) {
	in := `Post "http://x/?AccessKeyId=LTAIabc&PhoneNumbers=13800138000&Signature=zz%3D": refused; touser +8613912345678; uri=/cgi-bin/token?appid=a&secret=s3cr3t&access_token=TOK`
	out := redact(in)
	for _, leak := range []string{"LTAIabc", "13800138000", "zz%3D", "13912345678", "s3cr3t", "TOK"} {
		if strings.Contains(out, leak) {
			t.Errorf("redacted text still contains %q: %s", leak, out)
		}
	}
	if !strings.Contains(out, "5678") {
		t.Errorf("phone tail lost: %s", out)
	}
}

func TestConstructorsValidate(t *testing.T) {
	if _, err := NewWeChat(WeChatConfig{AppID: "a", AppSecret: "b"}); err == nil {
		t.Error("wechat without template id accepted")
	}
	if _, err := NewWeChat(WeChatConfig{AppID: "a", AppSecret: "b", TemplateID: "t", BaseURL: "127.0.0.1:1"}); err == nil {
		t.Error("wechat base url without scheme accepted")
	}
	if _, err := NewTencentSMS(TencentSMSConfig{SecretID: "a"}); err == nil {
		t.Error("tencent without credentials accepted")
	}
	if _, err := NewAliyunSMS(AliyunSMSConfig{AccessKeyID: "a"}); err == nil {
		t.Error("aliyun without credentials accepted")
	}
	if _, err := NewAliyunSMS(AliyunSMSConfig{AccessKeyID: "a", AccessKeySecret: "b", SignName: "s",
		TemplateCode: "t", Region: "bad region!"}); err == nil {
		t.Error("aliyun with a malformed region accepted")
	}
}
