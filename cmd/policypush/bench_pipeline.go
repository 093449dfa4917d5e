package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gorm.io/gorm"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

func init() { addSubcommand("bench", benchPipelineCmd) }

// pipelineBench sizes `bench pipeline`.
type pipelineBench struct {
	firms, policies int
	seed            int64
	asOf            string
	dir, mysqlDSN   string
	rounds          int // bench pipeline: script and first match, this many times in turn
}

// pipelineRound is one round of `bench pipeline --rounds`.
type pipelineRound struct {
	ScriptSeconds float64        `json:"script_seconds"`
	MatchSeconds  float64        `json:"match_seconds"`
	MatchPhases   matcher.Phases `json:"match_phases"`
	Ratio         float64        `json:"ratio"`
}

// pipelineResult is what `bench pipeline` prints.
type pipelineResult struct {
	Firms    int    `json:"firms"`
	Policies int    `json:"policies"`
	Database string `json:"database"`
	CPUs     int    `json:"cpus"`
	AsOf     string `json:"as_of"`
	Seeded   bool   `json:"seeded"` // false: the data dir was reused as it was

	// The simplest program that does the same job: read the CSV, expr.Run per (firm, policy) on a
	// struct env in one goroutine, write the matches to a CSV.
	ScriptSeconds float64 `json:"script_seconds"`
	ScriptMatches int     `json:"script_matches"`

	// The user's command, as a separate process: `policypush match --as-of … --json`.
	MatchSeconds float64        `json:"match_seconds"` // first run: every match is new
	MatchNew     int            `json:"match_new"`
	MatchPhases  matcher.Phases `json:"match_phases"`
	RerunSeconds float64        `json:"rerun_seconds"` // second run: nothing changed
	RerunPhases  matcher.Phases `json:"rerun_phases"`
	Ratio        float64        `json:"ratio"` // script_seconds / match_seconds (> 1: the command is faster)
	// Rounds are the script and the first match run in turn (--rounds), each pair a minute apart
	// at most, so that a shared machine's changing speed moves both; the figures above are the
	// round of the median ratio.
	Rounds      []pipelineRound `json:"rounds,omitempty"`
	Identical   bool            `json:"identical"`
	Differences int             `json:"differences"`
	Outbox      int64           `json:"outbox_notices"`
}

