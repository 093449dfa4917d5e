package admin

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/notify"
)

// deliveryServer is a console serving the delivery endpoints, each answering 299 with its name.
func deliveryServer(t *testing.T) *Server {
	t.Helper()
	named := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Endpoint", name)
			w.WriteHeader(299)
		})
	}
	srv, err := New(Options{DB: testenv.OpenDB(t).DB, LinkSecret: []byte(strings.Repeat("k", 32)), Delivery: DeliveryHandlers{
		WeChatCallback: named("wechat"), TencentReceipt: named("tencent"), AliyunReceipt: named("aliyun"),
		Metrics: named("metrics"), Ready: named("ready")}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// Every pattern the mux serves is in the OpenAPI document, the delivery callbacks and operators'
// endpoints included, with its permission.
func TestOpenAPIDocumentsEveryMuxPattern(t *testing.T) {
	t.Parallel()
	srv := deliveryServer(t)
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	var doc struct {
		Paths map[string]map[string]struct {
			Summary    string   `json:"summary"`
			Permission string   `json:"x-permission"`
			Tags       []string `json:"tags"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("openapi: %v: %s", err, rec.Body)
	}
	patterns := map[string]bool{}
	for _, rt := range srv.routes {
		patterns[rt.pattern()] = true
		// The mux really serves this pattern with this route (not a wider one).
		_, got := srv.mux.Handler(httptest.NewRequest(rt.method, strings.NewReplacer("{$}", "", "{", "x", "}", "").Replace(rt.path), nil))
		if got != rt.pattern() {
			t.Errorf("%s is served by the mux pattern %q", rt.pattern(), got)
		}
		op, ok := doc.Paths[rt.path][strings.ToLower(rt.method)]
		if !ok || op.Summary == "" || op.Permission != string(rt.perm) || len(op.Tags) != 1 {
			t.Errorf("%s missing or incomplete in the OpenAPI document: %+v", rt.pattern(), op)
		}
	}
	n := 0
	for path, ops := range doc.Paths {
		for m := range ops {
			n++
			if !patterns[strings.ToUpper(m)+" "+path] {
				t.Errorf("the OpenAPI document lists %s %s, which the server does not route", m, path)
			}
		}
	}
	if n != len(patterns) {
		t.Errorf("%d operations documented, %d patterns routed", n, len(patterns))
	}
	for _, want := range []string{"POST " + notify.WeChatCallbackPath, "GET " + notify.WeChatCallbackPath, "POST " + notify.TencentReceiptPath,
		"POST " + notify.AliyunReceiptPath, "GET /metrics", "GET /readyz/delivery", "GET /readyz", "GET /firms", "GET /api/v1/matches/export"} {
		if !patterns[want] {
			t.Errorf("%s is not in the route table", want)
		}
	}
}

// Callbacks are public and need no same-origin proof (providers post from their own servers), but
// only their own handler answers them; a console without a notifier leaves them out.
func TestDeliveryRoutesKeepTheirAuth(t *testing.T) {
	t.Parallel()
	srv := deliveryServer(t)
	for _, tc := range []struct{ method, path, endpoint string }{
		{http.MethodPost, notify.TencentReceiptPath + "?token=x", "tencent"},
		{http.MethodPost, notify.AliyunReceiptPath, "aliyun"},
		{http.MethodGet, notify.WeChatCallbackPath + "?echostr=1", "wechat"},
		{http.MethodPost, notify.WeChatCallbackPath, "wechat"},
		{http.MethodGet, "/metrics", "metrics"},
		{http.MethodGet, "/readyz/delivery", "ready"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}"))
		req.Header.Set("Origin", "https://sms.provider.example") // cross-site, as a provider's post is
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != 299 || rec.Header().Get("X-Endpoint") != tc.endpoint {
			t.Errorf("%s %s: %d %q, want the %s handler", tc.method, tc.path, rec.Code, rec.Header().Get("X-Endpoint"), tc.endpoint)
		}
	}
	// A wrong method never reaches a callback handler.
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, notify.TencentReceiptPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d, want 405", notify.TencentReceiptPath, rec.Code)
	}
	// Without delivery handlers (a console-only process) the routes are not served or documented.
	bare, err := New(Options{DB: srv.opts.DB, LinkSecret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range bare.routes {
		if rt.perm == permSigned || rt.path == "/metrics" {
			t.Errorf("%s routed without a handler", rt.pattern())
		}
	}
}

// Nothing registers an HTTP route outside the route table: the only Handle call in the tree is the
// one in New that registers the table.
func TestNoRouteOutsideTheTable(t *testing.T) {
	t.Parallel()
	call := regexp.MustCompile(`\.(Handle|HandleFunc)\(`)
	var found []string
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if call.MatchString(line) && !strings.Contains(line, "s.mux.Handle(rt.pattern(), s.wrap(rt))") {
				found = append(found, path+":"+strings.TrimSpace(line)+" (line "+strconv.Itoa(i+1)+")")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Fatalf("routes registered outside admin/routes.go's table:\n%s", strings.Join(found, "\n"))
	}
}
