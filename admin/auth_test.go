package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

func findCookie(h http.Header, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestLogin covers the sign-in form (double-submit token, session cookie flags, redirect), the API
// login, logout, and throttling per account.
func TestLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	anon := caller{}

	// The form: GET sets the login cookie and the matching hidden field.
	res := f.do(anon, http.MethodGet, "/login?next=/firms", nil)
	lc := findCookie(res.header, loginCookie)
	m := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindSubmatch(res.body)
	if res.status != http.StatusOK || lc == nil || m == nil || string(m[1]) != lc.Value {
		t.Fatalf("login page: %d cookie=%v", res.status, lc)
	}
	form := url.Values{"username": {"park_sip"}, "password": {testPassword}, "next": {"/firms"}, csrfField: {lc.Value}}
	if res := f.do(anon, http.MethodPost, "/login", form); res.status != http.StatusForbidden {
		t.Fatalf("login without the login cookie: want 403, got %d", res.status)
	}
	res = f.do(anon, http.MethodPost, "/login", form, lc)
	sc := findCookie(res.header, sessionCookie)
	if res.status != http.StatusSeeOther || res.header.Get("Location") != "/firms" || sc == nil {
		t.Fatalf("login: %d %s", res.status, res.header.Get("Location"))
	}
	if !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Secure {
		t.Fatalf("session cookie flags over plain http: %+v", sc)
	}
	var sess store.Session
	if err := f.db.Where("id_hash = ?", sha256Hex(sc.Value)).Take(&sess).Error; err != nil {
		t.Fatalf("the session is stored by the hash of its cookie: %v", err)
	}
	if f.db.Where("id_hash = ?", sc.Value).Take(&store.Session{}).Error == nil {
		t.Fatal("the raw cookie value is stored")
	}
	me := caller{name: "park_sip", cookie: sc, csrf: sess.CSRFToken}
	if res := f.do(me, http.MethodGet, "/firms", nil); res.status != http.StatusOK {
		t.Fatalf("signed in: %d", res.status)
	}
	// An open redirect through next is not possible.
	form.Set("next", "//evil.example/")
	if res := f.do(anon, http.MethodPost, "/login", form, lc); res.header.Get("Location") != "/" {
		t.Fatalf("next=//evil: redirected to %q", res.header.Get("Location"))
	}

	// Logout ends the session on the server.
	if res := f.do(me, http.MethodPost, "/logout", nil); res.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", res.status)
	}
	if res := f.do(me, http.MethodGet, "/api/v1/session", nil); res.status != http.StatusUnauthorized {
		t.Fatalf("after logout: want 401, got %d", res.status)
	}

	// API login returns the CSRF token; wrong passwords are throttled per account.
	ok := map[string]string{"username": "auditor", "password": testPassword}
	res = f.do(anon, http.MethodPost, "/api/v1/session", ok)
	var info sessionInfo
	res.json(t, &info)
	if res.status != http.StatusCreated || info.CSRFToken == "" || info.Role != store.RoleAuditor {
		t.Fatalf("api login: %d %s", res.status, res.body)
	}
	bad := map[string]string{"username": "auditor", "password": "wrong-password-1"}
	for i := 0; i < 6; i++ {
		if res := f.do(anon, http.MethodPost, "/api/v1/session", bad); res.status != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: want 401, got %d", i, res.status)
		}
	}
	// The sixth failure makes the next try from this address wait; the API says how long.
	f.db.Where("username = ? AND ok = ?", "auditor", true).Delete(&store.LoginAttempt{}) // not a known address
	res = f.do(anon, http.MethodPost, "/api/v1/session", ok)
	if secs, err := strconv.Atoi(res.header.Get("Retry-After")); res.status != http.StatusTooManyRequests || err != nil || secs < 1 || secs > 10 {
		t.Fatalf("after 6 failures the next try must wait a few seconds: got %d, Retry-After %q", res.status, res.header.Get("Retry-After"))
	}
	if res := f.do(anon, http.MethodPost, "/api/v1/session", map[string]string{"username": "reviewer", "password": testPassword}); res.status != http.StatusCreated {
		t.Fatalf("another account is not held: %d", res.status)
	}
	// An unknown user gets the same answer as a wrong password.
	res = f.do(anon, http.MethodPost, "/api/v1/session", map[string]string{"username": "nobody", "password": testPassword})
	if res.status != http.StatusUnauthorized || !strings.Contains(string(res.body), errBadLogin.Error()) {
		t.Fatalf("unknown user: %d %s", res.status, res.body)
	}
	// An admin clears the failures (API; the users page has the same button): the right password
	// passes at once.
	if res := f.do(f.session("admin"), http.MethodPost, "/api/v1/users/auditor/unlock", nil); res.status != http.StatusOK ||
		!strings.Contains(string(res.body), `"cleared":6`) {
		t.Fatalf("unlock: %d %s", res.status, res.body)
	}
	if res := f.do(anon, http.MethodPost, "/api/v1/session", ok); res.status != http.StatusCreated {
		t.Fatalf("after the unlock: %d %s", res.status, res.body)
	}
	if n := f.auditCount("auditor", "login.failed", "auditor"); n != 6 {
		t.Fatalf("failed logins audited: %d", n)
	}
}

