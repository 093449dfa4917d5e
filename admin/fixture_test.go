package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"gorm.io/gorm"

	"github.com/policypush/policypush/core/audit"
	demofixture "github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// fixture is a console on a real seeded database (SQLite, or MySQL when the environment says
// so): a synthetic registry, the six demo policies matched as of the demo date, the demo accounts,
// and one failed delivery in each demo park.
type fixture struct {
	t      *testing.T
	db     *gorm.DB
	srv    *Server
	ts     *httptest.Server
	secret []byte
	// journal takes the audit records of reads (audit.Journal), as serve's console does
	journal *audit.Journal
	// sip and njjb are firms with an active match, in parks SIP and NJ-JB; sipPolicy and
	// njjbPolicy are policies they match.
	sip, njjb             store.Enterprise
	sipPolicy, njjbPolicy string
	// sipDelivery and njjbDelivery are the failed deliveries to them.
	sipDelivery, njjbDelivery uint64
	// skew moves the server's clock (nanoseconds ahead of now).
	skew atomic.Int64
}

const (
	testPassword = "correct-horse-battery"
	demoAsOf     = "2022-09-30"
)

// testPasswordHash is the bcrypt hash of testPassword, made once: the demo accounts of every
// fixture share it (SeedDemoUsers itself is exercised by the demo's end-to-end test).
var testPasswordHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcryptCost)
	if err != nil {
		panic(err)
	}
	return string(h)
})

// userScopes are demo accounts of each kind of scope, with the SQL condition on enterprises e
// that selects the firms each may see.
var userScopes = []struct {
	user, where string
	arg         any
}{
	{"admin", "1 = ?", 1},
	{"region_3205", "e.region_code LIKE ?", "3205%"},
	{"park_sip", "e.park_id = ?", "SIP"},
	{"park_njjb", "e.park_id = ?", "NJ-JB"},
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	tdb := testenv.OpenDB(t)
	db := tdb.DB
	firms := registry.Synth(900, 11)
	if err := db.CreateInBatches(firms, 300).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := store.Recount(ctx, db, true); err != nil { // the firms were written around the registry: count them
		t.Fatal(err)
	}
	demofixture.PublishDemo(t, db)
	day, _ := rules.ParseDate(demoAsOf)
	if _, err := matcher.Run(ctx, db, day.Time, "", matcher.Options{Workers: 2}); err != nil {
		t.Fatal(err)
	}
	for _, du := range DemoUsers {
		if err := db.Create(&store.User{Username: du.Username, PasswordHash: testPasswordHash(), Role: du.Role,
			Department: du.Department, ParkID: du.ParkID, RegionPrefix: du.RegionPrefix}).Error; err != nil {
			t.Fatal(err)
		}
	}
	// The matcher engine, as serve and demo run it: it takes registry changes posted to the API.
	engine := matcher.NewEngine(db, matcher.EngineOptions{Workers: 2, AsOf: func() time.Time { return day.Time }})
	if err := engine.Load(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, db: db, secret: []byte("test-link-secret-0123456789abcdef")}
	var err error
	// reads are audited through a journal, as in serve; auditCount flushes it
	if f.journal, err = audit.OpenJournal(db, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.journal.Close() })
	f.srv, err = New(Options{DB: db, LinkSecret: f.secret, Location: time.FixedZone("CST", 8*3600), Matcher: engine,
		Now: func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }, AuditJournal: f.journal})
	if err != nil {
		t.Fatal(err)
	}
	f.ts = httptest.NewServer(f.srv)
	t.Cleanup(f.ts.Close)
	f.sip, f.sipPolicy = f.firmWithMatch("SIP")
	f.njjb, f.njjbPolicy = f.firmWithMatch("NJ-JB")
	f.sipDelivery = f.failedDelivery(f.sip, f.sipPolicy)
	f.njjbDelivery = f.failedDelivery(f.njjb, f.njjbPolicy)
	return f
}

