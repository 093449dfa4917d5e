package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// Sign-in, health, status, the public policy page and the sandbox viewer.

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, p *Principal) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reflects database and NATS connectivity (stage.Readiness: the health `policypush status`
// reports too).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request, p *Principal) {
	var nats stage.Checker
	if s.opts.Bus != nil {
		nats = s.opts.Bus
	}
	stage.Readiness(r.Context(), s.opts.DB, nats).ServeHTTP(w, r)
}

func (s *Server) today() time.Time { return rules.Day(s.now(), s.opts.Location) }

// evalDate is the date firms are evaluated on: the running matcher engine's, else the as-of date of
// the latest match run (the demo evaluates its 2022 policies on a 2022 date), or today before the
// first run. The latter is read at most once a minute.
func (s *Server) evalDate(ctx context.Context) (time.Time, error) {
	if s.opts.Matcher != nil {
		if d := s.opts.Matcher.AsOf(); !d.IsZero() {
			return d, nil
		}
	}
	s.evalMu.Lock()
	defer s.evalMu.Unlock()
	if !s.evalAt.IsZero() && s.now().Sub(s.evalAt) < time.Minute {
		return s.evalDay, nil
	}
	asOf, ok, err := store.LatestMatchAsOf(ctx, s.opts.DB)
	switch {
	case err != nil:
		return time.Time{}, err
	case !ok:
		s.evalDay = s.today()
	default:
		s.evalDay = rules.Day(asOf, time.UTC)
	}
	s.evalAt = s.now()
	return s.evalDay, nil
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request, p *Principal) {
	// Counted on the date firms are evaluated on (a 2022 policy set is active on its 2022 date), and
	// for a park manager or district official only over their firms.
	asOf, err := s.evalDate(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	st, err := store.ReadStatus(r.Context(), s.opts.DB, asOf, p.firmScope())
	s.answer(w, r, st, err)
}

// safeNext keeps a post-login redirect on this site. Browsers resolve a Location header after
// dropping tabs and newlines anywhere, trimming leading and trailing control characters and
// spaces, and reading a backslash as a slash; `/%09/evil.example` thus becomes
// `//evil.example`, another site. So a next is accepted only as a plain path: it starts with one
// slash, holds no control character, space or backslash, names no scheme, host or user, and
// none of that appears after percent-decoding either (a later handler may decode once more). Any
// other value gives "/"; sign-in pages are never a target (no loop).
func safeNext(next string) string {
	if !localPath(next) {
		return "/"
	}
	return next
}

// maxNext bounds a redirect target; longer ones are not something the console links to.
const maxNext = 2048

// maxDecode is how many rounds of percent-decoding a next may need.
const maxDecode = 4

func localPath(next string) bool {
	if next == "" || len(next) > maxNext {
		return false
	}
	// Decode until nothing changes: each form must be a plain local path (a decoded space is fine,
	// `?q=a%20b`; a raw one is not). A value still encoded after a few rounds is refused.
	raw := next
	for i := 0; ; i++ {
		if !plainPath(next, i > 0) {
			return false
		}
		dec, err := url.PathUnescape(next)
		if err != nil {
			return false
		}
		if dec == next {
			break
		}
		if i == maxDecode {
			return false
		}
		next = dec
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return false
	}
	p := path.Clean(u.Path)
	return p != "/login" && !strings.HasPrefix(p, "/login/")
}

// plainPath: one leading slash, then no control character, backslash or (unless decoded) space.
func plainPath(s string, decoded bool) bool {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		return false
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\\' || r == utf8.RuneError:
			return false
		case unicode.IsSpace(r) && !(decoded && r == ' '):
			return false
		}
	}
	return true
}

type loginView struct {
	Next, Token, Username, Error string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	if p != nil && p.viaSession {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.showLogin(w, r, http.StatusOK, loginView{Next: safeNext(r.URL.Query().Get("next"))})
}

// showLogin renders the sign-in form with a fresh double-submit token (cookie + hidden field).
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, v loginView) {
	v.Token = randomToken(24)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: v.Token, Path: "/login", MaxAge: 3600,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	s.page(w, r, nil, status, "login", "登录", v)
}

func (s *Server) loginPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	v := loginView{Next: safeNext(r.PostFormValue("next")), Username: strings.TrimSpace(r.PostFormValue("username"))}
	c, err := r.Cookie(loginCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue(csrfField))) != 1 {
		v.Error = "登录页面已过期，请重新输入"
		s.showLogin(w, r, http.StatusForbidden, v)
		return
	}
	_, sess, token, err := s.login(r.Context(), v.Username, r.PostFormValue("password"), s.clientAddr(r))
	var th errThrottled
	switch {
	case errors.As(err, &th):
		v.Error = th.Error()
		s.showLogin(w, r, http.StatusTooManyRequests, v)
		return
	case errors.Is(err, errBadLogin):
		v.Error = err.Error()
		s.showLogin(w, r, http.StatusUnauthorized, v)
		return
	case err != nil:
		s.failErr(w, r, err)
		return
	}
	s.setSessionCookie(w, r, token, sess.ExpiresAt)
	http.Redirect(w, r, v.Next, http.StatusSeeOther)
}

