package matcher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/stage"
)

// Change events arrive on a subject (config matcher.change_subject under nats.subject_prefix) that
// a work-queue stream keeps until a matcher acknowledges them, so events published while no
// matcher runs are applied when one starts. Every engine binds the same durable consumer: each
// event is applied once, by whichever engine takes it.

// StreamOptions say where change events come from.
type StreamOptions struct {
	Stream        string        // the deployment's stream name (nats.stream); events use <Stream>_REGISTRY
	Subject       string        // full subject of change events, e.g. policypush.registry.changed
	Replicas      int           // stream replicas
	CatchUp       time.Duration // interval of the catch-up round (date, policies, firms by updated_at)
	RetryDelay    time.Duration // before an event that failed for a passing reason is tried again; 0: 5s
	FetchMaxWait  time.Duration // longest wait for events per pull; 0: 1s
	ConsumerName  string        // durable consumer; empty: matcher-registry
	MaxDeliveries int           // attempts per event before JetStream gives up on it; 0: 20
}

func (o *StreamOptions) defaults() {
	if o.RetryDelay <= 0 {
		o.RetryDelay = 5 * time.Second
	}
	if o.FetchMaxWait <= 0 {
		o.FetchMaxWait = time.Second
	}
	if o.ConsumerName == "" {
		o.ConsumerName = "matcher-registry"
	}
	if o.MaxDeliveries <= 0 {
		o.MaxDeliveries = 20
	}
	if o.CatchUp <= 0 {
		o.CatchUp = 10 * time.Second
	}
}

// ChangeSubject is the subject of change events under a prefix (bus.ChangeSubject).
func ChangeSubject(prefix, subject string) string { return bus.ChangeSubject(prefix, subject) }

// changeStream creates (or brings up to date) the change stream and its durable consumer
// (bus/topology.go).
func changeStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Consumer, error) {
	t := bus.Topology{Stream: o.Stream, Replicas: o.Replicas}
	return bus.Ensure(ctx, js, t.ChangeStream(o.Subject), bus.ChangeConsumer(o.Subject, o.ConsumerName, o.MaxDeliveries))
}

// Run applies change events from JetStream and runs the catch-up every o.CatchUp until ctx ends.
// Load must have been called. Errors reaching NATS or the database are logged and retried; Run
// returns only when ctx ends (nil) or when the stream cannot be set up.
func (e *Engine) Run(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	o.defaults()
	cons, err := changeStream(ctx, js, o)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		stage.Every(ctx, o.CatchUp, e.CatchUp, func(err error) { e.o.Log.Warn("matcher catch-up", "err", err) })
	}()
	defer wg.Wait()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(16, jetstream.FetchMaxWait(o.FetchMaxWait))
		if err != nil {
			if ctx.Err() == nil {
				e.o.Log.Warn("fetch registry changes", "err", err)
				sleep(ctx, o.RetryDelay)
			}
			continue
		}
		for msg := range batch.Messages() {
			e.handleChange(ctx, msg, o.RetryDelay)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil && !isTimeout(err) {
			e.o.Log.Warn("fetch registry changes", "err", err)
		}
	}
	return nil
}

func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoMessages) || strings.Contains(err.Error(), "timeout")
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// handleChange applies one event: acknowledged when stored, or when malformed (it would never
// apply: it is logged with its beginning and removed from the queue — a termination would leave it
// in a work-queue stream on servers before 2.11), retried later when the database failed.
func (e *Engine) handleChange(ctx context.Context, msg jetstream.Msg, retry time.Duration) {
	res, err := e.ApplyChangeJSON(ctx, msg.Data())
	switch {
	case errors.Is(err, ErrBadChange):
		head := msg.Data()
		if len(head) > 200 {
			head = head[:200]
		}
		e.o.Log.Warn("registry change dropped", "subject", msg.Subject(), "err", err, "message", string(head))
		_ = msg.DoubleAck(ctx)
	case err != nil:
		e.o.Log.Warn("registry change not applied, will retry", "err", err)
		if ctx.Err() != nil {
			_ = msg.Nak()
		} else {
			_ = msg.NakWithDelay(retry)
		}
	default:
		for _, r := range res.Rejected {
			e.o.Log.Warn("registry change rejected", "firm", r)
		}
		if res.Changed > 0 {
			e.o.Log.Info("registry change applied", "firms", res.Firms, "changed", res.Changed, "new", res.New, "revoked", res.Revoked)
		}
		_ = msg.DoubleAck(ctx)
	}
}

// Service runs an engine as a stage of serve and demo: it loads the snapshot (the console answers
// meanwhile, the engine saying ErrNotLoaded), then applies change events and runs the catch-up
// until ctx ends.
type Service struct {
	e     *Engine
	o     ServiceOptions
	state atomic.Value // string: what Ready reports
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	JS     jetstream.JetStream
	Stream StreamOptions
}

// NewService makes the service of an engine made by NewEngine.
func NewService(e *Engine, o ServiceOptions) *Service {
	s := &Service{e: e, o: o}
	s.state.Store("not started")
	return s
}

// Run loads the engine, then runs it (Engine.Run) until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.state.Store("loading the registry")
	if err := s.e.Load(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.state.Store("not started: " + err.Error())
		return fmt.Errorf("matcher not started: %w", err)
	}
	s.state.Store(stage.StatusOK)
	err := s.e.Run(ctx, s.o.JS, s.o.Stream)
	if err != nil {
		s.state.Store("stopped: " + err.Error())
	} else {
		s.state.Store("stopped")
	}
	return err
}

// Ready reports whether the engine is loaded and running, with its snapshot. A loading engine does
// not make the process unready (the console serves meanwhile); a failed one does.
func (s *Service) Ready(context.Context) stage.Check {
	st := s.state.Load().(string)
	c := stage.Check{Name: "matcher", Status: st, Detail: s.e.Info()}
	c.Down = strings.HasPrefix(st, "not started:") || strings.HasPrefix(st, "stopped:")
	return c
}

// Close has nothing to release: the engine uses the database its owner opened.
func (s *Service) Close() error { return nil }
