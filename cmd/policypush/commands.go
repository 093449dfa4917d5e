package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/admin"
	"github.com/policypush/policypush/core"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/matcher"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

func importCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "import", Short: "导入数据（企业名录）"}
	var mappingPath string
	ent := &cobra.Command{
		Use:   "enterprises FILE",
		Short: "Import enterprises from CSV or XLSX (upsert by credit_code)",
		Long: `Reads a CSV (UTF-8 with or without BOM, or GB18030/GBK as Excel on Chinese Windows saves it) or
.xlsx file (first sheet) whose header row names catalog keys, their Chinese labels or common
synonyms (统一社会信用代码, 企业名称, 所属行业, 登记状态, …), and upserts each row by credit_code in
batches; columns the file does not have keep their stored values. Rows with malformed values are
reported with line, column and reason and skipped; everything valid is imported. Credit codes that
fail only the GB 32100 checksum are kept with a warning (early pilot codes fail it legitimately).
--mapping FILE.yaml binds other headers, with units (万元) and thousands separators. The command
fails when the file is not a registry export or every row is rejected. See "policypush fields"
and docs/registry.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := registry.ImportOptions{Progress: os.Stderr}
			if mappingPath != "" {
				m, err := registry.LoadMapping(mappingPath)
				if err != nil {
					return err
				}
				o.Mapping = m
			}
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				return tracked(cmd.Context(), db, os.Stderr, "import", args[0], func([]store.CommandRun) error {
					sum, err := registry.ImportFile(cmd.Context(), db, args[0], o)
					return reportImport(os.Stdout, os.Stderr, args[0], sum, err)
				})
			})
		},
	}
	ent.Flags().StringVar(&mappingPath, "mapping", "", "YAML file binding source headers to catalog keys, with units and thousands separators (docs/registry.md)")
	cmd.AddCommand(ent)
	return cmd
}

// reportImport prints an import's (or a sync's) issues and summary, and fails when it stopped or
// when every row was rejected: a file that yields nothing is not what the operator meant to load.
func reportImport(out, errw io.Writer, label string, sum registry.Summary, err error) error {
	for _, is := range sum.Issues {
		fmt.Fprintln(errw, label+": "+is.String())
	}
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	if sum.Encoding != "" {
		fmt.Fprintf(out, "编码：%s\n", sum.Encoding)
	}
	fmt.Fprintln(out, sum.String())
	if sum.AllRejected() {
		return fmt.Errorf("%s: every one of the %d rows was rejected; nothing was imported (see the messages above)", label, sum.Rows)
	}
	return nil
}

func (g *globals) app() (*app, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	return newApp(cfg), nil
}

func actorName(flag string) string {
	if flag != "" {
		return flag
	}
	if u, err := user.Current(); err == nil {
		return "os:" + u.Username
	}
	return "cli"
}

// applyMode is how `policy apply` puts a changed policy into effect.
type applyMode struct {
	note  string // said once before the files, when there is no second person
	apply func(ctx context.Context, db *gorm.DB, def *rules.Definition, file string, by policies.Actor, opts ...rules.Option) (policies.ApplyResult, error)
}

// applyModeOf picks the lifecycle of `policy apply`: without staff accounts one operator publishes
// directly (said in the output and the audit log); with them a changed policy becomes a version in
// review, unless the deployment switched review off — then a reviewer publishes at once.
func applyModeOf(actor policies.Actor, review bool) applyMode {
	direct := func(why string) func(ctx context.Context, db *gorm.DB, def *rules.Definition, file string, by policies.Actor, opts ...rules.Option) (policies.ApplyResult, error) {
		return func(ctx context.Context, db *gorm.DB, def *rules.Definition, file string, by policies.Actor, opts ...rules.Option) (policies.ApplyResult, error) {
			return policies.ApplyBy(ctx, db, def, file, by, why, opts...)
		}
	}
	switch {
	case actor.Role == policies.RoleOperator:
		return applyMode{note: "单人运维模式（尚无员工账号）：政策直接发布，未经第二人审核；创建员工账号后 apply 改为提交审核。",
			apply: direct("none: single-operator deployment without staff accounts")}
	case !review:
		return applyMode{note: "配置 policy.review: false：政策由审核人直接发布（审核在本系统之外进行）。",
			apply: func(ctx context.Context, db *gorm.DB, def *rules.Definition, file string, by policies.Actor, opts ...rules.Option) (policies.ApplyResult, error) {
				if by.Role != store.RoleReviewer {
					return policies.ApplyResult{}, fmt.Errorf("%s has role %q; with policy.review: false only a reviewer publishes through apply: %w",
						by.Name, by.Role, policies.ErrForbidden)
				}
				return policies.ApplyBy(ctx, db, def, file, by, "switched off in config (policy.review: false)", opts...)
			}}
	}
	return applyMode{apply: policies.Propose}
}

// cliActor is who a CLI command runs as: --by (default the OS user), checked against the staff
// accounts once any exist (admin.CLIActor).
func cliActor(ctx context.Context, db *gorm.DB, by string, need admin.Perm) (string, error) {
	name, _, err := admin.CLIActor(ctx, db, actorName(by), need)
	return name, err
}

// asActor opens the database and runs fn as the --by account, which must hold permission need.
func (g *globals) asActor(ctx context.Context, by string, need admin.Perm, fn func(db *gorm.DB, actor string) error) error {
	return g.withDB(ctx, func(a *app, db *gorm.DB) error {
		actor, err := cliActor(ctx, db, by, need)
		if err != nil {
			return err
		}
		return fn(db, actor)
	})
}

// asFirmReader opens the database for a command that reads firm data as of --as-of: it parses the
// date, checks that the --by account may read firms, and runs fn with both.
func (g *globals) asFirmReader(ctx context.Context, asOf, by string, fn func(a *app, db *gorm.DB, day time.Time, actor string) error) error {
	return g.withDB(ctx, func(a *app, db *gorm.DB) error {
		day, err := parseAsOf(asOf, a.cfg)
		if err != nil {
			return err
		}
		actor, err := cliActor(ctx, db, by, admin.PermFirmRead)
		if err != nil {
			return err
		}
		return fn(a, db, day, actor)
	})
}

func policyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "政策：发布、测试、列表"}
	var by string
	apply := &cobra.Command{
		Use:   "apply FILE|DIR",
		Short: "Compile policy YAML files and publish each changed one as a new immutable version",
		Long: `Parses every .yaml/.yml policy (one per file), type-checks its expressions against the field catalog
and, when its content changed, follows the same lifecycle as the console: once staff accounts exist,
--by must be an author of the policy's department and the change becomes a version in review, which a
second person approves and publishes (policy review / policy publish, or the console). With
policy.review: false in the config, apply publishes at once and --by must be a reviewer. Without any
staff account (the single-operator default) apply publishes directly, and says so in its output and
the audit log. Errors name the file, policy id, line and column; a bad file never stops the good ones
from being applied. Exits non-zero if any file failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				defs, errs := rules.LoadDir(args[0], a.vocab())
				for _, e := range errs {
					fmt.Fprintln(os.Stderr, e)
				}
				actor, err := policies.ResolveActor(cmd.Context(), db, actorName(by))
				if err != nil {
					return err
				}
				mode := applyModeOf(actor, a.cfg.Policy.Review)
				if mode.note != "" {
					fmt.Println(mode.note)
				}
				for _, d := range defs {
					p, _ := d.Compile(a.vocab())
					if failed := failedTests(p); failed != "" {
						errs = append(errs, fmt.Errorf("policy %s: tests fail, not published:\n%s", d.ID, failed))
						fmt.Fprintln(os.Stderr, errs[len(errs)-1])
						continue
					}
					res, err := mode.apply(cmd.Context(), db, d, args[0], actor, a.vocab())
					if err != nil {
						errs = append(errs, err)
						fmt.Fprintf(os.Stderr, "policy %s: %v\n", d.ID, err)
						continue
					}
					switch {
					case res.Pending != "" && res.Changed:
						fmt.Printf("%s: version %d in review; a reviewer other than %s publishes it (policy review %s --approve, policy publish %s)\n",
							res.PolicyID, res.Version, actor.Name, res.PolicyID, res.PolicyID)
					case res.Pending != "":
						fmt.Printf("%s: unchanged, version %d is already %s\n", res.PolicyID, res.Version, res.Pending)
					case res.Changed:
						fmt.Printf("%s: published version %d\n", res.PolicyID, res.Version)
					default:
						fmt.Printf("%s: unchanged (version %d)\n", res.PolicyID, res.Version)
					}
				}
				if len(errs) > 0 {
					return fmt.Errorf("%d policy file(s) not applied", len(errs))
				}
				return nil
			})
		},
	}
	apply.Flags().StringVar(&by, "by", "", "who applies: once staff accounts exist, an author of the policy's department (a reviewer with policy.review: false); default the OS user")
	test := &cobra.Command{
		Use:   "test FILE|DIR",
		Short: "Run the test cases of policy files (no database needed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			voc, err := g.vocabulary()
			if err != nil {
				return err
			}
			defs, errs := rules.LoadDir(args[0], rules.WithVocabulary(voc))
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e)
			}
			passed, failed := 0, len(errs)
			for _, d := range defs {
				p, _ := d.Compile(rules.WithVocabulary(voc))
				for _, r := range p.RunTests() {
					if r.Passed {
						passed++
						fmt.Printf("ok   %s / %s\n", d.ID, r.Name)
					} else {
						failed++
						fmt.Printf("FAIL %s / %s: %s\n", d.ID, r.Name, r.Problem)
					}
				}
			}
			fmt.Printf("%d passed, %d failed\n", passed, failed)
			if failed > 0 {
				return errSilent
			}
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List published policies",
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				ps, err := policies.LoadPublished(cmd.Context(), db, "", a.vocab())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tVERSION\tWINDOW\tCHANNELS\tTITLE")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%d\t%s – %s\t%s\t%s\n", p.Def.ID, p.Version, p.Def.EffectiveFrom, windowEndOf(p.Def),
						strings.Join(p.Def.Channels, ","), p.Def.Title)
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(apply, test, list)
	cmd.AddCommand(policySubcommands(g)...) // the review lifecycle, rules_cmds.go
	return cmd
}

