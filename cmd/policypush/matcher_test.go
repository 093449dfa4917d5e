package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// freePorts reserves n TCP ports on 127.0.0.1 (released before use; good enough for a test).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// natsCluster starts n clustered nats-servers with JetStream on 127.0.0.1 and returns the client URLs.
func natsCluster(t *testing.T, n int) string {
	t.Helper()
	ports := freePorts(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	var urls []string
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("pp-%d", i), Host: "127.0.0.1", Port: ports[i], JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "pp-test", Host: "127.0.0.1", Port: ports[n+i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")), NoLog: true, NoSigs: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats-server %d not ready", i)
		}
		urls = append(urls, s.ClientURL())
	}
	url := strings.Join(urls, ",")
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(20 * time.Second)
	for { // JetStream is usable once the cluster has elected its meta leader
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// seedMatchData imports synthetic firms and publishes the demo catalog plus synthetic policies.
func seedMatchData(t *testing.T, c *cli, firms int) {
	t.Helper()
	csvPath := filepath.Join(t.TempDir(), "firms.csv")
	if err := registry.SynthCSVFile(csvPath, firms, 21, false); err != nil {
		t.Fatal(err)
	}
	c.run("import", "enterprises", csvPath)
	polDir := fixture.DemoDir(t)
	c.run("policy", "apply", polDir)
	for _, d := range matcher.SynthCatalog(30, 21) {
		d.EffectiveFrom = rules.Date{Time: time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)}
		if _, err := policies.Apply(context.Background(), c.db.DB, d, "synthetic", "test"); err != nil {
			t.Fatal(err)
		}
	}
}

