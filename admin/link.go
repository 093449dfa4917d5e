package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Enterprise links. A notice carries <base>/e/<token>; the token is
//
//	base64url("v1|<credit code>|<policy id>|<expiry unix seconds>") "." base64url(HMAC-SHA256(secret, payload))
//
// It opens the page of that firm (and of nothing else) until it expires: no password, nothing
// stored server-side, verifiable by every console instance that shares the secret. The policy id
// says which notice the firm came from; the page shows the firm's other current matches too.

var errLinkSecret = errors.New("enterprise link secret must be at least 32 bytes (config console.link_secret)")

// linkClaims is what a valid token says.
type linkClaims struct {
	CreditCode string
	PolicyID   string
	Expires    time.Time
}

// EnterpriseLink builds the signed, expiring link of a firm's page for a policy's notice. The
// notifier (through the command that wires it) uses it for the URL of every notice.
func EnterpriseLink(secret []byte, baseURL, creditCode, policyID string, ttl time.Duration) string {
	return strings.TrimRight(baseURL, "/") + "/e/" + signLink(secret, creditCode, policyID, time.Now().Add(ttl))
}

func signLink(secret []byte, creditCode, policyID string, expires time.Time) string {
	payload := strings.Join([]string{"v1", creditCode, policyID, strconv.FormatInt(expires.Unix(), 10)}, "|")
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

var (
	errLinkInvalid = errors.New("链接无效：请从通知消息中重新打开，或联系政策咨询电话")
	errLinkExpired = errors.New("链接已过期：请联系政策咨询电话重新获取，或等待下一次通知")
)

// verifyLink checks a token's signature first, then its expiry.
func verifyLink(secret []byte, token string, now time.Time) (linkClaims, error) {
	p64, s64, ok := strings.Cut(token, ".")
	if !ok || len(token) > 512 {
		return linkClaims{}, errLinkInvalid
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(s64)
	if err1 != nil || err2 != nil {
		return linkClaims{}, errLinkInvalid
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(payload)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return linkClaims{}, errLinkInvalid
	}
	parts := strings.Split(string(payload), "|")
	if len(parts) != 4 || parts[0] != "v1" || parts[1] == "" {
		return linkClaims{}, errLinkInvalid
	}
	exp, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return linkClaims{}, errLinkInvalid
	}
	c := linkClaims{CreditCode: parts[1], PolicyID: parts[2], Expires: time.Unix(exp, 0).UTC()}
	if now.After(c.Expires) {
		return c, errLinkExpired
	}
	return c, nil
}

// LoadOrCreateLinkSecret returns the configured secret, or (when empty) the one kept in path,
// creating it with 32 random bytes on first use. A generated key is fine for one instance; several
// console instances behind a load balancer must share a configured one.
func LoadOrCreateLinkSecret(configured, path string) ([]byte, error) {
	if configured != "" {
		if len(configured) < 32 {
			return nil, errLinkSecret
		}
		return []byte(configured), nil
	}
	if b, err := os.ReadFile(path); err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) < 32 {
			return nil, fmt.Errorf("link secret file %s is damaged: delete it to make a new one (old links stop working)", path)
		}
		return key, nil
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("read link secret: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create link secret directory: %w", err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write link secret: %w", err)
	}
	return key, nil
}
