package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common"
	tcerr "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/profile"
	sms "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/sms/v20210111"
)

// ProviderTencent is the name of the Tencent Cloud SMS sender.
const ProviderTencent = "tencent"

// tencentTimeoutSeconds bounds one SendSms call (the SDK default is 60 s); the engine's own send
// timeout normally ends it sooner through the context.
const tencentTimeoutSeconds = 15

// TencentSMSConfig configures Tencent Cloud SMS (API 2021-01-11).
type TencentSMSConfig struct {
	SecretID, SecretKey, Region, SdkAppID, SignName, TemplateID string
	// Endpoint overrides sms.tencentcloudapi.com. A loopback host:port (the sandbox) is spoken to
	// over plain HTTP; an "http://" or "https://" prefix picks the scheme explicitly.
	Endpoint string
	// Dedupes declares that the endpoint drops a repeated SessionContext (true for the sandbox,
	// false for the real Tencent Cloud, which sends a repeat again).
	Dedupes bool
	// Templates per notice kind (templates.go); a kind without one uses TemplateID.
	Templates map[string]SMSTemplate
}

// TencentSMS sends template SMS through Tencent Cloud.
type TencentSMS struct {
	cfg    TencentSMSConfig
	client *sms.Client
}

// NewTencentSMS builds the sender. The SDK's region breaker is disabled for custom endpoints
// because it would fail over to the real backup domain instead of reporting the sandbox's errors.
func NewTencentSMS(cfg TencentSMSConfig) (*TencentSMS, error) {
	if cfg.SecretID == "" || cfg.SecretKey == "" || cfg.SdkAppID == "" || cfg.SignName == "" || cfg.TemplateID == "" {
		return nil, errors.New("tencent sms: secret id, secret key, sdk app id, sign name and template id are required")
	}
	if cfg.Region == "" {
		cfg.Region = "ap-guangzhou"
	}
	cpf := profile.NewClientProfile()
	cpf.HttpProfile.ReqTimeout = tencentTimeoutSeconds
	if cfg.Endpoint != "" {
		host, plain, err := splitEndpoint(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("tencent sms: endpoint: %w", err)
		}
		cpf.HttpProfile.Endpoint = host
		if plain {
			cpf.HttpProfile.Scheme = "HTTP"
		}
		cpf.DisableRegionBreaker = true
	}
	client, err := sms.NewClient(common.NewCredential(cfg.SecretID, cfg.SecretKey), cfg.Region, cpf)
	if err != nil {
		return nil, fmt.Errorf("tencent sms: new client: %w", err)
	}
	client.WithHttpTransport(pooledTransport())
	return &TencentSMS{cfg: cfg, client: client}, nil
}

// Name implements Sender.
func (t *TencentSMS) Name() string { return ProviderTencent }

// Idempotent implements Idempotent.
func (t *TencentSMS) Idempotent() bool { return t.cfg.Dedupes }

// Resolve implements Resolver with PullSmsSendStatusByPhoneNumber: the status reports of the number
// since the attempt, looked up by the SessionContext the send carried. A message only appears once
// its report arrived (usually seconds, at most a few minutes), so "not found" is trusted only after
// a grace period (notify.in_doubt_grace).
func (t *TencentSMS) Resolve(ctx context.Context, n Notice, since time.Time) (Result, bool, error) {
	st, err := t.lookup(ctx, n, since)
	if err != nil || st == nil {
		return Result{}, false, err
	}
	return Result{Provider: ProviderTencent, ProviderID: deref(st.SerialNo)}, true, nil
}

// QueryStatus implements StatusQuerier with PullSmsSendStatusByPhoneNumber: the report of the
// message, SUCCESS or not.
func (t *TencentSMS) QueryStatus(ctx context.Context, n Notice, since time.Time) (Receipt, bool, error) {
	st, err := t.lookup(ctx, n, since)
	if err != nil || st == nil {
		return Receipt{}, false, err
	}
	at := time.Now()
	if st.UserReceiveTime != nil && *st.UserReceiveTime > 0 {
		at = time.Unix(int64(*st.UserReceiveTime), 0)
	}
	return Receipt{Provider: ProviderTencent, ProviderID: deref(st.SerialNo), Recipient: n.Phone,
		Delivered: deref(st.ReportStatus) == "SUCCESS", Code: deref(st.ReportStatus), Detail: deref(st.Description), ReportedAt: at}, true, nil
}