// firmWithMatch picks a firm of the park with an active match and a contact phone.
func (f *fixture) firmWithMatch(park string) (store.Enterprise, string) {
	var row struct {
		CreditCode, PolicyID string
	}
	err := f.db.Table("matches AS m").Select("m.credit_code, m.policy_id").
		Joins("JOIN enterprises e ON e.credit_code = m.credit_code").
		Where("m.state = ? AND e.park_id = ? AND e.contact_phone <> ''", store.MatchActive, park).
		Order("m.credit_code, m.policy_id").Limit(1).Scan(&row).Error
	if err != nil || row.CreditCode == "" {
		f.t.Fatalf("no matched firm in park %s: %v", park, err)
	}
	var e store.Enterprise
	if err := f.db.Where("credit_code = ?", row.CreditCode).Take(&e).Error; err != nil {
		f.t.Fatal(err)
	}
	return e, row.PolicyID
}

// failedDelivery records an SMS to the firm that gave up, the way the notifier does.
func (f *fixture) failedDelivery(e store.Enterprise, policyID string) uint64 {
	var m store.Match
	if err := f.db.Where("credit_code = ? AND policy_id = ? AND state = ?", e.CreditCode, policyID, store.MatchActive).Take(&m).Error; err != nil {
		f.t.Fatal(err)
	}
	now := time.Now().UTC()
	d := store.Delivery{MatchID: m.ID, Channel: "sms", Recipient: e.ContactPhone, CreditCode: e.CreditCode, PolicyID: policyID,
		State: store.DeliveryDead, Provider: "tencent", Attempts: 3, LastCode: "LimitExceeded.PhoneNumberDailyLimit", Items: 1}
	if err := f.db.Create(&d).Error; err != nil {
		f.t.Fatal(err)
	}
	if err := f.db.Create(&store.DeliveryItem{MatchID: m.ID, Channel: "sms", DeliveryID: d.ID, CreditCode: e.CreditCode,
		PolicyID: policyID, QueuedAt: now}).Error; err != nil {
		f.t.Fatal(err)
	}
	if err := f.db.Create(&store.DeliveryEvent{DeliveryID: d.ID, At: now, Kind: store.EventDead, Provider: "tencent",
		Code: "LimitExceeded.PhoneNumberDailyLimit"}).Error; err != nil {
		f.t.Fatal(err)
	}
	return d.ID
}

// caller is a client of the test server: a staff session, an API token, or nobody.
type caller struct {
	name   string
	cookie *http.Cookie
	csrf   string
	bearer string
}

// session signs a demo user in directly in the database (the login path has its own tests).
func (f *fixture) session(username string) caller {
	var u store.User
	if err := f.db.Where("username = ?", username).Take(&u).Error; err != nil {
		f.t.Fatal(err)
	}
	token, csrf := randomToken(32), randomToken(32)
	now := time.Now().UTC()
	if err := f.db.Create(&store.Session{IDHash: sha256Hex(token), UserID: u.ID, CSRFToken: csrf, CreatedAt: now,
		LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}).Error; err != nil {
		f.t.Fatal(err)
	}
	return caller{name: username, cookie: &http.Cookie{Name: sessionCookie, Value: token}, csrf: csrf}
}

// token issues an API token.
func (f *fixture) token(name string, nt NewAPIToken) caller {
	nt.Name = name
	_, secret, err := CreateAPIToken(context.Background(), f.db, nt, "test", time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return caller{name: name, bearer: secret}
}

// link is an enterprise link token for a firm and policy.
func (f *fixture) link(code, policyID string, ttl time.Duration) string {
	return signLink(f.secret, code, policyID, time.Now().Add(ttl))
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response is not JSON (%d): %v\n%s", r.status, err, r.body)
	}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// do sends a request; body is url.Values (a form), a string or []byte (JSON), or nil.
func (f *fixture) do(c caller, method, path string, body any, cookies ...*http.Cookie) response {
	f.t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case url.Values:
		rd, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/json"
	case nil:
	default:
		j, _ := json.Marshal(b)
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, f.ts.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
		if method != http.MethodGet {
			req.Header.Set(csrfHeader, c.csrf)
		}
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// auditCount counts audit rows of an action by an actor (and object when given), after storing
// what the audit journal holds.
func (f *fixture) auditCount(actor, action, object string) int64 {
	if err := f.journal.Flush(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	q := f.db.Model(&store.AuditLog{}).Where("actor = ? AND action = ?", actor, action)
	if object != "" {
		q = q.Where("object = ?", object)
	}
	var n int64
	if err := q.Count(&n).Error; err != nil {
		f.t.Fatal(err)
	}
	return n
}
