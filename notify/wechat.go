package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/officialaccount"
	oaconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/util"
)

const (
	// wechatAPI is the prefix every silenceper request URL starts with; the URI modifier swaps it for
	// WeChatConfig.BaseURL.
	wechatAPI = "https://api.weixin.qq.com"
	// templateSendURL is the library's own (unexported) template endpoint. We post to it ourselves
	// because message.Template.Send takes no context and hides the errcode inside a string.
	templateSendURL = wechatAPI + "/cgi-bin/message/template/send"

	// Texts used when the notice leaves a slot empty; the template keys are fixed by the approved template.
	defaultAmount     = "以核定为准"
	defaultDeadline   = "请尽快确认"
	wechatFirst       = "您的企业符合以下惠企政策，无需申请即可享受"
	wechatFirstDigest = "您的企业符合以下%d项惠企政策，无需申请即可享受"
	wechatRemark      = "请点击详情查看政策并确认享受，逾期可能影响兑现。"
)

// WeChat error codes the sender reacts to (see shared/domain/channels.md).
const (
	wxSystemBusy     = -1
	wxInvalidToken   = 40001
	wxInvalidOpenID  = 40003
	wxBadTokenFormat = 40014
	wxTokenExpired   = 42001
	wxNotFollowing   = 43004
	wxUserRejected   = 43101
	wxDailyQuota     = 45009
)

// WeChatConfig configures the official-account template sender.
type WeChatConfig struct {
	AppID, AppSecret, TemplateID string
	// BaseURL replaces https://api.weixin.qq.com (for the local sandbox). Empty keeps the real API.
	BaseURL string
	// Templates maps a notice kind (KindName) to its category template: the template id (empty:
	// TemplateID) and which content field (ContentFields) fills each key (thing1, amount2, time3 …).
	// A kind without an entry is sent with the pre-2023 template (first, keyword1-3, remark).
	Templates map[string]Template
}

// Template is one provider template of a notice kind: its id and, per template key (WeChat data
// key, or an SMS parameter name or position), the content field that fills it.
type Template struct {
	ID     string
	Fields map[string]string
}

// KindName names a notice kind in configuration: "matched" for match notices.
func KindName(kind string) string {
	if kind == "" {
		return "matched"
	}
	return kind
}

// NoticeKinds are the configuration names of every notice kind.
var NoticeKinds = []string{"matched", "publicized", "paid", "failed"}

// CheckTemplates validates a kind → template mapping: known kinds, known content fields.
func CheckTemplates(what string, ts map[string]Template) error {
	for kind, t := range ts {
		if !slices.Contains(NoticeKinds, kind) {
			return fmt.Errorf("%s.%s: unknown notice kind (use %s)", what, kind, strings.Join(NoticeKinds, ", "))
		}
		for key, field := range t.Fields {
			if strings.TrimSpace(key) == "" {
				return fmt.Errorf("%s.%s.fields: empty template key", what, kind)
			}
			if _, ok := ContentFields[field]; !ok {
				names := make([]string, 0, len(ContentFields))
				for f := range ContentFields {
					names = append(names, f)
				}
				slices.Sort(names)
				return fmt.Errorf("%s.%s.fields.%s: unknown content field %q (use one of %s)", what, kind, key, field, strings.Join(names, ", "))
			}
		}
	}
	return nil
}

// render fills a template's keys from the notice.
func (t Template) render(n *Notice) map[string]string {
	out := make(map[string]string, len(t.Fields))
	for key, field := range t.Fields {
		out[key] = ContentFields[field](n)
	}
	return out
}

// WeChat sends template messages through a WeChat official account.
type WeChat struct {
	cfg      WeChatConfig
	oa       *officialaccount.OfficialAccount
	cache    *lockedCache
	tokenKey string
}

