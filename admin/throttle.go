package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/store"
)

// Sign-in throttling that slows guessing without handing anyone a way to lock others out:
//
//   - Per account: the first LoginMaxFailures failures inside LoginWindow cost nothing; each
//     further one makes the account wait LoginDelay, doubling, at most LoginMaxDelay, counted from
//     the last failure. After the wait the next try is checked as usual — the right password
//     passes. There is no hard lock. An address the account signed in from successfully within
//     knownAddrAge is not held by the account's wait (its owner at their usual desk is not
//     slowed by someone guessing elsewhere); it still counts its own failures.
//   - Per address: the same growing wait after 4×LoginMaxFailures failures over all accounts.
//     The address is the real client: X-Forwarded-For is read only when the peer is one of
//     TrustedProxies, right to left, skipping trusted hops; otherwise the peer address.
//   - An admin clears an account's (or an address's) failures: `policypush users unlock`, the
//     users page, POST /api/v1/users/{username}/unlock. Audited.

// knownAddrAge is how long a successful sign-in makes its address known to the account.
const knownAddrAge = 30 * 24 * time.Hour

// failedAttemptAge and okAttemptAge are how long attempts are kept.
const (
	failedAttemptAge = 24 * time.Hour
	okAttemptAge     = knownAddrAge
)

// errThrottled is returned while an account or address must wait before its next try.
type errThrottled struct{ retry time.Duration }

func (e errThrottled) Error() string {
	if e.retry < time.Minute {
		return fmt.Sprintf("登录失败次数过多，请 %d 秒后再试", int(e.retry.Seconds())+1)
	}
	return fmt.Sprintf("登录失败次数过多，请 %d 分钟后再试", int(e.retry.Minutes())+1)
}

// backoff is the wait after fails failures when free cost nothing: base doubling, at most ceil.
func backoff(fails, free int64, base, ceil time.Duration) time.Duration {
	over := fails - free
	if over <= 0 {
		return 0
	}
	d := base
	for i := int64(1); i < over && d < ceil; i++ {
		d *= 2
	}
	return min(d, ceil)
}

// loginWait is how long this try must still wait (0: check the password now).
func (s *Server) loginWait(ctx context.Context, username, addr string, now time.Time) (time.Duration, error) {
	since := now.Add(-s.opts.LoginWindow)
	free := int64(s.opts.LoginMaxFailures)
	var wait time.Duration
	known, err := store.KnownLoginAddr(ctx, s.opts.DB, username, addr, now.Add(-knownAddrAge))
	if err != nil {
		return 0, err
	}
	if !known {
		n, last, err := store.FailedLogins(ctx, s.opts.DB, since, username, "")
		if err != nil {
			return 0, err
		}
		wait = max(wait, last.Add(backoff(n, free, s.opts.LoginDelay, s.opts.LoginMaxDelay)).Sub(now))
	}
	n, last, err := store.FailedLogins(ctx, s.opts.DB, since, "", addr)
	if err != nil {
		return 0, err
	}
	wait = max(wait, last.Add(backoff(n, 4*free, s.opts.LoginDelay, s.opts.LoginMaxDelay)).Sub(now))
	return max(wait, 0), nil
}

// UnlockLogin clears the failed sign-ins of an account (username) or of a client address (addr),
// or both, so the next try is checked at once; by is recorded in the audit log. It returns how
// many failures were cleared.
func UnlockLogin(ctx context.Context, db *gorm.DB, username, addr, by string) (int64, error) {
	username, addr = strings.TrimSpace(username), strings.TrimSpace(addr)
	if username == "" && addr == "" {
		return 0, errors.New("name an account or a client address to unlock")
	}
	n, err := store.ClearFailedLogins(ctx, db, username, addr, func(tx *gorm.DB, cleared int64) error {
		object := username
		if object == "" {
			object = addr
		}
		return writeAudit(tx, by, audit.LoginUnlock, object, map[string]any{"username": username, "addr": addr, "cleared": cleared})
	})
	if errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("user %s does not exist", username)
	}
	return n, err
}

func trusted(proxies []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address of the client that sent the request. X-Forwarded-For is believed only
// when the peer is a trusted proxy: its entries are read right to left (each proxy appends the
// address it saw), skipping trusted proxies, and the first other address is the client. A
// malformed entry stops the walk at the last address known to be real.
func (s *Server) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !trusted(s.opts.TrustedProxies, peer) {
		return truncate(host, 64)
	}
	client := peer
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		client = a.Unmap()
		if !trusted(s.opts.TrustedProxies, client) {
			break
		}
	}
	return truncate(client.String(), 64)
}
