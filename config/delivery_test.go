package config

import (
	"strings"
	"testing"
)

// The keys of the notification path name themselves when wrong.
func TestInvalidDeliveryKeysAreNamed(t *testing.T) {
	cases := map[string]string{
		"notify:\n  quiet_hours:\n    start: \"25:00\"\n":         "notify.quiet_hours.start",
		"notify:\n  quiet_hours:\n    channels: [fax]\n":          "notify.quiet_hours.channels[0]",
		"notify:\n  in_doubt: hope\n":                             "notify.in_doubt",
		"notify:\n  batch_size: 0\n":                              "notify.batch_size",
		"notify:\n  max_deliver: 1\n":                             "notify.max_deliver",
		"notify:\n  throttle:\n    per_day: -1\n":                 "notify.throttle",
		"sms:\n  failover:\n    threshold: -2\n":                  "sms.failover",
		"sandbox:\n  faults:\n    wechat:\n      error_rate: 2\n": "sandbox.faults.wechat",
		"sandbox:\n  receipts:\n    fail_rate: -1\n":              "sandbox",
	}
	wantKeysNamed(t, cases)
}

func TestFloatFromEnvironment(t *testing.T) {
	t.Setenv("POLICYPUSH_SANDBOX_FAULTS_WECHAT_ERROR_RATE", "0.2")
	t.Setenv("POLICYPUSH_NOTIFY_QUIET_HOURS_CHANNELS", "")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Sandbox.Faults.WeChat.ErrorRate != 0.2 || len(c.Notify.QuietHours.Channels) != 0 {
		t.Fatalf("overrides not applied: %+v %+v", c.Sandbox.Faults.WeChat, c.Notify.QuietHours)
	}
	t.Setenv("POLICYPUSH_SANDBOX_FAULTS_WECHAT_ERROR_RATE", "lots")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "ERROR_RATE") {
		t.Fatalf("bad float not reported: %v", err)
	}
}
