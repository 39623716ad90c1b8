package caddymodule

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/segmentio/analytics-go/v3"
	"go.uber.org/zap"
)

// senders holds one sender per delivery setting. A reload that keeps the
// settings takes the running sender, because Caddy provisions the new
// config before it cleans up the old one.
var senders = caddy.NewUsagePool()

// abortGrace bounds the wait for the sender goroutine once in-flight
// requests were aborted at the end of shutdown_timeout.
const abortGrace = 2 * time.Second

// senderConfig is everything that shapes delivery. It is the key of the
// sender in the pool.
type senderConfig struct {
	writeKey        string
	endpoint        string
	batchSize       int
	flushInterval   time.Duration
	queueSize       int
	shutdownTimeout time.Duration
	dryRun          bool
}

// acquireSender returns the running sender for cfg, or starts one.
func acquireSender(cfg senderConfig) (*sender, error) {
	value, _, err := senders.LoadOrNew(cfg, func() (caddy.Destructor, error) {
		return newSender(cfg)
	})
	if err != nil {
		return nil, err
	}
	return value.(*sender), nil
}

// releaseSender gives up one use of the sender for cfg; the last use stops
// it.
func releaseSender(cfg senderConfig) error {
	_, err := senders.Delete(cfg)
	return err
}

func totalQueueDepth() float64 {
	depth := 0
	senders.Range(func(_, value any) bool {
		depth += len(value.(*sender).queue)
		return true
	})
	return float64(depth)
}

// sender owns a bounded queue, the goroutine that empties it, and the
// analytics-go client. That goroutine is the client's only caller, because
// the client's Enqueue blocks when it falls behind and races with Close.
type sender struct {
	config senderConfig
	host   string // the endpoint's host, for logs
	logger *zap.Logger
	queue  chan *event
	client analytics.Client

	transport *http.Transport // nil in dry-run mode
	abort     context.CancelFunc

	mu     sync.RWMutex // guards closed against enqueue
	closed bool

	stopping atomic.Bool // failures now count as shutdown drops
	aborted  atomic.Bool // in-flight requests were cut at shutdown_timeout
	stop     chan struct{}
	done     chan struct{}
	settled  chan struct{} // signalled when the client reports an event back

	pending         atomic.Int64 // handed to the client, not yet reported back
	lastFailure     atomic.Int64 // Unix nanoseconds of the last failed attempt, 0 for none
	stopStarted     time.Time    // set by Destruct before it closes stop
	droppedFull     atomic.Int64
	droppedStopping atomic.Int64
	failed          atomic.Int64

	dropLog   logLimiter
	failLog   logLimiter
	clientLog logLimiter
}

func newSender(cfg senderConfig) (*sender, error) {
	s := &sender{
		config:  cfg,
		logger:  caddy.Log().Named("http.handlers.segment"),
		queue:   make(chan *event, cfg.queueSize),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		settled: make(chan struct{}, 1),
	}
	if u, err := url.Parse(cfg.endpoint); err == nil {
		s.host = u.Host
	}

	abortCtx, abort := context.WithCancel(context.Background())
	s.abort = abort

	if cfg.dryRun {
		s.client = &dryRunClient{logger: s.logger, callback: senderCallback{s}}
	} else {
		s.transport = http.DefaultTransport.(*http.Transport).Clone()
		s.transport.MaxIdleConnsPerHost = 16
		client, err := analytics.NewWithConfig(cfg.writeKey, analytics.Config{
			Endpoint:   cfg.endpoint,
			Interval:   cfg.flushInterval,
			BatchSize:  cfg.batchSize,
			Transport:  &batchTransport{base: s.transport, abort: abortCtx, failed: s.noteFailure},
			Logger:     clientLogger{s},
			Callback:   senderCallback{s},
			RetryAfter: retryDelay,
		})
		if err != nil {
			abort()
			return nil, err
		}
		s.client = client
	}

	go s.run()
	if cfg.dryRun {
		// No endpoint is contacted, so none is named.
		s.logger.Info("Segment sender started in dry-run mode; events are logged, not sent",
			zap.Int("queue_size", cfg.queueSize))
		return s, nil
	}
	s.logger.Info("Segment sender started",
		zap.String("endpoint_host", s.host),
		zap.Int("batch_size", cfg.batchSize),
		zap.Duration("flush_interval", cfg.flushInterval),
		zap.Int("queue_size", cfg.queueSize))
	return s, nil
}

