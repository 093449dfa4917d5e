package stage_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/policypush/policypush/internal/stage"
)

// fake is a stage that runs until ctx ends (or fails at once) and records its Close.
type fake struct {
	fail    error
	stopped atomic.Bool
	closed  atomic.Int32
	order   *[]string
	name    string
}

func (f *fake) Run(ctx context.Context) error {
	if f.fail != nil {
		return f.fail
	}
	<-ctx.Done()
	time.Sleep(20 * time.Millisecond) // finishing work in hand
	f.stopped.Store(true)
	return nil
}

func (f *fake) Ready(context.Context) stage.Check {
	if f.fail != nil {
		return stage.Down(f.name, f.fail, nil)
	}
	return stage.OK(f.name, nil)
}

func (f *fake) Close() error {
	f.closed.Add(1)
	*f.order = append(*f.order, f.name)
	return nil
}

// A group waits for every stage, returns the failures, reports each stage's check and closes them in
// reverse order, once.
func TestGroupWaitsForEveryStage(t *testing.T) {
	defer goleak.VerifyNone(t)
	var order []string
	a, b := &fake{name: "a", order: &order}, &fake{name: "b", order: &order}
	bad := &fake{name: "bad", order: &order, fail: errors.New("cannot bind")}
	ctx, cancel := context.WithCancel(context.Background())
	var g stage.Group
	g.Log = slogDiscard()
	g.Go(ctx, "a", a)
	g.Go(ctx, "b", b)
	g.Go(ctx, "bad", bad)
	h := g.Health(ctx)
	if h.Ready() || !strings.Contains(h.Err().Error(), "bad: cannot bind") || len(h) != 3 {
		t.Fatalf("health = %v (%v), want 3 checks, down for bad", h, h.Err())
	}
	cancel()
	err := g.Wait()
	if !a.stopped.Load() || !b.stopped.Load() {
		t.Fatal("Wait returned before every stage stopped")
	}
	if err == nil || !strings.Contains(err.Error(), "bad: cannot bind") {
		t.Fatalf("Wait = %v, want the failed stage's error", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	_ = g.Close()
	if strings.Join(order, ",") != "bad,b,a" || a.closed.Load() != 1 {
		t.Fatalf("closed %v (a %d times), want reverse order, once", order, a.closed.Load())
	}
}

// The HTTP stage's Run returns only after a request in flight has been answered: nothing the
// console serves outlives serve.
func TestHTTPRunWaitsForRequestsInFlight(t *testing.T) {
	defer goleak.VerifyNone(t)
	entered, release := make(chan struct{}), make(chan struct{})
	s, err := stage.NewHTTP("console", "127.0.0.1:0", func(string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
			_, _ = io.WriteString(w, "done")
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + s.Addr() + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	cancel()
	select {
	case err := <-ran:
		t.Fatalf("Run returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if body := <-got; body != "done" {
		t.Fatalf("the request in flight got %q", body)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// A server closed without running releases its listener.
func TestHTTPCloseWithoutRun(t *testing.T) {
	s, err := stage.NewHTTP("console", "127.0.0.1:0", func(string) http.Handler { return http.NotFoundHandler() })
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := stage.NewHTTP("console", addr, func(string) http.Handler { return http.NotFoundHandler() })
	if err != nil {
		t.Fatalf("address still taken after Close: %v", err)
	}
	_ = again.Close()
	if s.Run(context.Background()) == nil {
		t.Fatal("a closed server ran")
	}
}

// Health answers /readyz's shape: name → status, details apart, 503 when a check is down.
func TestHealthJSON(t *testing.T) {
	h := stage.Health{stage.OK("database", nil), stage.Unused("nats"), stage.OK("relay", map[string]int{"n": 1})}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || body["database"] != "ok" || body["nats"] != stage.StatusUnused || body["details"] == nil {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	h = append(h, stage.Down("notifier", errors.New("1 of 2 channel consumers bound"), nil))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"notifier":"1 of 2 channel consumers bound"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// Every runs fn each interval, reports failures while ctx lives, and stops with ctx.
func TestEvery(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	var calls, failures atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		stage.Every(ctx, 5*time.Millisecond, func(context.Context) error {
			if calls.Add(1)%2 == 0 {
				return errors.New("database away")
			}
			return nil
		}, func(error) { failures.Add(1) })
	}()
	for calls.Load() < 6 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if f := failures.Load(); f < 2 || f > calls.Load()/2+1 {
		t.Fatalf("%d failures reported of %d calls", f, calls.Load())
	}
}

// Stop ends the stages one at a time, the last started first: a stage still finishing its work
// in hand finds what it depends on (started before it) running.
func TestGroupStopsInReverseOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	var mu sync.Mutex
	var stopped []string
	stage1 := func(name string, needs *atomic.Bool) func(context.Context) error {
		return func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(10 * time.Millisecond) // finishing work in hand
			if needs != nil && !needs.Load() {
				return errors.New(name + " finished after what it depends on had stopped")
			}
			mu.Lock()
			stopped = append(stopped, name)
			mu.Unlock()
			return nil
		}
	}
	var providerUp, notifierUp atomic.Bool
	providerUp.Store(true)
	notifierUp.Store(true)
	var g stage.Group
	g.Log = slogDiscard()
	ctx := context.Background()
	g.GoFunc(ctx, "sandbox", func(ctx context.Context) error {
		err := stage1("sandbox", nil)(ctx)
		providerUp.Store(false)
		return err
	})
	g.GoFunc(ctx, "notifier", func(ctx context.Context) error {
		err := stage1("notifier", &providerUp)(ctx)
		notifierUp.Store(false)
		return err
	})
	g.GoFunc(ctx, "console", stage1("console", &notifierUp))
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(stopped, ","); got != "console,notifier,sandbox" {
		t.Fatalf("stopped %s, want console,notifier,sandbox", got)
	}
}

// Yield returns at once with no request in flight, waits for the one in flight to end, and never
// longer than MaxWait; a nil gate never waits.
func TestGateLetsRequestsGoFirst(t *testing.T) {
	ctx := context.Background()
	var none *stage.Gate
	none.Yield(ctx)
	none.Enter()()
	g := &stage.Gate{MaxWait: 300 * time.Millisecond}
	start := time.Now()
	g.Yield(ctx)
	if n, _ := g.Yielded(); n != 0 || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("an idle gate made the pipeline wait (%d)", n)
	}
	leave := g.Enter()
	done := make(chan time.Time)
	go func() { g.Yield(ctx); done <- time.Now() }()
	select {
	case <-done:
		t.Fatal("Yield returned while a request was in flight")
	case <-time.After(30 * time.Millisecond):
	}
	left := time.Now()
	leave()
	leave() // a second call changes nothing
	if at := <-done; at.Before(left) {
		t.Fatal("Yield returned before the request ended")
	}
	if g.Busy() {
		t.Fatal("the gate still counts a request that ended")
	}
	// A request that never ends delays a batch by MaxWait, no more.
	g.Enter()
	start = time.Now()
	g.Yield(ctx)
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("Yield under constant load took %v, want about MaxWait", d)
	}
	if n, total := g.Yielded(); n != 2 || total < 300*time.Millisecond {
		t.Fatalf("Yielded = %d, %v", n, total)
	}
}

// waitingHandler has background work of its own (as the console's last-use updates).
type waitingHandler struct {
	http.Handler
	waited atomic.Bool
}

func (h *waitingHandler) Wait() { h.waited.Store(true) }

// Run returns only after a handler's own background work: a handler with Wait is waited for.
func TestHTTPRunWaitsForTheHandlersWork(t *testing.T) {
	h := &waitingHandler{Handler: http.NotFoundHandler()}
	s, err := stage.NewHTTP("console", "127.0.0.1:0", func(string) http.Handler { return h })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !h.waited.Load() {
		t.Fatal("Run returned without waiting for the handler's work")
	}
}
