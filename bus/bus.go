// Package bus owns the message bus: starting the embedded nats-server or connecting to an external
// cluster, the JetStream stream and consumer settings, and the outbox relay that moves committed
// outbox rows into JetStream. It knows subjects and ids, not what a notice says.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/policypush/policypush/internal/stage"
	"github.com/policypush/policypush/store"
)

// Options configure the bus.
type Options struct {
	URL             string // empty: run nats-server inside the process
	StoreDir        string // JetStream store of the embedded server
	Stream          string
	SubjectPrefix   string
	Replicas        int
	DuplicateWindow time.Duration
}

// Bus is a connection to JetStream (and the embedded server when there is one).
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	opts   Options
	server *server.Server
}

// Open starts or connects to NATS and makes sure the notice stream exists with the configured
// settings (topology.go).
func Open(ctx context.Context, o Options) (*Bus, error) {
	b := &Bus{opts: o}
	var err error
	if o.URL == "" {
		var ns *server.Server
		ns, err = server.NewServer(&server.Options{
			ServerName: "policypush-embedded",
			JetStream:  true,
			StoreDir:   filepath.Join(o.StoreDir),
			DontListen: true,
			NoSigs:     true,
			NoLog:      true,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded nats-server: %w", err)
		}
		go ns.Start()
		if err := waitReady(ctx, ns, o.StoreDir); err != nil {
			ns.Shutdown()
			return nil, err
		}
		b.server = ns
		b.NC, err = dialEmbedded(ns)
	} else {
		b.NC, err = nats.Connect(o.URL, nats.Name("policypush"), nats.MaxReconnects(-1),
			nats.ReconnectWait(500*time.Millisecond), nats.Timeout(5*time.Second))
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect to NATS %s: %w", describe(o.URL), err)
	}
	// A PubAck that never comes (the server restarted under the publish) fails the future after
	// pubAckTimeout instead of keeping the relay waiting.
	if b.JS, err = jetstream.New(b.NC, jetstream.WithPublishAsyncTimeout(pubAckTimeout)); err != nil {
		b.Close()
		return nil, err
	}
	if _, err := EnsureStream(ctx, b.JS, b.Topology().NoticeStream()); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// dialEmbedded connects to the embedded server in process (a variable so a test can make it fail).
var dialEmbedded = func(ns *server.Server) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(ns), nats.Name("policypush"))
}

func describe(url string) string {
	if url == "" {
		return "(embedded)"
	}
	return url
}

// Stream returns the name of the notice stream.
func (b *Bus) Stream() string { return b.opts.Stream }

// SubjectPrefix returns the prefix of every subject on this bus.
func (b *Bus) SubjectPrefix() string { return b.opts.SubjectPrefix }

// MaxDeliveriesAdvisory is the body of a MAX_DELIVERIES advisory.
type MaxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// Backlog counts the notices the channels' consumers have not finished: not yet delivered to a
// notifier, or delivered and not acknowledged (including those naked for a retry). It reads the
// consumers rather than the stream: after an unclean NATS restart a work-queue stream can keep
// messages its consumer already acknowledged, which no notifier will ever see again. The reverse
// happens too: a consumer restored after such a restart can list as unacknowledged messages the
// stream no longer holds (nats-server 2.9, docs/delivery.md), which no notifier can finish either,
// and which stay until they fail max_deliver lookups; so a channel counts at most the messages the
// stream holds on its subject. A channel whose consumer does not exist yet counts those.
func (b *Bus) Backlog(ctx context.Context, channels ...string) (uint64, error) {
	var total uint64
	for _, ch := range channels {
		n, err := ChannelBacklog(ctx, b.JS, b.opts.Stream, ConsumerName(ch), b.NotifySubject(ch))
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// ChannelBacklog is Backlog's count for one channel: the pending and unacknowledged messages of
// its consumer on stream, at most the messages the stream holds on its subject; with no consumer
// yet, those messages.
func ChannelBacklog(ctx context.Context, js jetstream.JetStream, stream, consumer, subject string) (uint64, error) {
	held := func() (uint64, error) {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", stream, err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", stream, err)
		}
		var n uint64
		for _, m := range info.State.Subjects {
			n += m
		}
		return n, nil
	}
	c, err := js.Consumer(ctx, stream, consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return held()
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", consumer, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", consumer, err)
	}
	n := info.NumPending + uint64(info.NumAckPending)
	if n == 0 {
		return 0, nil
	}
	h, err := held()
	if err != nil {
		return 0, err
	}
	return min(n, h), nil
}