// lookup finds the status report of the message sent for n.DeliveryID (its SessionContext) since a
// time; nil when Tencent has none.
func (t *TencentSMS) lookup(ctx context.Context, n Notice, since time.Time) (*sms.PullSmsSendStatus, error) {
	phone := e164CN(n.Phone)
	if phone == "" {
		return nil, nil
	}
	req := sms.NewPullSmsSendStatusByPhoneNumberRequest()
	req.PhoneNumber = common.StringPtr(phone)
	req.SmsSdkAppId = common.StringPtr(t.cfg.SdkAppID)
	req.BeginTime = common.Uint64Ptr(uint64(since.Add(-time.Minute).Unix()))
	req.EndTime = common.Uint64Ptr(uint64(time.Now().Add(time.Minute).Unix()))
	req.Limit = common.Uint64Ptr(100)
	for offset := uint64(0); ; offset += 100 {
		req.Offset = common.Uint64Ptr(offset)
		resp, err := t.client.PullSmsSendStatusByPhoneNumberWithContext(ctx, req)
		if err != nil {
			return nil, tencentError(err)
		}
		if resp.Response == nil {
			return nil, nil
		}
		for _, st := range resp.Response.PullSmsSendStatusSet {
			if st != nil && deref(st.SessionContext) == n.DeliveryID {
				return st, nil
			}
		}
		if len(resp.Response.PullSmsSendStatusSet) < 100 {
			return nil, nil
		}
	}
}

// Send sends one SMS. The request can succeed while the number fails, so the per-number status is
// what decides the outcome.
func (t *TencentSMS) Send(ctx context.Context, n Notice) (Result, error) {
	phone := e164CN(n.Phone)
	if phone == "" {
		return Result{}, &SendError{Provider: ProviderTencent, Code: "no_phone",
			Message: "recipient has no phone number", Class: Permanent}
	}
	req := sms.NewSendSmsRequest()
	req.PhoneNumberSet = common.StringPtrs([]string{phone})
	req.SmsSdkAppId = common.StringPtr(t.cfg.SdkAppID)
	req.SignName = common.StringPtr(t.cfg.SignName)
	id, params := tencentTemplate(t.cfg, n)
	req.TemplateId = common.StringPtr(id)
	req.TemplateParamSet = common.StringPtrs(params)
	req.SessionContext = common.StringPtr(n.DeliveryID)

	resp, err := t.client.SendSmsWithContext(ctx, req)
	if err != nil {
		return Result{}, tencentError(err)
	}
	if resp.Response == nil || len(resp.Response.SendStatusSet) == 0 || resp.Response.SendStatusSet[0] == nil {
		return Result{}, newSendError(ProviderTencent, "empty_response", "SendSms answered without a send status", Transient)
	}
	st := resp.Response.SendStatusSet[0]
	code, msg := deref(st.Code), deref(st.Message)
	if code != "Ok" {
		se := newSendError(ProviderTencent, code, msg, classifyTencent(code))
		se.RetryAfter = tencentRetryAfter(code)
		return Result{}, se
	}
	return Result{Provider: ProviderTencent, ProviderID: deref(st.SerialNo)}, nil
}

// smsParams is the parameter order both SMS templates are approved with.
func smsParams(n Notice) []string {
	return []string{n.PolicyTitle, orDefault(n.Amount, defaultAmount), orDefault(n.Deadline, defaultDeadline), n.URL}
}

// e164CN puts a mainland number in the +86 E.164 form Tencent requires; numbers that already carry
// a "+" are left alone so international numbers pass through.
func e164CN(phone string) string {
	p := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, phone)
	switch {
	case p == "":
		return ""
	case strings.HasPrefix(p, "+"):
		return p
	case strings.HasPrefix(p, "0086"):
		return "+" + p[2:]
	case strings.HasPrefix(p, "86") && len(p) == 13:
		return "+" + p
	}
	return "+86" + p
}

func tencentError(err error) error {
	var sdkErr *tcerr.TencentCloudSDKError
	if errors.As(err, &sdkErr) {
		se := newSendError(ProviderTencent, sdkErr.Code, sdkErr.Message, classifyTencentSDK(sdkErr))
		se.RetryAfter = tencentRetryAfter(sdkErr.Code)
		switch sdkErr.Code {
		case "ClientError.NetworkError":
			se.InDoubt = transportUnsure(errors.New(sdkErr.Message))
		case "ClientError.IOError":
			se.InDoubt = true // the request went through; its answer was lost
		case "ClientError.ParseJsonError":
			// An error page (a gateway's or the sandbox's 5xx) is a refusal; a JSON answer that
			// cannot be read might have been an acceptance.
			body, _ := strings.CutPrefix(sdkErr.Message, "Fail to parse json content: ")
			se.InDoubt = strings.HasPrefix(strings.TrimSpace(body), "{")
		}
		return se
	}
	return transportError(ProviderTencent, err)
}

