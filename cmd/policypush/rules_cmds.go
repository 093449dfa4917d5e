package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/core"
	"github.com/policypush/policypush/core/audit"
	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/rules"
)

// Commands of the rules area: explanations, the calculator, near misses, extra-field import and
// the review lifecycle of `policy`. Each is a thin shell over the rules package's Go API, which the
// console calls the same way.

func init() {
	addCommand(explainCmd)
	addCommand(calcCmd)
	addCommand(nearMissesCmd)
	addCommand(factsCmd)
}

// vocabularyOf is the rule vocabulary of a configuration: the field catalog plus the deployment's
// extra fields (config fields.extra).
func vocabularyOf(cfg config.Config) (*rules.Vocabulary, error) {
	fields := make([]registry.Field, len(cfg.Fields.Extra))
	for i, f := range cfg.Fields.Extra {
		fields[i] = registry.Field{Key: f.Key, Label: f.Label, Type: f.Type, Unit: f.Unit, Source: f.Source,
			Description: f.Description, Enum: f.Enum}
	}
	return rules.NewVocabulary(fields...)
}

// declareFields checks the deployment's extra fields (config fields.extra) before any command
// compiles a rule, so a bad declaration stops every command with its config key.
func (g *globals) declareFields() error {
	_, err := g.vocabulary()
	return err
}

// vocabulary loads the configuration and builds its rule vocabulary, for commands that compile
// rules without a database.
func (g *globals) vocabulary() (*rules.Vocabulary, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	return vocabularyOf(cfg)
}

// vocabulary is what the deployment's rules compile against. declareFields rejected a config whose
// extra fields do not build one before any command ran, so the error case does not occur here.
func (a *app) vocabulary() *rules.Vocabulary {
	v, err := vocabularyOf(a.cfg)
	if err != nil {
		return nil
	}
	return v
}

// vocab is the compile option of the deployment's vocabulary, for rules and policies calls.
func (a *app) vocab() rules.Option { return rules.WithVocabulary(a.vocabulary()) }

// withApp loads the configuration and runs fn with the app, closing it (and what it opened) after.
func (g *globals) withApp(fn func(a *app) error) error {
	a, err := g.app()
	if err != nil {
		return err
	}
	defer a.close()
	return fn(a)
}

// withDB runs fn with the configured database.
func (g *globals) withDB(ctx context.Context, fn func(a *app, db *gorm.DB) error) error {
	return g.openDB(ctx, false, fn)
}

// withBulkDB is withDB for a command that writes in bulk (match): Go's collector is set for a
// batch (batchGC), and on SQLite its commits leave the checkpoints to a goroutine of their own
// (store.Options.CheckpointBeside).
func (g *globals) withBulkDB(ctx context.Context, fn func(a *app, db *gorm.DB) error) error {
	batchGC()
	return g.openDB(ctx, true, fn)
}

func (g *globals) openDB(ctx context.Context, bulk bool, fn func(a *app, db *gorm.DB) error) error {
	return g.withApp(func(a *app) error {
		a.bulk = bulk
		db, err := a.openDB(ctx)
		if err != nil {
			return err
		}
		return fn(a, db)
	})
}

