package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests speak raw HTTP to check the sandbox's own rules; notify/senders_test.go drives it with
// the real SDK clients.

func start(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func getJSON(t *testing.T, u string, out any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

func postJSON(t *testing.T, u string, in, out any) int {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(u, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("decode: %v", err)
		}
	}
	return resp.StatusCode
}

func token(t *testing.T, s *Server) string {
	t.Helper()
	var tok wxTokenReply
	getJSON(t, s.URL()+"/cgi-bin/token?grant_type=client_credential&appid=wx&secret=s", &tok)
	if tok.AccessToken == "" || tok.ExpiresIn != 7200 {
		t.Fatalf("token reply %+v", tok)
	}
	return tok.AccessToken
}

func wxMessage(to, id string) map[string]any {
	return map[string]any{"touser": to, "template_id": "TPL", "client_msg_id": id,
		"data": map[string]any{"keyword1": map[string]string{"value": "政策"}}}
}

func wxSend(t *testing.T, s *Server, tok string, msg map[string]any) wxReply {
	t.Helper()
	var r wxReply
	postJSON(t, s.URL()+"/cgi-bin/message/template/send?access_token="+url.QueryEscape(tok), msg, &r)
	return r
}

func TestConcurrentRepeatsRecordOnce(t *testing.T) {
	dir := t.TempDir()
	s := start(t, Options{Dir: dir})
	tok := token(t, s)
	const n = 32
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var r wxReply
			body, _ := json.Marshal(wxMessage("o-user", "same-id"))
			resp, err := http.Post(s.URL()+"/cgi-bin/message/template/send?access_token="+tok, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Errorf("POST: %v", err)
				return
			}
			defer resp.Body.Close()
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.ErrCode != 0 {
				t.Errorf("reply %+v, %v", r, err)
			}
			ids[i] = r.MsgID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("repeats got different msgids: %v", ids)
		}
	}
	// Same id to a different openid is a different message, as with WeChat's client_msg_id.
	if r := wxSend(t, s, tok, wxMessage("o-other", "same-id")); r.ErrCode != 0 || r.MsgID == ids[0] {
		t.Fatalf("other recipient: %+v", r)
	}
	recs, err := ReadRecords(filepath.Join(dir, WeChatFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].DeliveryID != "same-id" || recs[0].Params["keyword1"] != "政策" {
		t.Fatalf("records %+v", recs)
	}
	if got := s.Counts()[ProviderWeChat]; got != 2 {
		t.Fatalf("count %d", got)
	}
}