// enqueue queues an event without ever blocking. When the queue is full,
// or the sender is stopping, the event is dropped and counted.
func (s *sender) enqueue(e *event) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		droppedShutdown.Inc()
		s.droppedStopping.Add(1)
		return
	}
	select {
	case s.queue <- e:
		s.mu.RUnlock()
		eventsQueued.Inc()
	default:
		s.mu.RUnlock()
		droppedQueueFull.Inc()
		total := s.droppedFull.Add(1)
		if ok, suppressed := s.dropLog.allow(); ok {
			s.logger.Warn("Segment event queue is full; dropping events until the sender catches up",
				zap.Int("queue_size", s.config.queueSize),
				zap.Int64("dropped_total", total),
				zap.Int64("suppressed_logs", suppressed))
		}
	}
}

// maxPending returns how many events the client may hold unreported:
// four batches, at least 1,000 events, at most queue_size. Four batches in
// flight carry a replica's page views to Segment at round trips of 100 ms.
func (c senderConfig) maxPending() int64 {
	return int64(min(c.queueSize, max(4*c.batchSize, 1000)))
}

// run hands queued events to the client until the sender stops, then
// hands over what is left and closes the client, which flushes. While
// maxPending events are with the client and not yet reported back, it
// takes no more. The endpoint is then slow or down and analytics-go holds
// batches for retries, so the queue fills and further events are dropped
// as queue_full. Memory stays bounded by queue_size plus maxPending events
// whatever the endpoint does.
func (s *sender) run() {
	defer close(s.done)
	limit := s.config.maxPending()
	for {
		if s.pending.Load() >= limit {
			select {
			case <-s.settled:
				continue
			case <-s.stop:
				s.drain()
				return
			}
		}

		select {
		case e := <-s.queue:
			s.deliver(e)
		case <-s.stop:
			s.drain()
			return
		}
	}
}

// drain hands the rest of the queue to the client, or drops it once
// shutdown_timeout has passed, and closes the client.
func (s *sender) drain() {
	for {
		select {
		case e := <-s.queue:
			if s.aborted.Load() {
				droppedShutdown.Inc()
				s.droppedStopping.Add(1)
				continue
			}
			s.deliver(e)
		default:
			s.awaitRetries()
			s.client.Close()
			return
		}
	}
}

// retryWindow is longer than analytics-go keeps retrying a batch: ten
// attempts, with retryDelay's waits of at most 10 s between them.
const retryWindow = 2 * time.Minute

// noteFailure records a failed attempt, after which analytics-go keeps the
// batch for a retry.
func (s *sender) noteFailure() {
	s.lastFailure.Store(time.Now().UnixNano())
}

// awaitRetries gives the events that the client keeps, some of them in
// batches that wait for a retry, up to three quarters of shutdown_timeout
// to be reported back. analytics-go drops a batch that waits for a retry
// as soon as it is closed, without another attempt. Without a recent
// failed attempt no batch waits, and the client is closed at once: its
// Close sends what it has buffered. The last quarter of shutdown_timeout
// is left for that.
func (s *sender) awaitRetries() {
	last := s.lastFailure.Load()
	if last == 0 || time.Since(time.Unix(0, last)) > retryWindow {
		return
	}
	until := s.stopStarted.Add(s.config.shutdownTimeout * 3 / 4)
	for s.pending.Load() > 0 && !s.aborted.Load() {
		wait := time.Until(until)
		if wait <= 0 {
			return
		}
		select {
		case <-s.settled:
		case <-time.After(min(wait, 50*time.Millisecond)):
		}
	}
}

// settle records that the client reported an event back, and wakes the
// run loop if it waits for room.
func (s *sender) settle() {
	s.pending.Add(-1)
	select {
	case s.settled <- struct{}{}:
	default:
	}
}

