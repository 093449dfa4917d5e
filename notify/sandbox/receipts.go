package sandbox

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"encoding/xml"
	"fmt"
	mrand "math/rand"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

// ReceiptOptions configures the status reports the sandbox sends back, as the providers do after
// a message reached (or failed to reach) the handset. Reports are posted to the engine's callback
// URLs after Delay; like the real ones they can come twice (DuplicateRate) and can say "failed"
// (FailRate).
type ReceiptOptions struct {
	WeChatURL  string // the official account's server URL, e.g. http://127.0.0.1:8080/wechat/callback
	TencentURL string // Tencent status callback URL (with its token= parameter)
	AliyunURL  string // Aliyun SmsReport URL (with its token= parameter)
	// WeChat server configuration: Token signs the callback; with an EncodingAESKey the event is
	// sent in safe mode (encrypted) for AppID.
	WeChatToken, WeChatAESKey, WeChatAppID string
	Delay                                  time.Duration // default 1s
	FailRate                               float64
	DuplicateRate                          float64
	Seed                                   int64
}

// reportQueue bounds the reports waiting to be posted; beyond it they are dropped, as real
// reports sometimes are.
const reportQueue = 100000

type report struct {
	rec     Record
	due     time.Time
	failed  bool
	attempt int
}

// reporter posts receipts from one goroutine owned by the Server.
type reporter struct {
	mu    sync.Mutex
	opts  ReceiptOptions
	rng   *mrand.Rand
	queue chan report
	done  chan struct{}
	stop  <-chan struct{}
	http  *http.Client
}

func newReporter(o ReceiptOptions, stop <-chan struct{}) *reporter {
	if o.Delay <= 0 {
		o.Delay = time.Second
	}
	r := &reporter{opts: o, rng: mrand.New(mrand.NewSource(o.Seed)), queue: make(chan report, reportQueue),
		done: make(chan struct{}), stop: stop, http: &http.Client{Timeout: 5 * time.Second}}
	go r.run()
	return r
}

// SetReceipts replaces where and how the sandbox reports (the engine's console may start after the
// sandbox, on a port it learns late).
func (s *Server) SetReceipts(o ReceiptOptions) {
	s.receipts.mu.Lock()
	defer s.receipts.mu.Unlock()
	if o.Delay <= 0 {
		o.Delay = time.Second
	}
	s.receipts.opts = o
	s.receipts.rng = mrand.New(mrand.NewSource(o.Seed))
}

func (o ReceiptOptions) target(provider string) string {
	switch provider {
	case ProviderWeChat:
		return o.WeChatURL
	case ProviderTencent:
		return o.TencentURL
	case ProviderAliyun:
		return o.AliyunURL
	}
	return ""
}

