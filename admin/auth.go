package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Cookie names. The session cookie is HttpOnly and SameSite=Lax, Secure over https; the login
// cookie carries the double-submit token of the sign-in form (there is no session to hold it yet).
const (
	sessionCookie = "pp_session"
	loginCookie   = "pp_login"
	csrfField     = "csrf_token"
	csrfHeader    = "X-CSRF-Token"
)

// bcryptCost is the work factor of stored passwords (about 50–100 ms per check on a server core).
const bcryptCost = 11

// MinPasswordLen is the shortest password an account may have.
const MinPasswordLen = 10

// dummyHash is compared against when the user does not exist, so that a wrong user name takes as
// long as a wrong password and the response time does not reveal which accounts exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("policypush-no-such-user"), bcryptCost)

// randomToken returns n random bytes, URL-safe encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// NewUser is an account to create.
type NewUser struct {
	Username, Password, Role, Department, ParkID, RegionPrefix string
}

var (
	usernamePattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{1,63}$`)
	parkPattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)
	regionPattern   = regexp.MustCompile(`^[0-9]{2,6}$`)
)

// Validate checks an account: the role exists and has exactly the scope it needs.
func (u NewUser) Validate() error {
	if !usernamePattern.MatchString(u.Username) {
		return fmt.Errorf("用户名 %q 无效：2–64 位小写字母、数字、_ . -，以字母开头", u.Username)
	}
	if len([]rune(u.Password)) < MinPasswordLen {
		return fmt.Errorf("密码至少 %d 位", MinPasswordLen)
	}
	if _, ok := rolePerms[u.Role]; !ok {
		return fmt.Errorf("角色 %q 无效，可选：%s", u.Role, strings.Join(Roles(), ", "))
	}
	switch u.Role {
	case store.RolePark:
		if !parkPattern.MatchString(u.ParkID) {
			return errors.New("园区管理员必须指定园区编号（--park，如 SIP）")
		}
	case store.RoleDistrict:
		if !regionPattern.MatchString(u.RegionPrefix) {
			return errors.New("区县/市负责人必须指定 2–6 位行政区划前缀（--region，如 3205）")
		}
	case store.RoleAuthor:
		if strings.TrimSpace(u.Department) == "" {
			return errors.New("政策起草人必须指定所属部门（--department），只能编辑本部门的草稿")
		}
	}
	if u.Role != store.RolePark && u.ParkID != "" {
		return errors.New("只有园区管理员（park_manager）可以指定园区")
	}
	if u.Role != store.RoleDistrict && u.RegionPrefix != "" {
		return errors.New("只有区县/市负责人（district）可以指定行政区划前缀")
	}
	return nil
}

// CreateUser validates and stores a new account with a bcrypt hash of its password.
func CreateUser(ctx context.Context, db *gorm.DB, nu NewUser, actor string) (store.User, error) {
	if err := nu.Validate(); err != nil {
		return store.User{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(nu.Password), bcryptCost)
	if err != nil {
		return store.User{}, fmt.Errorf("hash password: %w", err)
	}
	u := store.User{Username: nu.Username, PasswordHash: string(hash), Role: nu.Role, Department: strings.TrimSpace(nu.Department),
		ParkID: nu.ParkID, RegionPrefix: nu.RegionPrefix}
	err = store.CreateUser(ctx, db, &u, func(tx *gorm.DB) error {
		return writeAudit(tx, actor, audit.UserCreate, u.Username, map[string]any{"role": u.Role, "department": u.Department,
			"park_id": u.ParkID, "region_prefix": u.RegionPrefix})
	})
	if store.IsUniqueViolation(err) {
		return u, fmt.Errorf("用户名 %s 已存在", nu.Username)
	}
	return u, err
}

// SetPassword replaces an account's password and ends its sessions.
func SetPassword(ctx context.Context, db *gorm.DB, username, password, actor string) error {
	if len([]rune(password)) < MinPasswordLen {
		return fmt.Errorf("密码至少 %d 位", MinPasswordLen)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return err
	}
	return store.SetPasswordHash(ctx, db, username, string(hash), func(tx *gorm.DB) error {
		return writeAudit(tx, actor, audit.UserPassword, username, nil)
	})
}

// DemoUsers are the accounts the demo seeds, one per role and scope.
var DemoUsers = []NewUser{
	{Username: "admin", Role: store.RoleAdmin},
	{Username: "author", Role: store.RoleAuthor, Department: "省人力资源和社会保障厅"},
	{Username: "reviewer", Role: store.RoleReviewer},
	{Username: "park_sip", Role: store.RolePark, ParkID: "SIP"},
	{Username: "park_njjb", Role: store.RolePark, ParkID: "NJ-JB"},
	{Username: "region_3205", Role: store.RoleDistrict, RegionPrefix: "3205"},
	{Username: "auditor", Role: store.RoleAuditor},
}

// SeedDemoUsers creates the demo accounts that are missing and sets every demo account's
// password to password (so the password printed at start-up is always the one that works).
func SeedDemoUsers(ctx context.Context, db *gorm.DB, password string) error {
	for _, du := range DemoUsers {
		du.Password = password
		n, err := store.CountUsers(ctx, db, du.Username)
		if err != nil {
			return err
		}
		if n == 0 {
			if _, err := CreateUser(ctx, db, du, "demo"); err != nil {
				return fmt.Errorf("demo account %s: %w", du.Username, err)
			}
			continue
		}
		if err := SetPassword(ctx, db, du.Username, password, "demo"); err != nil {
			return fmt.Errorf("demo account %s: %w", du.Username, err)
		}
	}
	return nil
}

var errBadLogin = errors.New("用户名或密码错误")

// login checks a password with throttling and, when it is right, opens a session.
func (s *Server) login(ctx context.Context, username, password, addr string) (*store.User, *store.Session, string, error) {
	db := s.opts.DB.WithContext(ctx) // the audit records' (core/audit.Write)
	now := s.now()
	wait, err := s.loginWait(ctx, truncate(username, 64), addr, now)
	if err != nil {
		return nil, nil, "", err
	}
	if wait > 0 {
		_ = writeAudit(db, truncate(username, 64), audit.LoginThrottled, truncate(username, 64), map[string]any{"addr": addr, "wait_seconds": int(wait.Seconds()) + 1})
		return nil, nil, "", errThrottled{retry: wait}
	}
	u, err := store.UserByName(ctx, s.opts.DB, username)
	hash := dummyHash
	if err == nil {
		hash = []byte(u.PasswordHash)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, nil, "", err
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && err == nil
	if err := store.RecordLoginAttempt(ctx, s.opts.DB, &store.LoginAttempt{Username: truncate(username, 64), Addr: addr, OK: ok, At: now}); err != nil {
		return nil, nil, "", err
	}
	if !ok {
		_ = writeAudit(db, truncate(username, 64), audit.LoginFailed, truncate(username, 64), map[string]any{"addr": addr})
		return nil, nil, "", errBadLogin
	}
	token := randomToken(32)
	sess := store.Session{IDHash: sha256Hex(token), UserID: u.ID, CSRFToken: randomToken(32), CreatedAt: now,
		LastSeenAt: now, ExpiresAt: now.Add(s.opts.SessionTTL)}
	if err := store.CreateSession(ctx, s.opts.DB, &sess); err != nil {
		return nil, nil, "", err
	}
	// Expired sessions and old attempts go when someone signs in: no background job needed.
	_ = store.DeleteExpiredSessions(ctx, s.opts.DB, now)
	store.ForgetLoginAttempts(ctx, s.opts.DB, now.Add(-failedAttemptAge), now.Add(-okAttemptAge))
	_ = writeAudit(db, u.Username, audit.Login, u.Username, map[string]any{"addr": addr})
	return &u, &sess, token, nil
}

// authenticate finds the principal of a request: an API token (Authorization: Bearer, API paths
// only) or a session cookie. nil means anonymous.
func (s *Server) authenticate(r *http.Request) *Principal {
	ctx, db := r.Context(), s.opts.DB
	now := s.now()
	if h := r.Header.Get("Authorization"); h != "" && strings.HasPrefix(r.URL.Path, "/api/") {
		raw, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil
		}
		t, err := store.TokenByHash(ctx, db, sha256Hex(strings.TrimSpace(raw)))
		if err != nil {
			return nil
		}
		if t.RevokedAt != nil || (t.ExpiresAt != nil && t.ExpiresAt.Before(now)) {
			return nil
		}
		if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) > time.Minute {
			s.touch(fmt.Sprintf("token %d", t.ID), func(ctx context.Context) error { return store.TouchToken(ctx, db, t.ID, now) })
		}
		return tokenPrincipal(&t)
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	sess, u, err := store.SessionUser(ctx, db, sha256Hex(c.Value))
	if err != nil {
		return nil
	}
	if now.After(sess.ExpiresAt) || now.Sub(sess.LastSeenAt) > s.opts.SessionIdle {
		_ = store.DeleteSession(ctx, db, sess.IDHash)
		return nil
	}
	if now.Sub(sess.LastSeenAt) > time.Minute {
		s.touch("session "+sess.IDHash, func(ctx context.Context) error { return store.TouchSession(ctx, db, sess.IDHash, now) })
	}
	return userPrincipal(&u, sess.CSRFToken)
}

// touch records a session's or token's last use without the request waiting for it. It is a
// write: on SQLite it waits for the one write lock (up to busy_timeout) while the notifier or the
// matcher commits, and a console GET waiting there ran past its deadline before reading anything
// (bench api, 200,000 firms, the first requests after start). At most one update per session or
// token is in flight; one that fails is tried again at the next request, a minute of use later
// (the idle timeout is counted in minutes too).
func (s *Server) touch(key string, update func(context.Context) error) {
	if _, busy := s.touching.LoadOrStore(key, true); busy {
		return
	}
	s.touches.Add(1)
	go func() {
		defer s.touches.Done()
		defer s.touching.Delete(key)
		ctx, cancel := context.WithTimeout(s.touchCtx, touchTimeout)
		defer cancel()
		_ = update(ctx)
	}()
}

// Wait ends the work the server does beside its requests (last-use updates in flight are
// cancelled) and returns when it has stopped: the console's stage calls it after its last
// request, so that serve returns only once every goroutine it started is done.
func (s *Server) Wait() {
	s.touchCancel()
	s.touches.Wait()
}

// touchTimeout bounds a last-use update.
const touchTimeout = 30 * time.Second

// secure says whether cookies get the Secure flag.
func (s *Server) secure(r *http.Request) bool {
	switch s.opts.SecureCookies {
	case "always":
		return true
	case "never":
		return false
	}
	return r.TLS != nil || strings.HasPrefix(s.opts.PublicURL, "https://")
}

func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, token string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.secure(r)})
}

func (s *Server) clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.secure(r)})
}

// logout ends the session of the request.
func (s *Server) logout(w http.ResponseWriter, r *http.Request, p *Principal) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		_ = store.DeleteSession(r.Context(), s.opts.DB, sha256Hex(c.Value))
	}
	if p != nil {
		_ = writeAudit(s.opts.DB.WithContext(r.Context()), p.Name, audit.Logout, p.Name, nil)
	}
	s.clearSessionCookie(w, r)
}

// sameOrigin rejects cross-site state changes from browsers: a request whose Origin (or, lacking
// one, Referer) names another host, or that the browser marks as cross-site. Requests without
// either header (curl, integrations) pass; they are covered by the CSRF token or a bearer token.
func sameOrigin(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return r.Header.Get("Origin") != "null"
	}
	u, err := url.Parse(src)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// csrfOK checks the synchronizer token of a session request: form field or header.
func csrfOK(r *http.Request, p *Principal) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(p.csrf)) == 1
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}

// NewAPIToken is a token to issue.
type NewAPIToken struct {
	Name         string
	Permissions  []Perm
	ParkID       string
	RegionPrefix string
	TTL          time.Duration // 0 = no expiry
}

// CreateAPIToken stores a token and returns it with its secret value, shown once.
func CreateAPIToken(ctx context.Context, db *gorm.DB, nt NewAPIToken, actor string, now time.Time) (store.APIToken, string, error) {
	if strings.TrimSpace(nt.Name) == "" || len([]rune(nt.Name)) > 100 {
		return store.APIToken{}, "", errors.New("令牌名称必填，最多 100 字")
	}
	if len(nt.Permissions) == 0 {
		return store.APIToken{}, "", errors.New("至少选择一项权限")
	}
	allowed := map[Perm]bool{}
	for _, pm := range tokenPerms {
		allowed[pm] = true
	}
	names := make([]string, 0, len(nt.Permissions))
	for _, pm := range nt.Permissions {
		if !allowed[pm] {
			return store.APIToken{}, "", fmt.Errorf("令牌不能拥有权限 %q（可选：%s）", pm, joinPerms(tokenPerms))
		}
		names = append(names, string(pm))
	}
	if nt.ParkID != "" && !parkPattern.MatchString(nt.ParkID) {
		return store.APIToken{}, "", fmt.Errorf("园区编号 %q 无效", nt.ParkID)
	}
	if nt.RegionPrefix != "" && !regionPattern.MatchString(nt.RegionPrefix) {
		return store.APIToken{}, "", fmt.Errorf("行政区划前缀 %q 无效：2–6 位数字", nt.RegionPrefix)
	}
	if nt.ParkID != "" && nt.RegionPrefix != "" {
		return store.APIToken{}, "", errors.New("园区和行政区划前缀只能指定一个")
	}
	secret := "ppt_" + randomToken(32)
	t := store.APIToken{Name: strings.TrimSpace(nt.Name), Prefix: secret[:12], TokenHash: sha256Hex(secret),
		Permissions: strings.Join(names, ","), ParkID: nt.ParkID, RegionPrefix: nt.RegionPrefix, CreatedBy: actor, CreatedAt: now}
	if nt.TTL > 0 {
		exp := now.Add(nt.TTL)
		t.ExpiresAt = &exp
	}
	err := store.CreateToken(ctx, db, &t, func(tx *gorm.DB) error {
		return writeAudit(tx, actor, audit.TokenCreate, t.Name, map[string]any{"permissions": t.Permissions, "park_id": t.ParkID,
			"region_prefix": t.RegionPrefix, "prefix": t.Prefix})
	})
	return t, secret, err
}

func joinPerms(ps []Perm) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return strings.Join(out, ", ")
}
