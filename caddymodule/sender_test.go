package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/analytics-go/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

// senderWriteKey is the write key that the recorder accepts in these tests.
const senderWriteKey = "sender-test-write-key"

// senderWaitTimeout bounds every wait for an event or a count. It is a
// deadline for a hung test, not a measure of speed.
const senderWaitTimeout = 10 * time.Second

// senderCounts is a snapshot of the sender's collectors.
type senderCounts struct {
	queued           float64
	delivered        float64
	droppedQueueFull float64
	droppedShutdown  float64
	droppedTooBig    float64
	failed           map[string]float64 // by reason label
}

// senderReadCounts reads the package-level collectors.
func senderReadCounts(t *testing.T) senderCounts {
	t.Helper()
	counts := senderCounts{
		queued:           senderMetricValue(t, eventsQueued),
		delivered:        senderMetricValue(t, eventsDelivered),
		droppedQueueFull: senderMetricValue(t, droppedQueueFull),
		droppedShutdown:  senderMetricValue(t, droppedShutdown),
		droppedTooBig:    senderMetricValue(t, droppedTooBig),
		failed:           make(map[string]float64),
	}

	metrics := make(chan prometheus.Metric)
	go func() {
		eventsFailed.Collect(metrics)
		close(metrics)
	}()
	for m := range metrics {
		var out dto.Metric
		if err := m.Write(&out); err != nil {
			t.Fatalf("reading caddy_segment_events_failed_total failed: %v", err)
		}
		for _, label := range out.GetLabel() {
			if label.GetName() == "reason" {
				counts.failed[label.GetValue()] = out.GetCounter().GetValue()
			}
		}
	}
	return counts
}

// sub returns the increase of each count since before.
func (c senderCounts) sub(before senderCounts) senderCounts {
	delta := senderCounts{
		queued:           c.queued - before.queued,
		delivered:        c.delivered - before.delivered,
		droppedQueueFull: c.droppedQueueFull - before.droppedQueueFull,
		droppedShutdown:  c.droppedShutdown - before.droppedShutdown,
		droppedTooBig:    c.droppedTooBig - before.droppedTooBig,
		failed:           make(map[string]float64),
	}
	for reason, value := range c.failed {
		if increase := value - before.failed[reason]; increase != 0 {
			delta.failed[reason] = increase
		}
	}
	return delta
}

// failedTotal returns the failures summed over every reason.
func (c senderCounts) failedTotal() float64 {
	total := 0.0
	for _, value := range c.failed {
		total += value
	}
	return total
}

// senderExpectCounts checks each count of an increase against want, with
// one error per count that differs. want.failed lists the expected
// increase per reason; a reason it omits must not have increased.
func senderExpectCounts(t *testing.T, got, want senderCounts) {
	t.Helper()
	checks := []struct {
		metric    string
		got, want float64
	}{
		{"events_queued_total", got.queued, want.queued},
		{"events_delivered_total", got.delivered, want.delivered},
		{`events_dropped_total{reason="queue_full"}`, got.droppedQueueFull, want.droppedQueueFull},
		{`events_dropped_total{reason="shutdown"}`, got.droppedShutdown, want.droppedShutdown},
		{`events_dropped_total{reason="too_big"}`, got.droppedTooBig, want.droppedTooBig},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("caddy_segment_%s increased by %v, expected %v", c.metric, c.got, c.want)
		}
	}
	for reason, value := range got.failed {
		if value != want.failed[reason] {
			t.Errorf(`caddy_segment_events_failed_total{reason=%q} increased by %v, expected %v`, reason, value, want.failed[reason])
		}
	}
	for reason, value := range want.failed {
		if _, seen := got.failed[reason]; !seen {
			t.Errorf(`caddy_segment_events_failed_total{reason=%q} did not increase, expected %v`, reason, value)
		}
	}
}

