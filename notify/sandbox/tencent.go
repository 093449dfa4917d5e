package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Shapes of the Tencent Cloud API v3 responses the SDK parses.
type tcError struct {
	Code    string `json:"Code"`
	Message string `json:"Message"`
}

type tcSendStatus struct {
	SerialNo       string `json:"SerialNo"`
	PhoneNumber    string `json:"PhoneNumber"`
	Fee            int    `json:"Fee"`
	SessionContext string `json:"SessionContext"`
	Code           string `json:"Code"`
	Message        string `json:"Message"`
	IsoCode        string `json:"IsoCode"`
}

type tcResponse struct {
	Response struct {
		Error         *tcError       `json:"Error,omitempty"`
		SendStatusSet []tcSendStatus `json:"SendStatusSet,omitempty"`
		RequestID     string         `json:"RequestId"`
	} `json:"Response"`
}

type tcSendSms struct {
	PhoneNumberSet   []string `json:"PhoneNumberSet"`
	SmsSdkAppID      string   `json:"SmsSdkAppId"`
	TemplateID       string   `json:"TemplateId"`
	SignName         string   `json:"SignName"`
	TemplateParamSet []string `json:"TemplateParamSet"`
	SessionContext   string   `json:"SessionContext"`
}

var e164Re = regexp.MustCompile(`^\+[1-9]\d{6,14}$`)

func tcFail(w http.ResponseWriter, code, msg string) {
	var resp tcResponse
	resp.Response.Error = &tcError{Code: code, Message: msg}
	resp.Response.RequestID = requestID()
	writeJSON(w, http.StatusOK, resp)
}

// tcPerNumber reports whether Tencent reports code in SendStatusSet (the call succeeds, the number
// fails) rather than as a request error.
func tcPerNumber(code string) bool {
	for _, p := range []string{"LimitExceeded.", "FailedOperation.", "InvalidParameterValue."} {
		if strings.HasPrefix(code, p) {
			return true
		}
	}
	return false
}

func (s *Server) serveTencent(w http.ResponseWriter, r *http.Request) {
	// The SDK signs with TC3-HMAC-SHA256; a request without it did not come through the SDK.
	if !strings.HasPrefix(r.Header.Get("Authorization"), "TC3-HMAC-SHA256 Credential=") {
		tcFail(w, "AuthFailure.SignatureFailure", "the request signature is missing or malformed")
		return
	}
	switch action := r.Header.Get("X-TC-Action"); action {
	case "SendSms":
	case "PullSmsSendStatusByPhoneNumber":
		s.tcPullStatus(w, r)
		return
	default:
		tcFail(w, "InvalidAction", fmt.Sprintf("action %q is not served by the sandbox", action))
		return
	}
	f := s.drawFault(ProviderTencent)
	if !s.applyFault(r, f) {
		http.Error(w, "sandbox: simulated timeout", http.StatusGatewayTimeout)
		return
	}
	var req tcSendSms
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
		tcFail(w, "FailedOperation.JsonParseFail", "request body is not SendSms JSON")
		return
	}
	switch {
	case f.code == CodeHTTP5xx:
		http.Error(w, "sandbox: injected server error", http.StatusServiceUnavailable)
		return
	case f.code != "" && !tcPerNumber(f.code):
		tcFail(w, f.code, "sandbox injected error")
		return
	case len(req.PhoneNumberSet) == 0:
		tcFail(w, "MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty")
		return
	case req.SmsSdkAppID == "" || req.TemplateID == "":
		tcFail(w, "MissingParameter", "SmsSdkAppId and TemplateId are required")
		return
	}
	params := make(map[string]string, len(req.TemplateParamSet))
	for i, p := range req.TemplateParamSet {
		params[strconv.Itoa(i+1)] = p
	}
	var resp tcResponse
	resp.Response.RequestID = requestID()
	for _, phone := range req.PhoneNumberSet {
		st := tcSendStatus{PhoneNumber: phone, SessionContext: req.SessionContext, IsoCode: "CN"}
		switch {
		case f.code != "":
			st.Code, st.Message = f.code, "sandbox injected error"
		case !e164Re.MatchString(phone):
			st.Code, st.Message = "InvalidParameterValue.IncorrectPhoneNumber", "phone number is not in E.164 form"
		default:
			rec, dup, err := s.store.accept(Record{
				Provider:   ProviderTencent,
				DeliveryID: req.SessionContext,
				To:         phone,
				Template:   req.TemplateID,
				Params:     params,
				ProviderID: fmt.Sprintf("3369:%d", s.newID()),
				At:         time.Now().UTC(),
			})
			if err != nil {
				tcFail(w, "InternalError", "sandbox could not record the message")
				return
			}
			if !dup {
				s.receipts.accepted(rec)
			}
			st.SerialNo, st.Fee, st.Code, st.Message = rec.ProviderID, 1, "Ok", "send success"
		}
		resp.Response.SendStatusSet = append(resp.Response.SendStatusSet, st)
	}
	writeJSON(w, http.StatusOK, resp)
}

type tcPullRequest struct {
	BeginTime   uint64 `json:"BeginTime"`
	EndTime     uint64 `json:"EndTime"`
	Offset      uint64 `json:"Offset"`
	Limit       uint64 `json:"Limit"`
	PhoneNumber string `json:"PhoneNumber"`
	SmsSdkAppID string `json:"SmsSdkAppId"`
}

type tcPullStatus struct {
	UserReceiveTime  uint64 `json:"UserReceiveTime"`
	CountryCode      string `json:"CountryCode"`
	SubscriberNumber string `json:"SubscriberNumber"`
	PhoneNumber      string `json:"PhoneNumber"`
	SerialNo         string `json:"SerialNo"`
	ReportStatus     string `json:"ReportStatus"`
	Description      string `json:"Description"`
	SessionContext   string `json:"SessionContext"`
}

// tcPullStatus serves PullSmsSendStatusByPhoneNumber: the status reports of one number in a time
// range. The sandbox reports every accepted message as received at once.
func (s *Server) tcPullStatus(w http.ResponseWriter, r *http.Request) {
	var req tcPullRequest
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil || req.PhoneNumber == "" {
		tcFail(w, "InvalidParameter", "PhoneNumber, BeginTime and Limit are required")
		return
	}
	var set []tcPullStatus
	for _, rec := range s.store.sentTo(ProviderTencent, req.PhoneNumber) {
		at := uint64(rec.At.Unix())
		if at < req.BeginTime || (req.EndTime > 0 && at > req.EndTime) {
			continue
		}
		set = append(set, tcPullStatus{UserReceiveTime: at, CountryCode: "86", SubscriberNumber: strings.TrimPrefix(rec.To, "+86"),
			PhoneNumber: rec.To, SerialNo: rec.ProviderID, ReportStatus: "SUCCESS", Description: "用户短信送达成功",
			SessionContext: rec.DeliveryID})
	}
	lo := min(int(req.Offset), len(set))
	hi := len(set)
	if req.Limit > 0 {
		hi = min(lo+int(req.Limit), len(set))
	}
	resp := map[string]any{"Response": map[string]any{"PullSmsSendStatusSet": set[lo:hi], "RequestId": requestID()}}
	writeJSON(w, http.StatusOK, resp)
}
