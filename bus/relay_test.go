package bus_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/bus"
	"github.com/policypush/policypush/internal/testenv"
	"github.com/policypush/policypush/store"
)

// The relay publishes immediate rows at once, scheduled rows when their time comes, each exactly
// once per outbox id, and the consumers' backlog counts what no notifier has finished.
func TestRelayPublishesWhatIsDueOnce(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	b := testenv.OpenBus(t)
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	later := now.Add(10 * time.Minute)
	job := func(id uint64) []byte {
		p, _ := json.Marshal(bus.NoticeJob{DeliveryID: id, Channel: "wechat"})
		return p
	}
	rows := []store.Outbox{
		{Subject: b.NotifySubject("wechat"), Payload: job(1), CreatedAt: now},
		{Subject: b.NotifySubject("wechat"), Payload: job(2), CreatedAt: now, AvailableAt: &later},
		{Subject: b.NotifySubject("wechat"), Payload: job(3), CreatedAt: now},
	}
	if err := db.Create(&rows).Error; err != nil {
		t.Fatal(err)
	}
	r := bus.NewRelay(bus.RelayOptions{DB: db, JS: b.JS, Interval: time.Second, BatchSize: 10, Now: clock})
	if n, err := r.Once(ctx); err != nil || n != 2 {
		t.Fatalf("first round published %d (%v), want the 2 immediate rows", n, err)
	}
	if n, _ := r.Once(ctx); n != 0 {
		t.Fatalf("second round published %d before the scheduled time", n)
	}
	if due, err := bus.NextDue(ctx, db); err != nil || due == nil || !due.Equal(later) {
		t.Fatalf("next due %v %v", due, err)
	}
	now = later
	if n, _ := r.Once(ctx); n != 1 {
		t.Fatalf("scheduled row not published at its time (%d)", n)
	}
	if pending, _ := bus.Pending(ctx, db); pending != 0 {
		t.Fatalf("%d rows still pending", pending)
	}
	if r.LastSuccess().IsZero() {
		t.Fatal("no success recorded")
	}

	// A row published again (a crash between PubAck and marking) is dropped by the duplicate window.
	db.Model(&store.Outbox{}).Where("id = ?", rows[0].ID).Update("published_at", nil)
	if n, _ := r.Once(ctx); n != 1 {
		t.Fatal("republish not marked")
	}
	if got, err := b.Backlog(ctx, "wechat"); err != nil || got != 3 {
		t.Fatalf("backlog before a consumer exists: %d %v, want 3 messages", got, err)
	}
	cons, err := b.Consumer(ctx, "wechat", bus.ConsumerOptions{AckWait: 5 * time.Second, MaxDeliver: 5, MaxAckPending: 100})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for m := range batch.Messages() {
		var j bus.NoticeJob
		_ = json.Unmarshal(m.Data(), &j)
		got = append(got, j.DeliveryID)
		if j.DeliveryID == 3 {
			continue // left unacknowledged
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 {
		t.Fatalf("consumer got %v, want 3 messages (the republish deduplicated)", got)
	}
	if n, err := b.Backlog(ctx, "wechat", "sms"); err != nil || n != 1 {
		t.Fatalf("backlog %d %v, want the one unacknowledged message", n, err)
	}
	info, _ := cons.Info(ctx)
	if info.Config.AckPolicy != jetstream.AckExplicitPolicy || info.Config.MaxDeliver != 5 {
		t.Fatalf("consumer config %+v", info.Config)
	}
}

// A notice batch row is published as one message per match, each once: a batch published again
// (crash before marking) is deduplicated message by message, and Pending counts messages.
func TestRelayExpandsNoticeBatches(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t).DB
	b := testenv.OpenBus(t)
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	ids := make([]uint64, 4500) // more than one publish window
	for i := range ids {
		ids[i] = uint64(1000 + i)
	}
	rows := []store.Outbox{
		bus.BatchOutbox(b.SubjectPrefix(), bus.NoticeBatch{Channel: "wechat", MatchIDs: ids}, now),
		bus.BatchOutbox(b.SubjectPrefix(), bus.NoticeBatch{Channel: "wechat", MatchIDs: []uint64{7}}, now),
	}
	if rows[1].Notices != 1 || !strings.Contains(string(rows[1].Payload), `"match_id":7`) {
		t.Fatalf("a batch of one is not a plain notice: %+v", rows[1])
	}
	if err := db.Create(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if n, err := bus.Pending(ctx, db); err != nil || n != int64(len(ids)+1) {
		t.Fatalf("pending %d %v, want %d messages", n, err, len(ids)+1)
	}
	r := bus.NewRelay(bus.RelayOptions{DB: db, JS: b.JS, Interval: time.Second, BatchSize: 10, Now: func() time.Time { return now }})
	if n, err := r.Once(ctx); err != nil || n != 2 {
		t.Fatalf("published %d rows (%v), want 2", n, err)
	}
	db.Model(&store.Outbox{}).Where("id = ?", rows[0].ID).Update("published_at", nil)
	if n, err := r.Once(ctx); err != nil || n != 1 {
		t.Fatalf("republished %d rows (%v), want the batch", n, err)
	}
	if n, err := bus.Pending(ctx, db); err != nil || n != 0 {
		t.Fatalf("pending %d %v after publishing", n, err)
	}
	cons, err := b.Consumer(ctx, "wechat", bus.ConsumerOptions{AckWait: 5 * time.Second, MaxDeliver: 5, MaxAckPending: 10000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]int{}
	for len(seen) < len(ids)+1 {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var j bus.NoticeJob
			if err := json.Unmarshal(m.Data(), &j); err != nil || j.Channel != "wechat" {
				t.Fatalf("message %q: %v", m.Data(), err)
			}
			seen[j.MatchID]++
			_ = m.Ack()
		}
		if got == 0 {
			break
		}
	}
	if len(seen) != len(ids)+1 {
		t.Fatalf("%d distinct notices, want %d", len(seen), len(ids)+1)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("match %d announced %d times", id, n)
		}
	}
}
