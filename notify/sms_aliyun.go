package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	alierr "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/dysmsapi"
)

// ProviderAliyun is the name of the Aliyun SMS sender.
const ProviderAliyun = "aliyun"

const aliyunDomain = "dysmsapi.aliyuncs.com"

// AliyunSMSConfig configures Aliyun SMS (dysmsapi 2017-05-25, legacy SDK).
type AliyunSMSConfig struct {
	AccessKeyID, AccessKeySecret, Region, SignName, TemplateCode string
	// Endpoint overrides dysmsapi.aliyuncs.com. A loopback host:port (the sandbox) is spoken to
	// over plain HTTP; an "http://" or "https://" prefix picks the scheme explicitly.
	Endpoint string
	// Dedupes declares that the endpoint drops a repeated OutId (true for the sandbox, false for
	// the real Aliyun, which sends a repeat again).
	Dedupes bool
	// Templates per notice kind (templates.go); a kind without one uses TemplateCode.
	Templates map[string]SMSTemplate
}

// AliyunSMS sends template SMS through Aliyun.
//
// The legacy SDK client is not safe for concurrent use (every call rewrites its http.Client timeout
// and transport) and takes no context, so each Send builds a throwaway client around one shared
// connection pool whose RoundTripper carries that call's context.
type AliyunSMS struct {
	cfg       AliyunSMSConfig
	domain    string
	scheme    string
	transport *http.Transport
}

// NewAliyunSMS builds the sender.
func NewAliyunSMS(cfg AliyunSMSConfig) (*AliyunSMS, error) {
	if cfg.AccessKeyID == "" || cfg.AccessKeySecret == "" || cfg.SignName == "" || cfg.TemplateCode == "" {
		return nil, errors.New("aliyun sms: access key id, access key secret, sign name and template code are required")
	}
	if cfg.Region == "" {
		cfg.Region = "cn-hangzhou"
	}
	a := &AliyunSMS{cfg: cfg, domain: aliyunDomain, scheme: "https"}
	if cfg.Endpoint != "" {
		host, plain, err := splitEndpoint(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("aliyun sms: endpoint: %w", err)
		}
		a.domain = host
		if plain {
			a.scheme = "http"
		}
	}
	a.transport = pooledTransport()
	// Fail on a bad region now rather than on the first send.
	if _, err := a.client(context.Background()); err != nil {
		return nil, err
	}
	return a, nil
}

// Name implements Sender.
func (a *AliyunSMS) Name() string { return ProviderAliyun }

// Idempotent implements Idempotent.
func (a *AliyunSMS) Idempotent() bool { return a.cfg.Dedupes }

// aliyunDay is the calendar Aliyun files sends under (QuerySendDetails takes a SendDate).
var aliyunDay = time.FixedZone("CST", 8*3600)

// Resolve implements Resolver with QuerySendDetails: the messages sent to the number on the day(s)
// since the attempt, looked up by the OutId the send carried. Aliyun lists a message as soon as it
// accepted it (SendStatus 1, waiting for the report), so "not found" is reliable.
func (a *AliyunSMS) Resolve(ctx context.Context, n Notice, since time.Time) (Result, bool, error) {
	d, err := a.lookup(ctx, n, since)
	if err != nil || d == nil {
		return Result{}, false, err
	}
	return Result{Provider: ProviderAliyun}, true, nil
}

// QueryStatus implements StatusQuerier with QuerySendDetails: SendStatus 3 is received, 2 failed,
// 1 still waiting for the handset's report (not found yet).
func (a *AliyunSMS) QueryStatus(ctx context.Context, n Notice, since time.Time) (Receipt, bool, error) {
	d, err := a.lookup(ctx, n, since)
	if err != nil || d == nil || (d.SendStatus != 2 && d.SendStatus != 3) {
		return Receipt{}, false, err
	}
	at, perr := time.ParseInLocation("2006-01-02 15:04:05", d.ReceiveDate, aliyunDay)
	if perr != nil {
		at = time.Now()
	}
	return Receipt{Provider: ProviderAliyun, Recipient: n.Phone, Delivered: d.SendStatus == 3, Code: d.ErrCode,
		Detail: "QuerySendDetails", ReportedAt: at}, true, nil
}

// lookup finds the message sent for n.DeliveryID (its OutId) since a time; nil when Aliyun has none.
func (a *AliyunSMS) lookup(ctx context.Context, n Notice, since time.Time) (*dysmsapi.SmsSendDetailDTO, error) {
	phone := strings.TrimSpace(n.Phone)
	if phone == "" {
		return nil, nil
	}
	client, err := a.client(ctx)
	if err != nil {
		return nil, err
	}
	s := since.In(aliyunDay)
	today := time.Now().In(aliyunDay).Format("20060102")
	for day := time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, aliyunDay); day.Format("20060102") <= today; day = day.AddDate(0, 0, 1) {
		for page := 1; ; page++ {
			req := dysmsapi.CreateQuerySendDetailsRequest()
			req.Scheme = a.scheme
			req.Domain = a.domain
			req.PhoneNumber = phone
			req.SendDate = day.Format("20060102")
			req.PageSize = requests.NewInteger(50)
			req.CurrentPage = requests.NewInteger(page)
			resp, err := client.QuerySendDetails(req)
			if err != nil {
				return nil, aliyunError(err)
			}
			if resp.Code != "OK" {
				return nil, newSendError(ProviderAliyun, resp.Code, resp.Message, classifyAliyun(resp.Code))
			}
			details := resp.SmsSendDetailDTOs.SmsSendDetailDTO
			for i := range details {
				if details[i].OutId == n.DeliveryID {
					return &details[i], nil
				}
			}
			if len(details) < 50 {
				break
			}
		}
	}
	return nil, nil
}

