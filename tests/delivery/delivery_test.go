package delivery

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

func TestMetricsCountRequests(t *testing.T) {
	rec := startRecorder(t)
	settings := &segmentSettings{endpoint: rec.URL(), batchSize: 20, shutdownTimeout: "3s"}
	startCaddy(t, caddyfile(settings))
	releaseAtEnd(t)
	client := newPageClient()

	before := scrapeMetrics(t)
	if _, ok := before["caddy_segment_queue_depth"]; !ok {
		t.Errorf("the admin API serves no caddy_segment_queue_depth while the segment handler runs")
	}

	const pages, assets, prefetches = 7, 5, 3
	requests := []struct {
		kind  requestKind
		count int
		path  string
	}{
		{pageView, pages, "/guide/page-%d"},
		{asset, assets, "/assets/style-%d.css"},
		{prefetch, prefetches, "/guide/next-%d"},
	}
	for _, r := range requests {
		for i := range r.count {
			path := fmt.Sprintf(r.path, i)
			status, err := get(client, path, r.kind)
			if err != nil {
				t.Fatalf("GET %s failed: %v", path, err)
			}
			if status != http.StatusOK {
				t.Errorf("GET %s returned %d, expected 200", path, status)
			}
		}
	}

	events, err := rec.WaitEvents(pages, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	after := waitForMetric(t, before, "caddy_segment_events_delivered_total", pages)

	expectIncrease(t, after, before, map[string]float64{
		"caddy_segment_page_views_total":                          pages,
		"caddy_segment_events_queued_total":                       pages,
		"caddy_segment_events_delivered_total":                    pages,
		`caddy_segment_requests_skipped_total{reason="prefetch"}`: prefetches,
	})
	if dropped := after.increaseWithPrefix(before, "caddy_segment_events_dropped_total"); dropped != 0 {
		t.Errorf("caddy_segment_events_dropped_total increased by %v, expected no drop", dropped)
	}
	if failed := after.increaseWithPrefix(before, "caddy_segment_events_failed_total"); failed != 0 {
		t.Errorf("caddy_segment_events_failed_total increased by %v, expected no failure", failed)
	}
	if _, ok := after["caddy_segment_queue_depth"]; !ok {
		t.Errorf("the admin API serves no caddy_segment_queue_depth")
	}

	// Only page views are events: no asset and no prefetch.
	if len(events) != pages {
		t.Errorf("recorder contains %d events, expected %d, one per page view", len(events), pages)
	}
	for _, event := range events {
		if path := event.String("context.page.path"); !strings.HasPrefix(path, "/guide/page-") {
			t.Errorf("event for %q arrived, expected events only for the page views /guide/page-N", path)
		}
	}
}

func TestReloadsUnderLoad(t *testing.T) {
	rec := startRecorder(t)
	settings := segmentSettings{endpoint: rec.URL(), batchSize: 20, shutdownTimeout: "5s"}
	startCaddy(t, caddyfile(&settings))
	releaseAtEnd(t)
	client := newPageClient()

	// The workers keep loading pages until every reload is done and at least
	// minRequests were sent, so that the reloads happen under load.
	const workers, minRequests, maxRequests = 8, 2000, 50000
	var (
		statuses     = make([]int, maxRequests) // by request number; 0 when the request failed
		started      atomic.Int64
		completed    atomic.Int64
		reloadsDone  atomic.Bool
		abort        atomic.Bool // set when the test fails early
		requestErrMu sync.Mutex
		requestErrs  []string
	)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				if abort.Load() || (reloadsDone.Load() && started.Load() >= minRequests) {
					return
				}
				n := int(started.Add(1)) - 1
				if n >= maxRequests {
					return
				}
				status, err := get(client, "/load/page?req="+strconv.Itoa(n), pageView)
				statuses[n] = status
				if err != nil {
					requestErrMu.Lock()
					requestErrs = append(requestErrs, err.Error())
					requestErrMu.Unlock()
				}
				completed.Add(1)
			}
		})
	}
	defer func() {
		abort.Store(true)
		wg.Wait()
	}()

	// Each reload waits for 100 more completed requests, so that each config
	// serves some. The third changes batch_size, which starts a new sender
	// and stops the old one; the others keep the sender and only change the
	// rev property.
	const reloads = 5
	var reloadTimes []time.Duration
	for revision := 1; revision <= reloads; revision++ {
		target := completed.Load() + 100
		waitFor(t, "100 more completed page views", func() bool { return completed.Load() >= target })
		settings.revision = revision
		if revision == 3 {
			settings.batchSize = 25
		}
		took, err := loadConfig(caddyfile(&settings))
		if err != nil {
			t.Fatalf("reload %d failed: %v", revision, err)
		}
		reloadTimes = append(reloadTimes, took)
	}
	target := completed.Load() + 100
	waitFor(t, "100 page views after the last reload", func() bool { return completed.Load() >= target })
	reloadsDone.Store(true)
	wg.Wait()

	// A config without the handler releases the last sender, which delivers
	// what it still has queued before the load returns.
	took, err := loadConfig(caddyfile(nil))
	if err != nil {
		t.Fatalf("loading the Caddyfile without segment failed: %v", err)
	}

	// A request can fail with a connection reset while an old server closes
	// its connections during a reload. Such a request never reaches the
	// handler, so it has no event, and it is only logged.
	sent := min(int(started.Load()), maxRequests)
	served := make(map[string]bool) // query string of each page view that got a 200 response
	failed := make(map[string]bool) // query string of each page view that got no response
	for n := range sent {
		search := "?req=" + strconv.Itoa(n)
		switch statuses[n] {
		case http.StatusOK:
			served[search] = true
		case 0:
			failed[search] = true
		default:
			t.Errorf("page view %s returned %d, expected 200", search, statuses[n])
		}
	}
	events := rec.Events()
	t.Logf("page views sent: %d, responses with 200: %d, events received: %d, requests without a response: %d",
		sent, len(served), len(events), len(failed))
	t.Logf("reload durations: %v; release of the last sender: %s", reloadTimes, took)
	for i, err := range requestErrs[:min(len(requestErrs), 5)] {
		t.Logf("request without a response %d: %s", i+1, err)
	}

	perRequest := make(map[string]int)
	perRevision := make(map[string]int)
	for _, event := range events {
		perRequest[event.String("context.page.search")]++
		perRevision[event.String("properties.rev")]++
	}
	var notOnce, unexpected []string
	for search := range served {
		if perRequest[search] != 1 {
			notOnce = append(notOnce, fmt.Sprintf("%s (%d times)", search, perRequest[search]))
		}
	}
	for search, count := range perRequest {
		if !served[search] {
			unexpected = append(unexpected, fmt.Sprintf("%q (%d events, failed request: %t)", search, count, failed[search]))
		}
	}
	if len(notOnce) > 0 {
		slices.Sort(notOnce)
		t.Errorf("%d page views that got 200 did not arrive exactly once, expected one event each; first ones: %v",
			len(notOnce), notOnce[:min(len(notOnce), 10)])
	}
	if len(unexpected) > 0 {
		slices.Sort(unexpected)
		t.Errorf("events arrived for %d query strings without a 200 response, expected none because such a request never reached the handler; first ones: %v",
			len(unexpected), unexpected[:min(len(unexpected), 10)])
	}
	if len(events) != len(served) {
		t.Errorf("recorder contains %d events for %d page views that got 200, expected one each", len(events), len(served))
	}
	if dup := rec.Stats().DuplicateMessageIDs; dup != 0 {
		t.Errorf("recorder saw %d events whose messageId had arrived before, expected none", dup)
	}

	revisions := make([]string, 0, len(perRevision))
	for revision := range perRevision {
		revisions = append(revisions, revision)
	}
	slices.Sort(revisions)
	t.Logf("events per config revision: %v", perRevision)
	for revision := 0; revision <= reloads; revision++ {
		if perRevision[strconv.Itoa(revision)] == 0 {
			t.Errorf("no event came from config revision %d, expected each config to serve page views (revisions seen: %v)", revision, revisions)
		}
	}
}

