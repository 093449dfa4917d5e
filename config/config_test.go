package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The shipped config.yaml must load to exactly the built-in defaults, and document every key.
func TestShippedConfigIsTheDefault(t *testing.T) {
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("config.yaml differs from Default():\n%+v\n%+v", c, Default())
	}
}

func TestInvalidConfigNamesTheKey(t *testing.T) {
	cases := map[string]string{
		"database:\n  driver: oracle\n":    "database.driver",
		"nats:\n  replicas: 9\n":           "nats.replicas",
		"notify:\n  ack_wait: soon\n":      "ack_wait",
		"notfy:\n  workers: 2\n":           "notfy",
		"http:\n  addr: nonsense\n":        "http.addr",
		"sms:\n  providers: [telegram]\n":  "sms.providers[0]",
		"database:\n  driver: mysql\n":     "database.dsn",
		"nats:\n  duplicate_window: 10s\n": "nats.duplicate_window",
		"notify:\n  send_timeout: 1m\n":    "notify.send_timeout",
	}
	wantKeysNamed(t, cases)
}

// loadYAML loads a config file holding body.
func loadYAML(t *testing.T, body string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

// wantKeysNamed loads each body of cases and wants an error that names its key.
func wantKeysNamed(t *testing.T, cases map[string]string) {
	t.Helper()
	for body, key := range cases {
		if _, err := loadYAML(t, body); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %s", body, err, key)
		}
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("POLICYPUSH_DATABASE_DRIVER", "mysql")
	t.Setenv("POLICYPUSH_DATABASE_DSN", "root@tcp(127.0.0.1:3306)/test")
	t.Setenv("POLICYPUSH_NOTIFY_BACKOFF", "1s, 2s")
	t.Setenv("POLICYPUSH_SMS_PROVIDERS", "aliyun,tencent")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.Driver != "mysql" || c.Database.DSN == "" || len(c.Notify.Backoff) != 2 || c.Notify.Backoff[1] != 2*time.Second || c.SMS.Providers[0] != "aliyun" {
		t.Fatalf("overrides not applied: %+v", c)
	}
	t.Setenv("POLICYPUSH_NOTIFY_WORKERS", "many")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "POLICYPUSH_NOTIFY_WORKERS") {
		t.Fatalf("bad env value not reported: %v", err)
	}
}