// senderMetricValue returns the value of a counter or a gauge.
func senderMetricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatalf("reading metric %s failed: %v", m.Desc(), err)
	}
	switch {
	case out.Counter != nil:
		return out.GetCounter().GetValue()
	case out.Gauge != nil:
		return out.GetGauge().GetValue()
	}
	t.Fatalf("metric %s is neither a counter nor a gauge", m.Desc())
	return 0
}

// senderCheckLeaks fails the test if a goroutine started during the test
// is still running once every other cleanup has run. Call it first, so
// that its cleanup runs last.
func senderCheckLeaks(t *testing.T) {
	t.Helper()
	existing := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, existing)
	})
}

// senderStartRecorder starts a recorder that is closed when the test ends.
func senderStartRecorder(t *testing.T) *recorder.Recorder {
	t.Helper()
	rec, err := recorder.Start(recorder.Options{WriteKey: senderWriteKey})
	if err != nil {
		t.Fatalf("starting the recorder failed: %v", err)
	}
	t.Cleanup(rec.Close)
	return rec
}

// senderTestConfig returns delivery settings with small batches and a
// short flush interval, so that events reach endpoint quickly.
func senderTestConfig(endpoint string) senderConfig {
	return senderConfig{
		writeKey:        senderWriteKey,
		endpoint:        endpoint,
		batchSize:       10,
		flushInterval:   20 * time.Millisecond,
		queueSize:       1000,
		shutdownTimeout: 3 * time.Second,
	}
}

// senderStart acquires the sender for cfg. The returned function releases
// it once and returns how long the release took. It also runs when the
// test ends, in case the test stopped before releasing.
func senderStart(t *testing.T, cfg senderConfig) (*sender, func() time.Duration) {
	t.Helper()
	s, err := acquireSender(cfg)
	if err != nil {
		t.Fatalf("acquireSender failed: %v", err)
	}

	var once sync.Once
	var took time.Duration
	release := func() time.Duration {
		once.Do(func() {
			start := time.Now()
			if err := releaseSender(cfg); err != nil {
				t.Errorf("releaseSender failed: %v", err)
			}
			took = time.Since(start)
		})
		return took
	}
	t.Cleanup(func() { release() })
	return s, release
}

// senderBuilder builds the calls of the events in the sender tests.
var senderBuilder = eventBuilder{event: "Sender Test", call: callTrack, ipMode: ipOmit}

// senderEvent returns a valid event number n, which becomes a track call
// without context.
func senderEvent(n int) *event {
	return &event{
		builder: &senderBuilder,
		visitor: visitor{anonymousID: fmt.Sprintf("sender-test-%d", n)},
		props:   analytics.Properties{"n": n},
	}
}

// senderEnqueue enqueues events number 0 to n-1.
func senderEnqueue(s *sender, n int) {
	for i := range n {
		s.enqueue(senderEvent(i))
	}
}

// senderEventually polls cond until it holds, and fails the test after
// senderWaitTimeout.
func senderEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(senderWaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", senderWaitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// senderWaitDelivered waits until caddy_segment_events_delivered_total has
// grown by n since before. analytics-go reports success after the
// response, so the count can trail the recorder's events.
func senderWaitDelivered(t *testing.T, before senderCounts, n int) {
	t.Helper()
	senderEventually(t, fmt.Sprintf("%d events counted as delivered", n), func() bool {
		return senderReadCounts(t).sub(before).delivered >= float64(n)
	})
}

// senderCheckEvents checks that the recorder contains exactly events number
// 0 to n-1, each once, each with its own messageId.
func senderCheckEvents(t *testing.T, rec *recorder.Recorder, n int) {
	t.Helper()
	events := rec.Events()
	if len(events) != n {
		t.Errorf("recorder contains %d events, expected %d", len(events), n)
	}

	seenIDs := make(map[string]bool)
	perVisitor := make(map[string]int)
	for _, event := range events {
		id := event.String("messageId")
		if id == "" {
			t.Errorf("event of %s has no messageId", event.String("anonymousId"))
		}
		seenIDs[id] = true
		perVisitor[event.String("anonymousId")]++
	}
	if len(seenIDs) != len(events) {
		t.Errorf("%d events carry only %d distinct messageIds", len(events), len(seenIDs))
	}
	for i := range n {
		id := senderEvent(i).visitor.anonymousID
		if perVisitor[id] != 1 {
			t.Errorf("event with anonymousId %s arrived %d times, expected once", id, perVisitor[id])
		}
	}

	if dup := rec.Stats().DuplicateMessageIDs; dup != 0 {
		t.Errorf("recorder saw %d events whose messageId had arrived before, expected none", dup)
	}
}

// senderClosedEndpoint returns the URL of a loopback port that was open a
// moment ago and is now closed, so connections to it are refused.
func senderClosedEndpoint(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening on 127.0.0.1 failed: %v", err)
	}
	endpoint := "http://" + listener.Addr().String()
	if err := listener.Close(); err != nil {
		t.Fatalf("closing the listener failed: %v", err)
	}
	return endpoint
}