func windowEndOf(d *rules.Definition) string {
	if d.EffectiveTo == nil {
		return "长期"
	}
	return d.EffectiveTo.String()
}

func failedTests(p *rules.Policy) string {
	var b strings.Builder
	for _, r := range p.RunTests() {
		if !r.Passed {
			fmt.Fprintf(&b, "  %s: %s\n", r.Name, r.Problem)
		}
	}
	return b.String()
}

func matchCmd(g *globals) *cobra.Command {
	var asOf, policyID, cpuProfile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "match",
		Short: "Evaluate active policies against active firms and store the difference",
		Long: `Evaluates every published policy whose effective window contains the as-of date (default: today)
against active firms (revoked, deregistered and moved-out firms never match). New matches are stored
together with their outbox rows in one transaction; matches that no longer hold are revoked; unchanged
ones are untouched, so running it twice queues nothing twice. Notices are sent by "serve", "demo" or
"deliver".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withBulkDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				day, err := parseAsOf(asOf, a.cfg)
				if err != nil {
					return err
				}
				if cpuProfile != "" { // hidden: for profiling the whole command (docs/matcher.md)
					f, err := os.Create(cpuProfile)
					if err != nil {
						return err
					}
					defer f.Close()
					if err := pprof.StartCPUProfile(f); err != nil {
						return err
					}
					defer pprof.StopCPUProfile()
				}
				var sum matcher.Summary
				err = tracked(cmd.Context(), db, os.Stderr, "match", "as_of="+day.Format(time.DateOnly)+" policy="+policyID, func([]store.CommandRun) error {
					sum, err = a.match(cmd.Context(), db, day, policyID) // matcher_cmds.go
					return err
				})
				return report(sum, err, asJSON, printMatchSummary)
			})
		},
	}
	cmd.Flags().StringVar(&asOf, "as-of", "", "evaluation date YYYY-MM-DD (default today)")
	cmd.Flags().StringVar(&policyID, "policy", "", "match only this policy id")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the command to this file")
	_ = cmd.Flags().MarkHidden("cpuprofile")
	return cmd
}

func printMatchSummary(w io.Writer, sum matcher.Summary) {
	fmt.Fprintf(w, "评估日期 %s，在册正常经营企业 %d 家，用时 %.2f 秒\n", sum.AsOf, sum.Firms, sum.Seconds)
	fmt.Fprintf(w, "各阶段用时：%s\n", sum.Phases)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tVERSION\tELIGIBLE\tNEW\tREVOKED\tUPDATED\tUNCHANGED\tERRORS\tNOTE")
	for _, p := range sum.Policies {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", p.PolicyID, p.Version, p.Eligible, p.New, p.Revoked,
			p.Updated, p.Unchanged, p.Errors, p.Skipped)
	}
	_ = tw.Flush()
}

func matchesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "matches", Short: "匹配结果"}
	var format, policyID, out, by string
	export := &cobra.Command{
		Use:   "export",
		Short: "Write active matches as CSV, JSON or XLSX (stdout without -o)",
		Long: `Writes every active match with the columns policy_id, credit_code, amount (empty when the policy
has no amount formula), policy_version, as_of, name, region_code, park_id, matched_at. Rows stream
from the database (constant memory); a text cell starting with =, +, - or @ gets a leading ' so a
spreadsheet does not run it as a formula. The export is recorded in the audit log under --by
(default the OS user), as the console's is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := core.Format(format)
			if f != core.FormatCSV && f != core.FormatJSON && f != core.FormatXLSX {
				return fmt.Errorf("--format %q: use csv, json or xlsx", format)
			}
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				actor, err := cliActor(cmd.Context(), db, by, admin.PermFirmExport)
				if err != nil {
					return err
				}
				w, file := io.Writer(os.Stdout), (*os.File)(nil)
				if out != "" {
					if file, err = os.Create(out); err != nil {
						return err
					}
					defer file.Close()
					w = file
				}
				svc := core.New(db, core.Options{Location: a.cfg.Location(), Vocabulary: a.vocabulary()})
				filter := map[string]any{}
				if policyID != "" {
					filter["policy_id"] = policyID
				}
				if out != "" {
					filter["output"] = filepath.Base(out)
				}
				if _, err := svc.ExportMatches(cmd.Context(), w, core.MatchExport{Actor: actor, Format: f, Table: core.DataTable,
					Query: svc.ActiveMatches(cmd.Context(), policyID), Record: core.DataRecord, Filter: filter}); err != nil {
					return fmt.Errorf("export matches: %w", err)
				}
				if file != nil {
					return file.Close()
				}
				return nil
			})
		},
	}
	export.Flags().StringVar(&format, "format", "csv", "csv, json or xlsx")
	export.Flags().StringVar(&policyID, "policy", "", "only this policy id")
	export.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	export.Flags().StringVar(&by, "by", "", "who exports (recorded in the audit log; default the OS user)")
	cmd.AddCommand(export)
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// report prints a command's result on stdout: as JSON (writeJSON) with --json, else as its table.
func report[R any](res R, err error, asJSON bool, table func(io.Writer, R)) error {
	return reportAs(writeJSON, res, err, asJSON, table)
}

