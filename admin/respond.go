package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"

	"github.com/policypush/policypush/store"
)

// handler is the shape of every console handler: the principal was authenticated and holds the
// route's permission; scope checks are the handler's job.
type handler func(w http.ResponseWriter, r *http.Request, p *Principal)

// route is one entry of the route table. The table drives the mux, the OpenAPI document and the
// authorization test matrix, so a route cannot exist without a declared permission.
type route struct {
	method, path string
	perm         Perm
	summary      string
	query        []string // documented query parameters
	body         string   // documented request body (JSON object fields), empty when none
	h            handler
}

func (rt route) api() bool { return strings.HasPrefix(rt.path, "/api/") }

// pattern is the route's http.ServeMux pattern.
func (rt route) pattern() string { return rt.method + " " + rt.path }

func (rt route) unsafe() bool {
	return rt.method != http.MethodGet && rt.method != http.MethodHead
}

// wrap authenticates, authorizes and guards against cross-site requests before the handler runs.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 2<<20)
		if rt.perm == permSigned { // a provider's callback: no session, no browser; the handler checks the signature
			rt.h(w, r, nil)
			return
		}
		defer s.opts.Gate.Enter()() // the pipeline waits for people's requests (stage.Gate)
		r, cancel := s.withDeadline(rt, r)
		defer cancel()
		p := s.authenticate(r)
		if p == nil && r.Context().Err() != nil { // the session could not be read in time: not "signed out"
			s.fail(w, r, http.StatusServiceUnavailable, "数据库暂时无法访问，请稍后重试", r.Context().Err())
			return
		}
		if rt.unsafe() && (p == nil || p.viaSession) && !sameOrigin(r) {
			s.fail(w, r, http.StatusForbidden, "请求来自其他网站，已拒绝（跨站请求）", nil)
			return
		}
		if rt.perm != permPublic {
			if p == nil {
				if rt.api() {
					s.fail(w, r, http.StatusUnauthorized, "请先登录（POST /api/v1/session）或使用 API 令牌（Authorization: Bearer …）", nil)
					return
				}
				if r.Method == http.MethodGet {
					http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				s.fail(w, r, http.StatusUnauthorized, "登录已过期，请重新登录", nil)
				return
			}
			if !p.Can(rt.perm) {
				s.fail(w, r, http.StatusForbidden, "您的角色（"+p.RoleLabel()+"）无权执行此操作", nil)
				return
			}
			if rt.unsafe() && p.viaSession && !csrfOK(r, p) {
				s.fail(w, r, http.StatusForbidden, "页面已过期（CSRF 校验失败），请刷新页面后重试；API 调用请带上 X-CSRF-Token 头", nil)
				return
			}
		}
		rt.h(w, r, p)
	})
}

// apiError is the body of every JSON error: a code a program can switch on and a message a
// person can act on.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

var statusCodes = map[int]string{
	http.StatusBadRequest: "invalid_request", http.StatusUnauthorized: "unauthenticated", http.StatusForbidden: "forbidden",
	http.StatusNotFound: "not_found", http.StatusConflict: "conflict", http.StatusTooManyRequests: "too_many_requests",
	http.StatusUnprocessableEntity: "invalid_content", http.StatusInternalServerError: "internal",
	http.StatusServiceUnavailable: "unavailable", http.StatusGone: "expired", http.StatusRequestEntityTooLarge: "too_large",
}

// fail reports an error as JSON on API paths and as a page elsewhere. err (logged, never shown)
// is the cause of a 5xx.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	status, msg, code, ended := s.timedOut(r, status, msg, err)
	switch {
	case ended && code == "canceled":
		s.opts.Log.Info("request cancelled: the client went away", "path", r.URL.Path, "err", err)
		return
	case ended:
		s.opts.Log.Warn("request past console.query_timeout: cancelled", "path", r.URL.Path, "timeout", s.opts.QueryTimeout, "err", err)
		w.Header().Set("Retry-After", "5")
	case err != nil:
		s.opts.Log.Error(msg, "path", r.URL.Path, "err", err)
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		var e apiError
		e.Error.Code, e.Error.Message = statusCodes[status], msg
		if code != "" {
			e.Error.Code = code
		}
		if e.Error.Code == "" {
			e.Error.Code = "error"
		}
		writeJSON(w, status, e)
		return
	}
	s.page(w, r, nil, status, "error", "出错了", map[string]any{"Status": status, "Message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}

// pageOf is the page handler over a loader, which reads what a list page and its API twin show
// from the request in the principal's scope: the page name titled title.
func pageOf[T any](s *Server, load func(*http.Request, *Principal) (T, error), name, title string) handler {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) {
		v, err := load(r, p)
		s.show(w, r, p, err, name, title, v)
	}
}

// apiOf is the API twin of pageOf: what load read, as JSON.
func apiOf[T any](s *Server, load func(*http.Request, *Principal) (T, error)) handler {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) {
		v, err := load(r, p)
		s.answer(w, r, v, err)
	}
}