func TestSecureCookieAndIdleSessions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var skew atomic.Int64
	srv, err := New(Options{DB: f.db, LinkSecret: f.secret, SecureCookies: "always", SessionIdle: time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	body := strings.NewReader(`{"username":"admin","password":"` + testPassword + `"}`)
	resp, err := http.Post(ts.URL+"/api/v1/session", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := findCookie(resp.Header, sessionCookie)
	if c == nil || !c.Secure || !c.HttpOnly {
		t.Fatalf("secure_cookies=always: %+v", c)
	}
	// Unused for longer than the idle timeout: gone.
	skew.Store(int64(2 * time.Minute))
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/session", nil)
	req.AddCookie(c)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("idle session still valid: %d", resp.StatusCode)
	}
}

// TestSessionUseDoesNotWaitForTheWriteLock: recording a session's last use is a write, and a
// request must not wait for it while another writer holds the lock (SQLite's one write lock, a
// MySQL row lock): it is answered, and the last use is stored once the lock is free.
func TestSessionUseDoesNotWaitForTheWriteLock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var skew atomic.Int64
	srv, err := New(Options{DB: f.db, LinkSecret: f.secret, QueryTimeout: 3 * time.Second,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	resp, err := http.Post(ts.URL+"/api/v1/session", "application/json", strings.NewReader(`{"username":"admin","password":"`+testPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := findCookie(resp.Header, sessionCookie)
	if c == nil {
		t.Fatal("no session cookie")
	}
	skew.Store(int64(5 * time.Minute)) // last seen long enough ago to be recorded again
	tx := f.db.Begin()
	if err := tx.Model(&store.Session{}).Where("user_id IN (SELECT id FROM users WHERE username = ?)", "admin").
		Update("expires_at", time.Now().Add(time.Hour)).Error; err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/session", nil)
		req.AddCookie(c)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case code := <-done:
		tx.Rollback()
		if code != http.StatusOK {
			t.Fatalf("while another writer held the lock: %d", code)
		}
	case <-time.After(2 * time.Second):
		tx.Rollback()
		t.Fatal("the request waited for the write lock to record the session's use")
	}
	// once the lock is free the use is stored
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sess store.Session
		if err := f.db.Where("user_id IN (SELECT id FROM users WHERE username = ?)", "admin").Order("last_seen_at DESC").Take(&sess).Error; err != nil {
			t.Fatal(err)
		}
		if sess.LastSeenAt.After(time.Now().Add(time.Minute)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session's use was not stored: last seen %v", sess.LastSeenAt)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCrossSiteRequestsAreRefused: a state change with a session needs the CSRF token and must not
// come from another site.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sip := f.session("park_sip")
	path := "/api/v1/firms/" + f.sip.CreditCode + "/notes"
	noToken := sip
	noToken.csrf = ""
	if res := f.do(noToken, http.MethodPost, path, `{"body":"x"}`); res.status != http.StatusForbidden {
		t.Fatalf("without CSRF token: want 403, got %d", res.status)
	}
	wrong := sip
	wrong.csrf = "not-the-token"
	if res := f.do(wrong, http.MethodPost, "/firms/"+f.sip.CreditCode+"/notes", url.Values{"body": {"x"}}); res.status != http.StatusForbidden {
		t.Fatalf("wrong CSRF token on a form: want 403, got %d", res.status)
	}
	req, _ := http.NewRequest(http.MethodPost, f.ts.URL+path, strings.NewReader(`{"body":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set(csrfHeader, sip.csrf)
	req.AddCookie(sip.cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin post: want 403, got %d", resp.StatusCode)
	}
	if res := f.do(sip, http.MethodPost, path, `{"body":"已上门走访"}`); res.status != http.StatusCreated {
		t.Fatalf("with the token: %d %s", res.status, res.body)
	}
	var notes []store.FollowUpNote
	f.db.Where("credit_code = ?", f.sip.CreditCode).Find(&notes)
	if len(notes) != 1 || notes[0].Author != "park_sip" || notes[0].Body != "已上门走访" {
		t.Fatalf("notes: %+v", notes)
	}
}

func TestAccountValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		u    NewUser
		want string
	}{
		{NewUser{Username: "p1", Password: testPassword, Role: store.RolePark}, "--park"},
		{NewUser{Username: "d1", Password: testPassword, Role: store.RoleDistrict, RegionPrefix: "32x"}, "--region"},
		{NewUser{Username: "a1", Password: testPassword, Role: store.RoleAuthor}, "--department"},
		{NewUser{Username: "r1", Password: testPassword, Role: store.RoleReviewer, ParkID: "SIP"}, "只有园区管理员"},
		{NewUser{Username: "x1", Password: "short", Role: store.RoleAuditor}, "密码至少"},
		{NewUser{Username: "x2", Password: testPassword, Role: "superuser"}, "角色"},
		{NewUser{Username: "admin", Password: testPassword, Role: store.RoleAuditor}, "已存在"},
	}
	for _, c := range cases {
		_, err := CreateUser(ctx, f.db, c.u, "test")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to mention %q", c.u, err, c.want)
		}
	}
	if _, _, err := CreateAPIToken(ctx, f.db, NewAPIToken{Name: "x", Permissions: []Perm{PermUserAdmin}}, "test", time.Now()); err == nil {
		t.Error("a token must not get user administration")
	}
	if _, _, err := CreateAPIToken(ctx, f.db, NewAPIToken{Name: "x", Permissions: []Perm{PermContact}}, "test", time.Now()); err == nil {
		t.Error("a token must not see contact data")
	}
}

// TestSeedDemoUsers: the demo accounts exist once, and the password printed at each start works.
func TestSeedDemoUsers(t *testing.T) {
	t.Parallel()
	db := testenv.OpenDB(t).DB
	ctx := context.Background()
	for _, pw := range []string{"first-password-1", "second-password-2"} {
		if err := SeedDemoUsers(ctx, db, pw); err != nil {
			t.Fatal(err)
		}
	}
	var users []store.User
	db.Order("username").Find(&users)
	if len(users) != len(DemoUsers) {
		t.Fatalf("%d accounts, want %d", len(users), len(DemoUsers))
	}
	for _, u := range users {
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte("second-password-2")) != nil {
			t.Errorf("%s: the latest demo password does not work", u.Username)
		}
	}
	var park store.User
	db.Where("username = ?", "park_sip").Take(&park)
	if park.Role != store.RolePark || park.ParkID != "SIP" {
		t.Fatalf("park_sip: %+v", park)
	}
}
