package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// aliReply is the RPC response shape of dysmsapi SendSms; errors use the same object.
type aliReply struct {
	Code      string `json:"Code"`
	Message   string `json:"Message"`
	BizID     string `json:"BizId,omitempty"`
	RequestID string `json:"RequestId"`
}

// mainlandRe accepts the forms Aliyun documents for mainland numbers: bare, +86, 0086 or 86.
var mainlandRe = regexp.MustCompile(`^(\+86|0086|86)?1\d{10}$`)

func aliFail(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, aliReply{Code: code, Message: msg, RequestID: requestID()})
}

func (s *Server) serveAliyun(w http.ResponseWriter, r *http.Request) {
	// The legacy SDK puts every RPC parameter in the query; ParseForm also covers form-encoded bodies.
	if err := r.ParseForm(); err != nil {
		aliFail(w, http.StatusBadRequest, "InvalidParameter", "cannot parse parameters")
		return
	}
	p := r.Form
	if p.Get("Signature") == "" || p.Get("AccessKeyId") == "" {
		aliFail(w, http.StatusBadRequest, "IncompleteSignature", "the request is not signed")
		return
	}
	switch action := p.Get("Action"); action {
	case "SendSms":
	case "QuerySendDetails":
		s.aliQuery(w, p)
		return
	default:
		aliFail(w, http.StatusNotFound, "InvalidAction.NotFound", fmt.Sprintf("action %q is not served by the sandbox", action))
		return
	}
	f := s.drawFault(ProviderAliyun)
	if !s.applyFault(r, f) {
		http.Error(w, "sandbox: simulated timeout", http.StatusGatewayTimeout)
		return
	}
	switch {
	case f.code == CodeHTTP5xx:
		http.Error(w, "sandbox: injected server error", http.StatusServiceUnavailable)
		return
	case strings.HasPrefix(f.code, "Throttling"):
		// Gateway flow control comes back as an HTTP error, unlike the business codes below.
		aliFail(w, http.StatusBadRequest, f.code, "sandbox injected error")
		return
	case f.code != "":
		aliFail(w, http.StatusOK, f.code, "sandbox injected error")
		return
	}

	phones := strings.Split(p.Get("PhoneNumbers"), ",")
	for _, ph := range phones {
		if !mainlandRe.MatchString(ph) {
			aliFail(w, http.StatusOK, "isv.MOBILE_NUMBER_ILLEGAL", "invalid mobile number")
			return
		}
	}
	var params map[string]string
	switch {
	case p.Get("SignName") == "":
		aliFail(w, http.StatusOK, "isv.SMS_SIGNATURE_ILLEGAL", "sign name is empty")
		return
	case p.Get("TemplateCode") == "":
		aliFail(w, http.StatusOK, "isv.SMS_TEMPLATE_ILLEGAL", "template code is empty")
		return
	case p.Get("TemplateParam") != "" && json.Unmarshal([]byte(p.Get("TemplateParam")), &params) != nil:
		aliFail(w, http.StatusOK, "isv.INVALID_JSON_PARAM", "TemplateParam is not a JSON object of strings")
		return
	}

	// One BizId per request; a request whose numbers were all accepted before under the same OutId
	// gets the original BizId back.
	bizID := fmt.Sprintf("%d^0", s.newID())
	var first Record
	allDup := true
	for i, ph := range phones {
		rec, dup, err := s.store.accept(Record{
			Provider:   ProviderAliyun,
			DeliveryID: p.Get("OutId"),
			To:         ph,
			Template:   p.Get("TemplateCode"),
			Params:     params,
			ProviderID: bizID,
			At:         time.Now().UTC(),
		})
		if err != nil {
			aliFail(w, http.StatusOK, "isp.SYSTEM_ERROR", "sandbox could not record the message")
			return
		}
		if i == 0 {
			first = rec
		}
		if !dup {
			s.receipts.accepted(rec)
		}
		allDup = allDup && dup
	}
	if allDup {
		bizID = first.ProviderID
	}
	writeJSON(w, http.StatusOK, aliReply{Code: "OK", Message: "OK", BizID: bizID, RequestID: requestID()})
}

type aliDetail struct {
	ErrCode      string `json:"ErrCode"`
	TemplateCode string `json:"TemplateCode"`
	OutID        string `json:"OutId"`
	ReceiveDate  string `json:"ReceiveDate"`
	SendDate     string `json:"SendDate"`
	PhoneNum     string `json:"PhoneNum"`
	Content      string `json:"Content"`
	SendStatus   int64  `json:"SendStatus"`
}

// aliQuery serves QuerySendDetails: what was sent to one number on one day (Beijing time), a page
// at a time. The sandbox reports every accepted message as received (SendStatus 3).
func (s *Server) aliQuery(w http.ResponseWriter, p url.Values) {
	phone, day := p.Get("PhoneNumber"), p.Get("SendDate")
	size, _ := strconv.Atoi(p.Get("PageSize"))
	page, _ := strconv.Atoi(p.Get("CurrentPage"))
	if phone == "" || len(day) != 8 || size < 1 || size > 50 || page < 1 {
		aliFail(w, http.StatusOK, "isv.INVALID_PARAMETERS", "PhoneNumber, SendDate (yyyyMMdd), PageSize (1-50) and CurrentPage are required")
		return
	}
	var all []aliDetail
	for _, rec := range s.store.sentTo(ProviderAliyun, phone) {
		at := rec.At.In(beijing)
		if at.Format("20060102") != day {
			continue
		}
		all = append(all, aliDetail{ErrCode: "DELIVERED", TemplateCode: rec.Template, OutID: rec.DeliveryID,
			ReceiveDate: at.Format(providerTimeLayout), SendDate: at.Format(providerTimeLayout), PhoneNum: rec.To, SendStatus: 3})
	}
	lo := min((page-1)*size, len(all))
	hi := min(lo+size, len(all))
	writeJSON(w, http.StatusOK, map[string]any{"Code": "OK", "Message": "OK", "RequestId": requestID(),
		"TotalCount": strconv.Itoa(len(all)), "SmsSendDetailDTOs": map[string]any{"SmsSendDetailDTO": all[lo:hi]}})
}