// NewWeChat builds the sender. The account comes from the officialaccount package rather than the
// root wechat package, whose init switches the global logrus logger to debug on stdout.
//
// A non-empty BaseURL installs util.SetURIModifier, which is process-wide in silenceper: every
// WeChat client in the process then talks to BaseURL, and the most recent constructor wins.
func NewWeChat(cfg WeChatConfig) (*WeChat, error) {
	if cfg.AppID == "" || cfg.AppSecret == "" || cfg.TemplateID == "" {
		return nil, errors.New("wechat: app id, app secret and template id are required")
	}
	if err := CheckTemplates("wechat.templates", cfg.Templates); err != nil {
		return nil, fmt.Errorf("wechat: %w", err)
	}
	if cfg.BaseURL != "" {
		base, err := checkBaseURL(cfg.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("wechat: base url: %w", err)
		}
		util.SetURIModifier(func(uri string) string {
			if rest, ok := strings.CutPrefix(uri, wechatAPI); ok {
				return base + rest
			}
			return uri
		})
	}
	// silenceper posts through util.DefaultHTTPClient (process-wide, like the URI modifier). The
	// default client keeps two idle connections per host, which makes every concurrent send beyond
	// the second dial a new connection.
	if util.DefaultHTTPClient == http.DefaultClient {
		util.DefaultHTTPClient = &http.Client{Transport: pooledTransport()}
	}
	c := &lockedCache{inner: cache.NewMemory()}
	oa := officialaccount.NewOfficialAccount(&oaconfig.Config{
		AppID:     cfg.AppID,
		AppSecret: cfg.AppSecret,
		Cache:     c,
	})
	return &WeChat{
		cfg:   cfg,
		oa:    oa,
		cache: c,
		// Same format as credential.DefaultAccessToken.GetAccessTokenContext; deleting this key is the
		// only way to make the library fetch a new token, as it never retries on 40001 itself.
		tokenKey: fmt.Sprintf("%s_access_token_%s", credential.CacheKeyOfficialAccountPrefix, cfg.AppID),
	}, nil
}

func checkBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q must be an absolute http(s) URL", raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// Name implements Sender.
func (w *WeChat) Name() string { return ChannelWeChat }

// Idempotent implements Idempotent: WeChat drops a second template message with the same
// client_msg_id to the same openid, so a send whose outcome is unknown can simply be repeated.
func (w *WeChat) Idempotent() bool { return true }

// Send delivers n as a template message. A stale access token (40001/42001/40014) is dropped from the
// cache and the send retried once; ClientMsgID = DeliveryID makes that retry, and any later redelivery
// by the engine, safe against duplicates on WeChat's side.
func (w *WeChat) Send(ctx context.Context, n Notice) (Result, error) {
	if n.OpenID == "" {
		return Result{}, &SendError{Provider: ChannelWeChat, Code: "no_openid",
			Message: "recipient has no bound openid", Class: Fallback}
	}
	msg := w.message(n)
	msgID, stale, err := w.send(ctx, msg)
	if stale {
		// A second stale answer right after a refresh means WeChat is rotating tokens under us
		// (another process fetched one); that settles by itself, so it stays transient.
		msgID, _, err = w.send(ctx, msg)
	}
	if err != nil {
		return Result{}, err
	}
	return Result{Provider: ChannelWeChat, ProviderID: strconv.FormatInt(msgID, 10)}, nil
}

func (w *WeChat) message(n Notice) *message.TemplateMessage {
	if t, ok := w.cfg.Templates[KindName(n.Kind)]; ok && len(t.Fields) > 0 {
		data := map[string]*message.TemplateDataItem{}
		for k, v := range t.render(&n) {
			data[k] = &message.TemplateDataItem{Value: v}
		}
		return &message.TemplateMessage{ToUser: n.OpenID, TemplateID: orDefault(t.ID, w.cfg.TemplateID), URL: n.URL,
			ClientMsgID: n.DeliveryID, Data: data}
	}
	first := wechatFirst
	if n.Policies > 1 {
		first = fmt.Sprintf(wechatFirstDigest, n.Policies)
	}
	if n.FirmName != "" {
		first = n.FirmName + "：" + first
	}
	item := func(v string) *message.TemplateDataItem { return &message.TemplateDataItem{Value: v} }
	return &message.TemplateMessage{
		ToUser:      n.OpenID,
		TemplateID:  w.cfg.TemplateID,
		URL:         n.URL,
		ClientMsgID: n.DeliveryID,
		Data: map[string]*message.TemplateDataItem{
			"first":    item(first),
			"keyword1": item(n.PolicyTitle),
			"keyword2": item(orDefault(n.Amount, defaultAmount)),
			"keyword3": item(orDefault(n.Deadline, defaultDeadline)),
			"remark":   item(wechatRemark),
		},
	}
}

type templateSendResponse struct {
	util.CommonError
	MsgID int64 `json:"msgid"`
}