func (s *Server) logoutPost(w http.ResponseWriter, r *http.Request, p *Principal) {
	s.logout(w, r, p)
	redirect(w, r, "/login", "logout")
}

// sessionInfo is what the API says about the signed-in principal.
type sessionInfo struct {
	Username     string    `json:"username"`
	Role         string    `json:"role"`
	Department   string    `json:"department,omitempty"`
	ParkID       string    `json:"park_id,omitempty"`
	RegionPrefix string    `json:"region_prefix,omitempty"`
	Permissions  []string  `json:"permissions"`
	CSRFToken    string    `json:"csrf_token,omitempty"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
}

func infoOf(p *Principal) sessionInfo {
	in := sessionInfo{Username: p.Name, Role: p.Role, Department: p.Department, ParkID: p.ParkID, RegionPrefix: p.RegionPrefix,
		CSRFToken: p.csrf}
	for pm := range p.perms {
		in.Permissions = append(in.Permissions, string(pm))
	}
	slices.Sort(in.Permissions)
	return in
}

type loginInput struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (s *Server) apiLogin(w http.ResponseWriter, r *http.Request, p *Principal) {
	var in loginInput
	if !s.readJSON(w, r, &in) {
		return
	}
	if in.Username == "" || in.Password == "" {
		s.fail(w, r, http.StatusBadRequest, "username 和 password 必填", nil)
		return
	}
	u, sess, token, err := s.login(r.Context(), strings.TrimSpace(in.Username), in.Password, s.clientAddr(r))
	var th errThrottled
	switch {
	case errors.As(err, &th):
		w.Header().Set("Retry-After", strconv.Itoa(int(th.retry.Seconds())+1))
		s.fail(w, r, http.StatusTooManyRequests, th.Error(), nil)
		return
	case errors.Is(err, errBadLogin):
		s.fail(w, r, http.StatusUnauthorized, err.Error(), nil)
		return
	case err != nil:
		s.failErr(w, r, err)
		return
	}
	s.setSessionCookie(w, r, token, sess.ExpiresAt)
	info := infoOf(userPrincipal(u, sess.CSRFToken))
	info.ExpiresAt = sess.ExpiresAt
	writeJSON(w, http.StatusCreated, info)
}

func (s *Server) apiSession(w http.ResponseWriter, r *http.Request, p *Principal) {
	writeJSON(w, http.StatusOK, infoOf(p))
}

func (s *Server) apiLogout(w http.ResponseWriter, r *http.Request, p *Principal) {
	s.logout(w, r, p)
	w.WriteHeader(http.StatusNoContent)
}

// publicPolicy is the public page of a published policy (what the old notice links open): the
// policy text only, no firm data.
func (s *Server) publicPolicy(w http.ResponseWriter, r *http.Request, p *Principal) {
	id := r.PathValue("id")
	pol, err := store.PublishedPolicy(r.Context(), s.opts.DB, id)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "没有这项已发布的政策："+id, nil)
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	v, err := store.VersionOf(r.Context(), s.opts.DB, id, pol.PublishedVersion)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	def, err := rules.FromCanonical([]byte(v.Source))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.page(w, r, nil, http.StatusOK, "enterprise_policy", def.Title, map[string]any{"Def": def, "Version": v})
}

// linkInText finds enterprise link tokens in recorded message text.
var linkInText = regexp.MustCompile(`/e/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

func (s *Server) sandboxPage(w http.ResponseWriter, r *http.Request, p *Principal) {
	if s.opts.SandboxDir == "" {
		s.fail(w, r, http.StatusNotFound, "本实例未运行沙箱（生产模式）", nil)
		return
	}
	var recs []sandbox.Record
	for _, f := range []string{sandbox.WeChatFile, sandbox.SMSFile} {
		got, err := sandbox.ReadRecords(filepath.Join(s.opts.SandboxDir, f))
		if err != nil {
			continue
		}
		recs = append(recs, got...)
	}
	slices.SortFunc(recs, func(a, b sandbox.Record) int { return b.At.Compare(a.At) })
	total := len(recs)
	if len(recs) > 200 {
		recs = recs[:200]
	}
	// Staff see that a message went out, not the recipient, and not the link that opens the firm's
	// page (a link is the firm's credential).
	for i := range recs {
		if strings.HasPrefix(recs[i].To, "o") {
			recs[i].To = MaskOpenID(recs[i].To)
		} else {
			recs[i].To = MaskPhone(recs[i].To)
		}
		for _, m := range []*map[string]string{&recs[i].Params, &recs[i].Shown} {
			hidden := map[string]string{}
			for k, v := range *m {
				hidden[k] = linkInText.ReplaceAllString(v, "/e/（企业专属链接已隐藏）")
			}
			*m = hidden
		}
	}
	if err := s.audit(r, p, audit.SandboxView, "sandbox", map[string]any{"rows": len(recs)}); err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, p, "sandbox", "沙箱：企业收到的消息", map[string]any{"Records": recs, "Total": total})
}