// senderLogCapture contains the entries that Caddy's default logger received
// while it was replaced by a buffer.
type senderLogCapture struct {
	buffer   interface{ FlushTo(*zap.Logger) }
	logger   *zap.Logger
	observed *observer.ObservedLogs
}

// senderCaptureLogs sends the entries of caddy.Log() to a buffer until the
// test ends. A sender takes its logger when it starts, so start it after
// this call.
func senderCaptureLogs(t *testing.T) *senderLogCapture {
	t.Helper()
	_, original, buffer := caddy.BufferedLog()
	core, observed := observer.New(zap.DebugLevel)
	capture := &senderLogCapture{buffer: buffer, logger: zap.New(core), observed: observed}
	t.Cleanup(func() {
		capture.entries()
		caddy.UnbufferDefaultLogger(original)
	})
	return capture
}

// entries returns every entry logged so far.
func (c *senderLogCapture) entries() *observer.ObservedLogs {
	c.buffer.FlushTo(c.logger)
	return c.observed
}

func TestSenderDeliversEveryEvent(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(rec.URL()))

	const n = 100
	senderEnqueue(s, n)

	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatal(err)
	}
	senderWaitDelivered(t, before, n)
	senderCheckEvents(t, rec, n)

	if depth := senderMetricValue(t, queueDepth); depth != 0 {
		t.Errorf("caddy_segment_queue_depth is %v after every event was delivered, expected 0", depth)
	}
	if pending := s.pending.Load(); pending != 0 {
		t.Errorf("sender has %d events that analytics-go never reported back, expected 0", pending)
	}

	release()
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

func TestSenderRetriesAfterServerErrors(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	rec.SetMode(recorder.Mode{FailFirst: 3, FailStatus: 500})
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(rec.URL()))

	const n = 30
	senderEnqueue(s, n)

	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatal(err)
	}
	senderWaitDelivered(t, before, n)
	release()

	senderCheckEvents(t, rec, n)
	if rejected := rec.Stats().Rejected[500]; rejected != 3 {
		t.Errorf("recorder responded 500 to %d requests, expected 3", rejected)
	}
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

func TestSenderRetriesAfterRateLimit(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	// analytics-go v3.3.0 ignores Retry-After and waits retryDelay instead,
	// so a long Retry-After does not slow the test down.
	rec.SetMode(recorder.Mode{FailFirst: 2, FailStatus: 429, RetryAfter: "30"})
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(rec.URL()))

	const n = 25
	senderEnqueue(s, n)

	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatal(err)
	}
	senderWaitDelivered(t, before, n)
	release()

	senderCheckEvents(t, rec, n)
	if rejected := rec.Stats().Rejected[429]; rejected != 2 {
		t.Errorf("recorder responded 429 to %d requests, expected 2", rejected)
	}
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