// deliver builds the event's call and hands it to the client.
func (s *sender) deliver(e *event) {
	s.pending.Add(1)
	msg := e.message()
	e.release()
	if err := s.client.Enqueue(msg); err != nil {
		s.settle()
		s.countFailure(err)
	}
}

// Destruct stops the sender: it delivers what is queued within
// shutdown_timeout, then cuts in-flight requests and counts what is left
// as dropped. It waits at most shutdown_timeout plus abortGrace.
func (s *sender) Destruct() error {
	start := time.Now()
	s.stopStarted = start

	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stopping.Store(true)
	close(s.stop)

	timer := time.NewTimer(s.config.shutdownTimeout)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
		s.aborted.Store(true)
		s.abort()
		select {
		case <-s.done:
		case <-time.After(abortGrace):
			s.logger.Error("Segment sender did not stop after its requests were aborted",
				zap.String("endpoint_host", s.host))
		}
	}
	s.abort()
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}

	// Events the client never reported back are lost too.
	if lost := s.pending.Swap(0); lost > 0 {
		droppedShutdown.Add(float64(lost))
		s.droppedStopping.Add(lost)
	}

	fields := []zap.Field{
		zap.Duration("duration", time.Since(start)),
		zap.Int64("dropped", s.droppedStopping.Load()),
	}
	if !s.config.dryRun {
		fields = append(fields, zap.String("endpoint_host", s.host))
	}
	if s.droppedStopping.Load() > 0 {
		s.logger.Warn("Segment sender stopped; undelivered events were dropped", fields...)
	} else {
		s.logger.Info("Segment sender stopped; every queued event was handed over", fields...)
	}
	return nil
}

// countFailure counts an event the client gave up on.
func (s *sender) countFailure(err error) {
	switch {
	// While stopping, analytics-go abandons batches that wait for a retry
	// and reports them with the last attempt's error: they are lost to the
	// shutdown, not refused by Segment.
	case s.stopping.Load():
		droppedShutdown.Inc()
		s.droppedStopping.Add(1)
		return
	case errors.Is(err, analytics.ErrMessageTooBig):
		droppedTooBig.Inc()
		return
	}

	reason := failureReason(err)
	eventsFailed.WithLabelValues(reason).Inc()
	total := s.failed.Add(1)
	if ok, suppressed := s.failLog.allow(); ok {
		s.logger.Warn("Segment did not accept events after retries",
			zap.String("endpoint_host", s.host),
			zap.String("reason", reason),
			zap.String("error", err.Error()),
			zap.Int64("failed_total", total),
			zap.Int64("suppressed_logs", suppressed))
	}
}

// failureReason sorts a delivery error into a small set of reasons: the
// value of the reason label of caddy_segment_events_failed_total.
func failureReason(err error) string {
	if errors.Is(err, analytics.ErrTooManyRequests) {
		return "overload"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return "network"
	}
	// analytics-go reports a refused batch as "<status> <status text>".
	code, _, _ := strings.Cut(err.Error(), " ")
	status, convErr := strconv.Atoi(code)
	switch {
	case convErr != nil:
		return "other"
	case status == http.StatusTooManyRequests:
		return "http_429"
	case status >= 500:
		return "http_5xx"
	case status >= 400:
		return "http_4xx"
	default:
		return "http_other"
	}
}

// senderCallback receives analytics-go's report on each event. It runs on
// the client's goroutines, so it only counts.
type senderCallback struct{ s *sender }

func (c senderCallback) Success(analytics.Message) {
	c.s.settle()
	eventsDelivered.Inc()
}

func (c senderCallback) Failure(_ analytics.Message, err error) {
	c.s.settle()
	c.s.countFailure(err)
}

// retryDelay is the wait before retry number attempt: 100ms doubling up
// to 10s, with jitter so that replicas do not retry in step.
func retryDelay(attempt int) time.Duration {
	delay := 100 * time.Millisecond << min(attempt, 7)
	delay = min(delay, 10*time.Second)
	return delay/2 + rand.N(delay/2)
}
