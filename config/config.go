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
	"net/netip"
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
	Console  Console  `yaml:"console"`
	Policy   Policy   `yaml:"policy"`
	Matcher  Matcher  `yaml:"matcher"`
	Registry Registry `yaml:"registry"`
	Relay    Relay    `yaml:"relay"`
	Notify   Notify   `yaml:"notify"`
	WeChat   WeChat   `yaml:"wechat"`
	SMS      SMS      `yaml:"sms"`
	Sandbox  Sandbox  `yaml:"sandbox"`
	Fields   Fields   `yaml:"fields"`
	Payout   Payout   `yaml:"payout"`
}

// Payout configures the payout stage (docs/payout.md).
type Payout struct {
	// Holidays are public holidays (YYYY-MM-DD) not counted as working days of a 公示, on top of
	// Saturdays and Sundays.
	Holidays []string `yaml:"holidays"`
}

type Database struct {
	Driver    string        `yaml:"driver"`
	DSN       string        `yaml:"dsn"`
	MaxOpen   int           `yaml:"max_open"`
	LogSQL    bool          `yaml:"log_sql"`
	SlowQuery time.Duration `yaml:"slow_query"`
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

// Console configures sign-in and the enterprise links of the console (package admin).
type Console struct {
	LinkSecret       string        `yaml:"link_secret"`
	LinkTTL          time.Duration `yaml:"link_ttl"`
	SessionTTL       time.Duration `yaml:"session_ttl"`
	SessionIdle      time.Duration `yaml:"session_idle"`
	SecureCookies    string        `yaml:"secure_cookies"`
	LoginMaxFailures int           `yaml:"login_max_failures"`
	LoginWindow      time.Duration `yaml:"login_window"`
	LoginDelay       time.Duration `yaml:"login_delay"`
	LoginMaxDelay    time.Duration `yaml:"login_max_delay"`
	TrustedProxies   []string      `yaml:"trusted_proxies"`
	// QueryTimeout bounds the database work of one console page or GET API request (exports
	// excepted); past it the request answers 503 and its queries are cancelled.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

// Policy configures the policy lifecycle outside the console.
type Policy struct {
	// Review: once staff accounts exist, `policy apply` saves each changed policy as a version in
	// review that a second person publishes (as the console does). false: apply publishes directly
	// (rules reviewed elsewhere, e.g. in git), still only by a reviewer account.
	Review bool `yaml:"review"`
}

type Matcher struct {
	Workers         int           `yaml:"workers"`
	Shards          int           `yaml:"shards"`
	ShardAckWait    time.Duration `yaml:"shard_ack_wait"`
	CatchUpInterval time.Duration `yaml:"catchup_interval"`
	ChangeSubject   string        `yaml:"change_subject"`
}

// Registry configures where the enterprise registry comes from besides imports and change events.
type Registry struct {
	Source RegistrySource `yaml:"source"`
}

// RegistrySource is the data-sharing platform's own table, synced incrementally (registry.Sync).
type RegistrySource struct {
	Driver             string        `yaml:"driver"` // "" = no source; mysql (sqlite for a file)
	DSN                string        `yaml:"dsn"`
	Query              string        `yaml:"query"`
	Interval           time.Duration `yaml:"interval"` // how often serve syncs; 0 = only `registry sync`
	PageSize           int           `yaml:"page_size"`
	DeregisterVanished bool          `yaml:"deregister_vanished"`
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
	BatchSize     int             `yaml:"batch_size"`
	MaxAttempts   int             `yaml:"max_attempts"`
	DigestWindow  time.Duration   `yaml:"digest_window"`
	QuietHours    QuietHours      `yaml:"quiet_hours"`
	Throttle      Throttle        `yaml:"throttle"`
	QuotaPause    time.Duration   `yaml:"quota_pause"`
	InDoubt       string          `yaml:"in_doubt"`
	InDoubtGrace  time.Duration   `yaml:"in_doubt_grace"`
	ReceiptWindow time.Duration   `yaml:"receipt_window"`
	ReceiptToken  string          `yaml:"receipt_token"`
}

// QuietHours is the daily window (local time) in which the listed channels send nothing.
type QuietHours struct {
	Start    string   `yaml:"start"`
	End      string   `yaml:"end"`
	Channels []string `yaml:"channels"`
}

// Throttle paces messages to one firm on one channel; 0 turns a limit off.
type Throttle struct {
	MinInterval time.Duration `yaml:"min_interval"`
	PerDay      int           `yaml:"per_day"`
}

type WeChat struct {
	Enabled        bool   `yaml:"enabled"`
	AppID          string `yaml:"app_id"`
	AppSecret      string `yaml:"app_secret"`
	TemplateID     string `yaml:"template_id"`
	BaseURL        string `yaml:"base_url"`
	CallbackToken  string `yaml:"callback_token"`
	EncodingAESKey string `yaml:"encoding_aes_key"`
	// Templates per notice kind (matched, publicized, paid, failed): template id and key → content
	// field. docs/payout.md lists the content fields.
	Templates map[string]WeChatTemplate `yaml:"templates"`
}

// WeChatTemplate is the category template of one notice kind.
type WeChatTemplate struct {
	TemplateID string            `yaml:"template_id"`
	Fields     map[string]string `yaml:"fields"`
}

// SMSTemplate is the SMS template of one notice kind at each provider, with its parameters.
type SMSTemplate struct {
	Tencent string   `yaml:"tencent"`
	Aliyun  string   `yaml:"aliyun"`
	Params  []string `yaml:"params"`
}

type SMS struct {
	Enabled   bool      `yaml:"enabled"`
	Providers []string  `yaml:"providers"`
	Failover  Failover  `yaml:"failover"`
	Tencent   TencentSM `yaml:"tencent"`
	Aliyun    AliyunSMS `yaml:"aliyun"`
	// Templates per payout notice kind (publicized, paid, failed; matched may be given too).
	Templates map[string]SMSTemplate `yaml:"templates"`
}

// Failover is the circuit breaker that moves SMS to the next provider.
type Failover struct {
	Threshold int           `yaml:"threshold"`
	Cooldown  time.Duration `yaml:"cooldown"`
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
	Enabled  bool            `yaml:"enabled"`
	Addr     string          `yaml:"addr"`
	Faults   SandboxFaults   `yaml:"faults"`
	Receipts SandboxReceipts `yaml:"receipts"`
}

// SandboxFaults is the trouble the sandbox providers simulate.
type SandboxFaults struct {
	WeChat           ProviderFaults `yaml:"wechat"`
	Tencent          ProviderFaults `yaml:"tencent"`
	Aliyun           ProviderFaults `yaml:"aliyun"`
	ExpireTokenEvery int            `yaml:"expire_token_every"`
	Seed             int            `yaml:"seed"`
}

// ProviderFaults is one sandbox provider's simulated trouble.
type ProviderFaults struct {
	ErrorRate   float64       `yaml:"error_rate"`
	Codes       []string      `yaml:"codes"`
	Latency     time.Duration `yaml:"latency"`
	TimeoutRate float64       `yaml:"timeout_rate"`
}

// SandboxReceipts is how the sandbox reports on accepted messages.
type SandboxReceipts struct {
	Enabled       bool          `yaml:"enabled"`
	Delay         time.Duration `yaml:"delay"`
	FailRate      float64       `yaml:"fail_rate"`
	DuplicateRate float64       `yaml:"duplicate_rate"`
}

// Fields extends the rule vocabulary. Extra fields are registry data a deployment has beyond the
// standard catalog (a city's own subsidy ledger, a park's rating): they become typed variables in
// rules and are stored in the enterprise_facts table, so adding one needs no schema change.
type Fields struct {
	Extra []ExtraField `yaml:"extra"`
}

// ExtraField declares one extra field, described like a catalog entry (see `policypush fields`).
type ExtraField struct {
	Key         string   `yaml:"key"`
	Label       string   `yaml:"label"`
	Type        string   `yaml:"type"` // string, int, float, bool, date or enum
	Unit        string   `yaml:"unit"`
	Source      string   `yaml:"source"`
	Description string   `yaml:"description"`
	Enum        []string `yaml:"enum"`
}

var extraFieldKey = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// Default is the embedded default: SQLite, embedded NATS and the local sandbox providers.
func Default() Config {
	return Config{
		DataDir:  "./data",
		Timezone: "Asia/Shanghai",
		Database: Database{Driver: "sqlite", MaxOpen: 16, SlowQuery: time.Second},
		NATS: NATS{Stream: "POLICYPUSH", SubjectPrefix: "policypush", Replicas: 1,
			DuplicateWindow: 20 * time.Minute},
		HTTP: HTTP{Addr: "127.0.0.1:8080"},
		Console: Console{LinkTTL: 30 * 24 * time.Hour, SessionTTL: 12 * time.Hour, SessionIdle: 2 * time.Hour,
			SecureCookies: "auto", LoginMaxFailures: 5, LoginWindow: 15 * time.Minute,
			LoginDelay: 5 * time.Second, LoginMaxDelay: 5 * time.Minute, TrustedProxies: []string{},
			QueryTimeout: 5 * time.Second},
		Policy:   Policy{Review: true},
		Matcher:  Matcher{Workers: 0, Shards: 0, ShardAckWait: 30 * time.Second, CatchUpInterval: 10 * time.Second, ChangeSubject: "registry.changed"},
		Registry: Registry{Source: RegistrySource{Interval: 15 * time.Minute, PageSize: 1000}},
		Relay:    Relay{Interval: 200 * time.Millisecond, BatchSize: 500},
		Notify: Notify{Workers: 32, AckWait: 30 * time.Second, MaxDeliver: 100,
			Backoff:       []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute},
			MaxAckPending: 1000, SendTimeout: 10 * time.Second, BatchSize: 100, MaxAttempts: 12, DigestWindow: 10 * time.Minute,
			QuietHours: QuietHours{Start: "22:00", End: "08:00", Channels: []string{"sms"}},
			Throttle:   Throttle{MinInterval: time.Minute, PerDay: 5},
			QuotaPause: 10 * time.Minute, InDoubt: "lookup", InDoubtGrace: 5 * time.Minute,
			ReceiptWindow: time.Hour},
		WeChat: WeChat{Enabled: true, AppID: "wx-sandbox-app", AppSecret: "sandbox-secret", TemplateID: "TPL-POLICY-MATCH",
			Templates: map[string]WeChatTemplate{
				"matched":    {Fields: map[string]string{"thing1": "summary", "amount2": "amount", "time3": "deadline", "thing4": "action"}},
				"publicized": {TemplateID: "TPL-PAYOUT-PUBLICIZED", Fields: map[string]string{"thing1": "summary", "amount2": "amount", "time3": "date", "thing4": "action"}},
				"paid":       {TemplateID: "TPL-PAYOUT-PAID", Fields: map[string]string{"thing1": "summary", "amount2": "amount", "time3": "date", "phrase4": "status"}},
				"failed":     {TemplateID: "TPL-PAYOUT-FAILED", Fields: map[string]string{"thing1": "summary", "amount2": "amount", "thing3": "reason", "thing4": "action"}},
			}},
		SMS: SMS{Enabled: true, Providers: []string{"tencent", "aliyun"},
			Failover: Failover{Threshold: 5, Cooldown: time.Minute},
			Tencent: TencentSM{SecretID: "sandbox-id", SecretKey: "sandbox-key", Region: "ap-guangzhou",
				SdkAppID: "1400000000", SignName: "政策直达", TemplateID: "100001"},
			Aliyun: AliyunSMS{AccessKeyID: "sandbox-id", AccessKeySecret: "sandbox-secret", Region: "cn-hangzhou",
				SignName: "政策直达", TemplateCode: "SMS_100001"},
			Templates: map[string]SMSTemplate{
				"publicized": {Tencent: "100002", Aliyun: "SMS_100002", Params: []string{"summary", "amount", "date", "url"}},
				"paid":       {Tencent: "100003", Aliyun: "SMS_100003", Params: []string{"summary", "amount", "date", "url"}},
				"failed":     {Tencent: "100004", Aliyun: "SMS_100004", Params: []string{"summary", "reason", "action", "url"}},
			}},
		Sandbox: Sandbox{Enabled: true, Addr: "127.0.0.1:0",
			Faults: SandboxFaults{WeChat: ProviderFaults{Codes: []string{}}, Tencent: ProviderFaults{Codes: []string{}},
				Aliyun: ProviderFaults{Codes: []string{}}},
			Receipts: SandboxReceipts{Enabled: true, Delay: time.Second}},
		Fields: Fields{Extra: []ExtraField{}},
		Payout: Payout{Holidays: []string{}},
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
	case fv.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("not a number")
		}
		fv.SetFloat(f)
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
	for i, d := range c.Payout.Holidays {
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return bad(fmt.Sprintf("payout.holidays[%d]", i), "%q is not a date (YYYY-MM-DD)", d)
		}
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
	if c.Database.SlowQuery < 0 {
		return bad("database.slow_query", "%s must not be negative (0 turns the slow-query log off)", c.Database.SlowQuery)
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
	if c.Console.LinkSecret != "" && len(c.Console.LinkSecret) < 32 {
		return bad("console.link_secret", "must be at least 32 characters (or empty to generate one in data_dir)")
	}
	if c.Console.LinkTTL < time.Hour {
		return bad("console.link_ttl", "%s is too short for a firm to open its notice (at least 1h)", c.Console.LinkTTL)
	}
	if c.Console.SessionTTL < time.Minute || c.Console.SessionIdle < time.Minute || c.Console.SessionIdle > c.Console.SessionTTL {
		return bad("console.session_idle", "session_ttl and session_idle must be at least 1m, and session_idle at most session_ttl")
	}
	switch c.Console.SecureCookies {
	case "auto", "always", "never":
	default:
		return bad("console.secure_cookies", "%q is not auto, always or never", c.Console.SecureCookies)
	}
	if c.Console.LoginMaxFailures < 1 {
		return bad("console.login_max_failures", "must be at least 1")
	}
	if c.Console.LoginWindow < time.Minute {
		return bad("console.login_window", "must be at least 1m")
	}
	if c.Console.LoginDelay < 100*time.Millisecond || c.Console.LoginMaxDelay < c.Console.LoginDelay || c.Console.LoginMaxDelay > time.Hour {
		return bad("console.login_delay", "login_delay must be at least 100ms and login_max_delay between it and 1h (got %s, %s)",
			c.Console.LoginDelay, c.Console.LoginMaxDelay)
	}
	if c.Console.QueryTimeout < 100*time.Millisecond || c.Console.QueryTimeout > 10*time.Minute {
		return bad("console.query_timeout", "must be between 100ms and 10m (got %s)", c.Console.QueryTimeout)
	}
	if _, err := ParseTrustedProxies(c.Console.TrustedProxies); err != nil {
		return bad("console.trusted_proxies", "%v", err)
	}
	if c.Matcher.Workers < 0 {
		return bad("matcher.workers", "must be 0 (one per core) or more")
	}
	if c.Matcher.Shards < 0 || c.Matcher.Shards > 4096 {
		return bad("matcher.shards", "%d must be 0 (match in this process) or a shard count up to 4096", c.Matcher.Shards)
	}
	if c.Matcher.ShardAckWait < time.Second {
		return bad("matcher.shard_ack_wait", "must be at least 1s")
	}
	if c.Matcher.CatchUpInterval < 100*time.Millisecond {
		return bad("matcher.catchup_interval", "must be at least 100ms")
	}
	if c.Matcher.ChangeSubject == "" || strings.ContainsAny(c.Matcher.ChangeSubject, " *>") {
		return bad("matcher.change_subject", "%q must be a non-empty subject without wildcards", c.Matcher.ChangeSubject)
	}
	if err := c.Registry.Source.validate(bad); err != nil {
		return err
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
	if err := c.validateDelivery(bad); err != nil {
		return err
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
	seenField := map[string]bool{}
	for i, f := range c.Fields.Extra {
		key := fmt.Sprintf("fields.extra[%d]", i)
		switch {
		case !extraFieldKey.MatchString(f.Key):
			return bad(key+".key", "%q must be 1-64 lowercase letters, digits or _, starting with a letter", f.Key)
		case seenField[f.Key]:
			return bad(key+".key", "%q is declared twice", f.Key)
		case strings.TrimSpace(f.Label) == "":
			return bad(key+".label", "is required: the Chinese name authors and firms see, e.g. 研发人员数")
		}
		seenField[f.Key] = true
		switch f.Type {
		case "string", "int", "float", "bool", "date":
			if len(f.Enum) > 0 {
				return bad(key+".enum", "only fields of type enum list values")
			}
		case "enum":
			if len(f.Enum) == 0 {
				return bad(key+".enum", "list the allowed values of an enum field")
			}
		default:
			return bad(key+".type", "%q is not one of string, int, float, bool, date, enum", f.Type)
		}
	}
	return nil
}

var hhmm = regexp.MustCompile(`^([01]\d|2[0-3]):[0-5]\d$`)

// validateDelivery checks the keys of the notification path (issue 5: digests, pacing, failover,
// receipts, sandbox faults).
func (c *Config) validateDelivery(bad func(key, msg string, args ...any) error) error {
	n := c.Notify
	switch {
	case n.BatchSize < 1 || n.BatchSize > 1000:
		return bad("notify.batch_size", "%d must be between 1 and 1000", n.BatchSize)
	case n.MaxAttempts < 1:
		return bad("notify.max_attempts", "must be at least 1")
	case n.MaxDeliver < 2:
		return bad("notify.max_deliver", "must be at least 2: it only stops a message that crashes every notifier")
	case n.DigestWindow < 0:
		return bad("notify.digest_window", "must not be negative (0 sends every match on its own)")
	case !hhmm.MatchString(n.QuietHours.Start):
		return bad("notify.quiet_hours.start", "%q is not HH:MM (24-hour clock)", n.QuietHours.Start)
	case !hhmm.MatchString(n.QuietHours.End):
		return bad("notify.quiet_hours.end", "%q is not HH:MM (24-hour clock)", n.QuietHours.End)
	case n.Throttle.MinInterval < 0 || n.Throttle.PerDay < 0:
		return bad("notify.throttle", "limits must not be negative (0 turns one off)")
	case n.QuotaPause < time.Second:
		return bad("notify.quota_pause", "must be at least 1s")
	case n.InDoubt != "lookup" && n.InDoubt != "resend":
		return bad("notify.in_doubt", "%q is not lookup or resend", n.InDoubt)
	case n.InDoubtGrace < 0:
		return bad("notify.in_doubt_grace", "must not be negative")
	case n.ReceiptWindow < time.Minute:
		return bad("notify.receipt_window", "must be at least 1m")
	case c.SMS.Failover.Threshold < 0 || c.SMS.Failover.Cooldown < 0:
		return bad("sms.failover", "threshold and cooldown must not be negative (threshold 0 never fails over)")
	}
	for i, ch := range n.QuietHours.Channels {
		if ch != "wechat" && ch != "sms" {
			return bad(fmt.Sprintf("notify.quiet_hours.channels[%d]", i), "%q is not wechat or sms", ch)
		}
	}
	f := c.Sandbox.Faults
	for name, p := range map[string]ProviderFaults{"wechat": f.WeChat, "tencent": f.Tencent, "aliyun": f.Aliyun} {
		if p.ErrorRate < 0 || p.ErrorRate > 1 || p.TimeoutRate < 0 || p.TimeoutRate > 1 || p.Latency < 0 {
			return bad("sandbox.faults."+name, "rates must be between 0 and 1 and latency not negative")
		}
	}
	r := c.Sandbox.Receipts
	if r.FailRate < 0 || r.FailRate > 1 || r.DuplicateRate < 0 || r.DuplicateRate > 1 || r.Delay < 0 || f.ExpireTokenEvery < 0 {
		return bad("sandbox", "receipt rates must be between 0 and 1; delays and expire_token_every not negative")
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

// validate checks the source keys; an empty driver turns the source off and ignores the rest.
func (s RegistrySource) validate(bad func(key, msg string, args ...any) error) error {
	switch s.Driver {
	case "":
		return nil
	case "mysql", "sqlite":
	default:
		return bad("registry.source.driver", "%q is not mysql (or sqlite for a file; empty for no source)", s.Driver)
	}
	if s.DSN == "" {
		return bad("registry.source.dsn", "required when registry.source.driver is set (e.g. reader:pass@tcp(platform:3306)/yiqiyidang)")
	}
	if q := strings.ToLower(strings.TrimSpace(s.Query)); !strings.HasPrefix(q, "select") && !strings.HasPrefix(q, "with") {
		return bad("registry.source.query", "must be a SELECT whose column aliases are catalog keys plus updated_at")
	}
	if s.Interval != 0 && s.Interval < time.Minute {
		return bad("registry.source.interval", "%s is too short: at least 1m (0 = only `policypush registry sync`)", s.Interval)
	}
	if s.PageSize < 1 || s.PageSize > 10000 {
		return bad("registry.source.page_size", "%d must be between 1 and 10000", s.PageSize)
	}
	return nil
}

// ParseTrustedProxies reads config console.trusted_proxies: IP addresses or CIDR prefixes.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
