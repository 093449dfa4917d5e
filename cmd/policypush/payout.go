package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/config"
	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/payout"
	"github.com/policypush/policypush/policies"
	"github.com/policypush/policypush/rules"
	"github.com/policypush/policypush/store"
)

// `policypush payout …`: batches, approval, 公示, objections, payment file and bank results
// (docs/payout.md). The console calls the same payout functions.

func init() { addCommand(payoutCmd) }

// newPayoutService builds the payout service from the configuration.
func newPayoutService(a *app, cfg config.Config) *payout.Service {
	return payout.New(a.db, payout.Options{SubjectPrefix: cfg.NATS.SubjectPrefix, Location: cfg.Location(), Holidays: cfg.Payout.Holidays})
}

// withPayout opens the database and runs fn with the payout service.
func withPayout(ctx context.Context, g *globals, fn func(*payout.Service) error) error {
	return g.withDB(ctx, func(a *app, _ *gorm.DB) error { return fn(newPayoutService(a, a.cfg)) })
}

// onBatch is the RunE of a command whose first argument is a batch id: it parses the id and
// opens the service; args are the arguments after the id.
func onBatch(g *globals, run func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		id, err := batchArg(args[0])
		if err != nil {
			return err
		}
		return withPayout(cmd.Context(), g, func(s *payout.Service) error { return run(cmd, s, id, args[1:]) })
	}
}

func operator(by string) payout.Actor { return payout.Actor{Name: by, Role: policies.RoleOperator} }

func batchArg(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("batch id %q: must be a positive number (see `policypush payout list`)", s)
	}
	return id, nil
}

func payoutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "payout", Short: "拨付：批次、审核、公示、异议、付款文件、银行结果",
		Long: `The way from a policy's matches to money in the firms' accounts (docs/payout.md):
  create → approve (a second person; may remove lines with a reason) → publicize --days N (公示,
  N working days; firms object on their page) → decide objections → export (payment file, after
  the 公示) → results (the bank's outcome; failed firms come back in the next batch).`}
	var by string
	requireBy := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&by, "by", "", "who does this (recorded in the history and the audit log)")
		_ = c.MarkFlagRequired("by")
		return c
	}

	var policyID, asOf string
	var confirmedOnly, asJSON bool
	create := requireBy(&cobra.Command{
		Use:   "create --policy ID --by USER",
		Short: "Create a batch of a policy's active matches with amounts",
		Long: `Takes the policy's active matches with a positive amount (as of --as-of, default today), leaving
out firms already in a live batch or paid for the policy, firms that objected, firms no longer
active and, with --confirmed-only, firms that have not confirmed on their page. Refused when the
batch exceeds the policy's remaining budget (the shortfall is named). Prints batch_id, firms and
amount_total (--json for machines).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withPayout(cmd.Context(), g, func(s *payout.Service) error {
				req := payout.CreateRequest{PolicyID: policyID, ConfirmedOnly: confirmedOnly, By: operator(by)}
				if asOf != "" {
					d, err := rules.ParseDate(asOf)
					if err != nil {
						return fmt.Errorf("--as-of: %w", err)
					}
					req.AsOf = d.Time
				}
				c, err := s.Create(cmd.Context(), req)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(os.Stdout, c)
				}
				fmt.Printf("batch %d (%s round %d): %d firms, %s 元; excluded %v\n", c.BatchID, c.PolicyID, c.Round, c.Firms, c.AmountTotal, c.Excluded)
				return nil
			})
		},
	})
	create.Flags().StringVar(&policyID, "policy", "", "policy id")
	create.Flags().StringVar(&asOf, "as-of", "", "take matches evaluated on or before this date (YYYY-MM-DD)")
	create.Flags().BoolVar(&confirmedOnly, "confirmed-only", false, "only firms that confirmed (意愿确认) on their page")
	create.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = create.MarkFlagRequired("policy")

	var removes []string
	approve := requireBy(&cobra.Command{
		Use:   "approve ID --by USER [--remove CODE=REASON]…",
		Short: "Approve a batch (not its creator), removing lines with a reason",
		Args:  cobra.ExactArgs(1),
		RunE: onBatch(g, func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error {
			rm, err := parseRemovals(removes)
			if err != nil {
				return err
			}
			if err := s.Approve(cmd.Context(), id, operator(by), rm); err != nil {
				return err
			}
			fmt.Printf("batch %d approved by %s (%d removed)\n", id, by, len(rm))
			return nil
		}),
	})
	approve.Flags().StringArrayVar(&removes, "remove", nil, "take a firm out: CREDIT_CODE=REASON (repeatable)")

	remove := requireBy(&cobra.Command{
		Use:   "remove ID CODE=REASON… --by USER",
		Short: "Remove lines from a batch before its 公示, each with a reason",
		Args:  cobra.MinimumNArgs(2),
		RunE: onBatch(g, func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error {
			rm, err := parseRemovals(args)
			if err != nil {
				return err
			}
			return s.Remove(cmd.Context(), id, operator(by), rm)
		}),
	})

	var days int
	publicize := requireBy(&cobra.Command{
		Use:   "publicize ID --days N --by USER",
		Short: "Start the 公示 for N working days (0: none) and notify the firms",
		Args:  cobra.ExactArgs(1),
		RunE: onBatch(g, func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error {
			if err := s.Publicize(cmd.Context(), id, days, operator(by)); err != nil {
				return err
			}
			d, err := s.Get(cmd.Context(), id, nil)
			if err != nil {
				return err
			}
			fmt.Printf("batch %d publicized until %s\n", id, d.Batch.PublicizeUntil.In(s.Location()).Format("2006-01-02 15:04"))
			return nil
		}),
	})
	publicize.Flags().IntVar(&days, "days", -1, "working days of the 公示 (Mon–Fri minus payout.holidays); 0 when the policy needs none")
	_ = publicize.MarkFlagRequired("days")

	var decision, note string
	decide := requireBy(&cobra.Command{
		Use:   "decide OBJECTION_ID --decision sustained|dismissed --note TEXT --by USER",
		Short: "Decide an objection raised during the 公示 (not the batch's creator)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			oid, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("objection id %q: must be a number (see `policypush payout show ID`)", args[0])
			}
			return withPayout(cmd.Context(), g, func(s *payout.Service) error {
				return s.Decide(cmd.Context(), oid, decision, note, operator(by))
			})
		},
	})
	decide.Flags().StringVar(&decision, "decision", "", "sustained (the line leaves the batch) or dismissed (it goes ahead)")
	decide.Flags().StringVar(&note, "note", "", "why (recorded and shown to the firm)")

	var format, outPath string
	export := requireBy(&cobra.Command{
		Use:   "export ID --format xlsx|csv -o FILE --by USER",
		Short: "Write the payment file for finance (after the 公示, no objection undecided)",
		Args:  cobra.ExactArgs(1),
		RunE: onBatch(g, func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error {
			if format == "" {
				format = strings.TrimPrefix(filepath.Ext(outPath), ".")
			}
			tmp := outPath + ".part"
			f, err := os.Create(tmp)
			if err != nil {
				return fmt.Errorf("create %s: %w", tmp, err)
			}
			sum, err := s.Export(cmd.Context(), id, format, f, operator(by))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, outPath); err != nil {
				return fmt.Errorf("write %s: %w", outPath, err)
			}
			fmt.Printf("%s: %d rows, total %s 元 (columns %s)\n", outPath, sum.Rows, sum.AmountTotal, strings.Join(sum.Columns, ","))
			return nil
		}),
	})
	export.Flags().StringVar(&format, "format", "", "xlsx or csv (default: from the file name)")
	export.Flags().StringVarP(&outPath, "output", "o", "", "file to write")
	_ = export.MarkFlagRequired("output")

	var resultsJSON bool
	results := requireBy(&cobra.Command{
		Use:   "results ID FILE --by USER",
		Short: "Import the bank's results (credit_code, status paid|failed, paid_at, reason)",
		Long: `Applies the bank's outcome line by line (CSV or .xlsx with a header row). Lines with errors are
reported with line, column and credit code and skipped; the rest are applied. Importing the same
file again changes nothing. Paid and failed firms get their notice; failed firms come back in the
policy's next batch.`,
		Args: cobra.ExactArgs(2),
		RunE: onBatch(g, func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("open results file: %w", err)
			}
			defer f.Close()
			sum, err := s.ImportResults(cmd.Context(), id, args[0], f, operator(by))
			if err != nil {
				return err
			}
			if resultsJSON {
				return writeJSON(os.Stdout, sum)
			}
			for _, is := range sum.Issues {
				fmt.Fprintln(os.Stderr, args[0]+": "+is.String())
			}
			fmt.Printf("batch %d: %d paid (%s 元), %d failed, %d unchanged, %d lines with errors; closed %v\n",
				id, sum.Paid, payout.Yuan(sum.PaidFen), sum.Failed, sum.Unchanged, len(sum.Issues), sum.Closed)
			return nil
		}),
	})
	results.Flags().BoolVar(&resultsJSON, "json", false, "print JSON")

	var listPolicy string
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--policy ID]",
		Short: "Batches, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withPayout(cmd.Context(), g, func(s *payout.Service) error {
				bs, err := s.List(cmd.Context(), listPolicy)
				return report(bs, err, listJSON, printBatches)
			})
		},
	}
	list.Flags().StringVar(&listPolicy, "policy", "", "only this policy")
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	var showJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "A batch: lines, objections and its history",
		Args:  cobra.ExactArgs(1),
		RunE: onBatch(g, func(cmd *cobra.Command, s *payout.Service, id uint64, args []string) error {
			d, err := s.Get(cmd.Context(), id, nil)
			if err != nil {
				return err
			}
			if showJSON {
				return writeJSON(os.Stdout, d)
			}
			printBatch(os.Stdout, d, s.Location())
			return nil
		}),
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")

	budget := &cobra.Command{
		Use:   "budget POLICY",
		Short: "A policy's budget against what its batches carry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withPayout(cmd.Context(), g, func(s *payout.Service) error {
				b, err := s.BudgetOf(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return writeJSON(os.Stdout, b)
			})
		},
	}
	cmd.AddCommand(create, approve, remove, publicize, decide, export, results, list, show, budget)
	return cmd
}