// show ends a page handler: the page name titled title with data, or err as an error page (see
// failErr): what answer is to an API handler.
func (s *Server) show(w http.ResponseWriter, r *http.Request, p *Principal, err error, name, title string, data any) {
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, name, title, data)
}

// answer ends an API handler: v as JSON, or err as the API's error answer (see failErr).
func (s *Server) answer(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// readJSON reads the request body into dst (decodeJSON); a body it cannot read is answered 400,
// and readJSON returns false.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	if err := decodeJSON(r, dst); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error(), nil)
		return false
	}
	return true
}

// decodeJSON reads a JSON request body strictly: exactly one value of the destination's shape (an
// object for a struct or map, an array for a slice — never null), unknown fields an error naming
// them, nothing but white space after the value.
func decodeJSON(r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("请求体须为 JSON（Content-Type: application/json），收到 %s", ct)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("读取请求体失败：%w", err)
	}
	return decodeStrict(body, dst)
}

// decodeStrict is decodeJSON's check of the bytes.
func decodeStrict(body []byte, dst any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errors.New("请求体为空，须为 JSON 对象")
	}
	want, what := byte('{'), "对象"
	if t := reflect.TypeOf(dst); t != nil && t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Slice {
		want, what = '[', "数组"
	}
	if trimmed[0] != want {
		return fmt.Errorf("请求体须为 JSON %s，收到以 %q 开头的内容", what, firstToken(trimmed))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("请求体不是有效的 JSON：%v", err)
	}
	if off := dec.InputOffset(); off != int64(len(trimmed)) {
		return fmt.Errorf("请求体在第 %d 字节处的 JSON 值之后还有内容（%q）；只能有一个 JSON 值", off, firstToken(trimmed[off:]))
	}
	return nil
}

// firstToken is the start of b, for an error message.
func firstToken(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 16 {
		b = b[:16]
	}
	return string(b)
}

// redirect ends a form post (post → redirect → get) with a message code the page shows.
func redirect(w http.ResponseWriter, r *http.Request, to, msg string) {
	if msg != "" {
		sep := "?"
		if strings.Contains(to, "?") {
			sep = "&"
		}
		to += sep + "msg=" + url.QueryEscape(msg)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// flashes are the messages a redirect may ask a page to show; the query carries only the key,
// so nobody can make the console display text of their choosing.
var flashes = map[string]string{
	"saved": "已保存", "note": "跟进记录已添加", "submitted": "已提交审核", "approved": "已审核通过",
	"rejected": "已退回", "published": "已发布，匹配在后台重新计算", "retired": "已下线", "resent": "已重新发送",
	"user": "账号已创建", "token": "令牌已创建：请立即复制，离开本页后不再显示", "revoked": "令牌已吊销", "unlocked": "已清除该账号的登录失败记录，可立即再试",
	"logout": "已退出登录", "confirmed": "已确认，感谢您的回复", "objected": "异议已提交，工作人员会与您联系",
	"unsubscribed": "已退订", "created": "草稿已创建",
}

// httpError is a validation or authorization failure with the status to answer and a message a
// person can act on.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &httpError{http.StatusForbidden, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &httpError{http.StatusConflict, fmt.Sprintf(format, args...)}
}

// failErr answers an error from validation, authorization or the store.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	var jump *store.JumpTooFarError
	switch {
	case errors.As(err, &he):
		s.fail(w, r, he.status, he.msg, nil)
	case errors.As(err, &jump):
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("参数 page=%d 超出可直接跳转的范围（前 %d 条）：请用“下一页”链接翻页（after 参数）",
			jump.Page, store.CountCap), nil)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "没有找到", nil)
	default:
		s.fail(w, r, http.StatusInternalServerError, "数据库暂时无法访问，请稍后重试", err)
	}
}