// printJSON writes indented JSON without escaping <, > and & (rule text is full of them).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func explainCmd(g *globals) *cobra.Command {
	var policyID, firm, asOf, by string
	var version int
	var matchID uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "explain --policy ID --firm CREDIT_CODE",
		Short: "Why a firm does or does not qualify for a policy, condition by condition",
		Long: `Decides one firm against one policy version exactly as "match" does (effective window, firm status,
the rule, combination rules) and shows each condition of the rule with its source text, its Chinese
rendering with the firm's values ("参保人数 9 < 10") and whether it held, plus the amount.

--version N explains another stored version (a draft, or an older one: replay); --match ID replays a
stored match with its own policy version and as-of date. Firm data is the registry as it is now.
The read is recorded in the audit log under --by (default the OS user).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if matchID == 0 && (policyID == "" || firm == "") {
				return errors.New("give --policy ID and --firm CREDIT_CODE, or --match ID")
			}
			return g.asFirmReader(cmd.Context(), asOf, by, func(a *app, db *gorm.DB, day time.Time, actor string) error {
				ex, err := policies.ExplainFirm(cmd.Context(), db, policies.ExplainRequest{PolicyID: policyID, Version: version,
					CreditCode: firm, AsOf: day, MatchID: matchID}, a.vocab())
				if err != nil {
					return err
				}
				if err := audit.Write(db.WithContext(cmd.Context()), audit.Entry{Actor: actor, Action: audit.FirmExplain, Object: ex.CreditCode,
					Detail: map[string]any{"policy_id": ex.PolicyID, "version": ex.Version, "as_of": ex.AsOf}}); err != nil {
					return err
				}
				return reportAs(printJSON, ex, nil, asJSON, printExplanation)
			})
		},
	}
	cmd.Flags().StringVar(&policyID, "policy", "", "policy id")
	cmd.Flags().StringVar(&firm, "firm", "", "统一社会信用代码 of the firm")
	cmd.Flags().StringVar(&asOf, "as-of", "", "evaluation date YYYY-MM-DD (default today)")
	cmd.Flags().IntVar(&version, "version", 0, "policy version (default: the published one)")
	cmd.Flags().Uint64Var(&matchID, "match", 0, "replay a stored match: its policy, version, firm and as-of date")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&by, "by", "", "who reads (recorded in the audit log; default the OS user)")
	return cmd
}

func mark(h *bool) string {
	switch {
	case h == nil:
		return "?"
	case *h:
		return "✓"
	}
	return "✗"
}

func printExplanation(w io.Writer, ex rules.Explanation) {
	fmt.Fprintf(w, "政策 %s 第 %d 版《%s》\n企业 %s %s，评估日期 %s\n", ex.PolicyID, ex.Version, ex.Title, ex.CreditCode, ex.FirmName, ex.AsOf)
	fmt.Fprintf(w, "结论：%s\n", ex.Summary)
	fmt.Fprintln(w, "条件：")
	var walk func(cs []rules.Condition, indent string)
	walk = func(cs []rules.Condition, indent string) {
		for _, c := range cs {
			fmt.Fprintf(w, "%s%s %s\n%s    规则：%s\n", indent, mark(c.Holds), c.Label, indent, c.Text)
			if c.Op != "" {
				walk(c.Children, indent+"    ")
			}
		}
	}
	walk(ex.Conditions, "  ")
	if ex.Excluded != nil {
		fmt.Fprintf(w, "组合规则：%s\n", ex.Excluded.Reason)
	}
	if ex.AmountLabel != "" {
		fmt.Fprintf(w, "金额：%s\n", ex.AmountLabel)
	}
}

func calcCmd(g *globals) *cobra.Command {
	var asOf string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "calc FILE.json",
		Short: "政策计算器: which active policies a firm qualifies for, from the facts it knows",
		Long: `Reads a JSON object of catalog key → value (see "policypush fields"; "-" reads standard input).
Fields left out or null are unknown: each active policy comes out eligible (with its amount when the
amount's inputs are known), not_eligible, or undecided with the fields that would decide it.
"as_of" in the file or --as-of sets the evaluation date (default today).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			facts, err := readFacts(args[0])
			if err != nil {
				return err
			}
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				if s, ok := facts["as_of"].(string); ok && asOf == "" {
					asOf = s
				}
				delete(facts, "as_of")
				day, err := parseAsOf(asOf, a.cfg)
				if err != nil {
					return err
				}
				rep, err := policies.CalculateActive(cmd.Context(), db, facts, day, a.vocab())
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				if asJSON {
					return printJSON(os.Stdout, rep)
				}
				fmt.Printf("评估日期 %s，有效政策 %d 项\n", rep.AsOf, len(rep.Results))
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "POLICY\tOUTCOME\tAMOUNT\tSUMMARY")
				for _, r := range rep.Results {
					amount := ""
					if r.Amount != nil {
						amount = fmt.Sprintf("%.2f", *r.Amount)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.PolicyID, r.Outcome, amount, r.Summary)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&asOf, "as-of", "", "evaluation date YYYY-MM-DD (default: as_of in the file, else today)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func readFacts(path string) (map[string]any, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var facts map[string]any
	dec := json.NewDecoder(io.LimitReader(r, 1<<20))
	if err := dec.Decode(&facts); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object of field → value (e.g. {\"industry_code\": \"H6210\", \"employees\": 12}): %w", path, err)
	}
	return facts, nil
}

