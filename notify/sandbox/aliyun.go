package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
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
	if action := p.Get("Action"); action != "SendSms" {
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
		allDup = allDup && dup
	}
	if allDup {
		bizID = first.ProviderID
	}
	writeJSON(w, http.StatusOK, aliReply{Code: "OK", Message: "OK", BizID: bizID, RequestID: requestID()})
}