// send makes one attempt. stale reports a token WeChat no longer accepts; it has already been evicted
// from the cache so the next attempt fetches a new one.
func (w *WeChat) send(ctx context.Context, msg *message.TemplateMessage) (msgID int64, stale bool, err error) {
	token, err := w.oa.GetAccessTokenContext(ctx)
	if err != nil {
		return 0, false, tokenFetchError(err)
	}
	// util.PostJSONContext applies the URI modifier and uses util.DefaultHTTPClient, like the library.
	body, err := util.PostJSONContext(ctx, templateSendURL+"?access_token="+url.QueryEscape(token), msg)
	if err != nil {
		se := newSendError(ChannelWeChat, "http", "template send: "+err.Error(), Transient)
		// silenceper reports a non-200 answer as "statusCode=N": WeChat answered and refused.
		se.InDoubt = !strings.Contains(err.Error(), "statusCode=") && transportUnsure(err)
		return 0, false, se
	}
	var res templateSendResponse
	if err := json.Unmarshal(body, &res); err != nil {
		se := newSendError(ChannelWeChat, "bad_response", "template send: decode response: "+err.Error(), Transient)
		// An HTTP error page (the sandbox's injected 5xx, a gateway's 502) is a refusal; an answer
		// that looks like JSON but cannot be read might have been an acceptance.
		se.InDoubt = len(body) > 0 && body[0] == '{'
		return 0, false, se
	}
	if res.ErrCode == 0 {
		return res.MsgID, false, nil
	}
	code := strconv.FormatInt(res.ErrCode, 10)
	switch res.ErrCode {
	case wxInvalidToken, wxTokenExpired, wxBadTokenFormat:
		w.cache.deleteIf(w.tokenKey, token)
		return 0, true, newSendError(ChannelWeChat, code, res.ErrMsg, Transient)
	}
	return 0, false, newSendError(ChannelWeChat, code, res.ErrMsg, classifyWeChat(res.ErrCode))
}

// classifyWeChat maps a template-send errcode to what the engine should do. Everything not listed,
// notably 40037 (bad template id) and 47003 (bad data), is a configuration or payload bug that no
// retry or fallback fixes.
func classifyWeChat(code int64) ErrorClass {
	switch code {
	case wxSystemBusy:
		return Transient
	case wxDailyQuota:
		return Quota
	case wxNotFollowing, wxUserRejected, wxInvalidOpenID:
		return Fallback
	}
	return Permanent
}

// errcodeRe finds the code in silenceper's plain-text errors ("... errcode=40013 , errormsg=...").
var errcodeRe = regexp.MustCompile(`errcode=(-?\d+)`)

// tokenFetchError classifies a failed token fetch. Without an errcode it was the network; with one it
// is WeChat refusing the credentials (bad secret, IP not whitelisted), which no retry fixes.
func tokenFetchError(err error) error {
	m := errcodeRe.FindStringSubmatch(err.Error())
	if m == nil {
		return newSendError(ChannelWeChat, "http", "get access token: "+err.Error(), Transient)
	}
	code, _ := strconv.ParseInt(m[1], 10, 64)
	class := Permanent
	if code == wxSystemBusy {
		class = Transient
	}
	return newSendError(ChannelWeChat, m[1], "get access token: "+err.Error(), class)
}

// lockedCache serialises a cache.Memory: its Get and IsExist read the map without the lock that Set
// and Delete take, which is a data race as soon as several sends run at once.
type lockedCache struct {
	mu    sync.Mutex
	inner cache.Cache
}

func (c *lockedCache) Get(key string) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.Get(key)
}

func (c *lockedCache) Set(key string, val any, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.Set(key, val, timeout)
}

func (c *lockedCache) IsExist(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.IsExist(key)
}

func (c *lockedCache) Delete(key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.Delete(key)
}

// deleteIf evicts key only while it still holds val, so that when many concurrent sends hit the same
// stale token, a fresh token fetched by the first of them is not thrown away by the others.
func (c *lockedCache) deleteIf(key string, val any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner.Get(key) == val {
		_ = c.inner.Delete(key) // cache.Memory.Delete cannot fail
	}
}

func orDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

// newSendError builds a SendError whose message is safe to log: provider and transport errors can
// echo request URLs carrying access tokens, signatures and phone numbers.
func newSendError(provider, code, msg string, class ErrorClass) *SendError {
	return &SendError{Provider: provider, Code: code, Message: redact(msg), Class: class}
}

var (
	secretParamRe = regexp.MustCompile(`(?i)((?:access_token|PhoneNumbers|Signature|AccessKeyId|SignatureNonce|secret)=)[^&\s"]+`)
	// phoneRe matches mainland mobile numbers with or without a country prefix.
	phoneRe = regexp.MustCompile(`(\+?86)?1[3-9]\d{9}`)
)

// redact masks secrets and phone numbers, keeping the last four digits of a phone for support work.
func redact(s string) string {
	s = secretParamRe.ReplaceAllString(s, "${1}***")
	return phoneRe.ReplaceAllStringFunc(s, maskPhone)
}

// maskPhone keeps only the last four digits of a number, the usual form for logs and support tickets.
func maskPhone(p string) string {
	if len(p) <= 4 {
		return "****"
	}
	return "***" + p[len(p)-4:]
}