// analytics-go retries a rejected batch ten times, with retryDelay between
// attempts: about 16 to 33 seconds in all. The test therefore releases the
// sender while the batch waits for a retry, and the events count as
// dropped at shutdown. TestSenderFailureReason covers the http_4xx reason
// that the tenth failure would be counted under.
func TestSenderClientErrorDropsAtShutdown(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	rec.SetMode(recorder.Mode{FailAlways: true, FailStatus: 400})
	before := senderReadCounts(t)
	cfg := senderTestConfig(rec.URL())
	cfg.batchSize = 20
	s, release := senderStart(t, cfg)

	const n = 20
	senderEnqueue(s, n)

	senderEventually(t, "a retry of the rejected batch", func() bool {
		return rec.Stats().Rejected[400] >= 2
	})
	release()

	if events := rec.Stats().Events; events != 0 {
		t.Errorf("recorder accepted %d events while it responded 400 to every request, expected 0", events)
	}
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, droppedShutdown: n})
}

// analytics-go drops a batch that waits for a retry as soon as it is
// closed. The sender therefore closes it only when such batches have been
// delivered, or three quarters of shutdown_timeout have passed: here the
// endpoint recovers while the sender stops, and every event arrives.
func TestSenderDeliversRetriesAtShutdown(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	rec.SetMode(recorder.Mode{FailAlways: true, FailStatus: 503})
	before := senderReadCounts(t)
	cfg := senderTestConfig(rec.URL())
	cfg.shutdownTimeout = 4 * time.Second
	s, release := senderStart(t, cfg)

	const n = 5
	senderEnqueue(s, n)
	senderEventually(t, "a failed attempt", func() bool {
		return rec.Stats().Rejected[503] >= 1
	})

	released := make(chan time.Duration)
	go func() { released <- release() }()
	time.Sleep(300 * time.Millisecond)
	rec.SetMode(recorder.Mode{})
	took := <-released

	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatalf("events were lost at shutdown: %v", err)
	}
	t.Logf("release took %s with shutdown_timeout %s", took, cfg.shutdownTimeout)
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

// A sender that saw no failure closes the client at once, which sends
// what it has buffered: a release does not wait for the flush interval.
func TestSenderReleaseWithoutFailuresDoesNotWait(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	before := senderReadCounts(t)
	cfg := senderTestConfig(rec.URL())
	cfg.flushInterval = time.Hour
	cfg.batchSize = 100
	s, release := senderStart(t, cfg)

	const n = 5
	senderEnqueue(s, n)
	senderEventually(t, "the events handed to analytics-go", func() bool {
		return s.pending.Load() == n
	})
	took := release()

	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatalf("events were lost at shutdown: %v", err)
	}
	if took >= cfg.shutdownTimeout/2 {
		t.Errorf("release took %s, expected it to send the buffered events at once, well within shutdown_timeout %s", took, cfg.shutdownTimeout)
	}
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

// As with a rejected batch, the ten attempts against a closed port outlast
// the test, so the events count as dropped at shutdown.
func TestSenderConnectionRefusedDropsAtShutdown(t *testing.T) {
	senderCheckLeaks(t)
	logs := senderCaptureLogs(t)
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(senderClosedEndpoint(t)))

	const n = 15
	senderEnqueue(s, n)

	senderEventually(t, "analytics-go to log the refused connection", func() bool {
		return logs.entries().FilterMessageSnippet("connection refused").Len() > 0
	})
	release()

	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, droppedShutdown: n})
}

func TestSenderSlowEndpoint(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	rec.SetMode(recorder.Mode{Delay: 300 * time.Millisecond})
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(rec.URL()))

	const n = 50
	senderEnqueue(s, n)

	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatal(err)
	}
	senderWaitDelivered(t, before, n)
	release()

	senderCheckEvents(t, rec, n)
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