// tencentRetryAfter is how long a per-number limit lasts (Tencent's defaults: one message per 30 s,
// five per hour, ten per day for the same number).
func tencentRetryAfter(code string) time.Duration {
	switch code {
	case "LimitExceeded.PhoneNumberThirtySecondLimit":
		return 30 * time.Second
	case "LimitExceeded.PhoneNumberOneHourLimit":
		return time.Hour
	case "LimitExceeded.PhoneNumberDailyLimit", "LimitExceeded.PhoneNumberSameContentDailyLimit",
		"LimitExceeded.DeliveryFrequencyLimit":
		return 24 * time.Hour
	}
	return 0
}

// httpStatusRe reads the status from the SDK's ClientError.HttpStatusCodeError message.
var httpStatusRe = regexp.MustCompile(`status code: (\d{3})`)

// classifyTencentSDK handles the SDK's local ClientError.* codes (network, bad HTTP status, garbled
// body) before falling back to the server codes.
func classifyTencentSDK(e *tcerr.TencentCloudSDKError) ErrorClass {
	if e.Code == "ClientError.HttpStatusCodeError" {
		if m := httpStatusRe.FindStringSubmatch(e.Message); m != nil {
			status, _ := strconv.Atoi(m[1])
			return httpStatusClass(status)
		}
		return Transient
	}
	if strings.HasPrefix(e.Code, "ClientError.") {
		return Transient
	}
	return classifyTencent(e.Code)
}

// classifyTencent maps a Tencent SMS error code (request-level or per-number) to an ErrorClass.
// It looks like classifyAliyun on purpose: each is its provider's code table and stays in the
// provider's file, where its codes are documented.
func classifyTencent(code string) ErrorClass {
	switch code {
	// Not rate limits despite the prefix: a request with too many numbers, a region the app is
	// barred from. Waiting does not help.
	case "LimitExceeded.PhoneNumberCountLimit", "LimitExceeded.AppCountryOrRegionInBlacklist":
		return Permanent
	// Account-wide: every later message would fail the same way until someone tops up, so the
	// channel should pause rather than dead-letter each notice.
	case "FailedOperation.InsufficientBalanceInSmsPackage", "UnauthorizedOperation.ServiceSuspendDueToArrears":
		return Quota
	case "FailedOperation.PhoneNumberInBlacklist", "InvalidParameterValue.IncorrectPhoneNumber",
		"FailedOperation.PhoneNumberParseFail":
		return Permanent
	}
	switch {
	// Per number (too often to the same phone): this notice waits, the channel goes on.
	case strings.HasPrefix(code, "LimitExceeded.PhoneNumber"), code == "LimitExceeded.DeliveryFrequencyLimit":
		return Throttled
	// Per application (daily or global caps): the provider pauses.
	case hasCodePrefix(code, "LimitExceeded"):
		return Quota
	case hasCodePrefix(code, "InternalError"), hasCodePrefix(code, "RequestLimitExceeded"):
		return Transient
	}
	return Permanent
}

// hasCodePrefix reports whether code is family or a member of it ("InternalError.Timeout").
func hasCodePrefix(code, family string) bool {
	return code == family || strings.HasPrefix(code, family+".")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// splitEndpoint turns an endpoint setting into a bare host[:port] and whether to use plain HTTP.
// Both SMS SDKs take the host and the scheme separately; plain HTTP is only assumed for loopback
// hosts so that a typo can never send credentials to a remote host unencrypted.
func splitEndpoint(endpoint string) (host string, plainHTTP bool, err error) {
	switch {
	case strings.HasPrefix(endpoint, "http://"):
		host, plainHTTP = strings.TrimPrefix(endpoint, "http://"), true
	case strings.HasPrefix(endpoint, "https://"):
		host = strings.TrimPrefix(endpoint, "https://")
	default:
		host = endpoint
		name := host
		if h, _, splitErr := net.SplitHostPort(host); splitErr == nil {
			name = h
		}
		ip := net.ParseIP(name)
		plainHTTP = name == "localhost" || (ip != nil && ip.IsLoopback())
	}
	host = strings.TrimSuffix(host, "/")
	if host == "" || strings.ContainsAny(host, "/?#") {
		return "", false, fmt.Errorf("%q is not a host[:port]", endpoint)
	}
	return host, plainHTTP, nil
}
