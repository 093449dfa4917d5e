package admin

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/store"
)

// TestEnterpriseLink: the signed link opens exactly its firm's page, expires, cannot be forged, and
// the firm's answers move the dashboard funnel.
func TestEnterpriseLink(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	anon := caller{}
	sipBoard := func() funnel {
		res := f.do(f.session("park_sip"), http.MethodGet, "/api/v1/dashboard", nil)
		var d dashboard
		res.json(t, &d)
		return d.Funnel
	}
	before := sipBoard()

	token := f.link(f.sip.CreditCode, f.sipPolicy, time.Hour)
	res := f.do(anon, http.MethodGet, "/e/"+token, nil)
	if res.status != http.StatusOK || !bytes.Contains(res.body, []byte(f.sip.Name)) {
		t.Fatalf("enterprise page: %d", res.status)
	}
	var m store.Match
	f.db.Where("credit_code = ? AND policy_id = ? AND state = ?", f.sip.CreditCode, f.sipPolicy, store.MatchActive).Take(&m)
	if a := notify.FormatAmount(m.Amount); a != "" && !bytes.Contains(res.body, []byte(a)) {
		t.Fatalf("the page does not show the amount %s", a)
	}
	if bytes.Contains(res.body, []byte(f.njjb.Name)) || bytes.Contains(res.body, []byte(f.sip.ContactPhone)) {
		t.Fatal("the page shows another firm or the unmasked phone")
	}
	f.do(anon, http.MethodGet, "/api/v1/e/"+token, nil)
	var open store.LinkOpen
	if err := f.db.Where("credit_code = ? AND policy_id = ?", f.sip.CreditCode, f.sipPolicy).Take(&open).Error; err != nil || open.Count != 2 {
		t.Fatalf("link opens: %+v %v", open, err)
	}

	// Forged, altered or expired links open nothing.
	other := f.link(f.njjb.CreditCode, f.njjbPolicy, time.Hour)
	forged := strings.Split(other, ".")[0] + "." + strings.Split(token, ".")[1]
	for _, c := range []struct {
		token  string
		status int
	}{
		{forged, http.StatusForbidden},
		{token[:len(token)-2] + "AA", http.StatusForbidden},
		{"garbage", http.StatusForbidden},
		{f.link(f.sip.CreditCode, f.sipPolicy, -time.Minute), http.StatusGone},
		{signLink([]byte("another-secret-another-secret-xx"), f.sip.CreditCode, f.sipPolicy, time.Now().Add(time.Hour)), http.StatusForbidden},
	} {
		res := f.do(anon, http.MethodGet, "/e/"+c.token, nil)
		if res.status != c.status || bytes.Contains(res.body, []byte(f.sip.Name)) {
			t.Errorf("token %.30s…: want %d, got %d", c.token, c.status, res.status)
		}
	}

	// Confirm: the commitment must be accepted and signed.
	form := url.Values{"policy_id": {f.sipPolicy}, "kind": {"confirm"}, "signer": {"王会计"}}
	if res := f.do(anon, http.MethodPost, "/e/"+token+"/respond", form); res.status != http.StatusBadRequest {
		t.Fatalf("confirm without agreeing: want 400, got %d", res.status)
	}
	form.Set("agree", "on")
	if res := f.do(anon, http.MethodPost, "/e/"+token+"/respond", form); res.status != http.StatusSeeOther {
		t.Fatalf("confirm: %d %s", res.status, res.body)
	}
	var a store.EnterpriseResponse
	if err := f.db.Where("credit_code = ? AND policy_id = ?", f.sip.CreditCode, f.sipPolicy).Take(&a).Error; err != nil ||
		a.Kind != store.ResponseConfirm || a.Signer != "王会计" || a.Commitment != Commitment || a.MatchID != m.ID {
		t.Fatalf("stored answer: %+v %v", a, err)
	}
	if res := f.do(anon, http.MethodPost, "/e/"+token+"/respond", form); res.status != http.StatusConflict {
		t.Fatalf("second answer: want 409, got %d", res.status)
	}
	res = f.do(anon, http.MethodGet, "/e/"+token, nil)
	if !bytes.Contains(res.body, []byte("已于")) {
		t.Fatal("the page does not show the confirmation")
	}
	// A link answers only for its own firm: a policy the firm does not match is refused.
	var unmatched string
	f.db.Model(&store.Policy{}).Where("id NOT IN (?)", f.db.Model(&store.Match{}).Select("policy_id").
		Where("credit_code = ? AND state = ?", f.sip.CreditCode, store.MatchActive)).Limit(1).Pluck("id", &unmatched)
	if unmatched != "" {
		res := f.do(anon, http.MethodPost, "/api/v1/e/"+token+"/responses", map[string]any{"policy_id": unmatched, "kind": "object", "reason": "不需要该政策"})
		if res.status != http.StatusNotFound {
			t.Fatalf("answer for an unmatched policy: want 404, got %d", res.status)
		}
	}

	// Unsubscribe, and back.
	if res := f.do(anon, http.MethodPost, "/e/"+token+"/channels", url.Values{"channel": {"sms"}, "subscribed": {"false"}}); res.status != http.StatusSeeOther {
		t.Fatalf("unsubscribe: %d", res.status)
	}
	var n int64
	f.db.Model(&store.ChannelOptOut{}).Where("credit_code = ? AND channel = ? AND via = ?", f.sip.CreditCode, "sms", "link").Count(&n)
	if n != 1 {
		t.Fatal("no opt-out row")
	}
	f.do(anon, http.MethodPost, "/api/v1/e/"+token+"/channels", map[string]any{"channel": "sms", "subscribed": true})
	f.db.Model(&store.ChannelOptOut{}).Where("credit_code = ?", f.sip.CreditCode).Count(&n)
	if n != 0 {
		t.Fatal("resubscribing left the opt-out")
	}

	after := sipBoard()
	if after.Opened != before.Opened+1 || after.Confirmed != before.Confirmed+1 || after.Matched != before.Matched {
		t.Fatalf("funnel did not move: before %+v after %+v", before, after)
	}
	if f.auditCount("enterprise:"+f.sip.CreditCode, "enterprise.confirm", f.sipPolicy) != 1 {
		t.Fatal("the confirmation is not in the audit log")
	}
}

func TestEnterpriseLinkFormat(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	link := EnterpriseLink(secret, "https://zc.example.gov.cn/", "91310000MA1FL0007C", "wengang-fanhuan-2022", time.Hour)
	token, ok := strings.CutPrefix(link, "https://zc.example.gov.cn/e/")
	if !ok {
		t.Fatalf("link %s", link)
	}
	c, err := verifyLink(secret, token, time.Now())
	if err != nil || c.CreditCode != "91310000MA1FL0007C" || c.PolicyID != "wengang-fanhuan-2022" {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := verifyLink(secret, token, time.Now().Add(2*time.Hour)); err != errLinkExpired {
		t.Fatalf("expiry: %v", err)
	}
}