// reportAs is report with the JSON encoding of the caller's choice (the rule commands use printJSON).
func reportAs[R any](encode func(io.Writer, any) error, res R, err error, asJSON bool, table func(io.Writer, R)) error {
	if err != nil {
		return err
	}
	if asJSON {
		return encode(os.Stdout, res)
	}
	table(os.Stdout, res)
	return nil
}

func statusCmd(g *globals) *cobra.Command {
	var asJSON bool
	var asOf string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Counts of enterprises, active policies, matches, pending outbox rows and deliveries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				day, err := parseAsOf(asOf, a.cfg)
				if err != nil {
					return err
				}
				// the delivery counts as of now: what the notifier queued since its last drain
				if _, err := store.DrainDeliveries(cmd.Context(), db); err != nil {
					return err
				}
				st, err := store.ReadStatus(cmd.Context(), db, day, store.FirmScope{})
				if err != nil {
					return err
				}
				payouts, err := newPayoutService(a, a.cfg).Figures(cmd.Context())
				if err != nil {
					return err
				}
				health := a.readiness(cmd.Context())
				if asJSON {
					return writeJSON(os.Stdout, statusWithPayouts{st, payouts, health})
				}
				printStatus(os.Stdout, st, day)
				printPayoutFigures(os.Stdout, payouts)
				printHealth(os.Stdout, health)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&asOf, "as-of", "", "date for counting active policies (default today)")
	return cmd
}