// Healthy reports whether the connection is up.
func (b *Bus) Healthy() error {
	if b.NC == nil || !b.NC.IsConnected() {
		return errors.New("not connected to NATS")
	}
	return nil
}

// Ready is the NATS check of the process health; a nil bus is a process without NATS.
func (b *Bus) Ready(context.Context) stage.Check {
	if b == nil {
		return stage.Unused("nats")
	}
	if err := b.Healthy(); err != nil {
		return stage.Down("nats", err, nil)
	}
	return stage.OK("nats", nil)
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.NC != nil {
		_ = b.NC.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !b.NC.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.NC.Close()
	}
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
}

// Notice kinds (NoticeJob.Kind): what a notice tells the firm. Each has its own template.
const (
	NoticeMatched    = ""           // the firm qualifies (免申即享): the match notice
	NoticePublicized = "publicized" // the firm is listed in a payout 公示 and may object
	NoticePaid       = "paid"       // the money was paid: amount and date
	NoticeFailed     = "failed"     // the bank could not pay: why and what to do
)

// NoticeJob is the payload of a notice message: which match to announce on which channel. The
// notifier reads everything else from the database, so a message never carries stale firm data.
type NoticeJob struct {
	MatchID uint64 `json:"match_id"`
	Channel string `json:"channel"`
	// Fallback marks an SMS queued because WeChat could not reach the firm.
	Fallback bool `json:"fallback,omitempty"`
	// DeliveryID, instead of MatchID, asks for an attempt at an existing delivery (a digest whose
	// window closed, a retry, a resend, the end of quiet hours).
	DeliveryID uint64 `json:"delivery_id,omitempty"`
	// Kind is what the notice announces (Notice*); for a payout step Ref is the payout line.
	Kind string `json:"kind,omitempty"`
	Ref  uint64 `json:"ref,omitempty"`
}

// NoticeBatch is the payload of an outbox row that announces many new matches on one channel
// (store.Outbox.Notices > 1). The relay publishes it as one NoticeJob message per match, with the
// message id "<outbox id>.<match id>", so a republished batch is deduplicated message by message.
type NoticeBatch struct {
	Channel  string   `json:"channel"`
	MatchIDs []uint64 `json:"match_ids"`
}

// BatchOutbox makes the outbox row of a NoticeBatch; a batch of one is a plain NoticeJob row.
func BatchOutbox(prefix string, b NoticeBatch, now time.Time) store.Outbox {
	var payload []byte
	if len(b.MatchIDs) == 1 {
		payload, _ = json.Marshal(NoticeJob{MatchID: b.MatchIDs[0], Channel: b.Channel})
	} else {
		payload, _ = json.Marshal(b) // a struct of a string and integers always encodes
	}
	return store.Outbox{Subject: NotifySubject(prefix, b.Channel), Payload: payload, CreatedAt: now, Notices: len(b.MatchIDs)}
}

// embeddedStart is how long the embedded nats-server may take to become ready. An empty store
// starts in milliseconds; a store that holds a large backlog is recovered first (a 1 GB store
// after a 1,000,000-firm match took longer than the 10 s this used to allow, and serve refused to
// start).
const embeddedStart = 5 * time.Minute

// waitReady waits for the embedded server, at most embeddedStart or until ctx ends.
func waitReady(ctx context.Context, ns *server.Server, storeDir string) error {
	deadline := time.Now().Add(embeddedStart)
	for !ns.ReadyForConnections(time.Second) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("embedded nats-server: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded nats-server did not become ready in %s (recovering its JetStream store in %s?)", embeddedStart, storeDir)
		}
	}
	return nil
}

// DropStreams deletes the streams of an external NATS server whose names begin with prefix, and
// reports their names: a benchmark's own streams, which a run that was killed left behind and
// whose subjects would overlap the next run's (JetStream refuses a second stream on the same
// subjects).
func DropStreams(ctx context.Context, url, prefix string) ([]string, error) {
	if url == "" || prefix == "" {
		return nil, fmt.Errorf("drop streams: need a server URL and a name prefix")
	}
	nc, err := nats.Connect(url, nats.Name("policypush"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	names := js.StreamNames(ctx)
	var dropped []string
	for name := range names.Name() {
		if strings.HasPrefix(name, prefix) {
			dropped = append(dropped, name)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	for _, name := range dropped {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("delete stream %s: %w", name, err)
		}
	}
	return dropped, nil
}
