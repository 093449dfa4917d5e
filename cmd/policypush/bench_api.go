package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"gorm.io/gorm"

	"github.com/policypush/policypush/admin"
	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/store"
)

func init() { addSubcommand("bench", benchAPICmd) }

// benchAPIStream begins the names of the streams bench api makes on an external NATS server.
const benchAPIStream = "PPBENCHAPI_"

// apiBench sizes `bench api`.
type apiBench struct {
	pipelineBench
	rate     int
	duration time.Duration
	export   bool
	// exportTimeout bounds the export's measurement
	exportTimeout time.Duration
	timeout       time.Duration // console.query_timeout of the server under test
	natsURL       string        // empty: NATS inside the process
	logSQL        bool          // database.log_sql of the server under test
}

// apiEndpoint is one line of the result: one role's requests to one page or API endpoint.
type apiEndpoint struct {
	Role     string         `json:"role"`
	Endpoint string         `json:"endpoint"`
	Requests uint64         `json:"requests"`
	Errors   int            `json:"errors"` // transport errors and answers other than 2xx
	P50ms    float64        `json:"p50_ms"`
	P95ms    float64        `json:"p95_ms"`
	P99ms    float64        `json:"p99_ms"`
	MaxMs    float64        `json:"max_ms"`
	Codes    map[string]int `json:"codes"`
}

// apiResult is what `bench api` prints.
type apiResult struct {
	Firms    int     `json:"firms"`
	Policies int     `json:"policies"`
	Database string  `json:"database"`
	CPUs     int     `json:"cpus"`
	Seeded   bool    `json:"seeded"`
	Matches  int64   `json:"active_matches"`
	Rate     int     `json:"rate"` // requests per second over all roles and endpoints
	Seconds  float64 `json:"seconds"`
	// how long the matcher engine took to load its snapshot of the registry before the attack
	EngineLoadSeconds float64       `json:"engine_load_seconds"`
	Endpoints         []apiEndpoint `json:"endpoints"`
	Delivered         int64         `json:"notices_sent_during_attack"` // deliveries that reached sent/delivered meanwhile
	PipelineLog       int           `json:"pipeline_warnings"`          // WARN/ERROR lines the server logged during the attack
	Timeouts          int           `json:"console_timeouts"`           // requests cut by console.query_timeout (503 timeout)

	ExportRows       int64   `json:"export_rows"`
	ExportSeconds    float64 `json:"export_seconds"`
	ExportRowsPerSec float64 `json:"export_rows_per_second"`
	ExportError      string  `json:"export_error,omitempty"`
}