func nearMissesCmd(g *globals) *cobra.Command {
	var policyID, asOf, by string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "near-misses --policy ID",
		Short: "Firms that fail a published policy by exactly one condition",
		Long: `Lists the firms in business for which exactly one condition of the policy's rule fails (in an "or",
the closest alternative counts), with that condition and the firm's values. The read is recorded in
the audit log under --by (default the OS user).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if policyID == "" {
				return errors.New("give --policy ID")
			}
			return g.asFirmReader(cmd.Context(), asOf, by, func(a *app, db *gorm.DB, day time.Time, actor string) error {
				res, err := core.New(db, core.Options{Location: a.cfg.Location(), Vocabulary: a.vocabulary()}).NearMisses(cmd.Context(),
					core.NearMissRequest{Actor: actor, PolicyID: policyID, AsOf: day, Limit: limit})
				if err != nil {
					return err
				}
				p, total, list := res.Policy, res.Total, res.Items
				if asJSON {
					return printJSON(os.Stdout, map[string]any{"policy_id": policyID, "version": p.Version,
						"as_of": day.Format(time.DateOnly), "total": total, "firms": list})
				}
				fmt.Printf("%s 第 %d 版：仅差一个条件的企业 %d 家\n", policyID, p.Version, total)
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CREDIT_CODE\tNAME\tFAILED")
				for _, m := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", m.CreditCode, m.Name, m.Failed.Label)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&policyID, "policy", "", "policy id")
	cmd.Flags().StringVar(&asOf, "as-of", "", "evaluation date YYYY-MM-DD (default today)")
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many firms (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&by, "by", "", "who reads (recorded in the audit log; default the OS user)")
	return cmd
}

func factsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "facts", Short: "本地扩展字段（config fields.extra）的数据"}
	cmd.AddCommand(&cobra.Command{
		Use:   "import FILE.csv",
		Short: "Import values of the extra fields declared in config (upsert by credit_code and field)",
		Long: `Reads a UTF-8 CSV whose header is credit_code followed by extra field keys (or their Chinese labels)
declared in config fields.extra. Each cell is checked against its field's type; an empty cell removes
the firm's value. Bad cells are reported by line and column and skipped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				sum, err := policies.ImportFacts(cmd.Context(), db, f, a.vocab())
				for _, p := range sum.Problems {
					fmt.Fprintln(os.Stderr, args[0]+": "+p)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				fmt.Printf("行 %d，写入 %d 个值，清除 %d 个值，问题 %d\n", sum.Rows, sum.Stored, sum.Cleared, len(sum.Problems))
				return nil
			})
		},
	})
	return cmd
}

