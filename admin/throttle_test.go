package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// throttleServer is a console with two accounts and a clock the test moves.
func throttleServer(t *testing.T, proxies ...string) (*Server, *atomic.Int64) {
	t.Helper()
	db := testenv.OpenDB(t).DB
	for _, name := range []string{"admin", "zhang"} {
		if err := db.Create(&store.User{Username: name, PasswordHash: testPasswordHash(), Role: store.RoleAdmin}).Error; err != nil {
			t.Fatal(err)
		}
	}
	tp, err := config.ParseTrustedProxies(proxies)
	if err != nil {
		t.Fatal(err)
	}
	// A clock that moves only when the test moves it (whole seconds: MySQL may store no fraction), so
	// the waits do not depend on how long bcrypt takes on a loaded machine.
	var skew atomic.Int64
	base := time.Now().UTC().Truncate(time.Second)
	s, err := New(Options{DB: db, LinkSecret: []byte("test-link-secret-0123456789abcdef"), TrustedProxies: tp,
		Now: func() time.Time { return base.Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	return s, &skew
}

// Nobody can lock another person out: failures make the account (and the guessing address) wait a
// growing time, after which the right password passes; the owner's usual address is not held by
// someone else's guessing; an address guessing over many accounts waits, others do not; an admin
// clears the failures.
func TestLoginThrottlingCannotLockOthersOut(t *testing.T) {
	t.Parallel()
	s, skew := throttleServer(t)
	ctx := context.Background()
	try := func(user, password, addr string) error {
		t.Helper()
		_, _, _, err := s.login(ctx, user, password, addr)
		return err
	}
	waits := func(err error) time.Duration {
		var th errThrottled
		if errors.As(err, &th) {
			return th.retry
		}
		return 0
	}
	const owner, attacker = "10.0.0.1", "203.0.113.66"
	if err := try("admin", testPassword, owner); err != nil {
		t.Fatalf("first sign-in: %v", err)
	}
	// Five failures are free.
	for i := range 5 {
		if err := try("admin", "guess", attacker); !errors.Is(err, errBadLogin) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	// Each further failure doubles the wait: 5 s, 10 s, 20 s, … capped at 5 minutes.
	for i, want := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 5 * time.Minute, 5 * time.Minute} {
		if err := try("admin", "guess", attacker); !errors.Is(err, errBadLogin) {
			t.Fatalf("guess %d after the free ones: %v", i, err)
		}
		got := waits(try("admin", testPassword, attacker))
		if got != want {
			t.Fatalf("after %d failures the wait is %s, want about %s", 6+i, got, want)
		}
		// Meanwhile the owner, at the address they signed in from before, is not held.
		if err := try("admin", testPassword, owner); err != nil {
			t.Fatalf("the owner at their usual address while %d failures stand: %v", 6+i, err)
		}
		skew.Add(int64(want))
	}
	// Never a hard lock: once the wait is over, the right password passes even from the attacker's
	// address, and from an address never seen before.
	if err := try("admin", testPassword, attacker); err != nil {
		t.Fatalf("the right password after the wait: %v", err)
	}

	// Per address: one address guessing over many accounts waits after 4×5 failures, others not.
	const sprayer = "198.51.100.7"
	for i := range 20 {
		if err := try(fmt.Sprintf("user%d", i), "guess", sprayer); !errors.Is(err, errBadLogin) {
			t.Fatalf("spray %d: %v", i, err)
		}
	}
	if err := try("x", "guess", sprayer); !errors.Is(err, errBadLogin) {
		t.Fatalf("spray 21: %v", err)
	}
	if w := waits(try("zhang", testPassword, sprayer)); w <= 0 || w > 5*time.Second {
		t.Fatalf("the spraying address after 21 failures waits %s, want up to 5s", w)
	}
	if err := try("zhang", testPassword, "10.9.9.9"); err != nil {
		t.Fatalf("another address is not held by the sprayer's failures: %v", err)
	}

	// An admin clears an account's failures: the next try is checked at once.
	for range 8 {
		_ = try("zhang", "guess", attacker)
	}
	if waits(try("zhang", testPassword, "10.1.1.1")) == 0 {
		t.Fatal("zhang is not held after 8 more failures")
	}
	n, err := UnlockLogin(ctx, s.opts.DB, "zhang", "", "admin")
	if err != nil || n == 0 {
		t.Fatalf("unlock: %d %v", n, err)
	}
	if err := try("zhang", testPassword, "10.1.1.1"); err != nil {
		t.Fatalf("after the unlock: %v", err)
	}
	if _, err := UnlockLogin(ctx, s.opts.DB, "ghost", "", "admin"); err == nil {
		t.Fatal("unlocking an account that does not exist succeeded")
	}
	var audited int64
	s.opts.DB.Model(&store.AuditLog{}).Where("action = ? AND object = ?", "login.unlock", "zhang").Count(&audited)
	if audited != 1 {
		t.Fatalf("unlock audited %d times", audited)
	}
}

// X-Forwarded-For names the client only when the peer is a trusted proxy.
func TestClientAddrTrustsOnlyConfiguredProxies(t *testing.T) {
	t.Parallel()
	s := &Server{}
	var err error
	if s.opts.TrustedProxies, err = config.ParseTrustedProxies([]string{"10.0.0.0/8", "192.168.1.5", "::1"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"203.0.113.9:5000", nil, "203.0.113.9"},
		{"203.0.113.9:5000", []string{"1.2.3.4"}, "203.0.113.9"}, // not a proxy: the header is the client's own
		{"10.0.0.2:5000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.2:5000", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},           // a spoofed left entry is ignored
		{"10.0.0.2:5000", []string{"6.6.6.6, 1.2.3.4, 10.0.0.9"}, "1.2.3.4"}, // trusted hops are skipped
		{"10.0.0.2:5000", []string{"6.6.6.6", "1.2.3.4"}, "1.2.3.4"},         // several header lines
		{"192.168.1.5:80", []string{"1.2.3.4"}, "1.2.3.4"},
		{"192.168.1.6:80", []string{"1.2.3.4"}, "192.168.1.6"},
		{"10.0.0.2:5000", []string{"garbage"}, "10.0.0.2"},
		{"10.0.0.2:5000", []string{"6.6.6.6, not-an-ip, 1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.2:5000", []string{"10.0.0.3, 10.0.0.4"}, "10.0.0.3"},
		{"[::1]:80", []string{"2001:db8::1"}, "2001:db8::1"},
		{"10.0.0.2:5000", []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/login", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientAddr(r); got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
	if _, err := config.ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad prefix was accepted")
	}
}