func TestRecordJSONKeys(t *testing.T) {
	line, err := json.Marshal(Record{Provider: "wechat", DeliveryID: "d", To: "o", ProviderID: "1", At: time.Unix(0, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"provider":`, `"delivery_id":"d"`, `"to":`, `"provider_id":"1"`, `"at":`} {
		if !bytes.Contains(line, []byte(key)) {
			t.Errorf("%s lacks %s", line, key)
		}
	}
}

func TestRestartKeepsRecordsAndDedupe(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	first := wxSend(t, s, token(t, s), wxMessage("o-1", "d-1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := start(t, Options{Dir: dir})
	again := wxSend(t, s2, token(t, s2), wxMessage("o-1", "d-1"))
	if first.ErrCode != 0 || again != first {
		t.Fatalf("before %+v, after restart %+v", first, again)
	}
	fresh := wxSend(t, s2, token(t, s2), wxMessage("o-1", "d-2"))
	if fresh.ErrCode != 0 || fresh.MsgID == first.MsgID {
		t.Fatalf("new delivery after restart %+v", fresh)
	}
	recs, err := ReadRecords(filepath.Join(dir, WeChatFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("want 2 records, got %d", len(recs))
	}
}

func TestTornLastLineIsDropped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, WeChatFile)
	good, _ := json.Marshal(Record{Provider: ProviderWeChat, DeliveryID: "old", To: "o-1", ProviderID: "7"})
	if err := os.WriteFile(path, append(append(good, '\n'), `{"provider":"wec`...), 0o644); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadRecords(path)
	if err != nil || len(recs) != 1 {
		t.Fatalf("ReadRecords on a torn file: %d records, %v", len(recs), err)
	}

	s := start(t, Options{Dir: dir})
	if got := s.Counts()[ProviderWeChat]; got != 1 {
		t.Fatalf("count after load %d", got)
	}
	if r := wxSend(t, s, token(t, s), wxMessage("o-1", "old")); r.MsgID != 7 {
		t.Fatalf("loaded delivery not deduplicated: %+v", r)
	}
	if r := wxSend(t, s, token(t, s), wxMessage("o-1", "new")); r.ErrCode != 0 {
		t.Fatalf("send: %+v", r)
	}
	recs, err = ReadRecords(path)
	if err != nil || len(recs) != 2 {
		t.Fatalf("after append: %d records, %v", len(recs), err)
	}
}

func TestReadRecordsRejectsCorruptLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), SMSFile)
	if err := os.WriteFile(path, []byte("{\"provider\":\"aliyun\"}\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRecords(path); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("want a line 2 error, got %v", err)
	}
	if _, err := Start(context.Background(), Options{Dir: filepath.Dir(path)}); err == nil {
		t.Fatal("Start accepted a corrupt records file")
	}
}

func TestExpireTokenEvery(t *testing.T) {
	s := start(t, Options{ExpireTokenEvery: 3})
	tok := token(t, s)
	for i, want := range []int64{0, 0, 40001, 40001} {
		if r := wxSend(t, s, tok, wxMessage("o-1", "e-"+string(rune('a'+i)))); r.ErrCode != want {
			t.Fatalf("send %d: errcode %d, want %d", i, r.ErrCode, want)
		}
	}
	if r := wxSend(t, s, token(t, s), wxMessage("o-1", "e-z")); r.ErrCode != 0 {
		t.Fatalf("send with a new token: %+v", r)
	}
}

func TestWeChatRequestChecks(t *testing.T) {
	s := start(t, Options{})
	tok := token(t, s)
	cases := []struct {
		msg  map[string]any
		want int64
	}{
		{wxMessage("", "x"), 40003},
		{wxMessage("user", "x"), 40003},
		{wxMessage("o-unfollow", "x"), 43004},
		{map[string]any{"touser": "o-1", "data": map[string]any{"a": map[string]string{"value": "v"}}}, 40037},
		{map[string]any{"touser": "o-1", "template_id": "T"}, 47003},
	}
	for _, c := range cases {
		if r := wxSend(t, s, tok, c.msg); r.ErrCode != c.want {
			t.Errorf("%v: errcode %d, want %d", c.msg, r.ErrCode, c.want)
		}
	}
	if r := wxSend(t, s, "forged", wxMessage("o-1", "x")); r.ErrCode != 40001 {
		t.Errorf("forged token: %+v", r)
	}
	var r wxReply
	getJSON(t, s.URL()+"/cgi-bin/message/template/send?access_token="+tok, &r)
	if r.ErrCode != 43002 {
		t.Errorf("GET send: %+v", r)
	}
	getJSON(t, s.URL()+"/cgi-bin/token?grant_type=client_credential&secret=s", &r)
	if r.ErrCode != 41002 {
		t.Errorf("token without appid: %+v", r)
	}
	if got := s.Counts()[ProviderWeChat]; got != 0 {
		t.Fatalf("rejected sends were recorded: %d", got)
	}
}

func TestStableToken(t *testing.T) {
	s := start(t, Options{})
	req := map[string]any{"grant_type": "client_credential", "appid": "wx", "secret": "s"}
	var a, b, c wxTokenReply
	postJSON(t, s.URL()+"/cgi-bin/stable_token", req, &a)
	postJSON(t, s.URL()+"/cgi-bin/stable_token", req, &b)
	req["force_refresh"] = true
	postJSON(t, s.URL()+"/cgi-bin/stable_token", req, &c)
	if a.AccessToken == "" || a != b || c.AccessToken == a.AccessToken {
		t.Fatalf("stable tokens %q %q %q", a.AccessToken, b.AccessToken, c.AccessToken)
	}
	if r := wxSend(t, s, c.AccessToken, wxMessage("o-1", "st")); r.ErrCode != 0 {
		t.Fatalf("send with stable token: %+v", r)
	}
}

func TestFaultSequenceIsDeterministic(t *testing.T) {
	f := Faults{ErrorRate: 0.5, TimeoutRate: 0.1, Codes: []string{"-1", "45009"}, Seed: 42}
	draw := func(f Faults) []fault {
		s := start(t, Options{WeChat: f})
		out := make([]fault, 200)
		for i := range out {
			out[i] = s.drawFault(ProviderWeChat)
		}
		return out
	}
	a, b := draw(f), draw(f)
	errs := map[string]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d differs: %+v vs %+v", i, a[i], b[i])
		}
		errs[a[i].code]++
	}
	if errs["-1"] == 0 || errs["45009"] == 0 || errs[""] == 0 {
		t.Fatalf("unexpected spread %v", errs)
	}
	f.Seed = 43
	c := draw(f)
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("a different seed gave the same sequence")
	}
}

