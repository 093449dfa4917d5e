package main

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/policypush/policypush/matcher"
)

func init() { addCommand(matcherCmd) }

// match is `policypush match`: in this process, or — with matcher.shards > 1 — as shard jobs that
// `policypush matcher worker` processes take from JetStream, waiting until they are all done.
func (a *app) match(ctx context.Context, db *gorm.DB, day time.Time, policyID string) (matcher.Summary, error) {
	if a.cfg.Matcher.Shards > 1 {
		if err := matcher.CheckSharding(a.cfg.NATS.URL, a.cfg.Matcher.Shards); err != nil {
			return matcher.Summary{}, err
		}
		b, err := a.openBus(ctx)
		if err != nil {
			return matcher.Summary{}, err
		}
		return matcher.RunSharded(ctx, db, b.JS, day, policyID, a.cfg.Matcher.Shards, a.shardOptions(), os.Stderr)
	}
	return matcher.Run(ctx, db, day, policyID, matcher.Options{Workers: a.cfg.Matcher.Workers,
		SubjectPrefix: a.cfg.NATS.SubjectPrefix, Progress: os.Stderr, Log: a.log, Vocabulary: a.vocabulary()})
}

func (a *app) shardOptions() matcher.ShardOptions {
	return matcher.ShardOptions{Stream: a.cfg.NATS.Stream, SubjectPrefix: a.cfg.NATS.SubjectPrefix,
		Replicas: a.cfg.NATS.Replicas, AckWait: a.cfg.Matcher.ShardAckWait, Vocabulary: a.vocabulary()}
}

// newMatcher makes the matcher engine (kept in a.matcher for the console's change endpoint). asOf
// fixes the evaluation date (the demo's); nil is today. It answers ErrNotLoaded until runMatcher
// has loaded it.
func (a *app) newMatcher(db *gorm.DB, asOf func() time.Time) *matcher.Engine {
	a.matcher = matcher.NewEngine(db, matcher.EngineOptions{Workers: a.cfg.Matcher.Workers, SubjectPrefix: a.cfg.NATS.SubjectPrefix,
		AsOf: asOf, Location: a.cfg.Location(), Log: a.log, Vocabulary: a.vocabulary()})
	return a.matcher
}

// runMatcher runs the engine made by newMatcher as a stage of this process (matcher.Service) until
// ctx ends or the app is closed: it loads the snapshot in the background (the console starts at
// once), then applies change events from the change subject and runs the catch-up and the daily
// sweep.
func (a *app) runMatcher(ctx context.Context) error {
	b, err := a.openBus(ctx)
	if err != nil {
		return err
	}
	a.start(ctx, "matcher", matcher.NewService(a.matcher, matcher.ServiceOptions{JS: b.JS, Stream: matcher.StreamOptions{
		Stream: a.cfg.NATS.Stream, Replicas: a.cfg.NATS.Replicas,
		Subject: matcher.ChangeSubject(a.cfg.NATS.SubjectPrefix, a.cfg.Matcher.ChangeSubject), CatchUp: a.cfg.Matcher.CatchUpInterval}}))
	return nil
}

func matcherCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "matcher", Short: "匹配引擎：分片工作进程"}
	cmd.AddCommand(&cobra.Command{
		Use:   "worker",
		Short: "Take shard jobs of distributed matches from JetStream until interrupted",
		Long: `Binds the shared durable consumer of the shard-job stream (<nats.stream>_MATCH) and matches each
shard it takes: the active firms whose credit code lies in the shard's range, against the run's
policies, storing the differences for that range. Run several, on several machines; "policypush
match" with matcher.shards > 1 publishes the jobs and waits. A worker that dies mid-shard stops
sending progress, and JetStream gives its shard to another worker after matcher.shard_ack_wait.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return g.withDB(ctx, func(a *app, db *gorm.DB) error {
				b, err := a.openBus(ctx)
				if err != nil {
					return err
				}
				w := matcher.NewWorker(matcher.WorkerOptions{DB: db, JS: b.JS, Shards: a.shardOptions(),
					Options: matcher.Options{Workers: a.cfg.Matcher.Workers, SubjectPrefix: a.cfg.NATS.SubjectPrefix, Log: a.log, Vocabulary: a.vocabulary()}})
				defer w.Close()
				return w.Run(ctx)
			})
		},
	})
	return cmd
}
