package matcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// A match can be split across processes. The coordinator cuts the credit-code space into shards of
// about equal size, records a MatchRun and publishes one job per shard to a work-queue stream;
// `policypush matcher worker` processes share one durable pull consumer on it, so JetStream hands
// each job to one worker. A worker keeps a job alive with progress acks while it works; if it dies,
// the ack wait runs out and JetStream gives the job to another worker. Redoing a shard is safe: the
// diff against stored matches finds what the dead worker already committed unchanged, and the
// unique (policy, version, firm) key keeps a match — and its notice — from being written twice.
// There is no coordination of our own: JetStream's redelivery is the failover.

// ShardOptions configure distributed matching.
type ShardOptions struct {
	Stream        string        // the deployment's stream name (nats.stream); jobs use <Stream>_MATCH
	SubjectPrefix string        // nats.subject_prefix; jobs go to <prefix>.match.shard
	Replicas      int           // stream replicas
	AckWait       time.Duration // how long a job may go without a heartbeat before another worker gets it
	// Vocabulary is what the published rules are compiled against; nil: the standard catalog.
	Vocabulary *rules.Vocabulary
}

func (o ShardOptions) subject() string { return bus.ShardSubject(o.SubjectPrefix) }

// ShardJob is the message of one shard.
type ShardJob struct {
	Run    string `json:"run"`
	AsOf   string `json:"as_of"`
	Policy string `json:"policy,omitempty"` // empty: every active policy
	Shard  int    `json:"shard"`
	Shards int    `json:"shards"`
	Lo     string `json:"lo"`
	Hi     string `json:"hi"` // empty: no upper bound
}

// shardConsumer creates (or brings up to date) the job stream and the workers' shared durable
// consumer (bus/topology.go).
func shardConsumer(ctx context.Context, js jetstream.JetStream, o ShardOptions) (jetstream.Consumer, error) {
	t := bus.Topology{Stream: o.Stream, SubjectPrefix: o.SubjectPrefix, Replicas: o.Replicas}
	return bus.Ensure(ctx, js, t.ShardStream(), t.ShardConsumer(o.AckWait))
}