func TestShutdownWithHungEndpoint(t *testing.T) {
	rec := startRecorder(t)
	rec.SetMode(recorder.Mode{Hang: true})
	settings := &segmentSettings{endpoint: rec.URL(), batchSize: 20, shutdownTimeout: "1s"}
	startCaddy(t, caddyfile(settings))
	releaseAtEnd(t)
	client := newPageClient()

	before := scrapeMetrics(t)

	const pages = 30
	for i := range pages {
		path := fmt.Sprintf("/hung/page-%d", i)
		status, err := get(client, path, pageView)
		if err != nil {
			t.Fatalf("GET %s while the endpoint hangs failed: %v", path, err)
		}
		if status != http.StatusOK {
			t.Errorf("GET %s while the endpoint hangs returned %d, expected 200", path, status)
		}
	}
	waitFor(t, "a batch request to the hung endpoint", func() bool { return rec.Stats().Requests > 0 })

	took, err := loadConfig(caddyfile(nil))
	if err != nil {
		t.Fatalf("loading the Caddyfile without segment failed: %v", err)
	}
	t.Logf("loading a config without segment, which stops a sender whose endpoint hangs (shutdown_timeout 1s), took %s", took)
	if limit := 10 * time.Second; took > limit {
		t.Errorf("loading a config without segment took %s, expected it to return within %s with shutdown_timeout 1s", took, limit)
	}

	// The collectors are served only while a config uses the handler, so a
	// dry-run config brings them back.
	if _, err := loadConfig(caddyfile(&segmentSettings{dryRun: true})); err != nil {
		t.Fatalf("loading the dry-run Caddyfile failed: %v", err)
	}
	after := scrapeMetrics(t)
	expectIncrease(t, after, before, map[string]float64{
		"caddy_segment_page_views_total":                        pages,
		"caddy_segment_events_queued_total":                     pages,
		"caddy_segment_events_delivered_total":                  0,
		`caddy_segment_events_dropped_total{reason="shutdown"}`: pages,
	})
	if failed := after.increaseWithPrefix(before, "caddy_segment_events_failed_total"); failed != 0 {
		t.Errorf("caddy_segment_events_failed_total increased by %v, expected the hung events to count as dropped at shutdown", failed)
	}
	if events := rec.Stats().Events; events != 0 {
		t.Errorf("recorder accepted %d events without sending a response, expected 0", events)
	}
}
