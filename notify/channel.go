package notify

import (
	"context"
	"fmt"
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
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// SendError is a classified provider failure.
type SendError struct {
	Provider string
	Code     string // provider error code as text, e.g. "43004", "LimitExceeded.PhoneNumberDailyLimit"
	Message  string
	Class    ErrorClass
}

func (e *SendError) Error() string {
	return fmt.Sprintf("%s: %s %s (%s)", e.Provider, e.Code, e.Message, e.Class)
}

// Sender sends one notice through one provider. Implementations must pass Notice.DeliveryID as the
// provider's idempotency/echo id and return *SendError for every provider-side failure.
type Sender interface {
	Name() string
	Send(ctx context.Context, n Notice) (Result, error)
}
