package stage

import (
	"context"
	"sync/atomic"
	"time"
)

// Gate gives the console's requests precedence over the pipeline's batches inside one process.
//
// On the embedded default every stage shares one pure-Go SQLite and, on a small machine, two
// cores: while serve relays and delivers a backlog of hundreds of thousands of notices, a console
// query competes with a stream of pipeline statements for the same CPU and the database's one
// writer, and a park manager's page waited seconds (docs/console.md). A person waiting on a page
// should go first; the pipeline is measured in minutes and loses little by pausing.
//
// The console marks each request (Enter, then the leave function it returns); the relay, the
// notifiers and the matcher call Yield before each batch they start, which returns at once when
// no request is in flight and otherwise waits until none is, or MaxWait has passed (so a console
// under constant load slows the pipeline down but never stops it). A nil *Gate never waits.
type Gate struct {
	// MaxWait bounds one Yield; 0 is DefaultMaxWait.
	MaxWait time.Duration

	inflight atomic.Int64
	yielded  atomic.Int64 // Yield calls that waited
	waited   atomic.Int64 // nanoseconds waited in all
}

// DefaultMaxWait is how long one Yield waits at the most for the console's requests to end.
const DefaultMaxWait = 500 * time.Millisecond

// yieldPoll is how often a waiting Yield looks again.
const yieldPoll = 2 * time.Millisecond

// Enter marks a console request in flight until the returned function is called.
func (g *Gate) Enter() (leave func()) {
	if g == nil {
		return func() {}
	}
	g.inflight.Add(1)
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			g.inflight.Add(-1)
		}
	}
}

// Busy reports whether a console request is in flight.
func (g *Gate) Busy() bool { return g != nil && g.inflight.Load() > 0 }

// Yield waits while a console request is in flight, at most MaxWait or until ctx ends.
func (g *Gate) Yield(ctx context.Context) {
	if !g.Busy() {
		return
	}
	limit := g.MaxWait
	if limit <= 0 {
		limit = DefaultMaxWait
	}
	start := time.Now()
	t := time.NewTicker(yieldPoll)
	defer t.Stop()
	for g.Busy() && time.Since(start) < limit {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	g.yielded.Add(1)
	g.waited.Add(int64(time.Since(start)))
}

// Yielded is how many times the pipeline waited for the console, and how long in all.
func (g *Gate) Yielded() (times int64, total time.Duration) {
	if g == nil {
		return 0, 0
	}
	return g.yielded.Load(), time.Duration(g.waited.Load())
}