// printHealth prints the checks of stage.Readiness, the same as /readyz answers.
func printHealth(w io.Writer, h stage.Health) {
	ready := "是"
	if !h.Ready() {
		ready = "否"
	}
	fmt.Fprintf(w, "就绪 %s：", ready)
	for i, c := range h {
		if i > 0 {
			fmt.Fprint(w, "，")
		}
		fmt.Fprintf(w, "%s %s", c.Name, c.Status)
	}
	fmt.Fprintln(w)
}

func printStatus(w io.Writer, st store.Status, day time.Time) {
	fmt.Fprintf(w, "企业 %d（正常经营 %d）\n", st.Enterprises, st.EnterprisesActive)
	fmt.Fprintf(w, "已发布政策 %d，%s 有效 %d\n", st.PoliciesPublished, day.Format("2006-01-02"), st.PoliciesActive)
	fmt.Fprintf(w, "有效匹配 %d，待投递 outbox %d\n", st.MatchesActive, st.OutboxPending)
	chans := make([]string, 0, len(st.Deliveries))
	for ch := range st.Deliveries {
		chans = append(chans, ch)
	}
	sort.Strings(chans)
	for _, ch := range chans {
		states := make([]string, 0)
		for s, n := range st.Deliveries[ch] {
			states = append(states, fmt.Sprintf("%s %d", s, n))
		}
		sort.Strings(states)
		fmt.Fprintf(w, "通知 %s: %s\n", ch, strings.Join(states, ", "))
	}
}

func fieldsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fields",
		Short: "List the field catalog: the variables a rule can use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			voc, err := g.vocabulary()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(os.Stdout, voc.Fields())
			}
			tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tLABEL\tTYPE\tUNIT\tSOURCE")
			for _, f := range voc.Fields() {
				typ := f.Type
				if len(f.Enum) > 0 {
					typ += " (" + strings.Join(f.Enum, "|") + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Key, f.Label, typ, f.Unit, f.Source)
			}
			_ = tw.Flush()
			fmt.Println("\n辅助函数:")
			helpers := rules.Helpers()
			names := make([]string, 0, len(helpers))
			for k := range helpers {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				fmt.Println("  " + helpers[k])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
