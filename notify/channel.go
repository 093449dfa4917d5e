package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Channels a policy can ask for.
const (
	ChannelWeChat = "wechat"
	ChannelSMS    = "sms"
)

// Notice is the content of one message to one recipient. Providers render it into their own
// template (WeChat template data, SMS template parameters); nothing provider-specific lives here.
type Notice struct {
	DeliveryID  string // provider-side idempotency id: WeChat ClientMsgID, Tencent SessionContext, Aliyun OutId
	OpenID      string // WeChat recipient
	Phone       string // SMS recipient
	FirmName    string
	PolicyTitle string
	Amount      string // already formatted, e.g. "12,345.00元"; empty when the policy has no amount
	Deadline    string
	URL         string // link to the enterprise page
	// Policies is how many policies the notice announces: 1, or more for a digest, whose
	// PolicyTitle, Amount and Deadline then summarise all of them.
	Policies int
	// Kind is what the notice announces: empty (or KindMatched) for matches, else a payout step
	// (KindPublicized, KindPaid, KindFailed). Senders pick the template of the kind.
	Kind string
	// Short values written to fit one 20-character field of today's WeChat templates
	// (content.go): Summary ("4项政策合计22,171.26元"), Status ("已拨付到账"), Date (公示截止,
	// 到账 or 结果 date), Action (what to do next) and Reason (why a payment failed).
	Summary, Status, Date, Action, Reason string
}

// Result is what a provider returns for an accepted message.
type Result struct {
	Provider   string // "wechat", "tencent", "aliyun"
	ProviderID string // WeChat msgid, Tencent SerialNo, Aliyun BizId
}

// ErrorClass says what a sender should do after a failed send.
type ErrorClass int

const (
	// Transient: retry later with backoff (system busy, 5xx, timeouts).
	Transient ErrorClass = iota
	// Quota: the channel is out of quota or rate-limited; pause it without burning retries.
	Quota
	// Permanent: this notice can never be delivered on this channel/provider; dead-letter it.
	Permanent
	// Fallback: permanent for WeChat for this recipient (not following, rejected template, bad or
	// missing openid): send by SMS instead.
	Fallback
	// Throttled: the provider's per-recipient limit (same number too often): try this notice again
	// later without using up an attempt; the provider and the channel are fine.
	Throttled
)

func (c ErrorClass) String() string {
	switch c {
	case Transient:
		return "transient"
	case Quota:
		return "quota"
	case Permanent:
		return "permanent"
	case Fallback:
		return "fallback"
	case Throttled:
		return "throttled"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// SendError is a classified provider failure.
type SendError struct {
	Provider string
	Code     string // provider error code as text, e.g. "43004", "LimitExceeded.PhoneNumberDailyLimit"
	Message  string
	Class    ErrorClass
	// InDoubt: the request may have reached the provider and been accepted (a timeout, a connection
	// cut after the request was written, an unreadable answer). Such a notice is never handed to
	// another provider before the first one has been asked (see Resolver).
	InDoubt bool
	// RetryAfter, when set, is how long the provider asks to wait (Throttled, Quota).
	RetryAfter time.Duration
}

func (e *SendError) Error() string {
	s := fmt.Sprintf("%s: %s %s (%s)", e.Provider, e.Code, e.Message, e.Class)
	if e.InDoubt {
		s += " [outcome unknown]"
	}
	return s
}

// Sender sends one notice through one provider. Implementations must pass Notice.DeliveryID as the
// provider's idempotency/echo id and return *SendError for every provider-side failure.
type Sender interface {
	Name() string
	Send(ctx context.Context, n Notice) (Result, error)
}

// Idempotent is implemented by senders whose provider drops a repeat of the same DeliveryID for
// the same recipient (WeChat's client_msg_id, the sandbox): after an attempt whose outcome is
// unknown, sending again is safe.
type Idempotent interface {
	Idempotent() bool
}

// Resolver is implemented by senders that can ask their provider whether a message for
// n.DeliveryID was accepted at or after since (Aliyun QuerySendDetails by OutId, Tencent
// PullSmsSendStatusByPhoneNumber by SessionContext). accepted=false is only as good as the
// provider's records: Tencent lists a message once its status report arrived.
type Resolver interface {
	Resolve(ctx context.Context, n Notice, since time.Time) (res Result, accepted bool, err error)
}

// transportUnsure reports whether a transport error leaves the outcome of a request unknown. Only a
// refused connection or a failed name lookup proves that nothing reached the provider.
func transportUnsure(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	msg := err.Error()
	return !strings.Contains(msg, "connection refused") && !strings.Contains(msg, "no such host")
}

// transportError is the one classification of a failure that carries no provider code, for every
// provider: the request failed on the way (refused, reset, timed out, cancelled) or the SDK failed
// in a way it does not name. Both are retried (Transient): a notice must not be dead-lettered
// because a connection dropped, and an error nobody recognises is not proof the message can never
// be delivered; the retry budget still ends in the dead-letter log. A network failure other than a
// refused connection leaves the send in doubt (it may have been accepted).
func transportError(provider string, err error) *SendError {
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		se := newSendError(provider, "network", transportCause(err), Transient)
		se.InDoubt = transportUnsure(err)
		return se
	}
	return newSendError(provider, "client", transportCause(err), Transient)
}

// httpStatusClass classifies an HTTP answer without a provider code (a gateway's error page):
// 5xx and 429 are the platform and retried; any other status is this request and will not change.
func httpStatusClass(status int) ErrorClass {
	if status >= 500 || status == http.StatusTooManyRequests || status == 0 {
		return Transient
	}
	return Permanent
}

// transportCause drops the *url.Error wrapper, whose text is the full signed request URL.
func transportCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// pooledTransport is the HTTP transport of every sender: a copy of the default with room for as
// many idle connections to the provider as the notifier has concurrent sends.
func pooledTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	return t
}
