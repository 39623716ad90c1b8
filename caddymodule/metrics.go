package caddymodule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

const (
	metricsNamespace = "caddy"
	metricsSubsystem = "segment"
)

// Reasons an event is dropped, the values of the reason label of
// caddy_segment_events_dropped_total.
const (
	dropQueueFull = "queue_full"
	dropShutdown  = "shutdown"
	dropTooBig    = "too_big"
)

// The collectors are package-level so that their counts carry across
// config reloads; each config registers them in its own registry.
var (
	pageViews = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "page_views_total",
		Help: "Page views seen: HTML page loads, or page_view events of GitBook's beacon with gitbook_insights.",
	})
	eventsQueued = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "events_queued_total",
		Help: "Events accepted into the in-memory queue.",
	})
	eventsDelivered = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "events_delivered_total",
		Help: "Events that Segment accepted (or that were logged, in dry-run mode).",
	})
	eventsFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "events_failed_total",
		Help: "Events that could not be delivered after every retry, by reason.",
	}, []string{"reason"})
	eventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "events_dropped_total",
		Help: "Events given up before delivery, by reason: queue_full, shutdown, too_big.",
	}, []string{"reason"})
	requestsSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "requests_skipped_total",
		Help: "Requests that would be page views but are not tracked, by reason.",
	}, []string{"reason"})
	fieldsTruncated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "fields_truncated_total",
		Help: "Event fields cut to their size limit, by field.",
	}, []string{"field"})
	queueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "queue_depth",
		Help: "Events waiting in the in-memory queues of all running senders.",
	}, totalQueueDepth)
)

var collectors = []prometheus.Collector{
	pageViews, eventsQueued, eventsDelivered, eventsFailed,
	eventsDropped, requestsSkipped, fieldsTruncated, queueDepth,
}

// Counters that the request path touches are resolved once.
var (
	droppedQueueFull = eventsDropped.WithLabelValues(dropQueueFull)
	droppedShutdown  = eventsDropped.WithLabelValues(dropShutdown)
	droppedTooBig    = eventsDropped.WithLabelValues(dropTooBig)
)

// registerMetrics adds the collectors to a config's registry. A registry
// that already has them is fine: the counts live in the collectors.
func registerMetrics(registry *prometheus.Registry, logger *zap.Logger) {
	if registry == nil {
		return
	}
	for _, c := range collectors {
		err := registry.Register(c)
		var already prometheus.AlreadyRegisteredError
		if err != nil && !errors.As(err, &already) {
			logger.Error("registering a Segment metric failed", zap.Error(err))
		}
	}
}

func countSkip(reason string) {
	requestsSkipped.WithLabelValues(reason).Inc()
}

func countTruncation(field string) {
	fieldsTruncated.WithLabelValues(field).Inc()
}
