package notify

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	alierr "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	tcerr "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
)

// The two SMS providers classify the same failure the same way (issue 13: an unrecognised error
// was retried for Aliyun and dead-lettered for Tencent; a gateway's 4xx page likewise).
func TestSMSProvidersClassifyTheSameFailureAlike(t *testing.T) {
	t.Parallel()
	dial := &url.Error{Op: "Post", URL: "https://sms.example/?PhoneNumbers=13800138000", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	reset := &url.Error{Op: "Post", URL: "https://sms.example/", Err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}
	page := func(status int, text string) (aliyun, tencent error) {
		return alierr.NewServerError(status, "<html>"+text+"</html>", ""),
			tcerr.NewTencentCloudSDKError("ClientError.HttpStatusCodeError", "Request fail with http status code: "+text+", with body: <html></html>", "")
	}
	type want struct {
		class   ErrorClass
		inDoubt bool
	}
	cases := []struct {
		name            string
		aliyun, tencent error
		want            want
	}{
		{"connection refused", dial, dial, want{Transient, false}},
		{"connection reset", reset, reset, want{Transient, true}},
		{"deadline", context.DeadlineExceeded, context.DeadlineExceeded, want{Transient, true}},
		{"cancelled", context.Canceled, context.Canceled, want{Transient, true}},
		{"unrecognised", errors.New("sdk: unexpected state"), errors.New("sdk: unexpected state"), want{Transient, false}},
	}
	for _, p := range []struct {
		status int
		text   string
		class  ErrorClass
	}{{502, "502 Bad Gateway", Transient}, {503, "503 Service Unavailable", Transient}, {429, "429 Too Many Requests", Transient},
		{403, "403 Forbidden", Permanent}, {404, "404 Not Found", Permanent}} {
		a, tc := page(p.status, p.text)
		cases = append(cases, struct {
			name            string
			aliyun, tencent error
			want            want
		}{"http " + p.text, a, tc, want{p.class, false}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for provider, err := range map[string]error{ProviderAliyun: aliyunError(tc.aliyun), ProviderTencent: tencentError(tc.tencent)} {
				var se *SendError
				if !errors.As(err, &se) {
					t.Fatalf("%s: %v is not a SendError", provider, err)
				}
				if got := (want{se.Class, se.InDoubt}); got != tc.want {
					t.Errorf("%s: class %v in doubt %t, want %v %t (%s)", provider, se.Class, se.InDoubt, tc.want.class, tc.want.inDoubt, se.Message)
				}
				if strings.Contains(se.Message, "sms.example") {
					t.Errorf("the message keeps the signed URL: %q", se.Message)
				}
			}
		})
	}
}
