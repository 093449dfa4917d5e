// Package config owns the configuration: the Config struct with its defaults, loading config.yaml
// strictly (an unknown or mistyped key is an error naming it), environment overrides and
// validation. Every key is documented in the repository's config.yaml; keep the two in step.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. yaml tags are the keys of config.yaml; the environment
// override of a key is POLICYPUSH_ + its path in upper case joined by "_" (database.dsn →
// POLICYPUSH_DATABASE_DSN).
type Config struct {
	DataDir  string   `yaml:"data_dir"`
	Timezone string   `yaml:"timezone"`
	Database Database `yaml:"database"`
	NATS     NATS     `yaml:"nats"`
	HTTP     HTTP     `yaml:"http"`
	Matcher  Matcher  `yaml:"matcher"`
	Relay    Relay    `yaml:"relay"`
	Notify   Notify   `yaml:"notify"`
	WeChat   WeChat   `yaml:"wechat"`
	SMS      SMS      `yaml:"sms"`
	Sandbox  Sandbox  `yaml:"sandbox"`
}

type Database struct {
	Driver  string `yaml:"driver"`
	DSN     string `yaml:"dsn"`
	MaxOpen int    `yaml:"max_open"`
}

type NATS struct {
	URL             string        `yaml:"url"`
	Stream          string        `yaml:"stream"`
	SubjectPrefix   string        `yaml:"subject_prefix"`
	Replicas        int           `yaml:"replicas"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
}

type HTTP struct {
	Addr      string `yaml:"addr"`
	PublicURL string `yaml:"public_url"`
}

type Matcher struct {
	Workers int `yaml:"workers"`
}

type Relay struct {
	Interval  time.Duration `yaml:"interval"`
	BatchSize int           `yaml:"batch_size"`
}

type Notify struct {
	Workers       int             `yaml:"workers"`
	AckWait       time.Duration   `yaml:"ack_wait"`
	MaxDeliver    int             `yaml:"max_deliver"`
	Backoff       []time.Duration `yaml:"backoff"`
	MaxAckPending int             `yaml:"max_ack_pending"`
	SendTimeout   time.Duration   `yaml:"send_timeout"`
}

type WeChat struct {
	Enabled    bool   `yaml:"enabled"`
	AppID      string `yaml:"app_id"`
	AppSecret  string `yaml:"app_secret"`
	TemplateID string `yaml:"template_id"`
	BaseURL    string `yaml:"base_url"`
}

type SMS struct {
	Enabled   bool      `yaml:"enabled"`
	Providers []string  `yaml:"providers"`
	Tencent   TencentSM `yaml:"tencent"`
	Aliyun    AliyunSMS `yaml:"aliyun"`
}

type TencentSM struct {
	SecretID   string `yaml:"secret_id"`
	SecretKey  string `yaml:"secret_key"`
	Region     string `yaml:"region"`
	SdkAppID   string `yaml:"sdk_app_id"`
	SignName   string `yaml:"sign_name"`
	TemplateID string `yaml:"template_id"`
	Endpoint   string `yaml:"endpoint"`
}

type AliyunSMS struct {
	AccessKeyID     string `yaml:"access_key_id"`
	AccessKeySecret string `yaml:"access_key_secret"`
	Region          string `yaml:"region"`
	SignName        string `yaml:"sign_name"`
	TemplateCode    string `yaml:"template_code"`
	Endpoint        string `yaml:"endpoint"`
}

type Sandbox struct {
	Enabled bool   `yaml:"enabled"`
	Addr    string `yaml:"addr"`
}

// Default is the embedded default: SQLite, embedded NATS and the local sandbox providers.
func Default() Config {
	return Config{
		DataDir:  "./data",
		Timezone: "Asia/Shanghai",
		Database: Database{Driver: "sqlite", MaxOpen: 16},
		NATS: NATS{Stream: "POLICYPUSH", SubjectPrefix: "policypush", Replicas: 1,
			DuplicateWindow: 20 * time.Minute},
		HTTP:    HTTP{Addr: "127.0.0.1:8080"},
		Matcher: Matcher{Workers: 0},
		Relay:   Relay{Interval: 200 * time.Millisecond, BatchSize: 500},
		Notify: Notify{Workers: 8, AckWait: 30 * time.Second, MaxDeliver: 20,
			Backoff:       []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute},
			MaxAckPending: 256, SendTimeout: 10 * time.Second},
		WeChat: WeChat{Enabled: true, AppID: "wx-sandbox-app", AppSecret: "sandbox-secret", TemplateID: "TPL-POLICY-MATCH"},
		SMS: SMS{Enabled: true, Providers: []string{"tencent", "aliyun"},
			Tencent: TencentSM{SecretID: "sandbox-id", SecretKey: "sandbox-key", Region: "ap-guangzhou",
				SdkAppID: "1400000000", SignName: "政策直达", TemplateID: "100001"},
			Aliyun: AliyunSMS{AccessKeyID: "sandbox-id", AccessKeySecret: "sandbox-secret", Region: "cn-hangzhou",
				SignName: "政策直达", TemplateCode: "SMS_100001"}},
		Sandbox: Sandbox{Enabled: true, Addr: "127.0.0.1:0"},
	}
}

// Load reads path (empty: defaults only), applies environment overrides and validates.
func Load(path string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %s", path, yamlError(err, b))
		}
	}
	if err := applyEnv(reflect.ValueOf(&c).Elem(), "POLICYPUSH", os.LookupEnv); err != nil {
		return c, err
	}
	return c, c.Validate()
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// yamlError names the key of each "line N" the YAML decoder complains about.
func yamlError(err error, src []byte) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimSpace(strings.ReplaceAll(s, "\n ", ";"))
	return yamlLine.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.Atoi(yamlLine.FindStringSubmatch(m)[1])
		if key := keyAtLine(src, n); key != "" {
			return fmt.Sprintf("line %d (key %s): ", n, key)
		}
		return m
	})
}

// keyAtLine returns the dotted key path defined on a 1-based line, from indentation.
func keyAtLine(src []byte, line int) string {
	type level struct {
		indent int
		key    string
	}
	var stack []level
	for i, l := range strings.Split(string(src), "\n") {
		t := strings.TrimLeft(l, " ")
		if t == "" || strings.HasPrefix(t, "#") || strings.HasPrefix(t, "-") {
			continue
		}
		key, _, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		indent := len(l) - len(t)
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, level{indent, strings.TrimSpace(key)})
		if i+1 == line {
			parts := make([]string, len(stack))
			for j, s := range stack {
				parts[j] = s.key
			}
			return strings.Join(parts, ".")
		}
	}
	return ""
}

var durationType = reflect.TypeOf(time.Duration(0))

// applyEnv sets every leaf field from PREFIX_PATH when that variable exists. Lists are comma-separated.
func applyEnv(v reflect.Value, prefix string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		name := prefix + "_" + strings.ToUpper(key)
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			if err := applyEnv(fv, name, lookup); err != nil {
				return err
			}
			continue
		}
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setScalar(fv, raw); err != nil {
			return fmt.Errorf("environment %s=%q: %w", name, raw, err)
		}
	}
	return nil
}

func setScalar(fv reflect.Value, raw string) error {
	switch {
	case fv.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("not a duration (use e.g. 500ms, 30s, 10m)")
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(raw)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not a boolean (use true or false)")
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("not a whole number")
		}
		fv.SetInt(int64(n))
	case fv.Kind() == reflect.Slice:
		parts := strings.Split(raw, ",")
		s := reflect.MakeSlice(fv.Type(), 0, len(parts))
		for _, p := range parts {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			e := reflect.New(fv.Type().Elem()).Elem()
			if err := setScalar(e, p); err != nil {
				return err
			}
			s = reflect.Append(s, e)
		}
		fv.Set(s)
	default:
		return fmt.Errorf("unsupported type %s", fv.Type())
	}
	return nil
}

// Validate checks every key and names the first bad one.
func (c *Config) Validate() error {
	bad := func(key, msg string, args ...any) error {
		return fmt.Errorf("config key %s: %s", key, fmt.Sprintf(msg, args...))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return bad("data_dir", "must not be empty")
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		return bad("timezone", "unknown time zone %q (use an IANA name such as Asia/Shanghai)", c.Timezone)
	}
	switch c.Database.Driver {
	case "sqlite":
	case "mysql":
		if c.Database.DSN == "" {
			return bad("database.dsn", "required when database.driver is mysql (e.g. user:pass@tcp(host:3306)/policypush)")
		}
	default:
		return bad("database.driver", "%q is not sqlite or mysql", c.Database.Driver)
	}
	if c.Database.MaxOpen < 1 {
		return bad("database.max_open", "must be at least 1")
	}
	if c.NATS.Stream == "" || strings.ContainsAny(c.NATS.Stream, ". *>") {
		return bad("nats.stream", "%q must be a non-empty name without dots, spaces or wildcards", c.NATS.Stream)
	}
	if c.NATS.SubjectPrefix == "" || strings.ContainsAny(c.NATS.SubjectPrefix, " *>") {
		return bad("nats.subject_prefix", "%q must be a non-empty subject token without wildcards", c.NATS.SubjectPrefix)
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		return bad("nats.replicas", "%d must be between 1 and 5", c.NATS.Replicas)
	}
	if c.NATS.DuplicateWindow < time.Minute {
		return bad("nats.duplicate_window", "%s is too short: it must exceed the relay's worst retry delay (at least 1m)", c.NATS.DuplicateWindow)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		return bad("http.addr", "%q is not host:port", c.HTTP.Addr)
	}
	if c.Matcher.Workers < 0 {
		return bad("matcher.workers", "must be 0 (one per core) or more")
	}
	if c.Relay.Interval <= 0 {
		return bad("relay.interval", "must be positive")
	}
	if c.Relay.BatchSize < 1 || c.Relay.BatchSize > 10000 {
		return bad("relay.batch_size", "%d must be between 1 and 10000", c.Relay.BatchSize)
	}
	if c.Notify.Workers < 1 {
		return bad("notify.workers", "must be at least 1")
	}
	if c.Notify.AckWait < time.Second {
		return bad("notify.ack_wait", "must be at least 1s")
	}
	if c.Notify.SendTimeout <= 0 || c.Notify.SendTimeout >= c.Notify.AckWait {
		return bad("notify.send_timeout", "%s must be positive and shorter than notify.ack_wait (%s)", c.Notify.SendTimeout, c.Notify.AckWait)
	}
	if c.Notify.MaxDeliver < 1 {
		return bad("notify.max_deliver", "must be at least 1")
	}
	if c.Notify.MaxAckPending < 1 {
		return bad("notify.max_ack_pending", "must be at least 1")
	}
	for i, d := range c.Notify.Backoff {
		if d <= 0 {
			return bad(fmt.Sprintf("notify.backoff[%d]", i), "must be positive")
		}
	}
	if c.WeChat.Enabled && (c.WeChat.AppID == "" || c.WeChat.AppSecret == "" || c.WeChat.TemplateID == "") {
		return bad("wechat", "app_id, app_secret and template_id are required when wechat.enabled is true")
	}
	if c.SMS.Enabled {
		if len(c.SMS.Providers) == 0 {
			return bad("sms.providers", "list at least one of tencent, aliyun when sms.enabled is true")
		}
		for i, p := range c.SMS.Providers {
			if p != "tencent" && p != "aliyun" {
				return bad(fmt.Sprintf("sms.providers[%d]", i), "%q is not tencent or aliyun", p)
			}
		}
	}
	if c.HTTP.PublicURL != "" && !strings.HasPrefix(c.HTTP.PublicURL, "http://") && !strings.HasPrefix(c.HTTP.PublicURL, "https://") {
		return bad("http.public_url", "%q must start with http:// or https://", c.HTTP.PublicURL)
	}
	return nil
}

// Embedded reports whether NATS runs inside the process.
func (c *Config) Embedded() bool { return c.NATS.URL == "" }

// SQLitePath is the database file of the embedded default.
func (c *Config) SQLitePath() string {
	if c.Database.DSN != "" {
		return c.Database.DSN
	}
	return filepath.Join(c.DataDir, "policypush.db")
}

// Location is the configured time zone (validated by Load).
func (c *Config) Location() *time.Location {
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return time.FixedZone("CST", 8*3600)
	}
	return loc
}