// accepted schedules the report of a newly accepted message (and maybe a duplicate of it).
func (r *reporter) accepted(rec Record) {
	r.mu.Lock()
	if r.opts.target(rec.Provider) == "" {
		r.mu.Unlock()
		return
	}
	failed := r.rng.Float64() < r.opts.FailRate
	dup := r.rng.Float64() < r.opts.DuplicateRate
	due := time.Now().Add(r.opts.Delay)
	r.mu.Unlock()
	for range 1 + boolInt(dup) {
		select {
		case r.queue <- report{rec: rec, due: due, failed: failed}:
		default: // queue full: this report is lost, as real ones sometimes are
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (r *reporter) wait() { <-r.done }

// run posts reports when they are due, until the server stops: SMS reports in arrays of up to 100
// (as the providers batch them), WeChat events one per message, several at once (postEach). A
// report the engine refuses is tried twice more, a second apart.
func (r *reporter) run() {
	defer close(r.done)
	for {
		var rep report
		select {
		case <-r.stop:
			return
		case rep = <-r.queue:
		}
		if d := time.Until(rep.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		batch := map[string][]report{rep.rec.Provider: {rep}}
	more:
		for n := 1; n < 100; n++ {
			select {
			case next := <-r.queue:
				batch[next.rec.Provider] = append(batch[next.rec.Provider], next)
				if time.Until(next.due) > 0 {
					break more // the rest is not due yet; post what is
				}
			default:
				break more
			}
		}
		for _, reps := range batch {
			if time.Until(reps[len(reps)-1].due) > 0 {
				// The last one taken is not due: put it back for the next round.
				r.requeue(reps[len(reps)-1], false)
				reps = reps[:len(reps)-1]
			}
			if len(reps) == 0 {
				continue
			}
			if reps[0].rec.Provider == ProviderWeChat {
				r.postEach(reps)
				continue
			}
			if err := r.post(reps); err != nil {
				for _, failed := range reps {
					r.requeue(failed, true)
				}
			}
		}
	}
}

// wechatReporters is how many WeChat events the sandbox posts at once. WeChat pushes one event per
// message from many servers, so a busy account receives them concurrently; posted one after the
// other, the reports of a fast pipeline fell behind and were dropped from the full queue, and the
// engine's receipt path was never under the load it has in production.
const wechatReporters = 8

// postEach posts one event per report, wechatReporters at a time, and requeues each that failed.
func (r *reporter) postEach(reps []report) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, wechatReporters)
	for _, rep := range reps {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := r.post([]report{rep}); err != nil {
				r.requeue(rep, true)
			}
		}()
	}
	wg.Wait()
}

// requeue puts a report back; retry counts it as a failed post.
func (r *reporter) requeue(rep report, retry bool) {
	if retry {
		if rep.attempt >= 2 {
			return
		}
		rep.attempt++
		rep.due = time.Now().Add(time.Second)
	}
	select {
	case r.queue <- rep:
	default:
	}
}

func (r *reporter) post(reps []report) error {
	r.mu.Lock()
	o := r.opts
	r.mu.Unlock()
	provider := reps[0].rec.Provider
	target := o.target(provider)
	if target == "" {
		return nil
	}
	var reqs []*http.Request
	switch provider {
	case ProviderWeChat:
		for _, rep := range reps {
			req, err := wechatReport(o, target, rep)
			if err != nil {
				return err
			}
			reqs = append(reqs, req)
		}
	case ProviderTencent, ProviderAliyun:
		body := make([]map[string]any, len(reps))
		for i, rep := range reps {
			if provider == ProviderTencent {
				body[i] = tencentReport(rep)
			} else {
				body[i] = aliyunReport(rep)
			}
		}
		req, err := jsonReport(target, body)
		if err != nil {
			return err
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		resp, err := r.http.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("report refused: %s", resp.Status)
		}
	}
	return nil
}

const providerTimeLayout = "2006-01-02 15:04:05"

var beijing = time.FixedZone("CST", 8*3600)

func tencentReport(rep report) map[string]any {
	status, errmsg, desc := "SUCCESS", "DELIVRD", "用户短信送达成功"
	if rep.failed {
		status, errmsg, desc = "FAIL", "MK:0001", "用户短信未送达（沙箱模拟）"
	}
	return map[string]any{"user_receive_time": time.Now().In(beijing).Format(providerTimeLayout), "nationcode": "86",
		"mobile": strings.TrimPrefix(rep.rec.To, "+86"), "report_status": status, "errmsg": errmsg, "description": desc,
		"sid": rep.rec.ProviderID}
}

func aliyunReport(rep report) map[string]any {
	code, msg := "DELIVERED", "用户接收成功"
	if rep.failed {
		code, msg = "MK:0001", "用户未接收（沙箱模拟）"
	}
	return map[string]any{"phone_number": rep.rec.To, "send_time": rep.rec.At.In(beijing).Format(providerTimeLayout),
		"report_time": time.Now().In(beijing).Format(providerTimeLayout), "success": !rep.failed, "err_code": code,
		"err_msg": msg, "sms_size": "1", "biz_id": rep.rec.ProviderID, "out_id": rep.rec.DeliveryID}
}

func jsonReport(target string, body any) (*http.Request, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// wxEvent is the TEMPLATESENDJOBFINISH push.
type wxEvent struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string   `xml:"ToUserName"`
	FromUserName string   `xml:"FromUserName"`
	CreateTime   int64    `xml:"CreateTime"`
	MsgType      string   `xml:"MsgType"`
	Event        string   `xml:"Event"`
	MsgID        int64    `xml:"MsgID"`
	Status       string   `xml:"Status"`
}

type wxEncrypted struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName string   `xml:"ToUserName"`
	Encrypt    string   `xml:"Encrypt"`
}

// wechatReport builds the signed (and, with an AES key, encrypted) event WeChat posts.
func wechatReport(o ReceiptOptions, target string, rep report) (*http.Request, error) {
	msgID, _ := strconv.ParseInt(rep.rec.ProviderID, 10, 64)
	status := "success"
	if rep.failed {
		status = "failed:user block"
	}
	now := time.Now()
	body, err := xml.Marshal(wxEvent{ToUserName: "gh_sandbox", FromUserName: rep.rec.To, CreateTime: now.Unix(),
		MsgType: "event", Event: "TEMPLATESENDJOBFINISH", MsgID: msgID, Status: status})
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	nonce := randomHex(8)
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "signature": {util.Signature(o.WeChatToken, ts, nonce)},
		"openid": {rep.rec.To}}
	if o.WeChatAESKey != "" {
		random := make([]byte, 16)
		_, _ = rand.Read(random)
		enc, err := util.EncryptMsg(random, body, o.WeChatAppID, o.WeChatAESKey)
		if err != nil {
			return nil, fmt.Errorf("encrypt wechat event: %w", err)
		}
		body, err = xml.Marshal(wxEncrypted{ToUserName: "gh_sandbox", Encrypt: string(enc)})
		if err != nil {
			return nil, err
		}
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", util.Signature(o.WeChatToken, ts, nonce, string(enc)))
	}
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(http.MethodPost, target+sep+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	return req, nil
}
