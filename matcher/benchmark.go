package matcher

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// BenchOptions size the matcher benchmark.
type BenchOptions struct {
	Firms         int   // synthetic firms in the registry (registry.Synth)
	Policies      int   // synthetic policies (SynthCatalog)
	Seed          int64 // of firms and policies
	BaselineFirms int   // firms the plain expr loop evaluates (a sample; 0: min(Firms, 20000))
	Incremental   int   // firms re-matched one by one for the latency figures (0: 500)
	Workers       int   // goroutines of engine and baseline; 0: one per core
	Progress      io.Writer
}

// BenchResult are the benchmark's figures.
type BenchResult struct {
	Firms    int    `json:"firms"`
	Policies int    `json:"policies"`
	Workers  int    `json:"workers"`
	Database string `json:"database"`
	Seeded   bool   `json:"seeded"` // false: the database already held the synthetic registry

	SeedSeconds      float64 `json:"seed_seconds"`
	LoadSeconds      float64 `json:"load_seconds"` // snapshot from the database, keyset pagination
	BytesPerFirm     float64 `json:"bytes_per_firm"`
	HeapBytesPerFirm float64 `json:"heap_bytes_per_firm"` // Go heap growth over the load, per firm

	PlanSeconds       float64 `json:"plan_seconds"`   // building the policies' plans (included in engine_seconds)
	EngineSeconds     float64 `json:"engine_seconds"` // every policy over every firm
	EngineNsPerEval   float64 `json:"engine_ns_per_eval"`
	VMShare           float64 `json:"vm_share"` // (firm, policy) pairs the engine handed to the expr VM
	Eligible          int64   `json:"eligible"` // (firm, policy) pairs eligible
	Baseline          string  `json:"baseline"`
	BaselineFirms     int     `json:"baseline_firms"`
	BaselineSeconds   float64 `json:"baseline_seconds"` // on the sample
	BaselineNsPerEval float64 `json:"baseline_ns_per_eval"`
	// BaselineSeconds scaled to every firm: what the plain loop would take for the whole registry.
	BaselineFullSeconds float64 `json:"baseline_full_seconds"`
	Ratio               float64 `json:"ratio"` // baseline_ns_per_eval / engine_ns_per_eval
	// CPU time (user + system, all threads) of the two passes, per (firm, policy), and their
	// ratio: less sensitive than wall time to other work on the machine.
	EngineCPUNsPerEval   float64 `json:"engine_cpu_ns_per_eval"`
	BaselineCPUNsPerEval float64 `json:"baseline_cpu_ns_per_eval"`
	CPURatio             float64 `json:"cpu_ratio"`
	Identical            bool    `json:"identical"`
	Compared             int     `json:"compared"` // (firm, policy) decisions compared on the sample
	Differences          int     `json:"differences"`

	IncrementalFirms   int     `json:"incremental_firms"`
	IncrementalP50Ms   float64 `json:"incremental_p50_ms"` // one firm against every policy, engine only
	IncrementalP99Ms   float64 `json:"incremental_p99_ms"`
	IncrementalDBP50Ms float64 `json:"incremental_db_p50_ms"` // the same including the transaction storing the difference
	IncrementalDBP99Ms float64 `json:"incremental_db_p99_ms"`
	IncrementalChanges int     `json:"incremental_changes"` // matches added or revoked by those changes
}

var benchAsOf = time.Date(2022, 9, 30, 0, 0, 0, 0, time.UTC)

