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
	noticesTakenIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_notices_taken_in_total",
		Help: "Match notices taken in by the notifier, by channel and outcome (queued, digested, skipped, fallback, dead).",
	}, []string{"channel", "outcome"})
	deliveryOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_deliveries_total",
		Help: "Delivery state changes, by channel, new state and provider code (sent, failed, deferred, dead, skipped, fallback, delivered, undelivered).",
	}, []string{"channel", "state", "code"})
	providerLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "policypush_provider_request_seconds",
		Help:    "Duration of provider send calls, by provider and outcome (ok or the error class).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"provider", "outcome"})
	noticeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "policypush_notice_latency_seconds",
		Help:    "From match commit to provider acceptance, per match, by channel (includes the digest window and any deferral).",
		Buckets: []float64{.1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 43200},
	}, []string{"channel"})
	retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_delivery_retries_total",
		Help: "Attempts that failed transiently and were scheduled again, by channel.",
	}, []string{"channel"})
	deadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_dead_letters_total",
		Help: "Deliveries given up (permanent error, attempts exhausted) and JetStream dead letters, by channel and code.",
	}, []string{"channel", "code"})
	inDoubt = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_in_doubt_total",
		Help: "Attempts whose outcome was unknown, by provider and how they were settled (resent, found, not_found, lookup_error).",
	}, []string{"provider", "outcome"})
	receiptsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_receipts_total",
		Help: "Provider status reports received, by provider and result (delivered, undelivered, duplicate, unmatched).",
	}, []string{"provider", "result"})
	providerOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "policypush_provider_circuit_open",
		Help: "1 while a provider's breaker is open and its notices go to the next provider.",
	}, []string{"provider"})
	providerPaused = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "policypush_provider_paused",
		Help: "1 while a provider is paused for quota.",
	}, []string{"provider"})
	batchSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "policypush_notify_batch_seconds",
		Help:    "Time to handle one batch of notice messages, by channel.",
		Buckets: prometheus.DefBuckets,
	}, []string{"channel"})
	consumerResets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_consumer_resets_total",
		Help: "Channel consumers found stalled (holding messages for waiting pulls and delivering none) and created afresh, by channel.",
	}, []string{"channel"})
	strandedDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policypush_stranded_deliveries_total",
		Help: "Open deliveries found with no message or outbox row to bring them back, and queued again, by channel (a lost message or a defect: each one is logged).",
	}, []string{"channel"})
	phaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "policypush_notify_phase_seconds",
		Help:    "Time a batch spends in each step, by channel and phase (intake, claim, prepare, send, record): where a slow batch's time goes.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"channel", "phase"})
)

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
