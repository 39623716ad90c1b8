package caddymodule

import (
	"fmt"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/segmentio/analytics-go/v3"
	"go.uber.org/zap"
)

// logInterval is the shortest time between two log lines about the same
// kind of repeated problem.
const logInterval = 10 * time.Second

// logLimiter lets one log line through per logInterval and counts the
// lines it held back. The zero value is ready to use.
type logLimiter struct {
	next       atomic.Int64 // Unix nanoseconds before which lines are held back
	suppressed atomic.Int64
}

// allow reports whether a line may be logged now and, if so, how many were
// held back since the last one.
func (l *logLimiter) allow() (bool, int64) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(logInterval)) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

// clientLogger carries analytics-go's log lines into Caddy's logger, at a
// bounded rate. analytics-go logs each failed attempt and the body of each
// error response; it never logs the write key.
type clientLogger struct{ s *sender }

// maxClientLogBytes caps a line from analytics-go, which can quote a whole
// rejected event or error response.
const maxClientLogBytes = 1024

// clientLine formats a line from analytics-go, cut to maxClientLogBytes.
func clientLine(format string, args ...any) string {
	line := fmt.Sprintf(format, args...)
	if len(line) <= maxClientLogBytes {
		return "analytics-go: " + line
	}
	cut := maxClientLogBytes
	for cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return "analytics-go: " + line[:cut] + " [truncated]"
}

func (l clientLogger) Logf(format string, args ...any) {
	if ok, suppressed := l.s.clientLog.allow(); ok {
		l.s.logger.Info(clientLine(format, args...),
			zap.String("endpoint_host", l.s.host), zap.Int64("suppressed_logs", suppressed))
	}
}

func (l clientLogger) Errorf(format string, args ...any) {
	if ok, suppressed := l.s.clientLog.allow(); ok {
		l.s.logger.Warn(clientLine(format, args...),
			zap.String("endpoint_host", l.s.host), zap.Int64("suppressed_logs", suppressed))
	}
}

// dryRunClient logs each event instead of sending it, filled in the way
// analytics-go fills it before sending.
type dryRunClient struct {
	logger   *zap.Logger
	callback analytics.Callback
}

func (c *dryRunClient) Enqueue(msg analytics.Message) error {
	switch m := msg.(type) {
	case *analytics.Track:
		msg = *m
	case *analytics.Page:
		msg = *m
	}
	switch m := msg.(type) {
	case analytics.Track:
		m.Type = "track"
		m.MessageId = uuid.NewString()
		msg = m
	case analytics.Page:
		m.Type = "page"
		m.MessageId = uuid.NewString()
		msg = m
	}
	c.logger.Info("Segment event (dry run, not sent)", zap.Any("event", msg))
	c.callback.Success(msg)
	return nil
}

func (c *dryRunClient) Close() error { return nil }

// Interface guards
var (
	_ analytics.Logger = clientLogger{}
	_ analytics.Client = (*dryRunClient)(nil)
)