// parseRemovals reads CODE=REASON arguments.
func parseRemovals(args []string) ([]payout.Removal, error) {
	out := make([]payout.Removal, 0, len(args))
	for _, a := range args {
		code, reason, ok := strings.Cut(a, "=")
		if !ok || strings.TrimSpace(code) == "" || strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%q: write CREDIT_CODE=REASON (a removal needs its reason)", a)
		}
		out = append(out, payout.Removal{CreditCode: strings.TrimSpace(code), Reason: strings.TrimSpace(reason)})
	}
	return out, nil
}

func printBatches(w io.Writer, bs []store.PayoutBatch) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPOLICY\tROUND\tSTATE\tFIRMS\tAMOUNT\tCREATED_BY\tAPPROVED_BY")
	for _, b := range bs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", b.ID, b.PolicyID, b.Round, b.State, b.Firms, payout.Yuan(b.AmountFen), b.CreatedBy, b.ApprovedBy)
	}
	_ = tw.Flush()
}

func printBatch(w io.Writer, d *payout.Detail, loc *time.Location) {
	b := d.Batch
	fmt.Fprintf(w, "batch %d  %s %s  round %d  %s  %d firms  %s 元\n", b.ID, b.PolicyID, b.PolicyTitle, b.Round, b.State, b.Firms, payout.Yuan(b.AmountFen))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCREDIT_CODE\tNAME\tAMOUNT\tSTATE\tREASON")
	for _, l := range d.Lines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.CreditCode, l.Name, payout.Yuan(l.AmountFen), l.State, l.Reason)
	}
	_ = tw.Flush()
	for _, o := range d.Objections {
		fmt.Fprintf(w, "objection %d  %s  %s  decision=%s %s\n", o.ID, o.CreditCode, o.Reason, o.Decision, o.Note)
	}
	fmt.Fprintln(w, "\nhistory:")
	for _, e := range d.Events {
		fmt.Fprintf(w, "  %s  %-20s %-10s %s\n", e.At.In(loc).Format("2006-01-02 15:04"), e.Kind, e.Actor, e.Detail)
	}
}

// statusWithPayouts is `status --json`: the store's counts plus payouts per policy and the
// readiness checks (/readyz's).
type statusWithPayouts struct {
	store.Status
	Payouts []payout.PolicyFigures `json:"payouts"`
	Health  stage.Health           `json:"health"`
}

func printPayoutFigures(w io.Writer, fs []payout.PolicyFigures) {
	for _, f := range fs {
		fmt.Fprintf(w, "拨付 %s: 入批 %d，审核 %d，公示 %d，已拨付 %d（%s 元），失败 %d\n", f.PolicyID, f.Batched, f.Approved, f.Publicized, f.Paid, f.PaidAmount, f.Failed)
	}
}

// wechatTemplates maps wechat.templates onto the sender's templates.
func wechatTemplates(cfg config.Config) map[string]notify.Template {
	out := make(map[string]notify.Template, len(cfg.WeChat.Templates))
	for kind, t := range cfg.WeChat.Templates {
		out[kind] = notify.Template{ID: t.TemplateID, Fields: t.Fields}
	}
	return out
}

// smsTemplates maps sms.templates onto the senders' templates.
func smsTemplates(cfg config.Config) map[string]notify.SMSTemplate {
	out := make(map[string]notify.SMSTemplate, len(cfg.SMS.Templates))
	for kind, t := range cfg.SMS.Templates {
		out[kind] = notify.SMSTemplate{Tencent: t.Tencent, Aliyun: t.Aliyun, Params: t.Params}
	}
	return out
}

// previewWithBudget is `policy preview --json`: the preview and its total against the budget.
type previewWithBudget struct {
	rules.PreviewReport
	Budget payout.BudgetCheck `json:"budget_check"`
}

func printBudgetCheck(w io.Writer, c payout.BudgetCheck) {
	switch {
	case c.Budget == nil:
		fmt.Fprintln(w, "预算：未声明（policy 的 budget 字段）")
	case c.Over:
		fmt.Fprintf(w, "预算 %s 元，发布后金额合计 %s 元，超出 %s 元\n", c.BudgetAmount, c.Total, c.Shortfall)
	default:
		fmt.Fprintf(w, "预算 %s 元，发布后金额合计 %s 元，在预算内\n", c.BudgetAmount, c.Total)
	}
}