func TestSenderHungEndpoint(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	rec.SetMode(recorder.Mode{Hang: true})
	before := senderReadCounts(t)
	cfg := senderTestConfig(rec.URL())
	cfg.batchSize = 100
	cfg.queueSize = 64
	cfg.shutdownTimeout = time.Second
	s, release := senderStart(t, cfg)

	// Every enqueue call has to return although the endpoint never responds.
	const workers, perWorker = 8, 2500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				s.enqueue(senderEvent(w*perWorker + i))
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("enqueue calls have not returned after 30s: enqueue blocks while the endpoint hangs")
	}

	enqueued := senderReadCounts(t).sub(before)
	if total := enqueued.queued + enqueued.droppedQueueFull; total != workers*perWorker {
		t.Errorf("queued (%v) plus dropped as queue_full (%v) is %v, expected one or the other for each of the %d calls",
			enqueued.queued, enqueued.droppedQueueFull, total, workers*perWorker)
	}
	if enqueued.droppedQueueFull == 0 {
		t.Errorf("no event was dropped as queue_full, expected drops from %d calls into a queue of %d", workers*perWorker, cfg.queueSize)
	}
	senderEventually(t, "a request to the hung endpoint", func() bool {
		return rec.Stats().Requests > 0
	})

	took := release()
	t.Logf("release of a sender with a hung endpoint and shutdown_timeout %s took %s", cfg.shutdownTimeout, took)
	if limit := 5 * time.Second; took > limit {
		t.Errorf("release took %s with shutdown_timeout %s, expected it to return within %s", took, cfg.shutdownTimeout, limit)
	}

	if events := rec.Stats().Events; events != 0 {
		t.Errorf("recorder accepted %d events without sending a response, expected 0", events)
	}
	after := senderReadCounts(t).sub(before)
	senderExpectCounts(t, after, senderCounts{
		queued:           enqueued.queued,
		droppedQueueFull: enqueued.droppedQueueFull,
		droppedShutdown:  enqueued.queued,
	})
}

func TestSenderEnqueueDuringRelease(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(rec.URL()))

	// Enqueue from several goroutines while the sender stops. The race
	// detector and the absence of a panic show that enqueue never sends on
	// a closed channel and never races with the client.
	const workers, perWorker = 8, 500
	var calls atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				s.enqueue(senderEvent(w*perWorker + i))
				calls.Add(1)
			}
		})
	}
	senderEventually(t, "the first queued event", func() bool {
		return senderReadCounts(t).sub(before).queued > 0
	})
	release()
	wg.Wait()

	during := senderReadCounts(t).sub(before)
	accounted := during.delivered + during.droppedShutdown + during.droppedQueueFull + during.failedTotal()
	if accounted != float64(calls.Load()) {
		t.Errorf("delivered (%v), dropped at shutdown (%v), dropped as queue_full (%v) and failed (%v) add up to %v, expected one outcome for each of the %d calls",
			during.delivered, during.droppedShutdown, during.droppedQueueFull, during.failedTotal(), accounted, calls.Load())
	}
	if events := rec.Stats().Events; float64(events) != during.delivered {
		t.Errorf("recorder accepted %d events, but %v were counted as delivered", events, during.delivered)
	}
	if dup := rec.Stats().DuplicateMessageIDs; dup != 0 {
		t.Errorf("recorder saw %d events whose messageId had arrived before, expected none", dup)
	}

	// Once the sender has stopped, each event is dropped at once.
	const late = 10
	senderEnqueue(s, late)
	senderExpectCounts(t, senderReadCounts(t).sub(before).sub(during), senderCounts{droppedShutdown: late})
}

