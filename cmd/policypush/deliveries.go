package main

import (
	"context"
	"errors"
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

	"github.com/policypush/policypush/admin"
	"github.com/policypush/policypush/notify"
	"github.com/policypush/policypush/notify/sandbox"
)

// Commands of the delivery path (docs/delivery.md): the relay and the notifiers as separate
// processes, the failed-delivery log with resend and timelines, unsubscribe, and the sandbox
// providers on their own.

func init() {
	addCommand(relayCmd)
	addCommand(notifierCmd)
	addCommand(deliveriesCmd)
	addCommand(sandboxCmd)
}

func relayCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "relay",
		Short: "Run only the outbox relay (publishes committed outbox rows to JetStream)",
		Long: `Runs the outbox relay on its own until interrupted: the process to run next to the matcher
when the notifiers run elsewhere. Several relays may run at once (JetStream drops the repeats).`,
		Args: cobra.NoArgs,
		RunE: runAlone(g, "relay", (*app).startRelay),
	}
}

// runAlone is the RunE of a command that runs one part of the pipeline on its own (relay,
// notifier) until interrupted.
func runAlone(g *globals, name string, start func(*app, context.Context) (func(), error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		return g.withApp(func(a *app) error {
			wait, err := start(a, cmd.Context())
			if err != nil {
				return err
			}
			a.log.Info(name+" running", "database", a.cfg.Database.Driver, "nats", describeNATS(a.cfg.NATS.URL))
			wait()
			return nil
		})
	}
}

func notifierCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "notifier",
		Short: "Run only the notifiers (JetStream consumers that send WeChat and SMS notices)",
		Long: `Runs the channel consumers on their own until interrupted. Start as many as needed: they share
the durable consumers, and a delivery is claimed by one of them at a time.`,
		Args: cobra.NoArgs,
		RunE: runAlone(g, "notifier", (*app).startNotifier),
	}
}

// backlog counts the notices the channel consumers have not finished (see bus.Backlog).
func (a *app) backlog(ctx context.Context) (uint64, error) {
	return a.bus.Backlog(ctx, notify.ChannelWeChat, notify.ChannelSMS)
}

// withOps opens the database and runs fn with the delivery operations.
func (g *globals) withOps(ctx context.Context, fn func(notify.Ops) error) error {
	return g.withDB(ctx, func(a *app, db *gorm.DB) error {
		return fn(notify.Ops{DB: db, SubjectPrefix: a.cfg.NATS.SubjectPrefix})
	})
}

func deliveriesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "deliveries", Short: "通知投递：失败记录、重发、时间线、退订"}
	var asJSON bool
	var channel, state string
	var limit int
	failed := &cobra.Command{
		Use:   "failed",
		Short: "List failed deliveries with reason and attempts (dead, failed = retrying, undelivered)",
		Long: `Lists every delivery that did not get through: dead (gave up: permanent error or attempts used up),
failed (will be retried at NEXT), undelivered (the provider accepted it but reports it did not
reach the firm). Recipients are masked. Also lists notices no message can carry and JetStream
dead letters. Explain one with "policypush deliveries show ID"; resend with "deliveries resend".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withOps(cmd.Context(), func(ops notify.Ops) error {
				q := notify.FailedQuery{Channel: channel, Limit: limit}
				if state != "" {
					q.States = []string{state}
				}
				list, total, err := ops.Failed(cmd.Context(), q)
				if err != nil {
					return err
				}
				items, err := ops.Unsendable(cmd.Context(), limit)
				if err != nil {
					return err
				}
				letters, err := ops.DeadLetters(cmd.Context(), limit)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(os.Stdout, map[string]any{"total": total, "deliveries": list, "unsendable": items,
						"dead_letters": letters})
				}
				printFailed(os.Stdout, list, total)
				for _, it := range items {
					fmt.Printf("无法发送：匹配 %d（%s，%s）渠道 %s：%s\n", it.MatchID, it.CreditCode, it.PolicyID, it.Channel, it.Note)
				}
				for _, l := range letters {
					fmt.Printf("死信：%s #%d %s（%s）\n", l.Stream, l.Seq, l.Subject, l.Reason)
				}
				return nil
			})
		},
	}
	failed.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	failed.Flags().StringVar(&channel, "channel", "", "only wechat or sms")
	failed.Flags().StringVar(&state, "state", "", "only dead, failed or undelivered")
	failed.Flags().IntVar(&limit, "limit", 200, "at most this many rows")

	var allDead bool
	var by string
	resend := &cobra.Command{
		Use:   "resend ID... | --all-dead [--channel C]",
		Short: "Queue a new attempt at dead or failed deliveries (same delivery id: never a double)",
		Long: `Queues a new attempt at each delivery at once, with a fresh attempt budget. It is the same
delivery with the same provider-side id, so a firm that already got the message does not get it
again, an attempt whose outcome was unknown is settled with its provider first, and a firm that
unsubscribed or was deregistered meanwhile is skipped. Needs a running notifier.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if allDead == (len(args) > 0) {
				return errors.New("give delivery ids or --all-dead, not both")
			}
			return g.withOps(cmd.Context(), func(ops notify.Ops) error {
				actor, err := cliActor(cmd.Context(), ops.DB, by, admin.PermResend)
				if err != nil {
					return err
				}
				var res []notify.ResendResult
				if allDead {
					res, err = ops.ResendDead(cmd.Context(), channel, actor)
				} else {
					ids, perr := parseIDs(args)
					if perr != nil {
						return perr
					}
					res, err = ops.Resend(cmd.Context(), ids, actor)
				}
				ok := 0
				for _, r := range res {
					if r.OK {
						ok++
						continue
					}
					fmt.Printf("%d: %s\n", r.ID, r.Reason)
				}
				fmt.Printf("queued %d of %d\n", ok, len(res))
				return err
			})
		},
	}
	resend.Flags().BoolVar(&allDead, "all-dead", false, "resend every dead delivery")
	resend.Flags().StringVar(&channel, "channel", "", "with --all-dead: only wechat or sms")
	resend.Flags().StringVar(&by, "by", "", "who resends (recorded on the timeline; default the OS user)")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Explain one delivery: its matches, every attempt, receipts, whether the firm read it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			return g.withOps(cmd.Context(), func(ops notify.Ops) error {
				tl, err := ops.Timeline(cmd.Context(), ids[0])
				return report(tl, err, asJSON, printTimeline)
			})
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var undo bool
	unsub := &cobra.Command{
		Use:   "unsubscribe CREDIT_CODE --channel wechat|sms",
		Short: "Record that a firm wants no more notices on a channel (退订), effective at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withOps(cmd.Context(), func(ops notify.Ops) error {
				if undo {
					return ops.Resubscribe(cmd.Context(), args[0], channel)
				}
				return ops.Unsubscribe(cmd.Context(), args[0], channel, "cli")
			})
		},
	}
	unsub.Flags().StringVar(&channel, "channel", "", "wechat or sms")
	unsub.Flags().BoolVar(&undo, "undo", false, "subscribe again")
	_ = unsub.MarkFlagRequired("channel")

	var reconcileLimit int
	reconcile := &cobra.Command{
		Use:   "reconcile",
		Short: "Settle deliveries still 'sent' past notify.receipt_window with the providers (or mark them unknown)",
		Long: `Deliveries the provider accepted but never reported on (lost callbacks, a database stall while the
reports arrived) stay "sent". reconcile asks the provider that accepted each one older than
notify.receipt_window (Tencent PullSmsSendStatusByPhoneNumber, Aliyun QuerySendDetails) and records
its answer as a report would be; where the provider cannot say (WeChat has no status query, or no
record) the delivery becomes "unknown", listed by "deliveries failed" and on the console's failed-
delivery page. serve and demo do this on their own every quarter of the window.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDB(cmd.Context(), func(a *app, db *gorm.DB) error {
				if err := a.startSandbox(cmd.Context()); err != nil {
					return err
				}
				sum, err := a.reconcile(cmd.Context(), db, reconcileLimit)
				if err != nil {
					return err
				}
				fmt.Printf("检查 %d 条：已送达 %d，未送达 %d，标记为未知 %d，查询失败 %d（下次再试）\n",
					sum.Checked, sum.Delivered, sum.Undelivered, sum.Unknown, sum.Errors)
				return nil
			})
		},
	}
	reconcile.Flags().IntVar(&reconcileLimit, "limit", 10000, "at most this many deliveries, oldest first")
	cmd.AddCommand(failed, resend, show, unsub, reconcile)
	return cmd
}

func parseIDs(args []string) ([]uint64, error) {
	ids := make([]uint64, 0, len(args))
	for _, s := range args {
		id, err := strconv.ParseUint(s, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%q is not a delivery id", s)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func printFailed(w io.Writer, list []notify.FailedDelivery, total int64) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCHANNEL\tSTATE\tFIRM\tTO\tPROVIDER\tATTEMPTS\tCODE\tNEXT\tMATCHES\tREASON")
	for _, f := range list {
		next := ""
		if f.NextAttempt != nil {
			next = f.NextAttempt.Local().Format("01-02 15:04")
		}
		reason := f.Reason
		if f.InDoubt {
			reason = "[outcome unknown] " + reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", f.ID, f.Channel, f.State, f.CreditCode, f.Recipient,
			f.Provider, f.Attempts, f.Code, next, len(f.MatchIDs), reason)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d shown, %d in all\n", len(list), total)
}

func printTimeline(w io.Writer, tl notify.Timeline) {
	fmt.Fprintf(w, "delivery %d  %s → %s (%s)  state %s  provider %s %s  attempts %d\n", tl.ID, tl.Channel, tl.Recipient,
		tl.CreditCode, tl.State, tl.Provider, tl.ProviderID, tl.Attempts)
	if tl.Reason != "" {
		fmt.Fprintf(w, "last error %s: %s\n", tl.Code, tl.Reason)
	}
	steps := make([]string, len(tl.Steps))
	for i, s := range tl.Steps {
		steps[i] = s.Name + " " + s.At.Local().Format("01-02 15:04:05")
	}
	fmt.Fprintln(w, "steps: "+strings.Join(steps, " → "))
	fmt.Fprintln(w, "matches:")
	for _, it := range tl.Items {
		extra := ""
		if it.ReadAt != nil {
			extra += " read " + it.ReadAt.Local().Format("01-02 15:04")
		}
		if it.Response != "" {
			extra += " " + it.Response
		}
		if it.State != "" {
			extra += " [" + it.State + ": " + it.Note + "]"
		}
		fmt.Fprintf(w, "  %d %s%s\n", it.MatchID, it.PolicyID, extra)
	}
	fmt.Fprintln(w, "events:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, e := range tl.Events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.At.Local().Format("01-02 15:04:05.000"), e.Kind, e.Provider, e.Code, e.Detail)
	}
	for _, r := range tl.Receipts {
		state := "delivered"
		if !r.Delivered {
			state = "undelivered"
		}
		fmt.Fprintf(tw, "  %s\treceipt %s\t%s\t%s\t%s\n", r.ReportedAt.Local().Format("01-02 15:04:05.000"), state, r.Provider, r.Code, r.Detail)
	}
	_ = tw.Flush()
}

func sandboxCmd(g *globals) *cobra.Command {
	var addr, dir string
	var rates [3]float64
	var codes [3][]string
	var latency time.Duration
	var timeoutRate float64
	var expireEvery, seed int
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run the local WeChat / Tencent SMS / Aliyun SMS sandbox with injected faults",
		Long: `Serves the sandbox providers on --addr until interrupted, recording accepted messages in --dir
(default <data-dir>/sandbox). Faults come from sandbox.faults in the config, and the flags override
them: --wechat-error-rate 0.2 --wechat-codes -1,40001,45009,43004,5xx makes a fifth of WeChat sends
fail with those codes. Point a notifier at it with wechat.base_url=http://ADDR,
sms.tencent.endpoint=ADDR, sms.aliyun.endpoint=ADDR and sandbox.enabled=false.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			o := sandboxOptions(cfg)
			fl := cmd.Flags()
			for i, f := range []*sandbox.Faults{&o.WeChat, &o.Tencent, &o.Aliyun} {
				name := []string{"wechat", "tencent", "aliyun"}[i]
				if fl.Changed(name + "-error-rate") {
					f.ErrorRate = rates[i]
				}
				if fl.Changed(name + "-codes") {
					f.Codes = codes[i]
				}
				if fl.Changed("latency") {
					f.Latency = latency
				}
				if fl.Changed("timeout-rate") {
					f.TimeoutRate = timeoutRate
				}
				if fl.Changed("seed") {
					f.Seed = int64(seed + i)
				}
			}
			if fl.Changed("expire-token-every") {
				o.ExpireTokenEvery = expireEvery
			}
			if addr != "" {
				o.Addr = addr
			}
			o.Dir = dir
			if o.Dir == "" {
				o.Dir = filepath.Join(cfg.DataDir, "sandbox")
			}
			s, err := sandbox.New(o)
			if err != nil {
				return err
			}
			fmt.Printf("sandbox listening on %s (records in %s)\n", s.HostPort(), o.Dir)
			return s.Run(cmd.Context()) // until interrupted; closes the records
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "listen address (default sandbox.addr)")
	cmd.Flags().StringVar(&dir, "dir", "", "records directory (default <data-dir>/sandbox)")
	for i, name := range []string{"wechat", "tencent", "aliyun"} {
		cmd.Flags().Float64Var(&rates[i], name+"-error-rate", 0, "share of "+name+" sends answered with an error (0..1)")
		cmd.Flags().StringSliceVar(&codes[i], name+"-codes", nil, "error codes to draw from for "+name)
	}
	cmd.Flags().DurationVar(&latency, "latency", 0, "added to every send")
	cmd.Flags().Float64Var(&timeoutRate, "timeout-rate", 0, "share of sends that hang until the client gives up")
	cmd.Flags().IntVar(&expireEvery, "expire-token-every", 0, "revoke the WeChat token every Nth send")
	cmd.Flags().IntVar(&seed, "seed", 0, "seed of the fault sequence")
	return cmd
}

// reconcile settles deliveries left sent past notify.receipt_window (notify.Reconcile).
func (a *app) reconcile(ctx context.Context, db *gorm.DB, limit int) (notify.ReconcileSummary, error) {
	senders, err := a.senders()
	if err != nil {
		return notify.ReconcileSummary{}, err
	}
	var all []notify.Sender
	for _, ss := range senders {
		all = append(all, ss...)
	}
	rc := a.receiptConfig()
	rc.DB = db
	return notify.Reconcile(ctx, rc, all, a.cfg.Notify.ReceiptWindow, limit)
}