// benchAPICmd and benchPipelineCmd open alike (options, --json, report) on purpose: each command's
// help and flags read in one place; what they share is in pipelineBench.flags and report.
func benchAPICmd(g *globals) *cobra.Command {
	o := apiBench{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Drive the console and JSON API as several roles at a given rate while the pipeline runs",
		Long: `Seeds (or reuses) a data dir like "bench pipeline" (--firms synthetic firms, --policies synthetic
policies, matched once as of --as-of with "policypush match"), then starts the server in this
process as serve does (relay, notifiers on the local sandbox, the matcher engine at --as-of, the
console) and drives it with the vegeta load generator: the demo accounts admin (system admin),
region_3205 (city official, Suzhou) and park_sip (park manager) sign in, and each requests its
pages and GET API endpoints round-robin, at --rate requests per second in all, for --duration.
The notices the match queued are relayed and delivered meanwhile.

Prints per role and endpoint the requests, errors (transport errors and non-2xx answers),
p50/p95/p99/max latency, then the notices delivered during the attack and the export rate (rows
per second of GET /api/v1/matches/export?format=csv as the park manager), as a table or with --json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := runAPIBench(cmd.Context(), o, cmd.ErrOrStderr())
			return report(res, err, asJSON, printAPIBench)
		},
	}
	f := cmd.Flags()
	o.flags(f)
	f.IntVar(&o.rate, "rate", 20, "requests per second, over all roles and endpoints")
	f.DurationVar(&o.duration, "duration", 30*time.Second, "how long to attack")
	f.BoolVar(&o.export, "export", true, "measure the export rate after the attack")
	f.DurationVar(&o.exportTimeout, "export-timeout", 2*time.Minute, "give the export this long; the figures so far are printed either way")
	f.DurationVar(&o.timeout, "query-timeout", 5*time.Second, "console.query_timeout of the server")
	f.BoolVar(&o.logSQL, "log-sql", false, "log every statement of the server under test, with its duration, into bench-api-server.log (database.log_sql)")
	f.StringVar(&o.natsURL, "nats-url", "", "external NATS (a stream and subjects of the benchmark's own; PPBENCHAPI_* streams an earlier run left are deleted first, so run one bench api per server at a time); default: inside the process")
	f.BoolVar(&asJSON, "json", false, "print the figures as JSON")
	return cmd
}

// seedAPIBench seeds the data dir as bench pipeline does (a reused dir is taken as it is) and
// matches it once.
func seedAPIBench(ctx context.Context, o apiBench, progress io.Writer) (bool, error) {
	run, err := o.commands(ctx, progress)
	if err != nil {
		return false, err
	}
	seeded, err := o.seedDir(run, progress)
	if err != nil {
		return seeded, err
	}
	marker := filepath.Join(o.dir, "bench-api-matched")
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(progress, "policypush match --as-of %s\n", o.asOf)
		if _, err := run(io.Discard, "match", "--as-of", o.asOf); err != nil {
			return seeded, err
		}
		if err := os.WriteFile(marker, []byte(o.asOf+"\n"), 0o644); err != nil {
			return seeded, err
		}
	}
	return seeded, nil
}

// benchRole is a signed-in account and what it requests.
type benchRole struct {
	name    string
	header  http.Header
	targets []vegeta.Target
	names   map[string]string // URL → endpoint label
	perms   []string
	// planErrors are the answers that kept plan from a firm or a second page
	planErrors []string
}

func runAPIBench(ctx context.Context, o apiBench, progress io.Writer) (apiResult, error) {
	res := apiResult{Firms: o.firms, Policies: o.policies, CPUs: runtime.NumCPU(), Database: o.database(), Rate: o.rate}
	if o.rate < 1 || o.duration <= 0 {
		return res, errors.New("--rate must be at least 1 and --duration positive")
	}
	day, cleanup, err := o.begin("policypush-api")
	if err != nil {
		return res, err
	}
	defer cleanup()
	if res.Seeded, err = seedAPIBench(ctx, o, progress); err != nil {
		return res, err
	}

	// The server, as serve runs it, on a configuration of the benchmark's own (never config.yaml
	// or POLICYPUSH_ variables, which could name a production database), the matcher pinned to
	// the benchmark's date like the demo's.
	cfg := config.Default()
	cfg.DataDir, cfg.HTTP.Addr, cfg.Console.QueryTimeout = o.dir, "127.0.0.1:0", o.timeout
	cfg.Database.LogSQL = o.logSQL
	// notices go out as they come, at any hour, as in bench deliver (no digest window, no quiet hours)
	cfg.Notify.DigestWindow, cfg.Notify.QuietHours.Channels = 0, nil
	if o.natsURL != "" {
		// a stream of its own; the subject prefix stays the one the match wrote into the outbox,
		// so an earlier run's stream (one that was killed) holds the same subjects: dropped first,
		// and this run's when it ends
		dropped, err := bus.DropStreams(ctx, o.natsURL, benchAPIStream)
		if err != nil {
			return res, err
		}
		if len(dropped) > 0 {
			fmt.Fprintf(progress, "deleted the streams an earlier bench api left on %s: %s\n", o.natsURL, strings.Join(dropped, ", "))
		}
		cfg.NATS.URL, cfg.NATS.Stream = o.natsURL, benchAPIStream+strconv.FormatInt(time.Now().UnixNano(), 36)
		defer func() {
			if _, err := bus.DropStreams(context.WithoutCancel(ctx), o.natsURL, cfg.NATS.Stream); err != nil {
				fmt.Fprintf(progress, "delete this run's stream %s: %v\n", cfg.NATS.Stream, err)
			}
		}()
	}
	if o.mysqlDSN != "" {
		cfg.Database.Driver, cfg.Database.DSN = "mysql", o.mysqlDSN
	}
	logPath := filepath.Join(o.dir, "bench-api-server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return res, err
	}
	defer logFile.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := newApp(cfg)
	a.log = slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	defer a.close()
	db, err := a.openDB(ctx)
	if err != nil {
		return res, err
	}
	password := randomPassword()
	if err := admin.SeedDemoUsers(ctx, db, password); err != nil {
		return res, err
	}
	if err := db.WithContext(ctx).Model(&store.Match{}).Where("state = ?", store.MatchActive).Count(&res.Matches).Error; err != nil {
		return res, err
	}
	wait, err := a.startPipeline(ctx)
	if err != nil {
		return res, err
	}
	defer wait()
	defer cancel()
	a.newMatcher(db, func() time.Time { return day.Time })
	if err := a.runMatcher(ctx); err != nil { // a stage of the app: a.close stops it
		return res, err
	}
	srv, err := a.serveHTTP(ctx)
	if err != nil {
		return res, err
	}
	base := "http://" + srv.Addr()
	fmt.Fprintf(progress, "server at %s (log %s); %d active matches\n", base, logPath, res.Matches)
	// The steady state is measured: serve's matcher engine first loads the whole registry, once
	// per start (at 4,000,000 firms 23–35 s idle, up to two minutes beside the delivering pipeline),
	// and the attack waits for it (docs/console.md).
	loadStart := time.Now()
	if err := waitMatcherLoaded(ctx, &a.stages, 30*time.Minute); err != nil {
		return res, err
	}
	res.EngineLoadSeconds = time.Since(loadStart).Seconds()
	fmt.Fprintf(progress, "matcher engine loaded its snapshot (%.1f s after the server started)\n", res.EngineLoadSeconds)
	// and for the name index of the search (store.IndexNames, a pass when the console starts)
	if err := waitNameIndex(ctx, db, 30*time.Minute); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "name index ready (%.1f s after the server started)\n", time.Since(loadStart).Seconds())

	names := []string{"admin", "region_3205", "park_sip"}
	roles := make([]*benchRole, len(names))
	loginErrs := make([]error, len(names))
	var lwg sync.WaitGroup
	for i, name := range names { // bcrypt makes each sign-in take a while: all at once
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			r, err := benchLogin(ctx, base, name, password)
			if err == nil {
				err = r.plan(ctx, base)
			}
			roles[i], loginErrs[i] = r, err
		}()
	}
	lwg.Wait()
	if err := errors.Join(loginErrs...); err != nil {
		return res, err
	}
	for _, r := range roles {
		for _, e := range r.planErrors {
			fmt.Fprintf(progress, "%s: %s\n", r.name, e)
		}
	}

	sent := func() int64 {
		var n int64
		db.WithContext(ctx).Model(&store.Delivery{}).Where("state IN ?", []string{store.DeliverySent, store.DeliveryDelivered}).Count(&n)
		return n
	}
	logBefore := countLogProblems(logPath)
	sentBefore := sent()
	fmt.Fprintf(progress, "attacking at %d req/s for %s: %d roles, %d targets\n", o.rate, o.duration, len(roles), countTargets(roles))
	start := time.Now()
	var mu sync.Mutex
	metrics := map[[2]string]*vegeta.Metrics{}
	codes := map[[2]string]map[string]int{}
	errs := map[[2]string]int{}
	var wg sync.WaitGroup
	total := countTargets(roles)
	for _, r := range roles {
		// each role's share of the rate is its share of the targets
		freq := max(1, o.rate*len(r.targets)/total)
		wg.Add(1)
		go func() {
			defer wg.Done()
			atk := vegeta.NewAttacker(vegeta.Timeout(60*time.Second), vegeta.KeepAlive(true), vegeta.Redirects(vegeta.NoFollow))
			for rs := range atk.Attack(vegeta.NewStaticTargeter(r.targets...), vegeta.Rate{Freq: freq, Per: time.Second}, o.duration, r.name) {
				key := [2]string{r.name, r.names[rs.URL]}
				mu.Lock()
				m := metrics[key]
				if m == nil {
					m, codes[key] = &vegeta.Metrics{}, map[string]int{}
					metrics[key] = m
				}
				m.Add(rs)
				codes[key][fmt.Sprint(rs.Code)]++
				if rs.Error != "" || rs.Code < 200 || rs.Code > 299 {
					errs[key]++
					if rs.Code == http.StatusServiceUnavailable && bytes.Contains(rs.Body, []byte(`"timeout"`)) {
						res.Timeouts++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Delivered = sent() - sentBefore
	res.PipelineLog = countLogProblems(logPath) - logBefore
	for key, m := range metrics {
		m.Close()
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		res.Endpoints = append(res.Endpoints, apiEndpoint{Role: key[0], Endpoint: key[1], Requests: m.Requests, Errors: errs[key],
			P50ms: ms(m.Latencies.P50), P95ms: ms(m.Latencies.P95), P99ms: ms(m.Latencies.P99), MaxMs: ms(m.Latencies.Max), Codes: codes[key]})
	}
	order := map[string]int{}
	for i, r := range roles {
		order[r.name] = i
	}
	sort.Slice(res.Endpoints, func(i, j int) bool {
		a, b := res.Endpoints[i], res.Endpoints[j]
		if a.Role != b.Role {
			return order[a.Role] < order[b.Role]
		}
		return a.Endpoint < b.Endpoint
	})

	if o.export {
		// the park manager's: an admin's whole province is past the export's row limit
		fmt.Fprintln(progress, "export: GET /api/v1/matches/export?format=csv as park_sip")
		ectx, cancel := context.WithTimeout(ctx, o.exportTimeout)
		res.ExportRows, res.ExportSeconds, err = benchExport(ectx, base, roles[len(roles)-1])
		cancel()
		if err != nil && ectx.Err() != nil {
			err = fmt.Errorf("did not finish within --export-timeout %s (%d rows read)", o.exportTimeout, res.ExportRows)
		}
		if err != nil {
			res.ExportError = err.Error()
		} else if res.ExportSeconds > 0 {
			res.ExportRowsPerSec = float64(res.ExportRows) / res.ExportSeconds
		}
	}
	return res, nil
}

func countTargets(roles []*benchRole) int {
	n := 0
	for _, r := range roles {
		n += len(r.targets)
	}
	return n
}

func randomPassword() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "Bench-" + hex.EncodeToString(b)
}

// benchLogin signs an account in through the API and keeps its session cookie.
func benchLogin(ctx context.Context, base, user, password string) (*benchRole, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/session", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sign in as %s: %w", user, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("sign in as %s: %d %s", user, resp.StatusCode, b)
	}
	var session struct {
		Permissions []string `json:"permissions"`
	}
	if err := json.Unmarshal(b, &session); err != nil {
		return nil, fmt.Errorf("sign in as %s: %w", user, err)
	}
	u, _ := url.Parse(base)
	var cookies []string
	for _, ck := range jar.Cookies(u) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	return &benchRole{name: user, header: http.Header{"Cookie": {strings.Join(cookies, "; ")}}, names: map[string]string{},
		perms: session.Permissions}, nil
}

// get requests a path as the role.
func (r *benchRole) get(ctx context.Context, base, path string) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	req.Header = r.header.Clone()
	resp, err := (&http.Client{Timeout: 2 * time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// plan picks the role's targets: its pages and GET endpoints, with a firm and a second page from
// its own scope; endpoints its role lacks the permission of are left out.
func (r *benchRole) plan(ctx context.Context, base string) error {
	var first struct {
		Items []struct {
			CreditCode string `json:"credit_code"`
			Name       string `json:"name"`
		} `json:"items"`
		NextCursor string `json:"next_cursor"`
	}
	// The first page gives a firm and the second page's cursor; a busy server may time out on it
	// (503): a few tries, then the role goes without those two targets.
	for try := 0; try < 3; try++ {
		code, body, err := r.get(ctx, base, "/api/v1/matches?per_page=50")
		if err != nil {
			return fmt.Errorf("GET /api/v1/matches as %s: %w", r.name, err)
		}
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &first); err != nil {
				return fmt.Errorf("GET /api/v1/matches as %s: %w", r.name, err)
			}
			break
		}
		r.planErrors = append(r.planErrors, fmt.Sprintf("GET /api/v1/matches: %d %.120s", code, body))
	}
	type target struct{ label, path, perm string }
	paths := []target{
		{"page /", "/", "dashboard:read"}, {"page /firms", "/firms", "firm:read"},
		{"page /deliveries/failed", "/deliveries/failed", "delivery:read"}, {"page /policies", "/policies", "policy:read"},
		{"page /audit", "/audit", "audit:read"},
		{"GET /api/v1/matches", "/api/v1/matches", "firm:read"}, {"GET /api/v1/dashboard", "/api/v1/dashboard", "dashboard:read"},
		{"GET /api/v1/status", "/api/v1/status", "dashboard:read"}, {"GET /api/v1/deliveries", "/api/v1/deliveries", "delivery:read"},
		{"GET /api/v1/policies", "/api/v1/policies", "policy:read"}, {"GET /api/v1/audit", "/api/v1/audit", "audit:read"},
	}
	if first.NextCursor != "" {
		after := "?after=" + url.QueryEscape(first.NextCursor)
		paths = append(paths, target{"page /firms (page 2)", "/firms" + after, "firm:read"},
			target{"GET /api/v1/matches (page 2)", "/api/v1/matches" + after, "firm:read"})
	}
	if len(first.Items) > 0 {
		firm := first.Items[len(first.Items)/2]
		paths = append(paths, target{"page /firms/{code}", "/firms/" + firm.CreditCode, "firm:read"},
			target{"GET /api/v1/firms/{code}", "/api/v1/firms/" + firm.CreditCode, "firm:read"},
			// a search by the firm's name, as an official looks one up: a rare text
			target{"GET /api/v1/matches?q={name}", "/api/v1/matches?q=" + url.QueryEscape(firm.Name), "firm:read"})
	}
	for _, p := range paths {
		if !slices.Contains(r.perms, p.perm) {
			continue // not this role's
		}
		t := vegeta.Target{Method: http.MethodGet, URL: base + p.path, Header: r.header}
		r.targets = append(r.targets, t)
		r.names[t.URL] = p.label
	}
	if len(r.targets) == 0 {
		return fmt.Errorf("%s may use none of the endpoints", r.name)
	}
	return nil
}

// benchExport downloads the role's whole CSV export and counts its rows.
func benchExport(ctx context.Context, base string, r *benchRole) (int64, float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/matches/export?format=csv", nil)
	req.Header = r.header.Clone()
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return 0, 0, fmt.Errorf("export: %d %s", resp.StatusCode, b)
	}
	var lines int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines++
	}
	if err := sc.Err(); err != nil {
		return max(lines-1, 0), time.Since(start).Seconds(), err
	}
	return max(lines-1, 0), time.Since(start).Seconds(), nil // less the header
}

// countLogProblems counts the WARN and ERROR lines of the server's log, less the console's own
// timeouts (counted apart): what the relay, notifiers, receipts and matcher complained of.
func countLogProblems(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) && !strings.Contains(line, "console.query_timeout") {
			n++
		}
	}
	return n
}

// waitMatcherLoaded waits until the process's matcher stage reports ok (its snapshot is loaded and
// it runs), failing when it is down or after limit.
func waitMatcherLoaded(ctx context.Context, g *stage.Group, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, c := range g.Health(ctx) {
			if c.Name != "matcher" {
				continue
			}
			if c.Down {
				return fmt.Errorf("matcher engine: %s", c.Status)
			}
			if c.Status == stage.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("matcher engine not loaded within %s: %w", limit, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitNameIndex waits until the name index answers searches (store.NameIndexReady), failing
// after limit.
func waitNameIndex(ctx context.Context, db *gorm.DB, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ready, err := store.NameIndexReady(ctx, db)
		if err == nil && ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("name index not ready within %s (%v)", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func printAPIBench(w io.Writer, r apiResult) {
	fmt.Fprintf(w, "bench api: %d firms × %d policies, %d active matches, %s, %d CPUs; %d req/s for %.0f s (after the matcher engine loaded, %.1f s)\n",
		r.Firms, r.Policies, r.Matches, r.Database, r.CPUs, r.Rate, r.Seconds, r.EngineLoadSeconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "role\tendpoint\trequests\terrors\tp50 ms\tp95 ms\tp99 ms\tmax ms\tcodes\t")
	for _, e := range r.Endpoints {
		var cs []string
		for c, n := range e.Codes {
			cs = append(cs, fmt.Sprintf("%s×%d", c, n))
		}
		slices.Sort(cs)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t\n", e.Role, e.Endpoint, e.Requests, e.Errors,
			e.P50ms, e.P95ms, e.P99ms, e.MaxMs, strings.Join(cs, " "))
	}
	tw.Flush()
	fmt.Fprintf(w, "console timeouts (503): %d; notices sent meanwhile: %d; relay/notifier/matcher WARN/ERROR log lines meanwhile: %d\n",
		r.Timeouts, r.Delivered, r.PipelineLog)
	switch {
	case r.ExportError != "":
		fmt.Fprintf(w, "export: %s\n", r.ExportError)
	case r.ExportSeconds > 0:
		fmt.Fprintf(w, "export (CSV, park_sip, every active match of the park): %d rows in %.1f s = %.0f rows/s\n", r.ExportRows, r.ExportSeconds, r.ExportRowsPerSec)
	}
}
