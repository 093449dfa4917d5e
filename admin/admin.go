// Package admin owns the console and the JSON API: server-rendered pages in Chinese for policy
// departments, park managers, district officials, auditors and enterprises, and /api/v1 for the
// same things plus integrations. It may call every other package; nothing calls it.
//
// Every handler has one shape: read params → validate → call the store (or another package) →
// respond. The console's SQL is in package store (store/console_*.go): admin builds no query and
// opens no transaction (TestAdminRunsNoQueries). Authorization is decided before a handler runs (the route's permission) and inside it
// (the firm scope of the principal, applied to every query that touches firm data); templates hold
// no logic. Nothing is fetched at run time: no CDN, no web font, charts are inline SVG.
package admin

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/core"
	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

//go:embed templates/*.html
var templateFS embed.FS

// Options are the console's dependencies and settings. Bus may be nil.
type Options struct {
	DB  *gorm.DB
	Bus *bus.Bus
	// SandboxDir holds the sandbox providers' records; empty when no sandbox runs (production).
	SandboxDir string
	Log        *slog.Logger
	Location   *time.Location
	// LinkSecret signs enterprise links (HMAC-SHA256). Required: at least 32 bytes.
	LinkSecret []byte
	// LinkTTL is how long an enterprise link issued by the console stays valid.
	LinkTTL time.Duration
	// SessionTTL ends a staff session this long after sign-in; SessionIdle after this long unused.
	SessionTTL  time.Duration
	SessionIdle time.Duration
	// SecureCookies: "auto" sets the Secure flag when the request came over TLS or PublicURL is
	// https; "always" and "never" force it.
	SecureCookies string
	// PublicURL is the base URL firms see (links in notices); empty: derived from the request.
	PublicURL string
	// LoginMaxFailures failed sign-ins of one account inside LoginWindow cost nothing; each further
	// one makes the account wait LoginDelay, doubling up to LoginMaxDelay, before its next try
	// (never a hard lock). One address gets four times as many free failures over all accounts.
	// See throttle.go.
	LoginMaxFailures int
	LoginWindow      time.Duration
	LoginDelay       time.Duration
	LoginMaxDelay    time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the client address.
	TrustedProxies []netip.Prefix
	// Matcher is the running matcher engine (serve, demo): it applies registry changes posted to
	// the API and gives the evaluation date. Nil in processes without one.
	Matcher *matcher.Engine
	// SubjectPrefix is the NATS subject prefix (config nats.subject_prefix): resends queue notices
	// under it.
	SubjectPrefix string
	// Now is the clock; nil = time.Now. Tests move it.
	Now func() time.Time
	// PayoutHolidays are the public holidays a 公示 does not count (config payout.holidays).
	PayoutHolidays []string
	// Vocabulary is what rules compile against: the field catalog and the deployment's extra fields
	// (config fields.extra); nil: the standard catalog.
	Vocabulary *rules.Vocabulary
	// Delivery are the delivery path's endpoints, served from the same route table (and OpenAPI
	// document) as everything else; serve sets them, other processes leave them nil.
	Delivery DeliveryHandlers
	// QueryTimeout is the deadline of a GET request's database work (config console.query_timeout;
	// default 5s); see deadline.go.
	QueryTimeout time.Duration
	// Gate is where a person's request tells the pipeline of this process (relay, notifiers) to
	// let it go first (stage.Gate); nil: no precedence (a console in a process of its own).
	Gate *stage.Gate
	// AuditJournal takes the audit records of staff reads off the request path (audit.Journal,
	// docs/console.md "Audit journal"); nil: they are written to the database in the request.
	AuditJournal *audit.Journal
}