func TestDefaultFaultCodes(t *testing.T) {
	s := start(t, Options{
		WeChat:  Faults{ErrorRate: 1},
		Tencent: Faults{ErrorRate: 1},
		Aliyun:  Faults{ErrorRate: 1},
	})
	for p, want := range map[string]string{ProviderWeChat: "-1", ProviderTencent: "InternalError", ProviderAliyun: "isp.SYSTEM_ERROR"} {
		if got := s.drawFault(p).code; got != want {
			t.Errorf("%s default code %q, want %q", p, got, want)
		}
	}
}

func TestLatency(t *testing.T) {
	s := start(t, Options{WeChat: Faults{Latency: 150 * time.Millisecond}})
	tok := token(t, s)
	begin := time.Now()
	if r := wxSend(t, s, tok, wxMessage("o-1", "lat")); r.ErrCode != 0 {
		t.Fatalf("send: %+v", r)
	}
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Fatalf("latency not applied: %s", d)
	}
}

func TestCloseReleasesHangingRequests(t *testing.T) {
	s, err := Start(context.Background(), Options{WeChat: Faults{TimeoutRate: 1}})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		body, _ := json.Marshal(wxMessage("o-1", "hang"))
		resp, err := http.Post(s.URL()+"/cgi-bin/message/template/send?access_token="+tok, "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	begin := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("Close waited %s for a hanging request", d)
	}
	<-done
}

func TestSignaturesRequired(t *testing.T) {
	s := start(t, Options{})
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/", strings.NewReader(`{}`))
	req.Header.Set("X-TC-Action", "SendSms")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tc tcResponse
	if err := json.NewDecoder(resp.Body).Decode(&tc); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tc.Response.Error == nil || tc.Response.Error.Code != "AuthFailure.SignatureFailure" {
		t.Fatalf("unsigned tencent request: %+v", tc.Response)
	}

	var ali aliReply
	if status := postJSON(t, s.URL()+"/?Action=SendSms&PhoneNumbers=13800138000", nil, &ali); status != http.StatusBadRequest || ali.Code != "IncompleteSignature" {
		t.Fatalf("unsigned aliyun request: %d %+v", status, ali)
	}

	resp, err = http.Get(s.URL() + "/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unrouted request: %d", resp.StatusCode)
	}
}

func TestContextStopsServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(s.URL() + "/cgi-bin/token")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("server still serving after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after context stop: %v", err)
	}
}

