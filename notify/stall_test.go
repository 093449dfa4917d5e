package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/notify/sandbox"
	"github.com/policypush/policypush/store"
)

// TestStalledConsumerIsCreatedAfresh puts a channel consumer in the state a nats-server crash left
// it in during a fault run, and checks that the notifier still delivers what waits.
//
// After the crash the consumer's state listed as delivered and unacknowledged 69 messages that the
// stream no longer had, and the stream kept an older message, so the server never dropped those
// entries. On nats-server 2.9 (Debian 12's package, the one CI runs) every failed lookup of such an
// entry ("error looking up message for consumer: deleted message") ends a pass of the consumer's
// delivery loop, and it looks at new messages only once no entry waits for redelivery: with no
// publishes coming, 2,683 notices waited seven minutes, until each entry had failed MaxDeliver
// (100) times. Here the same state is made on purpose: a notifier takes 40 messages; the consumer's
// state file is copied; the messages are acknowledged (the stream drops them); the server is
// stopped; the old state file is put back, as if the acks had not reached the disk before a crash;
// an older message on a subject no notifier reads holds the stream's first sequence.
func TestStalledConsumerIsCreatedAfresh(t *testing.T) {
	ns := testenv.StartNATSServer(t)
	ctx := context.Background()
	o := testenv.BusOptions(t)
	o.URL = ns.URL
	consumerOpts := bus.ConsumerOptions{AckWait: time.Second, MaxDeliver: 100, MaxAckPending: 1000}

	b, err := bus.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.Publish(ctx, bus.NotifySubject(o.SubjectPrefix, "email"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	cons, err := b.Consumer(ctx, ChannelWeChat, consumerOpts)
	if err != nil {
		t.Fatal(err)
	}
	const held = 40
	for i := range held {
		job, _ := json.Marshal(bus.NoticeJob{MatchID: uint64(1_000_000 + i), Channel: ChannelWeChat})
		if _, err := b.JS.Publish(ctx, b.NotifySubject(ChannelWeChat), job); err != nil {
			t.Fatal(err)
		}
	}
	ns.RestartLosingAcks(t, cons, o.Stream, bus.ConsumerName(ChannelWeChat), held, b.Close)

	b, err = bus.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The server queues the restored entries for redelivery once their AckWait has passed; a pull
	// that came earlier would find the queue empty and get the new messages (as the fault run's
	// notifiers did while publishes kept coming).
	time.Sleep(2 * consumerOpts.AckWait)
	var logs testenv.SyncBuffer
	h := newHarnessOn(t, b, sandbox.Options{}, func(opts *Options) {
		opts.Consumer = consumerOpts
		opts.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	const waiting = 30
	for i := range waiting {
		code := fmt.Sprintf("91320000STALL%05d", i)
		h.firm(code, "o-stall-"+code, "")
		h.match(code, "p-a", 1000, ChannelWeChat)
	}
	if n, err := h.relay.Once(ctx); err != nil || n != waiting {
		t.Fatalf("relay published %d rows (%v), want %d", n, err, waiting)
	}

	begin := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.n.Run(runCtx) }()
	var sent int64
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err := h.db.Model(&store.Delivery{}).Where("state = ?", store.DeliverySent).Count(&sent).Error; err != nil {
			t.Fatal(err)
		}
		if sent == waiting {
			break
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sent != waiting {
		log, _ := os.ReadFile(ns.Log)
		t.Fatalf("%d of %d notices sent after %s; notifier said:\n%s\nnats-server said:\n%s", sent, waiting,
			time.Since(begin).Round(time.Second), tail([]byte(logs.String()), 2000), tail(log, 2000))
	}
	t.Logf("%d notices sent in %s; the consumer was found stalled %d time(s)", waiting, time.Since(begin).Round(100*time.Millisecond),
		strings.Count(logs.String(), "consumer stalled"))
	h.exactlyOnce()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