// DeliveryHandlers are the endpoints of the delivery path (package notify and the serve process):
// provider callbacks, which are public but check the provider's signature or token themselves,
// and the operators' /metrics and /readyz/delivery. A nil handler leaves its route out.
type DeliveryHandlers struct {
	WeChatCallback http.Handler // GET: URL verification; POST: delivery reports (signed)
	TencentReceipt http.Handler // POST: SMS status reports (token)
	AliyunReceipt  http.Handler // POST: SMS status reports (token)
	Metrics        http.Handler // GET: Prometheus metrics
	Ready          http.Handler // GET: relay, notifier and provider readiness
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.LinkTTL <= 0 {
		o.LinkTTL = 30 * 24 * time.Hour
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.SessionIdle <= 0 {
		o.SessionIdle = 2 * time.Hour
	}
	if o.SecureCookies == "" {
		o.SecureCookies = "auto"
	}
	if o.LoginMaxFailures <= 0 {
		o.LoginMaxFailures = 5
	}
	if o.LoginWindow <= 0 {
		o.LoginWindow = 15 * time.Minute
	}
	if o.LoginDelay <= 0 {
		o.LoginDelay = 5 * time.Second
	}
	if o.LoginMaxDelay <= 0 {
		o.LoginMaxDelay = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 5 * time.Second
	}
}

// Server is the console's HTTP handler.
type Server struct {
	opts   Options
	mux    *http.ServeMux
	pages  map[string]*template.Template
	routes []route
	core   *core.Service // the operations the CLI offers too (export, near-misses, readiness)

	evalMu  sync.Mutex
	evalAt  time.Time // when evalDay was read
	evalDay time.Time

	// heavy holds a turn of each list page that sorts a large scope's matches (heavyPage); at
	// most cap(heavy) run at once.
	heavy        chan struct{}
	heavyMatches int64 // from how many matches in scope a sorted page is heavy

	touching    sync.Map // sessions and tokens whose last use is being stored (touch)
	touches     sync.WaitGroup
	touchCtx    context.Context // ends at Wait: a last-use update is not worth a slower stop
	touchCancel context.CancelFunc
}

// New builds the handler. It fails when the link secret is missing or too short: enterprise links
// signed with a guessable key would open every firm's page.
func New(o Options) (*Server, error) {
	o.defaults()
	if len(o.LinkSecret) < 32 {
		return nil, errLinkSecret
	}
	if o.DB != nil { // MySQL: the server, too, stops a console statement at its deadline
		db, err := store.BoundStatements(context.Background(), o.DB)
		if err != nil {
			return nil, err
		}
		o.DB = db
	}
	s := &Server{opts: o, mux: http.NewServeMux(), pages: map[string]*template.Template{},
		heavy: make(chan struct{}, heavyPages), heavyMatches: heavyScope,
		core: core.New(o.DB, core.Options{Location: o.Location, Now: o.Now, Vocabulary: o.Vocabulary, Journal: o.AuditJournal})}
	s.touchCtx, s.touchCancel = context.WithCancel(context.Background())
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	for _, rt := range s.routeTable() {
		if rt.h == nil { // a delivery endpoint this process does not serve
			continue
		}
		s.routes = append(s.routes, rt)
		s.mux.Handle(rt.pattern(), s.wrap(rt))
	}
	return s, nil
}

type ctxKey int

const nonceKey ctxKey = 1

// ServeHTTP sets the security headers every response carries. Scripts run only with the
// per-response nonce: the few lines of inline script the editor needs, nothing from elsewhere.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	nonce := newNonce()
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin: the enterprise link (a credential in the URL) never leaves in a Referer, and
	// browsers still send a real Origin on our own form posts (no-referrer would make it "null").
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'nonce-"+nonce+"'; style-src 'self' 'unsafe-inline'; "+
		"img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if !strings.HasPrefix(r.URL.Path, "/healthz") && !strings.HasPrefix(r.URL.Path, "/readyz") {
		h.Set("Cache-Control", "no-store")
	}
	s.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nonceKey, nonce)))
}

func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

func nonceOf(r *http.Request) string {
	n, _ := r.Context().Value(nonceKey).(string)
	return n
}

func (s *Server) now() time.Time { return s.opts.Now().UTC() }
