package bus

import "github.com/prometheus/client_golang/prometheus"

// Relay metrics. They are registered by notify.MetricsHandler together with the notifier's, so that
// one /metrics endpoint shows the whole delivery path.
var (
	outboxLag = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "policypush_outbox_lag_seconds",
		Help: "Age of the oldest due outbox row in the relay's last round (0 when nothing was waiting).",
	})
	outboxPublished = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "policypush_outbox_published_total",
		Help: "Outbox rows published to JetStream and marked.",
	})
	relayErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "policypush_outbox_relay_errors_total",
		Help: "Relay rounds that failed (database or NATS unreachable, PubAck missing).",
	})
)

// Collectors are the bus's Prometheus metrics.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{outboxLag, outboxPublished, relayErrors}
}