// Benchmark measures the matcher on a synthetic province: it seeds db with the firms (unless it
// holds them already), loads the snapshot, evaluates every policy over every firm with the engine
// and over a sample of firms with the plain expr loop (on as many goroutines), checks that both
// decide the sample identically, and times single-firm re-matches with and without the database
// transaction. db must be empty or hold exactly this synthetic registry: the benchmark writes
// firms, matches and outbox rows.
func Benchmark(ctx context.Context, db *gorm.DB, o BenchOptions) (BenchResult, error) {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.BaselineFirms <= 0 {
		o.BaselineFirms = min(o.Firms, 20000)
	}
	if o.Incremental <= 0 {
		o.Incremental = 500
	}
	res := BenchResult{Firms: o.Firms, Policies: o.Policies, Workers: o.Workers, Database: db.Dialector.Name()}
	start := time.Now()
	seeded, err := seedFirms(ctx, db, o.Firms, o.Seed, o.Progress)
	if err != nil {
		return res, err
	}
	res.Seeded, res.SeedSeconds = seeded, time.Since(start).Seconds()

	defs := SynthCatalog(o.Policies, o.Seed)
	policies := make([]*rules.Policy, len(defs))
	for i, d := range defs {
		if policies[i], err = d.Compile(); err != nil {
			return res, fmt.Errorf("synthetic policy %s: %w", d.ID, err)
		}
		policies[i].Version = 1
	}
	rules.Link(policies)

	fields, extras := fieldsOf(policies)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start = time.Now()
	snap, err := LoadSnapshot(ctx, db, LoadOptions{Fields: fields, Extras: extras, Progress: o.Progress})
	if err != nil {
		return res, err
	}
	res.LoadSeconds = time.Since(start).Seconds()
	runtime.GC()
	runtime.ReadMemStats(&after)
	res.BytesPerFirm = float64(snap.Bytes()) / float64(max(1, snap.Len()))
	res.HeapBytesPerFirm = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(max(1, snap.Len()))
	active := snap.Active()

	start, cpu := time.Now(), cpuTime()
	pl := newPlanner(snap, benchAsOf)
	plans := pl.prepared(policies, o.Workers)
	res.PlanSeconds = time.Since(start).Seconds()
	decs, err := evaluateAll(ctx, snap, plans, o.Workers)
	if err != nil {
		return res, err
	}
	res.EngineSeconds = time.Since(start).Seconds()
	res.EngineNsPerEval = res.EngineSeconds * 1e9 / float64(active*len(policies))
	res.EngineCPUNsPerEval = float64(cpuTime()-cpu) / float64(active*len(policies))
	vm := 0
	for i := range decs {
		res.Eligible += int64(decs[i].eligible())
		vm += decs[i].vm
	}
	res.VMShare = float64(vm) / float64(active*len(policies))

	sample, envs, err := baselineSample(ctx, db, snap, o.BaselineFirms)
	if err != nil {
		return res, err
	}
	res.BaselineFirms = len(envs)
	res.Baseline = fmt.Sprintf("plain expr.Run (rules.Policy.Evaluate on rules.Env loaded through GORM) over %d of %d firms, %d goroutines; whole-registry time scaled from the sample",
		len(envs), active, o.Workers)
	start, cpu = time.Now(), cpuTime()
	plain := make([][]Outcome, len(policies))
	plainErrs := make([][]EvalError, len(policies))
	for i, p := range policies {
		plain[i], plainErrs[i] = Evaluate(p, envs, o.Workers)
	}
	res.BaselineSeconds = time.Since(start).Seconds()
	res.BaselineNsPerEval = res.BaselineSeconds * 1e9 / float64(max(1, len(envs)*len(policies)))
	res.BaselineCPUNsPerEval = float64(cpuTime()-cpu) / float64(max(1, len(envs)*len(policies)))
	if res.EngineCPUNsPerEval > 0 {
		res.CPURatio = res.BaselineCPUNsPerEval / res.EngineCPUNsPerEval
	}
	res.BaselineFullSeconds = res.BaselineNsPerEval * float64(active*len(policies)) / 1e9
	res.Ratio = res.BaselineNsPerEval / res.EngineNsPerEval
	res.Compared = len(envs) * len(policies)
	for i := range policies {
		res.Differences += compareSample(snap, sample, &decs[i], plain[i], plainErrs[i])
	}
	res.Identical = res.Differences == 0
	decs, plain, plainErrs, envs = nil, nil, nil, nil
	runtime.GC()

	lat, db2, changes, err := benchIncremental(ctx, db, snap, pl, policies, o)
	if err != nil {
		return res, err
	}
	res.IncrementalFirms = len(lat)
	res.IncrementalP50Ms, res.IncrementalP99Ms = percentile(lat, 0.50), percentile(lat, 0.99)
	res.IncrementalDBP50Ms, res.IncrementalDBP99Ms = percentile(db2, 0.50), percentile(db2, 0.99)
	res.IncrementalChanges = changes
	return res, nil
}

// firmCounts counts new firms (store.FirmCount).
func firmCounts(firms []store.Enterprise) store.FirmCounts {
	c := store.FirmCounts{}
	for i := range firms {
		c.Add(&firms[i], 1)
	}
	return c
}

// seedFirms writes the synthetic registry unless db already holds it (same number of firms).
func seedFirms(ctx context.Context, db *gorm.DB, n int, seed int64, progress io.Writer) (bool, error) {
	var have int64
	if err := db.WithContext(ctx).Model(&store.Enterprise{}).Count(&have).Error; err != nil {
		return false, fmt.Errorf("count firms: %w", err)
	}
	switch {
	case have == int64(n):
		return false, nil
	case have != 0:
		return false, fmt.Errorf("the database holds %d firms, not %d: point the benchmark at an empty database (it writes firms, matches and outbox rows)", have, n)
	}
	firms := registry.Synth(n, seed)
	bar := newBar(progress, int64(n), "写入合成企业")
	batch := 500
	if db.Dialector.Name() == "sqlite" {
		batch = 25 // the SQLite driver's cost grows with the square of a statement's parameters
	}
	const perTx = 20000
	for lo := 0; lo < len(firms); lo += perTx {
		part := firms[lo:min(lo+perTx, len(firms))]
		if err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := tx.CreateInBatches(part, batch).Error; err != nil {
				return err
			}
			return store.ApplyFirmCounts(tx, firmCounts(part)) // new firms, counted as an import counts them
		}); err != nil {
			return false, fmt.Errorf("seed firms: %w", err)
		}
		if bar != nil {
			_ = bar.Add(len(part))
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return true, nil
}

