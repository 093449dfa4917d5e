package matcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/policypush/policypush/internal/fixture"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/registry"
	"github.com/policypush/policypush/store"
)

// Change events published on the change subject are applied by the running engine: the firm is
// stored and re-matched, its new match queued for notice. A malformed event is dropped without
// holding up the ones behind it.
func TestRunAppliesChangeEventsFromJetStream(t *testing.T) {
	db := testenv.OpenDB(t).DB
	b := testenv.OpenBus(t)
	seedRegistry(t, db, registry.Synth(600, 9), fixture.DemoDefinitions(t))
	asOf := testAsOf
	e := loadedEngine(t, db, &asOf)
	sfx := testenv.Suffix()
	o := StreamOptions{Stream: "PPMATCH_" + sfx, Subject: "ppm" + sfx + ".registry.changed", Replicas: 1,
		CatchUp: time.Hour, FetchMaxWait: 200 * time.Millisecond, RetryDelay: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := e.Run(ctx, b.JS, o); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.JS.DeleteStream(c, o.Stream+"_REGISTRY")
	})

	var f store.Enterprise
	if err := db.Where("status = ? AND graduates_hired = 0 AND insured_employees >= 5 AND tax_credit_rating <> 'D'", store.StatusActive).Order("credit_code").Take(&f).Error; err != nil {
		t.Fatal(err)
	}
	before := outboxCount(db)
	pub := func(data string) {
		pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer pcancel()
		for {
			_, err := b.JS.Publish(pctx, o.Subject, []byte(data))
			if err == nil {
				return
			}
			if pctx.Err() != nil { // the stream is created by Run; publishing before that has no stream
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	pub(`{"credit_code": "broken`)
	pub(fmt.Sprintf(`{"credit_code": %q, "graduates_hired": 2}`, f.CreditCode))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, _ := matchState(t, db, "kuogang-buzhu-2022", f.CreditCode); st == store.MatchActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the change event was not applied within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := outboxCount(db); n != before+1 {
		t.Fatalf("outbox grew by %d, want 1", n-before)
	}
	if got := firmByCode(t, db, f.CreditCode); got.GraduatesHired != 2 || got.Name != f.Name {
		t.Fatalf("firm after the event: %+v", got)
	}
	// Both events left the work queue.
	s, err := b.JS.Stream(context.Background(), o.Stream+"_REGISTRY")
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d change events still in the stream", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	noDifference(t, db, asOf)
}