// ctxTransport binds one call's context to the SDK's requests, which it builds without one. The
// SDK's own read timeout still applies: http.Client signals it through Request.Cancel, which
// WithContext keeps.
type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(r.WithContext(t.ctx))
}

func (a *AliyunSMS) client(ctx context.Context) (*dysmsapi.Client, error) {
	conf := sdk.NewConfig()
	// The engine owns retries; an SDK retry would resend the SMS, as Aliyun does not dedupe on OutId.
	conf.AutoRetry = false
	// A RoundTripper that is not an *http.Transport also stops the SDK from mutating the shared pool.
	conf.Transport = ctxTransport{ctx: ctx, base: a.transport}
	cred := &credentials.AccessKeyCredential{AccessKeyId: a.cfg.AccessKeyID, AccessKeySecret: a.cfg.AccessKeySecret}
	c, err := dysmsapi.NewClientWithOptions(a.cfg.Region, conf, cred)
	if err != nil {
		return nil, fmt.Errorf("aliyun sms: new client: %w", err)
	}
	return c, nil
}

// Send sends one SMS with OutId = DeliveryID, which Aliyun echoes in its receipts.
func (a *AliyunSMS) Send(ctx context.Context, n Notice) (Result, error) {
	phone := strings.TrimSpace(n.Phone)
	if phone == "" {
		return Result{}, &SendError{Provider: ProviderAliyun, Code: "no_phone",
			Message: "recipient has no phone number", Class: Permanent}
	}
	code, values := aliyunTemplate(a.cfg, n)
	params, err := json.Marshal(values)
	if err != nil {
		return Result{}, fmt.Errorf("aliyun sms: encode template params: %w", err)
	}
	client, err := a.client(ctx)
	if err != nil {
		return Result{}, err
	}
	req := dysmsapi.CreateSendSmsRequest()
	req.Scheme = a.scheme
	req.Domain = a.domain
	req.PhoneNumbers = phone
	req.SignName = a.cfg.SignName
	req.TemplateCode = code
	req.TemplateParam = string(params)
	req.OutId = n.DeliveryID

	resp, err := client.SendSms(req)
	if err != nil {
		return Result{}, aliyunError(err)
	}
	if resp.Code != "OK" {
		se := newSendError(ProviderAliyun, resp.Code, resp.Message, classifyAliyun(resp.Code))
		se.RetryAfter = aliyunRetryAfter(resp.Code)
		return Result{}, se
	}
	return Result{Provider: ProviderAliyun, ProviderID: resp.BizId}, nil
}

// aliyunError classifies an SDK error. Only codes and messages are kept: the errors' own strings
// include the signed request URL (phone number, access key id) and response headers.
func aliyunError(err error) error {
	var serverErr *alierr.ServerError
	if errors.As(err, &serverErr) {
		code := serverErr.ErrorCode()
		if code == "" {
			return newSendError(ProviderAliyun, fmt.Sprintf("http_%d", serverErr.HttpStatus()),
				"unexpected response", httpStatusClass(serverErr.HttpStatus()))
		}
		se := newSendError(ProviderAliyun, code, serverErr.Message(), classifyAliyun(code))
		se.RetryAfter = aliyunRetryAfter(code)
		return se
	}
	var clientErr *alierr.ClientError
	if errors.As(err, &clientErr) {
		class := Transient
		code := clientErr.ErrorCode()
		if code == alierr.InvalidParamErrorCode || code == alierr.MissingParamErrorCode {
			class = Permanent
		}
		msg := clientErr.Message()
		orig := clientErr.OriginError()
		if orig != nil {
			msg += ": " + transportCause(orig)
		}
		se := newSendError(ProviderAliyun, code, msg, class)
		// A request that was never written (bad parameters, refused connection) cannot have been
		// accepted; anything cut off on the way can.
		se.InDoubt = class == Transient && (orig == nil || transportUnsure(orig))
		return se
	}
	return transportError(ProviderAliyun, err)
}

// aliyunRetryAfter is how long a per-number flow control lasts (Aliyun's defaults for
// notifications: one a minute, five an hour, ten a day for the same number).
func aliyunRetryAfter(code string) time.Duration {
	switch code {
	case "isv.BUSINESS_LIMIT_CONTROL":
		return time.Hour
	case "isv.DAY_LIMIT_CONTROL":
		return 24 * time.Hour
	}
	return 0
}

// classifyAliyun maps an Aliyun SMS code to an ErrorClass. Unknown isv.* codes are about this
// message or account (bad number, template, signature) and permanent; anything else unknown is
// assumed to be the platform and retried.
func classifyAliyun(code string) ErrorClass {
	switch code {
	// Per number: this notice waits, the channel goes on.
	case "isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL":
		return Throttled
	// Account-wide until someone pays: pause the channel instead of dead-lettering every notice.
	case "isv.AMOUNT_NOT_ENOUGH", "isv.OUT_OF_SERVICE":
		return Quota
	case "isp.SYSTEM_ERROR":
		return Transient
	// Credentials and permissions do not fix themselves.
	case "SignatureDoesNotMatch", "IncompleteSignature", "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive":
		return Permanent
	}
	switch {
	case strings.HasPrefix(code, "Throttling"):
		return Transient
	case strings.HasPrefix(code, "isv."):
		return Permanent
	}
	return Transient
}
