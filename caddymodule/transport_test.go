package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/segmentio/analytics-go/v3"
)

// TestTransportSplitsOversizedBatch sends events whose batch, as
// analytics-go cuts it, is over Segment's 500,000-byte limit, and checks
// that every event arrives and the recorder refused nothing.
func TestTransportSplitsOversizedBatch(t *testing.T) {
	rec := senderStartRecorder(t)
	before := senderReadCounts(t)

	cfg := senderTestConfig(rec.URL())
	cfg.batchSize = maxBatchSize
	cfg.flushInterval = time.Second
	cfg.queueSize = 5000
	s, release := senderStart(t, cfg)

	// About 200 bytes each: analytics-go fills a batch with some 2,400
	// of them before it reaches 500,000 bytes, plus one comma per event.
	const events = 2400
	padding := strings.Repeat("p", 120)
	for i := range events {
		e := senderEvent(i)
		e.props = analytics.Properties{"n": i, "padding": padding}
		s.enqueue(e)
	}
	release()

	stats := rec.Stats()
	if len(stats.Rejected) != 0 {
		t.Errorf("recorder rejected requests: %v, want none", stats.Rejected)
	}
	if stats.Events != events {
		t.Errorf("recorder accepted %d events, want %d", stats.Events, events)
	}
	if stats.DuplicateMessageIDs != 0 {
		t.Errorf("recorder saw %d duplicate messageIds, want 0", stats.DuplicateMessageIDs)
	}
	if stats.Batches < 2 {
		t.Errorf("recorder accepted %d batches, want at least 2 halves", stats.Batches)
	}
	if got := senderReadCounts(t).sub(before).delivered; got != events {
		t.Errorf("delivered counter grew by %v, want %d", got, events)
	}
}