func benchPipelineCmd(g *globals) *cobra.Command {
	o := pipelineBench{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pipeline",
		Short: "The whole `match` command at provincial size against the simplest script that does the same job",
		Long: `Measures what a province runs: the whole "policypush match" command as its own process (load
the registry, evaluate every active policy, diff against stored matches, write new matches and
their outbox rows), against the simplest program that does the same job, in the same run:

  script   read the registry CSV, run expr (rules.Policy.Evaluate, plain expr.Run on a struct env)
           for every (firm, policy) in one goroutine, write the matches to a CSV;
  match    "policypush match --as-of DATE" on a data dir holding the same firms and policies,
           first with every match new, then again with nothing changed.

The data dir (--dir, default a temporary one) is seeded once with --firms synthetic Jiangsu firms
(imported from a CSV with "policypush import enterprises") and --policies synthetic policies
(matcher.SynthCatalog: mostly city-, district- or park-scoped), published with "policypush policy
apply"; a reused --dir is taken as it is. Both programs must decide the same (policy, firm,
amount) set; the benchmark says whether they did. With --rounds N the script and the first match
run N times in turn (the matches emptied before each), and the figures are the round of the
median ratio: on a shared machine whose speed changes from minute to minute, each ratio compares
two runs a minute apart. With --mysql-dsn the data dir's database is that
MySQL/MariaDB database (created when missing; give a fresh name for a fresh run).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := runPipelineBench(cmd.Context(), o, cmd.ErrOrStderr())
			return report(res, err, asJSON, printPipelineBench)
		},
	}
	f := cmd.Flags()
	o.flags(f)
	f.BoolVar(&asJSON, "json", false, "print the figures as JSON")
	f.IntVar(&o.rounds, "rounds", 1, "run the script and the first match this many times in turn and report the round of the median ratio")
	return cmd
}

func runPipelineBench(ctx context.Context, o pipelineBench, progress io.Writer) (pipelineResult, error) {
	res := pipelineResult{Firms: o.firms, Policies: o.policies, CPUs: runtime.NumCPU(), AsOf: o.asOf, Database: o.database()}
	asOf, cleanup, err := o.begin("policypush-pipeline")
	if err != nil {
		return res, err
	}
	defer cleanup()
	run, err := o.commands(ctx, progress)
	if err != nil {
		return res, err
	}
	if res.Seeded, err = o.seedDir(run, progress); err != nil {
		return res, err
	}
	csvPath := filepath.Join(o.dir, "bench-firms.csv")
	defs := matcher.SynthCatalog(o.policies, o.seed)

	var script map[string]string
	matchRun := func(i int) (float64, matcher.Summary, error) {
		fmt.Fprintf(progress, "policypush match --as-of %s (run %d)\n", o.asOf, i)
		var out bytes.Buffer
		d, err := run(&out, "match", "--as-of", o.asOf, "--json")
		if err != nil {
			return 0, matcher.Summary{}, err
		}
		var sum matcher.Summary
		if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
			return 0, sum, fmt.Errorf("read match summary: %w", err)
		}
		return d.Seconds(), sum, nil
	}
	for round := range max(o.rounds, 1) {
		if err := resetMatches(ctx, o); err != nil {
			return res, err
		}
		fmt.Fprintf(progress, "script: CSV → expr.Run per (firm, policy) → CSV (round %d)\n", round+1)
		start := time.Now()
		if script, err = plainScript(ctx, csvPath, defs, asOf.Time, filepath.Join(o.dir, "bench-script-matches.csv")); err != nil {
			return res, err
		}
		r := pipelineRound{ScriptSeconds: time.Since(start).Seconds()}
		secs, sum, err := matchRun(round + 1)
		if err != nil {
			return res, err
		}
		r.MatchSeconds, r.MatchPhases, r.Ratio = secs, sum.Phases, r.ScriptSeconds/secs
		res.Rounds = append(res.Rounds, r)
		if round == 0 {
			for _, p := range sum.Policies {
				res.MatchNew += p.New
			}
		}
	}
	byRatio := slices.Clone(res.Rounds)
	slices.SortFunc(byRatio, func(a, b pipelineRound) int { return cmp.Compare(a.Ratio, b.Ratio) })
	med := byRatio[(len(byRatio)-1)/2]
	res.ScriptSeconds, res.ScriptMatches = med.ScriptSeconds, len(script)
	res.MatchSeconds, res.MatchPhases, res.Ratio = med.MatchSeconds, med.MatchPhases, med.Ratio
	if len(res.Rounds) == 1 {
		res.Rounds = nil
	}
	secs, sum, err := matchRun(len(byRatio) + 1)
	if err != nil {
		return res, err
	}
	res.RerunSeconds, res.RerunPhases = secs, sum.Phases

	stored, outbox, err := storedMatches(ctx, o)
	if err != nil {
		return res, err
	}
	res.Outbox = outbox
	res.Differences = symmetricDifference(script, stored)
	res.Identical = res.Differences == 0
	return res, nil
}

// writeDefinitions writes policies as YAML files (JSON is YAML) that `policy apply` reads.
func writeDefinitions(dir string, defs []*rules.Definition) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range defs {
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, d.ID+".yaml"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// plainScript is the simplest program that does the job of `match`: it reads the registry CSV,
// evaluates every policy for every active firm with plain expr on a struct env, in one goroutine,
// and writes "policy_id,credit_code,amount" lines. It returns the matches it wrote.
func plainScript(ctx context.Context, csvPath string, defs []*rules.Definition, asOf time.Time, outPath string) (map[string]string, error) {
	compiled := make([]*rules.Policy, 0, len(defs))
	for _, d := range defs {
		if !d.ActiveOn(asOf) {
			continue
		}
		p, err := d.Compile()
		if err != nil {
			return nil, err
		}
		compiled = append(compiled, p)
	}
	in, err := os.Open(csvPath)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	bw := bufio.NewWriterSize(out, 1<<20)
	w := csv.NewWriter(bw)
	r := csv.NewReader(bufio.NewReaderSize(in, 1<<20))
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, err
	}
	header = append([]string(nil), header...)
	got := map[string]string{}
	for line := 2; ; line++ {
		if line%1024 == 0 && ctx.Err() != nil { // interrupted (^C, SIGTERM): a 1M-firm run takes minutes
			return nil, ctx.Err()
		}
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		e, _, ok := registry.ParseRecord(header, rec, line)
		if !ok || e.Status != store.StatusActive {
			continue
		}
		env := policies.EnvOf(&e, asOf)
		for _, p := range compiled {
			oc, err := p.Evaluate(&env)
			if err != nil || !oc.Eligible {
				continue
			}
			amount := ""
			if oc.Amount != nil {
				amount = strconv.FormatFloat(*oc.Amount, 'f', 2, 64)
			}
			if err := w.Write([]string{p.Def.ID, e.CreditCode, amount}); err != nil {
				return nil, err
			}
			got[p.Def.ID+"|"+e.CreditCode] = amount
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, err
	}
	return got, bw.Flush()
}

// benchDB opens the data dir's database.
func benchDB(ctx context.Context, o pipelineBench) (*gorm.DB, error) {
	opts := store.Options{Driver: "sqlite", DSN: filepath.Join(o.dir, "policypush.db")}
	if o.mysqlDSN != "" {
		opts = store.Options{Driver: "mysql", DSN: o.mysqlDSN}
	}
	return store.Open(ctx, opts)
}

// resetMatches empties what a match writes, so that the first timed run finds every match new.
// The data dir is the benchmark's own (it holds the seeding marker).
func resetMatches(ctx context.Context, o pipelineBench) error {
	db, err := benchDB(ctx, o)
	if err != nil {
		return err
	}
	defer closeGorm(db)
	var tables []string
	for _, m := range []any{&store.Match{}, &store.MatchCount{}, &store.MatchHour{}, &store.Outbox{}, &store.EvalError{}, &store.PolicyEvaluation{}} {
		stmt := &gorm.Statement{DB: db}
		if err := stmt.Parse(m); err != nil {
			return err
		}
		tables = append(tables, stmt.Schema.Table)
	}
	// A data dir that bench api served has delivered notices of the old matches: every match new
	// is a province's first full match, with no deliveries yet (store.ReachOfNew would otherwise
	// look each new match's firm up among them).
	tables = append(tables, "deliveries", "delivery_items", "delivery_events", "delivery_receipts", "delivery_counts",
		"delivery_counted", "delivery_queue", "link_opens", "enterprise_responses")
	for _, table := range tables {
		if !db.Migrator().HasTable(table) {
			continue
		}
		var err error
		if db.Dialector.Name() == "mysql" {
			// TRUNCATE makes the table anew: the DELETE of the last run's millions of rows left
			// InnoDB's purge to do in the background during the next timed run
			err = db.WithContext(ctx).Exec("TRUNCATE TABLE " + table).Error
		} else {
			err = db.WithContext(ctx).Exec("DELETE FROM " + table).Error
		}
		if err != nil {
			return fmt.Errorf("empty the benchmark's matches (%s): %w", table, err)
		}
	}
	return nil
}

// storedMatches reads the active matches the match command stored, keyed like plainScript's.
func storedMatches(ctx context.Context, o pipelineBench) (map[string]string, int64, error) {
	db, err := benchDB(ctx, o)
	if err != nil {
		return nil, 0, err
	}
	defer closeGorm(db)
	out := map[string]string{}
	rows, err := db.WithContext(ctx).Model(&store.Match{}).Select("policy_id, credit_code, amount").
		Where("state = ?", store.MatchActive).Rows()
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var pid, code string
		var amount *float64
		if err := rows.Scan(&pid, &code, &amount); err != nil {
			return nil, 0, err
		}
		a := ""
		if amount != nil {
			a = strconv.FormatFloat(*amount, 'f', 2, 64)
		}
		out[pid+"|"+code] = a
	}
	outbox, err := bus.Pending(ctx, db) // nothing relays in the benchmark
	if err != nil {
		return nil, 0, err
	}
	return out, outbox, rows.Err()
}

func symmetricDifference(a, b map[string]string) int {
	n := 0
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			n++
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			n++
		}
	}
	return n
}

// begin parses --as-of and takes the data dir (useDir): how a benchmark that seeds a data dir starts.
func (o *pipelineBench) begin(prefix string) (rules.Date, func(), error) {
	day, err := rules.ParseDate(o.asOf)
	if err != nil {
		return rules.Date{}, nil, fmt.Errorf("--as-of: %w", err)
	}
	cleanup, err := o.useDir(prefix)
	return day, cleanup, err
}

// useDir makes a temporary data dir (removed by the returned cleanup) when no --dir was given.
func (o *pipelineBench) useDir(prefix string) (cleanup func(), err error) {
	if o.dir != "" {
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	o.dir = dir
	return func() { _ = os.RemoveAll(dir) }, nil
}

// database is the benchmark's database driver.
func (o pipelineBench) database() string {
	if o.mysqlDSN != "" {
		return "mysql"
	}
	return "sqlite"
}

func printPipelineBench(w io.Writer, r pipelineResult) {
	fmt.Fprintf(w, "整条匹配命令基准：%d 家企业 × %d 项政策，%s，%d 核，评估日期 %s\n", r.Firms, r.Policies, r.Database, r.CPUs, r.AsOf)
	fmt.Fprintf(w, "script   %.1f s  CSV → expr.Run per (firm, policy), one goroutine → CSV: %d matches\n", r.ScriptSeconds, r.ScriptMatches)
	fmt.Fprintf(w, "match    %.1f s  whole command, every match new: %d matches, %d notices queued (%s)\n", r.MatchSeconds, r.MatchNew, r.Outbox, r.MatchPhases)
	fmt.Fprintf(w, "rerun    %.1f s  whole command, nothing changed (%s)\n", r.RerunSeconds, r.RerunPhases)
	for i, rd := range r.Rounds {
		fmt.Fprintf(w, "round %d  script %.1f s, match %.1f s: %.2f×\n", i+1, rd.ScriptSeconds, rd.MatchSeconds, rd.Ratio)
	}
	median := ""
	if len(r.Rounds) > 1 {
		median = fmt.Sprintf(", the median of %d rounds", len(r.Rounds))
	}
	fmt.Fprintf(w, "ratio    %.2f× (script time / match time%s; ≥ 1 means the command is faster than the script, goal ≥ 2)\n", r.Ratio, median)
	fmt.Fprintf(w, "same     %t (%d differences in (policy, firm, amount))\n", r.Identical, r.Differences)
}

// flags registers the size and place of the benchmark's data dir (bench pipeline, bench api).
func (o *pipelineBench) flags(f *pflag.FlagSet) {
	f.IntVar(&o.firms, "firms", 200000, "synthetic firms")
	f.IntVar(&o.policies, "policies", 140, "synthetic policies")
	f.Int64Var(&o.seed, "seed", 1, "seed of firms and policies")
	f.StringVar(&o.asOf, "as-of", "2022-06-30", "evaluation date")
	f.StringVar(&o.dir, "dir", "", "data dir to seed or reuse (default: a temporary one, removed afterwards)")
	f.StringVar(&o.mysqlDSN, "mysql-dsn", "", "use this MySQL/MariaDB database instead of SQLite, e.g. root@tcp(127.0.0.1:3306)/ppbench")
}

// benchRun runs one policypush command on the benchmark's data dir, its standard output to out,
// and says how long it took.
type benchRun func(out io.Writer, args ...string) (time.Duration, error)

// commands writes the benchmark's own config into o.dir and returns how to run policypush
// commands on it: never on a config.yaml or POLICYPUSH_ variables that happen to be around (they
// could name a production database). With --mysql-dsn the database is created when missing.
func (o pipelineBench) commands(ctx context.Context, progress io.Writer) (benchRun, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("data_dir: %q\ndatabase:\n  driver: sqlite\n", o.dir)
	if o.mysqlDSN != "" {
		if err := createMySQLDatabase(o.mysqlDSN); err != nil {
			return nil, err
		}
		conf = fmt.Sprintf("data_dir: %q\ndatabase:\n  driver: mysql\n  dsn: %q\n", o.dir, o.mysqlDSN)
	}
	confPath := filepath.Join(o.dir, "bench-config.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POLICYPUSH_") {
			env = append(env, kv)
		}
	}
	return func(out io.Writer, args ...string) (time.Duration, error) {
		c := exec.CommandContext(ctx, self, append([]string{"--config", confPath}, args...)...)
		c.Env, c.Stdout, c.Stderr = env, out, progress
		start := time.Now()
		if err := c.Run(); err != nil {
			return 0, fmt.Errorf("policypush %s: %w", strings.Join(args, " "), err)
		}
		return time.Since(start), nil
	}, nil
}

// seedDir seeds the data dir once — o.firms synthetic Jiangsu firms imported from bench-firms.csv
// and o.policies synthetic policies published with "policy apply" — and marks it seeded; a dir
// already marked is taken as it is (seeded false).
func (o pipelineBench) seedDir(run benchRun, progress io.Writer) (seeded bool, err error) {
	marker := filepath.Join(o.dir, "bench-seeded")
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	fmt.Fprintf(progress, "seeding %s: %d firms, %d policies\n", o.dir, o.firms, o.policies)
	csvPath := filepath.Join(o.dir, "bench-firms.csv")
	if err := registry.SynthCSVFile(csvPath, o.firms, o.seed, false); err != nil {
		return true, err
	}
	policyDir := filepath.Join(o.dir, "bench-policies")
	if err := writeDefinitions(policyDir, matcher.SynthCatalog(o.policies, o.seed)); err != nil {
		return true, err
	}
	if _, err := run(io.Discard, "import", "enterprises", csvPath); err != nil {
		return true, err
	}
	if _, err := run(io.Discard, "policy", "apply", policyDir, "--by", "bench"); err != nil {
		return true, err
	}
	return true, os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}