func TestSenderSharedAcrossReload(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	cfg := senderTestConfig(rec.URL())

	first, err := acquireSender(cfg)
	if err != nil {
		t.Fatalf("acquireSender failed: %v", err)
	}
	second, err := acquireSender(cfg)
	if err != nil {
		t.Fatalf("second acquireSender failed: %v", err)
	}
	if first != second {
		t.Errorf("two acquisitions with the same settings returned two senders, expected one shared sender")
	}

	other := cfg
	other.batchSize = cfg.batchSize + 1
	different, err := acquireSender(other)
	if err != nil {
		t.Fatalf("acquireSender with a different batch size failed: %v", err)
	}
	if different == first {
		t.Errorf("acquisitions with different batch sizes returned the same sender, expected a sender per delivery setting")
	}
	if err := releaseSender(other); err != nil {
		t.Errorf("releaseSender of the other setting failed: %v", err)
	}
	if !senderStopped(different) {
		t.Errorf("the sender of the other setting still runs after its only release")
	}

	// The first release, as by the old config after a reload, leaves the
	// sender running for the new config.
	if err := releaseSender(cfg); err != nil {
		t.Fatalf("first releaseSender failed: %v", err)
	}
	if senderStopped(first) {
		t.Fatalf("the sender stopped after one of its two releases, expected it to keep running")
	}

	before := senderReadCounts(t)
	const n = 5
	senderEnqueue(first, n)
	if _, err := rec.WaitEvents(n, senderWaitTimeout); err != nil {
		t.Fatalf("the sender took no events after its first release: %v", err)
	}
	senderWaitDelivered(t, before, n)

	if err := releaseSender(cfg); err != nil {
		t.Fatalf("second releaseSender failed: %v", err)
	}
	if !senderStopped(first) {
		t.Errorf("the sender still runs after its last release")
	}

	senderEnqueue(first, 1)
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n, droppedShutdown: 1})

	// With every use released, the same settings start a new sender.
	fresh, err := acquireSender(cfg)
	if err != nil {
		t.Fatalf("acquireSender after the last release failed: %v", err)
	}
	if fresh == first {
		t.Errorf("acquisition after the last release returned the stopped sender, expected a new one")
	}
	if err := releaseSender(cfg); err != nil {
		t.Errorf("releaseSender of the new sender failed: %v", err)
	}
}

// senderStopped reports whether the goroutine of s has returned.
func senderStopped(s *sender) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func TestSenderDropsTooBigEvent(t *testing.T) {
	senderCheckLeaks(t)
	// analytics-go logs the whole rejected event, 40 KiB here.
	logs := senderCaptureLogs(t)
	rec := senderStartRecorder(t)
	before := senderReadCounts(t)
	s, release := senderStart(t, senderTestConfig(rec.URL()))

	// analytics-go rejects an event whose JSON is over 32,000 bytes.
	big := senderEvent(1)
	big.props = analytics.Properties{"blob": strings.Repeat("x", 40<<10)}
	s.enqueue(big)
	s.enqueue(senderEvent(0))

	if _, err := rec.WaitEvents(1, senderWaitTimeout); err != nil {
		t.Fatal(err)
	}
	senderWaitDelivered(t, before, 1)
	senderEventually(t, "the event of 40 KiB to be dropped as too_big", func() bool {
		return senderReadCounts(t).sub(before).droppedTooBig >= 1
	})
	release()

	senderCheckEvents(t, rec, 1)
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: 2, delivered: 1, droppedTooBig: 1})
	if logs.entries().FilterMessageSnippet(analytics.ErrMessageTooBig.Error()).Len() == 0 {
		t.Errorf("no log entry reports the rejected event's size, expected analytics-go's %q", analytics.ErrMessageTooBig)
	}
}

func TestSenderDryRun(t *testing.T) {
	senderCheckLeaks(t)
	logs := senderCaptureLogs(t)
	rec := senderStartRecorder(t)
	before := senderReadCounts(t)
	cfg := senderTestConfig(rec.URL())
	cfg.dryRun = true
	cfg.writeKey = ""
	s, release := senderStart(t, cfg)

	const n = 3
	senderEnqueue(s, n)
	senderWaitDelivered(t, before, n)
	release()

	logged := logs.entries().FilterMessage("Segment event (dry run, not sent)").All()
	if len(logged) != n {
		t.Errorf("dry-run sender logged %d events, expected %d", len(logged), n)
	}
	for i, entry := range logged {
		event, ok := entry.ContextMap()["event"].(analytics.Track)
		if !ok {
			t.Errorf("logged event %d is %T, expected analytics.Track", i, entry.ContextMap()["event"])
			continue
		}
		if want := senderEvent(i).visitor.anonymousID; event.AnonymousId != want {
			t.Errorf("logged event %d has anonymousId %q, expected %q", i, event.AnonymousId, want)
		}
		if event.MessageId == "" {
			t.Errorf("logged event %d has no messageId, expected one filled in as analytics-go does", i)
		}
		if event.Type != "track" {
			t.Errorf("logged event %d has type %q, expected track", i, event.Type)
		}
	}

	if requests := rec.Stats().Requests; requests != 0 {
		t.Errorf("dry-run sender made %d requests to the endpoint, expected none", requests)
	}
	senderExpectCounts(t, senderReadCounts(t).sub(before), senderCounts{queued: n, delivered: n})
}

