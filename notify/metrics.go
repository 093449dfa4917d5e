package notify

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/policypush/policypush/bus"
)

// Metrics of the delivery path. Codes are provider error codes (a bounded set), never recipients.
var (
	noticesTakenIn = newCounterVec("policypush_notices_taken_in_total",
		"Match notices taken in by the notifier, by channel and outcome (queued, digested, skipped, fallback, dead).",
		"channel", "outcome")
	deliveryOutcomes = newCounterVec("policypush_deliveries_total",
		"Delivery state changes, by channel, new state and provider code (sent, failed, deferred, dead, skipped, fallback, delivered, undelivered).",
		"channel", "state", "code")
	providerLatency = newHistogramVec("policypush_provider_request_seconds",
		"Duration of provider send calls, by provider and outcome (ok or the error class).",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}, "provider", "outcome")
	noticeLatency = newHistogramVec("policypush_notice_latency_seconds",
		"From match commit to provider acceptance, per match, by channel (includes the digest window and any deferral).",
		[]float64{.1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 43200}, "channel")
	retries = newCounterVec("policypush_delivery_retries_total",
		"Attempts that failed transiently and were scheduled again, by channel.",
		"channel")
	deadLetters = newCounterVec("policypush_dead_letters_total",
		"Deliveries given up (permanent error, attempts exhausted) and JetStream dead letters, by channel and code.",
		"channel", "code")
	inDoubt = newCounterVec("policypush_in_doubt_total",
		"Attempts whose outcome was unknown, by provider and how they were settled (resent, found, not_found, lookup_error).",
		"provider", "outcome")
	receiptsTotal = newCounterVec("policypush_receipts_total",
		"Provider status reports received, by provider and result (delivered, undelivered, duplicate, unmatched).",
		"provider", "result")
	providerOpen = newGaugeVec("policypush_provider_circuit_open",
		"1 while a provider's breaker is open and its notices go to the next provider.",
		"provider")
	providerPaused = newGaugeVec("policypush_provider_paused",
		"1 while a provider is paused for quota.",
		"provider")
	batchSeconds = newHistogramVec("policypush_notify_batch_seconds",
		"Time to handle one batch of notice messages, by channel.",
		prometheus.DefBuckets, "channel")
	consumerResets = newCounterVec("policypush_consumer_resets_total",
		"Channel consumers found stalled (holding messages for waiting pulls and delivering none) and created afresh, by channel.",
		"channel")
	strandedDeliveries = newCounterVec("policypush_stranded_deliveries_total",
		"Open deliveries found with no message or outbox row to bring them back, and queued again, by channel (a lost message or a defect: each one is logged).",
		"channel")
	phaseSeconds = newHistogramVec("policypush_notify_phase_seconds",
		"Time a batch spends in each step, by channel and phase (intake, claim, prepare, send, record): where a slow batch's time goes.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}, "channel", "phase")
)

// newCounterVec, newGaugeVec and newHistogramVec declare one labelled metric of the delivery path.
func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func newGaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func newHistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// timePhase observes how long a batch spent in a phase since begin, and returns now.
func timePhase(channel, phase string, begin time.Time) time.Time {
	now := time.Now()
	phaseSeconds.WithLabelValues(channel, phase).Observe(now.Sub(begin).Seconds())
	return now
}

var (
	registryOnce sync.Once
	registry     *prometheus.Registry
)

// Registry is the Prometheus registry of the delivery path (relay and notifiers) plus the Go
// runtime and process collectors. The console mounts MetricsHandler; anything else can gather
// from here.
func Registry() *prometheus.Registry {
	registryOnce.Do(func() {
		registry = prometheus.NewRegistry()
		registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		registry.MustRegister(noticesTakenIn, deliveryOutcomes, providerLatency, noticeLatency, retries, deadLetters,
			inDoubt, receiptsTotal, providerOpen, providerPaused, batchSeconds, phaseSeconds, consumerResets, strandedDeliveries)
		registry.MustRegister(bus.Collectors()...)
	})
	return registry
}

// MetricsHandler serves the metrics in the Prometheus text format (mount it at /metrics).
func MetricsHandler() http.Handler {
	return promhttp.HandlerFor(Registry(), promhttp.HandlerOpts{})
}