// Three matcher worker processes split a match over shard jobs on a three-node JetStream cluster
// (R3). One of them is killed while it holds a shard; JetStream gives the shard to another worker.
// The stored matches are exactly those of a single-process match of the same data, and no match —
// hence no notice — is written twice.
func TestShardedMatchSurvivesKilledWorker(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	const firms = 8000
	single := newCLI(t)
	seedMatchData(t, single, firms)
	single.run("match", "--as-of", DemoAsOf)
	want := fixture.StoredMatches(t, single.db.DB)

	c := newCLI(t)
	seedMatchData(t, c, firms)
	c.env = append(c.env, "POLICYPUSH_NATS_URL="+natsCluster(t, 3), "POLICYPUSH_NATS_REPLICAS=3",
		"POLICYPUSH_MATCHER_SHARDS=8", "POLICYPUSH_MATCHER_SHARD_ACK_WAIT=2s", "POLICYPUSH_MATCHER_WORKERS=1")

	// Started one after the other: processes starting together all create the streams, and a
	// clustered JetStream answers concurrent requests on one stream slowly.
	workers := map[int]*exec.Cmd{}
	logs := map[int]*syncBuffer{}
	for range 3 {
		w := c.command("matcher", "worker")
		log := &syncBuffer{}
		w.Stderr = log
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		workers[w.Process.Pid] = w
		logs[w.Process.Pid] = log
		ready := time.Now().Add(30 * time.Second)
		for !strings.Contains(log.String(), "matcher worker ready") {
			if time.Now().After(ready) {
				t.Fatalf("worker not ready in 30s:\n%s", log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Cleanup(func() {
		for _, w := range workers {
			_ = w.Process.Signal(syscall.SIGTERM)
			_ = w.Wait()
		}
	})

	coord := c.command("match", "--as-of", DemoAsOf, "--json")
	var out, errOut bytes.Buffer
	coord.Stdout, coord.Stderr = &out, &errOut
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- coord.Wait() }()

	// Kill the first worker seen holding a shard, while it holds it.
	var killed store.MatchShard
	killedPid := 0
	deadline := time.Now().Add(40 * time.Second)
	for killedPid == 0 {
		var running []store.MatchShard
		c.db.DB.Where("state = ?", store.ShardRunning).Find(&running)
		for _, s := range running {
			pid, _ := strconv.Atoi(s.Worker[strings.LastIndex(s.Worker, ":")+1:])
			if w, ok := workers[pid]; ok {
				_ = w.Process.Signal(syscall.SIGKILL)
				_ = w.Wait()
				delete(workers, pid)
				killed, killedPid = s, pid
				break
			}
		}
		if time.Now().After(deadline) {
			for pid, l := range logs {
				t.Logf("worker %d:\n%s", pid, l.String())
			}
			t.Fatalf("no worker took a shard within 40s\n%s", errOut.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	var at store.MatchShard
	c.db.DB.Where("run_id = ? AND shard = ?", killed.RunID, killed.Shard).Take(&at)
	if at.State != store.ShardRunning {
		t.Fatalf("shard %d was already done when its worker was killed", killed.Shard)
	}

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("match: %v\n%s", err, errOut.String())
		}
	case <-time.After(60 * time.Second):
		_ = coord.Process.Kill()
		t.Fatalf("sharded match did not finish in 60s\n%s", errOut.String())
	}
	var sum matcher.Summary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		t.Fatalf("match --json: %v\n%s", err, out.String())
	}

	var after store.MatchShard
	c.db.DB.Where("run_id = ? AND shard = ?", killed.RunID, killed.Shard).Take(&after)
	if after.State != store.ShardDone || after.Deliveries < 2 || strings.HasSuffix(after.Worker, ":"+strconv.Itoa(killedPid)) {
		t.Fatalf("the killed worker's shard: %+v", after)
	}
	var shards int64
	c.db.DB.Model(&store.MatchShard{}).Where("run_id = ? AND state = ?", killed.RunID, store.ShardDone).Count(&shards)
	if shards < 2 {
		t.Fatalf("only %d shards", shards)
	}
	sameLines(t, want, fixture.StoredMatches(t, c.db.DB))

	// One notice per channel per match, none twice.
	var defs []store.PolicyVersion
	c.db.DB.Where("state = ?", store.VersionPublished).Find(&defs)
	channels := map[string]int{}
	for _, v := range defs {
		d, err := rules.FromCanonical([]byte(v.Source))
		if err != nil {
			t.Fatal(err)
		}
		channels[v.PolicyID] = len(d.Channels)
	}
	var ms []store.Match
	c.db.DB.Where("notified = ?", true).Find(&ms)
	wantOutbox := 0
	for _, m := range ms {
		wantOutbox += channels[m.PolicyID]
	}
	var rows []store.Outbox
	c.db.DB.Find(&rows)
	perNotice := map[bus.NoticeJob]int{}
	for _, row := range rows {
		jobs := []bus.NoticeJob{{}}
		var err error
		if row.Notices > 1 {
			jobs, err = bus.BatchJobs(row)
		} else {
			err = json.Unmarshal(row.Payload, &jobs[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if perNotice[j]++; perNotice[j] > 1 {
				t.Fatalf("notice %+v queued twice", j)
			}
		}
	}
	if len(perNotice) != wantOutbox || wantOutbox == 0 {
		t.Fatalf("%d notices in %d outbox rows for %d notified matches (want %d)", len(perNotice), len(rows), len(ms), wantOutbox)
	}
	firmsSeen := 0
	for _, p := range sum.Policies {
		firmsSeen += p.Eligible
	}
	if sum.Firms == 0 || firmsSeen == 0 {
		t.Fatalf("summary: %+v", sum)
	}
}

// syncBuffer is a bytes.Buffer a child process writes to while the test reads it.
type syncBuffer = testenv.SyncBuffer

func sameLines(t *testing.T, want, got []string) {
	t.Helper()
	if strings.Join(want, "\n") == strings.Join(got, "\n") {
		return
	}
	w := map[string]int{}
	for _, s := range want {
		w[s]++
	}
	var diff []string
	for _, s := range got {
		if w[s] == 0 {
			diff = append(diff, "+ "+s)
			continue
		}
		w[s]--
	}
	for s, n := range w {
		for range n {
			diff = append(diff, "- "+s)
		}
	}
	sort.Strings(diff)
	t.Fatalf("%d differences from the single-process match (%d vs %d rows), e.g.\n%s", len(diff), len(want), len(got), strings.Join(diff[:min(8, len(diff))], "\n"))
}

// A registry change published on the change subject reaches the firm: `serve` stores it, re-matches
// the firm, queues the new match's notice and delivers it to the (sandbox) provider.
func TestChangeEventReachesTheFirm(t *testing.T) {
	c := newCLI(t)
	csvPath := filepath.Join(t.TempDir(), "firms.csv")
	if err := registry.SynthCSVFile(csvPath, 800, 23, false); err != nil {
		t.Fatal(err)
	}
	c.run("import", "enterprises", csvPath)
	// serve matches as of today: a policy in effect today.
	def := &rules.Definition{ID: "graduates-open", Title: "招用高校毕业生补助", EffectiveFrom: rules.Date{Time: time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)},
		Params: map[string]any{"per_graduate": 1500}, Eligibility: `graduates_hired > 0 && insured_employees >= graduates_hired && tax_credit_rating != "D"`,
		Amount: "params.per_graduate * graduates_hired", Channels: []string{"wechat"}}
	if _, err := policies.Apply(context.Background(), c.db.DB, def, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	c.run("match")

	url := os.Getenv("POLICYPUSH_TEST_NATS_URL")
	if url == "" { // serve must be reachable from this test: a server with a TCP port
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		url = s.ClientURL()
	}
	var prefix string
	for _, kv := range c.env {
		if v, ok := strings.CutPrefix(kv, "POLICYPUSH_NATS_SUBJECT_PREFIX="); ok {
			prefix = v
		}
	}
	c.env = append(c.env, "POLICYPUSH_NATS_URL="+url, "POLICYPUSH_HTTP_ADDR=127.0.0.1:0", "POLICYPUSH_MATCHER_CATCHUP_INTERVAL=1h")
	srv := c.command("serve")
	log := &syncBuffer{}
	srv.Stderr = log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() })

	var f store.Enterprise
	if err := c.db.DB.Where("status = ? AND graduates_hired = 0 AND insured_employees >= 5 AND tax_credit_rating <> 'D' AND wechat_openid LIKE 'o%' AND wechat_openid NOT LIKE 'ounfollow%'",
		store.StatusActive).Order("credit_code").Take(&f).Error; err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Published as the data-sharing platform would (core NATS); kept by the change stream once serve
	// has created it, so publish until the firm is stored.
	msg := []byte(fmt.Sprintf(`{"credit_code": %q, "graduates_hired": 2}`, f.CreditCode))
	subject := matcher.ChangeSubject(prefix, "registry.changed")
	var m store.Match
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := c.db.DB.Where("policy_id = ? AND credit_code = ? AND state = ?", def.ID, f.CreditCode, store.MatchActive).Take(&m).Error; err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the change was not matched within 60s\n%s", log.String())
		}
		var stored store.Enterprise
		if c.db.DB.Where("credit_code = ?", f.CreditCode).Take(&stored); stored.GraduatesHired == 0 {
			_ = nc.Publish(subject, msg)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for {
		var d store.Delivery
		err := c.db.DB.Where("match_id = ? AND state = ?", m.ID, store.DeliverySent).Take(&d).Error
		if err == nil {
			recorded := false
			for _, r := range c.records(t, sandbox.WeChatFile) {
				recorded = recorded || r.DeliveryID == strconv.FormatUint(d.ID, 10)
			}
			if recorded {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new match's notice did not reach the sandbox within 60s\n%s", log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
