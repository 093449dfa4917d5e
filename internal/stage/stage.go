// Package stage is how every long-running part of a policypush process is built, run, checked and
// stopped — the outbox relay, the notifier, the matcher service and shard worker, the console and
// the sandbox providers — and the health type that /readyz, /readyz/delivery and `policypush
// status` report:
//
//	s, err := pkg.New…(opts)  // takes what it needs (a listener, …); nothing runs yet
//	err = s.Run(ctx)          // works until ctx ends: nil then, an error when it cannot go on
//	c := s.Ready(ctx)         // a Check: may be called at any time, from any goroutine
//	err = s.Close()           // after Run returned: releases what New took
//
// A Group runs the stages of a process and waits for every one of them, so nothing a command
// started outlives it (docs/delivery.md §8).
package stage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"gorm.io/gorm"
)

// Stage is a long-running part of a process.
type Stage interface {
	Run(ctx context.Context) error
	Ready(ctx context.Context) Check
	Close() error
}

// Statuses of a Check besides a description of what is wrong.
const (
	StatusOK     = "ok"
	StatusUnused = "not used by this process"
)

// Check is what one stage or dependency says about itself.
type Check struct {
	Name   string `json:"name"`             // database, nats, relay, notifier, matcher, console, …
	Status string `json:"status"`           // StatusOK, StatusUnused, or what is wrong
	Down   bool   `json:"down,omitempty"`   // the process is not ready while this holds
	Detail any    `json:"detail,omitempty"` // what the stage adds (last relay round, providers, …)
}

// OK is a check that passed.
func OK(name string, detail any) Check { return Check{Name: name, Status: StatusOK, Detail: detail} }

// Down is a check that failed: the process is not ready.
func Down(name string, err error, detail any) Check {
	return Check{Name: name, Status: err.Error(), Down: true, Detail: detail}
}

// Unused is a dependency this process does not have.
func Unused(name string) Check { return Check{Name: name, Status: StatusUnused} }

// Health is the checks of a process, in order.
type Health []Check

// Ready reports whether no check is down.
func (h Health) Ready() bool { return h.Err() == nil }

// Err names every check that is down, or is nil.
func (h Health) Err() error {
	var errs []error
	for _, c := range h {
		if c.Down {
			errs = append(errs, fmt.Errorf("%s: %s", c.Name, c.Status))
		}
	}
	return errors.Join(errs...)
}

// MarshalJSON writes {"<name>": "<status>", …, "details": {"<name>": detail, …}}: the shape /readyz
// has always answered, with what the stages add under details.
func (h Health) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	details := map[string]any{}
	for _, c := range h {
		out[c.Name] = c.Status
		if c.Detail != nil {
			details[c.Name] = c.Detail
		}
	}
	if len(details) > 0 {
		out["details"] = details
	}
	return json.Marshal(out)
}

// ServeHTTP answers the health as JSON: 200 when ready, 503 otherwise.
func (h Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	status := http.StatusOK
	if !h.Ready() {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(h)
}

// Database checks that the database answers a ping within the context's deadline.
func Database(ctx context.Context, db *gorm.DB) Check {
	if db == nil {
		return Check{Name: "database", Status: "not opened"}
	}
	s, err := db.DB()
	if err == nil {
		err = s.PingContext(ctx)
	}
	if err != nil {
		return Check{Name: "database", Status: "unreachable", Down: true}
	}
	return OK("database", nil)
}

// Checker is anything with a check of its own: a stage, or the NATS connection (*bus.Bus, whose nil
// is a process without NATS).
type Checker interface {
	Ready(ctx context.Context) Check
}

// CheckFunc is a Checker made of a function.
type CheckFunc func(ctx context.Context) Check

// Ready calls f.
func (f CheckFunc) Ready(ctx context.Context) Check { return f(ctx) }

// Readiness is the health of a process's dependencies — the database answers and NATS is
// connected — within 2 s: what /readyz of the console, /readyz/delivery and `policypush status`
// start from.
func Readiness(ctx context.Context, db *gorm.DB, nats Checker) Health {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	h := Health{Database(ctx, db)}
	if nats == nil {
		return append(h, Unused("nats"))
	}
	return append(h, nats.Ready(ctx))
}

// Every calls fn every interval until ctx ends (the first call one interval after the start). A
// failure is passed to onErr (nil: ignored) unless ctx has ended, and the loop goes on.
func Every(ctx context.Context, interval time.Duration, fn func(context.Context) error, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

// Group runs the stages of a process and waits for all of them. Stop ends them one at a time in
// the reverse order of their start, so that a stage never outlives what it depends on: the
// console and the notifier stop before the sandbox providers they call, every stage before the
// database and the bus the process closes afterwards.
type Group struct {
	Log *slog.Logger // where a stage that stopped with an error is reported; nil: slog.Default()

	wg      sync.WaitGroup
	mu      sync.Mutex
	stages  []named // those with a Ready and a Close
	running []running
	errs    []error
}

type named struct {
	name string
	s    Stage
}

// running is a goroutine of the group: how to end it and when it has ended.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Go runs s in a goroutine of the group until ctx ends, Stop is called or it fails; Wait waits
// for it and Close closes it.
func (g *Group) Go(ctx context.Context, name string, s Stage) {
	g.mu.Lock()
	g.stages = append(g.stages, named{name, s})
	g.mu.Unlock()
	g.GoFunc(ctx, name, s.Run)
}

// GoFunc runs fn (a loop without a Ready or Close of its own) in a goroutine of the group.
func (g *Group) GoFunc(ctx context.Context, name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	r := running{cancel: cancel, done: make(chan struct{})}
	g.mu.Lock()
	g.running = append(g.running, r)
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer close(r.done)
		defer cancel()
		if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
			g.log().Error(name+" stopped", "err", err)
			g.mu.Lock()
			g.errs = append(g.errs, fmt.Errorf("%s: %w", name, err))
			g.mu.Unlock()
		}
	}()
}

// Stop ends the group's goroutines in the reverse order of their start, each after the one
// started after it has returned, and returns their errors. Close them afterwards.
func (g *Group) Stop() error {
	g.mu.Lock()
	rs := g.running
	g.running = nil
	g.mu.Unlock()
	for i := len(rs) - 1; i >= 0; i-- {
		rs[i].cancel()
		<-rs[i].done
	}
	return g.Wait()
}

func (g *Group) log() *slog.Logger {
	if g.Log != nil {
		return g.Log
	}
	return slog.Default()
}

// Wait blocks until every stage and function of the group returned, and returns their errors.
func (g *Group) Wait() error {
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.errs...)
}

// Health is the Ready of every stage, in the order they were started.
func (g *Group) Health(ctx context.Context) Health {
	g.mu.Lock()
	stages := append([]named(nil), g.stages...)
	g.mu.Unlock()
	h := make(Health, 0, len(stages))
	for _, n := range stages {
		c := n.s.Ready(ctx)
		if c.Name == "" {
			c.Name = n.name
		}
		h = append(h, c)
	}
	return h
}

// Close closes the stages in reverse order; call it after Wait.
func (g *Group) Close() error {
	g.mu.Lock()
	stages := g.stages
	g.stages = nil
	g.mu.Unlock()
	var errs []error
	for i := len(stages) - 1; i >= 0; i-- {
		if err := stages[i].s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", stages[i].name, err))
		}
	}
	return errors.Join(errs...)
}