// shardBounds cuts the active firms' credit codes into n ranges of about equal size: n+1 bounds,
// the first and last empty (open).
func shardBounds(ctx context.Context, db *gorm.DB, n int) ([]string, error) {
	var total int64
	if err := db.WithContext(ctx).Model(&store.Enterprise{}).Where("status = ?", store.StatusActive).Count(&total).Error; err != nil {
		return nil, fmt.Errorf("count firms: %w", err)
	}
	bounds := []string{""}
	for k := 1; k < n; k++ {
		var code string
		err := store.ActiveFirmsByCode(db.WithContext(ctx)).Select("credit_code").
			Order("credit_code").Offset(int(total * int64(k) / int64(n))).Limit(1).Scan(&code).Error
		if err != nil {
			return nil, fmt.Errorf("shard bound %d: %w", k, err)
		}
		if code != "" && code > bounds[len(bounds)-1] {
			bounds = append(bounds, code)
		}
	}
	return append(bounds, ""), nil
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

// RunSharded matches policies (or only policyID) as of asOf by shard jobs that matcher workers
// take, and waits until all are done or ctx ends. The summary adds up the shards' summaries.
func RunSharded(ctx context.Context, db *gorm.DB, js jetstream.JetStream, asOf time.Time, policyID string, shards int, o ShardOptions, progress io.Writer) (Summary, error) {
	start := time.Now()
	sum := Summary{AsOf: asOf.Format(time.DateOnly)}
	if policyID != "" {
		if ps, err := policies.LoadPublished(ctx, db, policyID, rules.WithVocabulary(o.Vocabulary)); err != nil {
			return sum, err
		} else if len(ps) == 0 {
			return sum, fmt.Errorf("policy %s is not published (apply it first, or check `policypush policy list`)", policyID)
		}
	}
	if _, err := shardConsumer(ctx, js, o); err != nil {
		return sum, err
	}
	bounds, err := shardBounds(ctx, db, shards)
	if err != nil {
		return sum, err
	}
	run := store.MatchRun{ID: newRunID(), AsOf: asOf, PolicyID: policyID, Shards: len(bounds) - 1, CreatedAt: time.Now().UTC()}
	if err := db.WithContext(ctx).Create(&run).Error; err != nil {
		return sum, fmt.Errorf("record match run: %w", err)
	}
	for i := 0; i+1 < len(bounds); i++ {
		job := ShardJob{Run: run.ID, AsOf: sum.AsOf, Policy: policyID, Shard: i, Shards: run.Shards, Lo: bounds[i], Hi: bounds[i+1]}
		data, _ := json.Marshal(job)
		msg := nats.NewMsg(o.subject())
		msg.Data = data
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s/%d", run.ID, i))); err != nil {
			return sum, fmt.Errorf("publish shard %d: %w", i, err)
		}
	}
	bar := newBar(progress, int64(run.Shards), "分片匹配")
	done := 0
	for done < run.Shards {
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return sum, fmt.Errorf("run %s: %d of %d shards done: %w", run.ID, done, run.Shards, ctx.Err())
		}
		var n int64
		if err := db.WithContext(ctx).Model(&store.MatchShard{}).Where("run_id = ? AND state = ?", run.ID, store.ShardDone).Count(&n).Error; err != nil {
			return sum, fmt.Errorf("read shard states: %w", err)
		}
		if bar != nil && int(n) > done {
			_ = bar.Add(int(n) - done)
		}
		done = int(n)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	var rows []store.MatchShard
	if err := db.WithContext(ctx).Where("run_id = ?", run.ID).Order("shard").Find(&rows).Error; err != nil {
		return sum, fmt.Errorf("read shard summaries: %w", err)
	}
	byPolicy := map[string]*PolicyResult{}
	for _, r := range rows {
		var s Summary
		if err := json.Unmarshal([]byte(r.Summary), &s); err != nil {
			return sum, fmt.Errorf("shard %d summary: %w", r.Shard, err)
		}
		sum.Firms += s.Firms
		for _, p := range s.Policies {
			acc, ok := byPolicy[p.PolicyID]
			if !ok {
				c := p
				c.Eligible, c.New, c.Revoked, c.Updated, c.Unchanged, c.Errors = 0, 0, 0, 0, 0, 0
				acc = &c
				byPolicy[p.PolicyID] = acc
			}
			acc.Eligible += p.Eligible
			acc.New += p.New
			acc.Revoked += p.Revoked
			acc.Updated += p.Updated
			acc.Unchanged += p.Unchanged
			acc.Errors += p.Errors
		}
	}
	for _, p := range byPolicy {
		sum.Policies = append(sum.Policies, *p)
	}
	sort.Slice(sum.Policies, func(i, j int) bool { return sum.Policies[i].PolicyID < sum.Policies[j].PolicyID })
	now := time.Now().UTC()
	if err := db.WithContext(ctx).Model(&store.MatchRun{}).Where("id = ?", run.ID).Update("finished_at", now).Error; err != nil {
		return sum, fmt.Errorf("record match run end: %w", err)
	}
	// Whole-population evaluations are recorded once every shard has stored its part.
	if ps, err := policies.LoadPublished(ctx, db, policyID, rules.WithVocabulary(o.Vocabulary)); err == nil {
		for _, p := range ps {
			if r, ok := byPolicy[p.Def.ID]; ok && r.Skipped == "" && r.Version == p.Version {
				if err := recordEvaluation(ctx, db, p, asOf, sum.Firms, r.Eligible); err != nil {
					return sum, err
				}
			}
		}
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// Worker takes shard jobs from JetStream and matches them (a stage: NewWorker, Run, Ready, Close).
type Worker struct {
	WorkerOptions

	cache map[string]*shardSnapshot // snapshots of shards taken before, by range
	bound atomic.Bool               // the shared consumer is bound
}

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	DB      *gorm.DB
	JS      jetstream.JetStream
	Shards  ShardOptions
	Options Options // workers, subject prefix of notices, log
	Name    string  // recorded on the shards it takes; empty: host:pid
}

// NewWorker makes a worker.
func NewWorker(o WorkerOptions) *Worker {
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	return &Worker{WorkerOptions: o, cache: map[string]*shardSnapshot{}}
}

// Ready is down until the worker has bound the shard jobs' consumer.
func (w *Worker) Ready(context.Context) stage.Check {
	if !w.bound.Load() {
		return stage.Check{Name: "matcher worker", Status: "shard consumer not bound yet", Down: true}
	}
	return stage.OK("matcher worker", map[string]string{"worker": w.Name})
}

// Close drops the cached shard snapshots.
func (w *Worker) Close() error {
	clear(w.cache)
	return nil
}

// shardSnapshot is a shard's snapshot kept for the next job of the same range.
type shardSnapshot struct {
	snap  *Snapshot
	since time.Time // firms updated after this are read again before reuse
}

// Run takes jobs until ctx ends. A job interrupted by ctx is given back for another worker.
func (w *Worker) Run(ctx context.Context) error {
	log := w.Options.logger()
	cons, err := shardConsumer(ctx, w.JS, w.Shards)
	if err != nil {
		return err
	}
	w.bound.Store(true)
	defer w.bound.Store(false)
	log.Info("matcher worker ready", "worker", w.Name, "subject", w.Shards.subject())
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("fetch shard jobs", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			w.handle(ctx, msg)
		}
	}
	return nil
}

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	log := w.Options.logger()
	var job ShardJob
	if err := json.Unmarshal(msg.Data(), &job); err != nil || job.Run == "" {
		_ = msg.TermWithReason("not a shard job")
		return
	}
	deliveries := 1
	if md, err := msg.Metadata(); err == nil {
		deliveries = int(md.NumDelivered)
	}
	var prev store.MatchShard
	err := w.DB.WithContext(ctx).Where("run_id = ? AND shard = ?", job.Run, job.Shard).Take(&prev).Error
	if err == nil && prev.State == store.ShardDone { // done before; the ack was lost
		_ = msg.DoubleAck(ctx)
		return
	}
	claim := store.MatchShard{RunID: job.Run, Shard: job.Shard, Lo: job.Lo, Hi: job.Hi, State: store.ShardRunning,
		Worker: w.Name, Deliveries: deliveries, StartedAt: time.Now().UTC()}
	if err := w.DB.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "run_id"}, {Name: "shard"}},
		DoUpdates: clause.AssignmentColumns([]string{"state", "worker", "deliveries", "started_at"}),
	}).Create(&claim).Error; err != nil {
		log.Warn("claim shard", "run", job.Run, "shard", job.Shard, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	log.Info("shard taken", "run", job.Run, "shard", job.Shard, "of", job.Shards, "deliveries", deliveries)

	// Heartbeat: tell JetStream the job is alive while it runs.
	hbCtx, stop := context.WithCancel(ctx)
	var hb sync.WaitGroup
	hb.Add(1)
	go func() {
		defer hb.Done()
		stage.Every(hbCtx, max(w.Shards.AckWait/3, 100*time.Millisecond), func(context.Context) error { return msg.InProgress() }, nil)
	}()
	sum, err := w.runShard(ctx, job)
	stop()
	hb.Wait()
	if err != nil {
		log.Warn("shard failed", "run", job.Run, "shard", job.Shard, "err", err)
		if ctx.Err() != nil {
			_ = msg.Nak() // give it to another worker now
		} else {
			_ = msg.NakWithDelay(2 * time.Second)
		}
		return
	}
	data, _ := json.Marshal(sum)
	now := time.Now().UTC()
	if err := w.DB.WithContext(ctx).Model(&store.MatchShard{}).Where("run_id = ? AND shard = ?", job.Run, job.Shard).
		Updates(map[string]any{"state": store.ShardDone, "summary": string(data), "finished_at": now, "worker": w.Name}).Error; err != nil {
		log.Warn("record shard", "run", job.Run, "shard", job.Shard, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack shard", "run", job.Run, "shard", job.Shard, "err", err)
	}
	log.Info("shard done", "run", job.Run, "shard", job.Shard, "firms", sum.Firms, "seconds", sum.Seconds)
}

// runShard matches one shard: its firms from a (cached, caught-up) shard snapshot, and the
// differences stored for that credit-code range only.
func (w *Worker) runShard(ctx context.Context, job ShardJob) (Summary, error) {
	start := time.Now()
	d, err := rules.ParseDate(job.AsOf)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{AsOf: job.AsOf}
	policies, err := policies.LoadPublished(ctx, w.DB, job.Policy, rules.WithVocabulary(w.Options.Vocabulary))
	if err != nil {
		return sum, err
	}
	active, skipped := splitActive(policies, d.Time)
	snap, err := w.snapshot(ctx, job, active)
	if err != nil {
		return sum, err
	}
	sum.Firms = snap.Active()
	res, err := matchPolicies(ctx, w.DB, snap, newPlanner(snap, d.Time), active, w.Options, job.Lo, job.Hi, nil, &Phases{})
	if err != nil {
		return sum, err
	}
	sum.Policies = append(res, skipped...)
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// snapshot returns the shard's snapshot holding what the policies read: loaded, or kept from an
// earlier job of the same range and brought up to date with firms updated since.
func (w *Worker) snapshot(ctx context.Context, job ShardJob, policies []*rules.Policy) (*Snapshot, error) {
	fields, extras := fieldsOf(policies)
	key := job.Lo + "|" + job.Hi
	now := time.Now().UTC()
	if c, ok := w.cache[key]; ok {
		if err := c.snap.addFields(ctx, w.DB, fields, extras); err != nil {
			return nil, err
		}
		if err := c.refresh(ctx, w.DB, now); err != nil {
			return nil, err
		}
		return c.snap, nil
	}
	snap, err := LoadSnapshot(ctx, w.DB, LoadOptions{Fields: fields, Extras: extras, Lo: job.Lo, Hi: job.Hi, Vocabulary: w.Options.Vocabulary})
	if err != nil {
		return nil, err
	}
	w.cache[key] = &shardSnapshot{snap: snap, since: now}
	return snap, nil
}

// refresh puts firms of the shard updated since the snapshot was last current into it.
func (c *shardSnapshot) refresh(ctx context.Context, db *gorm.DB, now time.Time) error {
	q := rangeWhere(db.WithContext(ctx).Where("updated_at >= ?", c.since.Add(-catchUpOverlap)), c.snap.lo, c.snap.hi)
	var firms []store.Enterprise
	if err := q.Order("credit_code").Find(&firms).Error; err != nil {
		return fmt.Errorf("read changed firms: %w", err)
	}
	factCodes, err := factsChangedSince(ctx, db, c.snap.extras, c.since.Add(-catchUpOverlap), c.snap.lo, c.snap.hi)
	if err != nil {
		return err
	}
	if len(factCodes) > 0 {
		var more []store.Enterprise
		if err := db.WithContext(ctx).Where("credit_code IN ?", factCodes).Find(&more).Error; err != nil {
			return fmt.Errorf("read firms with changed extra fields: %w", err)
		}
		firms = append(firms, more...)
	}
	codes := make([]string, len(firms))
	for i := range firms {
		codes[i] = firms[i].CreditCode
	}
	facts, err := factsOf(ctx, db, c.snap.voc, c.snap.extras, codes)
	if err != nil {
		return err
	}
	for i := range firms {
		if len(firms[i].CreditCode) <= codeLen {
			c.snap.put(&firms[i], facts[firms[i].CreditCode])
		}
	}
	c.since = now
	return nil
}

// errNoWorkers is returned when a sharded match is asked for without NATS to carry the jobs.
var errNoWorkers = errors.New("matcher.shards > 1 needs nats.url: shard jobs go through an external NATS to `policypush matcher worker` processes")

// CheckSharding reports whether a deployment can run sharded matches.
func CheckSharding(natsURL string, shards int) error {
	if shards > 1 && natsURL == "" {
		return errNoWorkers
	}
	return nil
}