// policySubcommands are the review lifecycle steps of `policy` (added by policyCmd).
func policySubcommands(g *globals) []*cobra.Command {
	var by string
	lifecycle := func(use, short, long string, args cobra.PositionalArgs,
		run func(cmd *cobra.Command, args []string, a *app, db *gorm.DB, actor policies.Actor) error) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, Long: long, Args: args,
			RunE: func(cmd *cobra.Command, args []string) error {
				return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
					actor, err := policies.ResolveActor(cmd.Context(), db, by)
					if err != nil {
						return err
					}
					return run(cmd, args, a, db, actor)
				})
			}}
		c.Flags().StringVar(&by, "by", "", "who does this: a user of the users table (any name while it is empty)")
		_ = c.MarkFlagRequired("by")
		return c
	}
	var version int
	var reason, asOf string
	var approve, reject, asJSON bool
	var samples int

	draft := lifecycle("draft FILE", "Save a policy file as a new draft version (author)",
		`Compiles the policy and stores it as a draft: the next version number, state draft, author --by.
A draft of the same content is not stored twice; saving a new draft withdraws any unpublished version
of the same policy. With staff accounts, --by must be an author of the policy's department.`,
		cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, a *app, db *gorm.DB, actor policies.Actor) error {
			def, err := rules.ParseFile(args[0], a.vocab())
			if err != nil {
				return err
			}
			p, err := def.Compile(a.vocab())
			if err != nil {
				return def.Locate(args[0], err)
			}
			v, err := policies.SaveDraft(cmd.Context(), db, def, actor, args[0], a.vocab())
			if err != nil {
				return err
			}
			fmt.Printf("%s: draft version %d\n", v.PolicyID, v.Version)
			for _, r := range p.RunTests() {
				if !r.Passed {
					fmt.Fprintf(os.Stderr, "warning: test %s fails: %s (fix it before submitting)\n", r.Name, r.Problem)
				}
			}
			return nil
		})
	submit := lifecycle("submit ID", "Send the draft to review (author); its tests must pass", "",
		cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, a *app, db *gorm.DB, actor policies.Actor) error {
			v, err := policies.Submit(cmd.Context(), db, args[0], version, actor, a.vocab())
			if err != nil {
				return err
			}
			fmt.Printf("%s: version %d in review\n", v.PolicyID, v.Version)
			return nil
		})
	review := lifecycle("review ID --approve|--reject", "Approve or reject the version in review (a reviewer other than its author)",
		`The two-person rule: the author of a version can never approve it. A rejection needs --reason.`,
		cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, a *app, db *gorm.DB, actor policies.Actor) error {
			if approve == reject {
				return errors.New("give exactly one of --approve or --reject")
			}
			v, err := policies.Review(cmd.Context(), db, args[0], version, actor, approve, reason)
			if err != nil {
				return err
			}
			fmt.Printf("%s: version %d %s by %s\n", v.PolicyID, v.Version, v.State, actor.Name)
			return nil
		})
	publish := lifecycle("publish ID", "Publish the approved version (a reviewer other than its author)",
		`Runs the policy's tests and a preview on the registry as of --as-of (printed and recorded in the
audit log), then makes the version the published one; the previous one is superseded. Publishing does
not match by itself: the next "match" evaluates the registry against the new version.`,
		cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, a *app, db *gorm.DB, actor policies.Actor) error {
			day, err := parseAsOf(asOf, a.cfg)
			if err != nil {
				return err
			}
			res, err := policies.Publish(cmd.Context(), db, args[0], version, actor, day, a.vocab())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(os.Stdout, res)
			}
			printPreview(os.Stdout, res.Preview)
			fmt.Printf("%s: published version %d (was %d)\n", res.PolicyID, res.Version, res.OldVersion)
			return nil
		})
	retire := lifecycle("retire ID", "Withdraw a published policy and revoke its active matches (reviewer)", "",
		cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, a *app, db *gorm.DB, actor policies.Actor) error {
			res, err := policies.Retire(cmd.Context(), db, args[0], actor, reason)
			if err != nil {
				return err
			}
			fmt.Printf("%s: version %d retired, %d active matches revoked\n", res.PolicyID, res.Version, res.MatchesRevoked)
			return nil
		})
	for _, c := range []*cobra.Command{submit, review, publish} {
		c.Flags().IntVar(&version, "version", 0, "version (default: the one in the state this step expects)")
	}
	for _, c := range []*cobra.Command{review, retire} {
		c.Flags().StringVar(&reason, "reason", "", "why (required to reject)")
	}
	review.Flags().BoolVar(&approve, "approve", false, "approve the version")
	review.Flags().BoolVar(&reject, "reject", false, "reject the version")
	publish.Flags().StringVar(&asOf, "as-of", "", "date of the preview YYYY-MM-DD (default today)")
	publish.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	diff := &cobra.Command{
		Use:   "diff ID V1 V2",
		Short: "What changed between two versions of a policy",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v [2]int
			for i, s := range args[1:] {
				if _, err := fmt.Sscan(s, &v[i]); err != nil {
					return fmt.Errorf("%q is not a version number", s)
				}
			}
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				d, err := policies.Diff(cmd.Context(), db, args[0], v[0], v[1])
				return reportAs(printJSON, d, err, asJSON, printDiff)
			})
		},
	}
	diff.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var previewVersion int
	preview := &cobra.Command{
		Use:   "preview FILE|ID",
		Short: "What publishing would change on the registry: new, kept and dropped firms by city, park, industry",
		Long: `Compares a candidate — a policy file, or a stored version of policy ID (default its latest) — with the
published version on the firms in business as of --as-of, and runs the candidate's tests. Nothing is
written.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				day, err := parseAsOf(asOf, a.cfg)
				if err != nil {
					return err
				}
				var rep rules.PreviewReport
				var budget *float64
				if st, statErr := os.Stat(args[0]); statErr == nil && !st.IsDir() {
					def, err := rules.ParseFile(args[0], a.vocab())
					if err != nil {
						return err
					}
					rep, err = policies.Preview(cmd.Context(), db, def, day, samples, a.vocab())
					if err != nil {
						return def.Locate(args[0], err)
					}
					budget = def.Budget
				} else if rep, err = policies.PreviewVersion(cmd.Context(), db, args[0], previewVersion, day, samples, a.vocab()); err != nil {
					return err
				} else if budget, err = payout.VersionBudget(cmd.Context(), db, rep.PolicyID, rep.Version); err != nil {
					return err
				}
				check := payout.CheckBudget(budget, rep.AmountAfter)
				if asJSON {
					return printJSON(os.Stdout, previewWithBudget{rep, check})
				}
				printPreview(os.Stdout, rep)
				printBudgetCheck(os.Stdout, check)
				return nil
			})
		},
	}
	preview.Flags().IntVar(&previewVersion, "version", 0, "stored version to preview (default the latest)")
	preview.Flags().StringVar(&asOf, "as-of", "", "evaluation date YYYY-MM-DD (default today)")
	preview.Flags().IntVar(&samples, "samples", 5, "sample firms per kind")
	preview.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	versions := &cobra.Command{
		Use:   "versions ID",
		Short: "List the versions of a policy with their state, author, reviewer and dates",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				vs, err := policies.Versions(cmd.Context(), db, args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(os.Stdout, vs)
				}
				tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tSTATE\tAUTHOR\tREVIEWER\tWINDOW\tPUBLISHED\tHASH")
				for _, v := range vs {
					end, published := "长期", ""
					if v.EffectiveTo != nil {
						end = v.EffectiveTo.Format(time.DateOnly)
					}
					if v.PublishedAt != nil {
						published = v.PublishedAt.Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s – %s\t%s\t%s\n", v.Version, v.State, v.Author, v.Reviewer,
						v.EffectiveFrom.Format(time.DateOnly), end, published, v.ContentHash[:12])
				}
				return tw.Flush()
			})
		},
	}
	versions.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return []*cobra.Command{draft, submit, review, publish, retire, diff, preview, versions}
}

func printPreview(w io.Writer, r rules.PreviewReport) {
	fmt.Fprintf(w, "预览 %s 第 %d 版（现行第 %d 版），评估日期 %s，在册正常经营企业 %d 家\n", r.PolicyID, r.Version, r.CurrentVersion, r.AsOf, r.Firms)
	fmt.Fprintf(w, "新增符合 %d，继续符合 %d，不再符合 %d，求值出错 %d\n", r.New, r.Kept, r.Dropped, r.Errors)
	fmt.Fprintf(w, "金额合计 %.2f → %.2f 元\n", r.AmountBefore, r.AmountAfter)
	if !r.InEffect {
		fmt.Fprintln(w, "注意：评估日期不在新版本的有效期内")
	}
	if r.FirstError != "" {
		fmt.Fprintln(w, "首个求值错误："+r.FirstError)
	}
	for _, g := range []struct {
		title  string
		groups []rules.PreviewGroup
	}{{"按城市", r.ByRegion}, {"按园区", r.ByPark}, {"按行业门类", r.ByIndustry}} {
		fmt.Fprintln(w, g.title+"：")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  KEY\tNEW\tKEPT\tDROPPED")
		for _, x := range g.groups {
			key := x.Key
			if key == "" {
				key = "（无）"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", key, x.New, x.Kept, x.Dropped)
		}
		_ = tw.Flush()
	}
	for _, s := range []struct {
		title string
		firms []rules.PreviewFirm
	}{{"新增样例", r.Samples.New}, {"不再符合样例", r.Samples.Dropped}} {
		for _, f := range s.firms {
			fmt.Fprintf(w, "%s：%s %s %s\n", s.title, f.CreditCode, f.Name, f.Why)
		}
	}
	passed := 0
	for _, t := range r.Tests {
		if t.Passed {
			passed++
		} else {
			fmt.Fprintf(w, "测试失败：%s：%s\n", t.Name, t.Problem)
		}
	}
	fmt.Fprintf(w, "政策自带测试：%d/%d 通过\n", passed, len(r.Tests))
}

func printDiff(w io.Writer, d policies.VersionDiff) {
	fmt.Fprintf(w, "%s 第 %d 版 → 第 %d 版：%d 处改动\n", d.PolicyID, d.From, d.To, len(d.Changes))
	for _, c := range d.Changes {
		if len(c.Lines) > 0 {
			fmt.Fprintf(w, "%s:\n", c.Field)
			for _, l := range c.Lines {
				fmt.Fprintf(w, "  %s %s\n", l.Op, l.Text)
			}
			continue
		}
		fmt.Fprintf(w, "%s:\n  - %s\n  + %s\n", c.Field, orNone(c.Old), orNone(c.New))
	}
}

func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "（无）"
	}
	return s
}