func TestIDsContinueAfterLoadedOnes(t *testing.T) {
	dir := t.TempDir()
	future := time.Now().UnixMicro() + 1e12
	old, _ := json.Marshal(Record{Provider: ProviderTencent, DeliveryID: "x", To: "+8613800138000",
		ProviderID: "3369:" + strconv.FormatInt(future, 10)})
	if err := os.WriteFile(filepath.Join(dir, SMSFile), append(old, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, Options{Dir: dir})
	if r := wxSend(t, s, token(t, s), wxMessage("o-1", "after")); r.ErrCode != 0 || r.MsgID <= future {
		t.Fatalf("msgid %d does not continue after loaded id %d", r.MsgID, future)
	}
}

func TestLookupAPIsFindAcceptedMessages(t *testing.T) {
	s := start(t, Options{})
	// Tencent: accept one message, then look it up by number and time.
	body := map[string]any{"PhoneNumberSet": []string{"+8613800138000"}, "SmsSdkAppId": "1400", "TemplateId": "1",
		"SignName": "s", "SessionContext": "d-7"}
	tc := func(action string, in any, out any) {
		b, _ := json.Marshal(in)
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/", bytes.NewReader(b))
		req.Header.Set("X-TC-Action", action)
		req.Header.Set("Authorization", "TC3-HMAC-SHA256 Credential=x")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	var sent tcResponse
	tc("SendSms", body, &sent)
	var pulled struct {
		Response struct {
			PullSmsSendStatusSet []tcPullStatus
		}
	}
	begin := time.Now().Add(-time.Minute).Unix()
	tc("PullSmsSendStatusByPhoneNumber", map[string]any{"PhoneNumber": "+8613800138000", "BeginTime": begin, "Limit": 10}, &pulled)
	set := pulled.Response.PullSmsSendStatusSet
	if len(set) != 1 || set[0].SessionContext != "d-7" || set[0].SerialNo != sent.Response.SendStatusSet[0].SerialNo {
		t.Fatalf("pulled %+v", set)
	}
	tc("PullSmsSendStatusByPhoneNumber", map[string]any{"PhoneNumber": "+8613800138001", "BeginTime": begin, "Limit": 10}, &pulled)
	if len(pulled.Response.PullSmsSendStatusSet) != 0 {
		t.Fatalf("another number's status: %+v", pulled)
	}

	// Aliyun: QuerySendDetails by number and day (Beijing time).
	q := url.Values{"Action": {"SendSms"}, "Signature": {"x"}, "AccessKeyId": {"k"}, "PhoneNumbers": {"13800138000"},
		"SignName": {"s"}, "TemplateCode": {"T"}, "OutId": {"d-8"}}
	var ali aliReply
	postJSON(t, s.URL()+"/?"+q.Encode(), nil, &ali)
	day := time.Now().In(beijing).Format("20060102")
	q = url.Values{"Action": {"QuerySendDetails"}, "Signature": {"x"}, "AccessKeyId": {"k"}, "PhoneNumber": {"13800138000"},
		"SendDate": {day}, "PageSize": {"10"}, "CurrentPage": {"1"}}
	var details struct {
		Code              string
		SmsSendDetailDTOs struct{ SmsSendDetailDTO []aliDetail }
	}
	postJSON(t, s.URL()+"/?"+q.Encode(), nil, &details)
	if details.Code != "OK" || len(details.SmsSendDetailDTOs.SmsSendDetailDTO) != 1 || details.SmsSendDetailDTOs.SmsSendDetailDTO[0].OutID != "d-8" {
		t.Fatalf("details %+v", details)
	}
}

func TestReportsArePostedOncePerAcceptedMessage(t *testing.T) {
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.URL.Path + " " + string(b)
	}))
	defer srv.Close()
	s := start(t, Options{Receipts: ReceiptOptions{WeChatURL: srv.URL + "/wx", AliyunURL: srv.URL + "/ali?token=t",
		WeChatToken: "tok", Delay: time.Millisecond}})
	tok := token(t, s)
	wxSend(t, s, tok, wxMessage("o-1", "r-1"))
	wxSend(t, s, tok, wxMessage("o-1", "r-1")) // a repeat: no second report
	q := url.Values{"Action": {"SendSms"}, "Signature": {"x"}, "AccessKeyId": {"k"}, "PhoneNumbers": {"13800138000"},
		"SignName": {"s"}, "TemplateCode": {"T"}, "OutId": {"r-2"}}
	postJSON(t, s.URL()+"/?"+q.Encode(), nil, nil)
	reports := map[string]string{}
	for range 2 {
		select {
		case r := <-got:
			path, body, _ := strings.Cut(r, " ")
			reports[path] = body
		case <-time.After(5 * time.Second):
			t.Fatalf("reports so far: %v", reports)
		}
	}
	if !strings.Contains(reports["/wx"], "TEMPLATESENDJOBFINISH") || !strings.Contains(reports["/ali"], `"out_id":"r-2"`) {
		t.Fatalf("reports %v", reports)
	}
	// Reports are queued when the message is accepted; the repeat queued none.
	if n := len(s.receipts.queue); n != 0 {
		t.Fatalf("%d more reports queued", n)
	}
}