// baselineSample picks firms spread over the snapshot and reads them through GORM as the plain path
// does. It returns the sample's rows as a bitset over the snapshot.
func baselineSample(ctx context.Context, db *gorm.DB, snap *Snapshot, n int) ([]uint64, []rules.Env, error) {
	var rows []int
	for row := range snap.n {
		if snap.isActive(row) {
			rows = append(rows, row)
		}
	}
	step := max(1, len(rows)/max(1, n))
	sample := make([]uint64, len(snap.active))
	var codes []string
	for i := 0; i < len(rows) && len(codes) < n; i += step {
		sample[rows[i]/wordBits] |= 1 << (rows[i] % wordBits)
		codes = append(codes, snap.code(rows[i]))
	}
	envs := make([]rules.Env, 0, len(codes))
	for lo := 0; lo < len(codes); lo += 1000 {
		var batch []store.Enterprise
		if err := db.WithContext(ctx).Where("credit_code IN ?", codes[lo:min(lo+1000, len(codes))]).Order("credit_code").Find(&batch).Error; err != nil {
			return nil, nil, fmt.Errorf("read sample firms: %w", err)
		}
		for i := range batch {
			envs = append(envs, policies.EnvOf(&batch[i], benchAsOf))
		}
	}
	if err := policies.AttachExtraFacts(ctx, db, envs); err != nil {
		return nil, nil, err
	}
	return sample, envs, nil
}

// compareSample counts the sample firms a policy's engine decisions and plain decisions disagree on.
func compareSample(snap *Snapshot, sample []uint64, d *decisions, plain []Outcome, plainErrs []EvalError) int {
	engine := map[string]*float64{}
	k := 0
	for i, w := range d.words {
		for x := d.bits[i]; x != 0; x &= x - 1 {
			row := int(w)*wordBits + bits.TrailingZeros64(x)
			var amount *float64
			if len(d.amounts) > 0 {
				amount = &d.amounts[k]
				k++
			}
			if sample[row/wordBits]&(1<<(row%wordBits)) != 0 {
				engine[snap.code(row)] = amount
			}
		}
	}
	diff := 0
	for _, oc := range plain {
		a, ok := engine[oc.CreditCode]
		if !ok || !sameAmount(a, oc.Amount) {
			diff++
		}
		delete(engine, oc.CreditCode)
	}
	diff += len(engine)
	engineErrs := map[string]string{}
	for _, e := range d.errs {
		row := int(e.row)
		if sample[row/wordBits]&(1<<(row%wordBits)) != 0 {
			engineErrs[snap.code(row)] = e.err.Error()
		}
	}
	for _, e := range plainErrs {
		if engineErrs[e.CreditCode] != e.Err.Error() {
			diff++
		}
		delete(engineErrs, e.CreditCode)
	}
	return diff + len(engineErrs)
}

// benchIncremental changes firms one at a time: the engine's re-evaluation against every policy
// (put into the snapshot, evaluate, decisions), then the same change through ApplyChanges with the
// database transaction. Each firm's matches are stored once before its measured change, so the
// change writes a difference, not the firm's first matches.
func benchIncremental(ctx context.Context, db *gorm.DB, snap *Snapshot, pl *planner, policies []*rules.Policy, o BenchOptions) (engine, withDB []float64, changes int, err error) {
	r := rand.New(rand.NewPCG(uint64(o.Seed), 99))
	e := NewEngine(db, EngineOptions{Workers: o.Workers, SubjectPrefix: "bench", AsOf: func() time.Time { return benchAsOf }})
	e.snap, e.pl, e.all, e.asOf, e.watermark = snap, pl, policies, benchAsOf, time.Now()
	idx := pl.index(pl.prepared(policies, o.Workers))
	var rows []int
	for row := range snap.n {
		if snap.isActive(row) {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return nil, nil, 0, nil
	}
	f := &frame{}
	for range min(o.Incremental, len(rows)) {
		code := snap.code(rows[r.IntN(len(rows))])
		var firm store.Enterprise
		if err := db.WithContext(ctx).Where("credit_code = ?", code).Take(&firm).Error; err != nil {
			return nil, nil, 0, fmt.Errorf("read firm %s: %w", code, err)
		}
		if _, err := e.ApplyChanges(ctx, []store.Enterprise{firm}); err != nil { // its matches, stored once
			return nil, nil, 0, err
		}
		changed := SynthFirmChange(firm, r)

		t0 := time.Now()
		img, _ := snap.put(&changed, nil)
		if img.row >= 0 {
			for _, pd := range evaluateRow(snap, idx, img.row, f) {
				pd.d.outcomes(snap)
			}
		}
		engine = append(engine, float64(time.Since(t0).Nanoseconds())/1e6)
		snap.restore(img)

		t0 = time.Now()
		cr, err := e.ApplyChanges(ctx, []store.Enterprise{changed})
		if err != nil {
			return nil, nil, 0, err
		}
		withDB = append(withDB, float64(time.Since(t0).Nanoseconds())/1e6)
		changes += cr.New + cr.Revoked
	}
	return engine, withDB, changes, nil
}

func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