func TestSenderFailureReason(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"too many batches in flight", analytics.ErrTooManyRequests, "overload"},
		{"connection refused", refused, "network"},
		{"request error", &url.Error{Op: "Post", URL: "http://127.0.0.1:1/v1/batch", Err: refused}, "network"},
		{"request cancelled", &url.Error{Op: "Post", URL: "http://127.0.0.1:1/v1/batch", Err: context.Canceled}, "network"},
		// analytics-go formats a rejected batch as "<code> <status>", and the
		// status repeats the code: "400 400 Bad Request".
		{"bad request", errors.New("400 400 Bad Request"), "http_4xx"},
		{"unauthorized", errors.New("401 401 Unauthorized"), "http_4xx"},
		{"rate limited", errors.New("429 429 Too Many Requests"), "http_429"},
		{"server error", errors.New("500 500 Internal Server Error"), "http_5xx"},
		{"bad gateway", errors.New("502 502 Bad Gateway"), "http_5xx"},
		{"redirect", errors.New("302 302 Found"), "http_other"},
		{"marshalling error", errors.New("json: unsupported type: chan int"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureReason(tt.err); got != tt.want {
				t.Errorf("failureReason(%q) = %q, expected %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestSenderPendingBound checks that against an endpoint that never
// responds, the client holds at most maxPending events and the rest wait
// in the queue or are dropped as queue_full, so memory stays bounded.
func TestSenderPendingBound(t *testing.T) {
	senderCheckLeaks(t)
	rec := senderStartRecorder(t)
	rec.SetMode(recorder.Mode{Hang: true})
	before := senderReadCounts(t)
	cfg := senderTestConfig(rec.URL())
	cfg.batchSize = 10
	cfg.queueSize = 1500
	cfg.shutdownTimeout = time.Second
	s, release := senderStart(t, cfg)

	limit := cfg.maxPending()
	if limit != 1000 {
		t.Fatalf("maxPending for batch_size 10 and queue_size 1500 = %d, want the floor of 1000", limit)
	}

	const events = 5000
	senderEnqueue(s, events)
	senderEventually(t, "the client to hold its limit of events", func() bool {
		return s.pending.Load() == limit
	})

	// The run loop now waits for the client, so the queue stays as it is.
	waiting := len(s.queue)
	if waiting > cfg.queueSize {
		t.Errorf("queue holds %d events, want at most %d", waiting, cfg.queueSize)
	}
	counts := senderReadCounts(t).sub(before)
	if counts.queued != float64(waiting)+float64(limit) {
		t.Errorf("queued grew by %v, want the %d waiting plus the %d with the client", counts.queued, waiting, limit)
	}
	if counts.queued+counts.droppedQueueFull != events {
		t.Errorf("queued %v plus dropped{queue_full} %v = %v, want %d", counts.queued, counts.droppedQueueFull, counts.queued+counts.droppedQueueFull, events)
	}

	release()
	counts = senderReadCounts(t).sub(before)
	if want := float64(waiting) + float64(limit); counts.droppedShutdown != want {
		t.Errorf("dropped{shutdown} grew by %v, want %v", counts.droppedShutdown, want)
	}
}
