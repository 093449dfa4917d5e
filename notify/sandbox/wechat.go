package sandbox

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wechatState holds the issued access tokens. Every token stays valid until revoked, as on the real
// API where an old token overlaps the new one for a while.
type wechatState struct {
	mu          sync.Mutex
	tokens      map[string]bool
	stable      string
	sends       int
	expireEvery int
}

type wxReply struct {
	ErrCode int64  `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
	MsgID   int64  `json:"msgid,omitempty"`
}

func (s *Server) serveWeChat(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/cgi-bin/token":
		s.wxToken(w, r)
	case "/cgi-bin/stable_token":
		s.wxStableToken(w, r)
	case "/cgi-bin/message/template/send":
		s.wxTemplateSend(w, r)
	default:
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 48001, ErrMsg: "api unauthorized (sandbox)"})
	}
}

type wxTokenReply struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

func (s *Server) wxToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if reply, ok := checkCredentials(q.Get("grant_type"), q.Get("appid"), q.Get("secret")); !ok {
		writeJSON(w, http.StatusOK, reply)
		return
	}
	writeJSON(w, http.StatusOK, wxTokenReply{AccessToken: s.wx.issue(), ExpiresIn: 7200})
}

// wxStableToken serves the stable-token API (config.UseStableAK): the same token until it is revoked
// or force_refresh asks for a new one.
func (s *Server) wxStableToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 47001, ErrMsg: "data format error"})
		return
	}
	if reply, ok := checkCredentials(req.GrantType, req.AppID, req.Secret); !ok {
		writeJSON(w, http.StatusOK, reply)
		return
	}
	writeJSON(w, http.StatusOK, wxTokenReply{AccessToken: s.wx.stableToken(req.ForceRefresh), ExpiresIn: 7200})
}

func checkCredentials(grantType, appID, secret string) (wxReply, bool) {
	switch {
	case grantType != "client_credential":
		return wxReply{ErrCode: 40002, ErrMsg: "invalid grant_type"}, false
	case appID == "":
		return wxReply{ErrCode: 41002, ErrMsg: "appid missing"}, false
	case secret == "":
		return wxReply{ErrCode: 41004, ErrMsg: "appsecret missing"}, false
	}
	return wxReply{}, true
}

func (st *wechatState) issue() string {
	tok := "SANDBOX_" + randomHex(24)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.tokens[tok] = true
	return tok
}

func (st *wechatState) stableToken(force bool) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if force || !st.tokens[st.stable] {
		st.stable = "SANDBOX_STABLE_" + randomHex(24)
		st.tokens[st.stable] = true
	}
	return st.stable
}

// admit checks the token of a send and counts the send. It answers 40001 for unknown or revoked
// tokens and, every expireEvery sends, revokes a good token to force the client to refresh.
func (st *wechatState) admit(token string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.tokens[token] {
		return false
	}
	st.sends++
	if st.expireEvery > 0 && st.sends%st.expireEvery == 0 {
		delete(st.tokens, token)
		return false
	}
	return true
}

func (st *wechatState) revoke(token string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.tokens, token)
}

type wxTemplateMessage struct {
	ToUser      string `json:"touser"`
	TemplateID  string `json:"template_id"`
	URL         string `json:"url"`
	ClientMsgID string `json:"client_msg_id"`
	Data        map[string]struct {
		Value string `json:"value"`
	} `json:"data"`
}

func (s *Server) wxTemplateSend(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 43002, ErrMsg: "require POST method"})
		return
	}
	f := s.drawFault(ProviderWeChat)
	if !s.applyFault(r, f) {
		http.Error(w, "sandbox: simulated timeout", http.StatusGatewayTimeout)
		return
	}
	token := r.URL.Query().Get("access_token")
	if !s.wx.admit(token) {
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 40001, ErrMsg: "invalid credential, access_token is invalid or not latest"})
		return
	}
	if f.code != "" {
		s.wxInjected(w, token, f.code)
		return
	}
	var msg wxTemplateMessage
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 47001, ErrMsg: "data format error"})
		return
	}
	switch {
	case msg.ToUser == "" || !strings.HasPrefix(msg.ToUser, "o"):
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 40003, ErrMsg: "invalid openid"})
		return
	case strings.Contains(msg.ToUser, "unfollow"):
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 43004, ErrMsg: "require subscribe"})
		return
	case msg.TemplateID == "":
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 40037, ErrMsg: "invalid template_id"})
		return
	case len(msg.Data) == 0:
		writeJSON(w, http.StatusOK, wxReply{ErrCode: 47003, ErrMsg: "argument invalid! data is empty"})
		return
	}
	params := make(map[string]string, len(msg.Data))
	for k, v := range msg.Data {
		params[k] = v.Value
	}
	shown, truncated := wechatDisplay(params)
	rec, dup, err := s.store.accept(Record{
		Provider:   ProviderWeChat,
		DeliveryID: msg.ClientMsgID,
		To:         msg.ToUser,
		Template:   msg.TemplateID,
		Params:     params,
		Shown:      shown,
		Truncated:  truncated,
		ProviderID: strconv.FormatInt(s.newID(), 10),
		At:         time.Now().UTC(),
	})
	if err != nil {
		writeJSON(w, http.StatusOK, wxReply{ErrCode: -1, ErrMsg: "system error"})
		return
	}
	if !dup {
		s.receipts.accepted(rec)
	}
	msgID, _ := strconv.ParseInt(rec.ProviderID, 10, 64)
	writeJSON(w, http.StatusOK, wxReply{ErrCode: 0, ErrMsg: "ok", MsgID: msgID})
}

// wxInjected answers with an injected code. Token errors also revoke the token, so that the
// client's refresh-and-retry path is exercised exactly as with a real expiry.
func (s *Server) wxInjected(w http.ResponseWriter, token, code string) {
	if code == CodeHTTP5xx {
		http.Error(w, "sandbox: injected server error", http.StatusServiceUnavailable)
		return
	}
	n, err := strconv.ParseInt(code, 10, 64)
	if err != nil {
		writeJSON(w, http.StatusOK, wxReply{ErrCode: -1, ErrMsg: "system error (sandbox: bad fault code " + strconv.Quote(code) + ")"})
		return
	}
	if n == 40001 || n == 42001 || n == 40014 {
		s.wx.revoke(token)
	}
	writeJSON(w, http.StatusOK, wxReply{ErrCode: n, ErrMsg: "sandbox injected error"})
}

// wechatFieldLimit is how many characters WeChat shows of a template field since 2023-05-04.
const wechatFieldLimit = 20

// wechatDisplay is what a firm sees of a template message today: first and remark are dropped,
// line breaks folded, and every value longer than 20 characters cut with an ellipsis (WeChat cuts,
// it does not reject). It returns the shown values and the keys it cut, sorted.
func wechatDisplay(params map[string]string) (map[string]string, []string) {
	shown := make(map[string]string, len(params))
	var cut []string
	for k, v := range params {
		if k == "first" || k == "remark" {
			continue
		}
		v = strings.Join(strings.Fields(v), " ")
		if r := []rune(v); len(r) > wechatFieldLimit {
			v = string(r[:wechatFieldLimit-1]) + "…"
			cut = append(cut, k)
		}
		shown[k] = v
	}
	slices.Sort(cut)
	return shown, cut
}
