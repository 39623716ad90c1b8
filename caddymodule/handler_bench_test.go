//go:build unix

package caddymodule

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/segmentio/analytics-go/v3"
	"go.uber.org/zap"
)

// The benchmarks need a Unix system, because BenchmarkDeliveredEvent reads
// the process's CPU time with getrusage.
//
// The request-path benchmarks run Handler.ServeHTTP with a provisioned
// handler, a request carrying the context values that Caddy's server sets,
// and a next handler that writes a small page through a minimal
// ResponseWriter. The handler's sender is replaced by one whose queue a
// goroutine empties and discards, so the figures hold the request path up
// to the queue and nothing of the delivery. BenchmarkBaselineNext is the
// next handler alone: the handler's cost is the difference.
//
//	go test -run xxx -bench . -benchmem ./caddymodule/

const (
	benchWriteKey  = "bench"
	benchReaderID  = "3f6c2a1e-8b4d-4e7a-9c2f-5d1b0a9e8c7f"
	benchClientIP  = "203.0.113.7"
	benchQueueSize = 100000
	benchUserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)

// Header values are assigned as shared slices, so the next handler
// allocates nothing and the baseline stays the writer's cost alone.
var (
	benchHTMLType = []string{"text/html; charset=utf-8"}
	benchCSSType  = []string{"text/css; charset=utf-8"}

	// file_server's validators for a file of 560 bytes.
	benchETag         = []string{`"sbbk1vfk"`}
	benchLastModified = []string{"Tue, 01 Dec 2026 09:12:44 GMT"}
)

var benchPage = []byte(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Install | Guide | Acme Docs</title>
<link rel="stylesheet" href="/assets/style.css">
<script src="/assets/app.js" defer></script>
</head>
<body>
<main>
<h1>Install</h1>
<p>Download the release for your platform and put the binary on your PATH.</p>
<p>Then run the server with the sample configuration and open the site.</p>
</main>
</body>
</html>
`)

var benchCSS = []byte("body { margin: 0; font-family: sans-serif; }\nmain { max-width: 48rem; margin: 0 auto; }\n")

// benchWriter is a ResponseWriter that keeps one header map and discards
// the body, so that the benchmarks measure the handler, not the writer.
type benchWriter struct {
	header http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.header }
func (w *benchWriter) WriteHeader(status int)      { w.status = status }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }

// benchNext returns a next handler that writes body with contentType
// through WriteHeader and Write. With validators, it sends an ETag and a
// Last-Modified date, as file_server does.
func benchNext(contentType []string, body []byte, validators bool) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		header := w.Header()
		header["Content-Type"] = contentType
		if validators {
			header["Etag"] = benchETag
			header["Last-Modified"] = benchLastModified
		}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(body)
		return err
	})
}

// benchRequest returns a browser's GET for a docs page with the values
// Caddy's server puts in the context: the replacer, the vars with the
// client IP and the trusted-proxy verdict, and the original request.
func benchRequest(path string, withCookie bool) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://docs.example.com"+path, nil)
	r.RemoteAddr = benchClientIP + ":51234"
	r.Header.Set("User-Agent", benchUserAgent)
	r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	r.Header.Set("Accept-Language", "en-US,en;q=0.9")
	r.Header.Set("Referer", "https://docs.example.com/guide/")
	if withCookie {
		r.Header.Set("Cookie", "ajs_anonymous_id="+benchReaderID)
	}

	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.ClientIPVarKey:     benchClientIP,
		caddyhttp.TrustedProxyVarKey: false,
	})
	ctx = context.WithValue(ctx, caddyhttp.OriginalRequestCtxKey, *r)
	return r.WithContext(ctx)
}

// benchDiscardingSender returns a sender whose queue a goroutine empties,
// counting and discarding each event. Its enqueue is the production code;
// the delivery behind the queue, from the build of the event's call on,
// is missing. BenchmarkEventMessage measures that build.
func benchDiscardingSender(b *testing.B) (*sender, *atomic.Int64) {
	s := &sender{
		config: senderConfig{queueSize: benchQueueSize},
		logger: zap.NewNop(),
		queue:  make(chan *event, benchQueueSize),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	var discarded atomic.Int64
	go func() {
		defer close(s.done)
		for {
			select {
			case e := <-s.queue:
				e.release()
				discarded.Add(1)
			case <-s.stop:
				return
			}
		}
	}()
	b.Cleanup(func() {
		close(s.stop)
		<-s.done
	})
	return s, &discarded
}

// benchHandler provisions a handler with production settings, pointed at
// a loopback recorder, and swaps its sender for a discarding one. The
// pooled sender from Provision is released when the benchmark ends.
func benchHandler(b *testing.B) (*Handler, *sender, *atomic.Int64) {
	rec, err := recorder.Start(recorder.Options{WriteKey: benchWriteKey})
	if err != nil {
		b.Fatalf("starting the recorder failed: %v", err)
	}
	b.Cleanup(rec.Close)

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	h := &Handler{WriteKey: benchWriteKey, Endpoint: rec.URL()}
	if err := h.Provision(ctx); err != nil {
		b.Fatalf("Provision failed: %v", err)
	}

	discarding, discarded := benchDiscardingSender(b)
	pooled := h.sender
	h.sender = discarding
	b.Cleanup(func() {
		h.sender = pooled
		if err := h.Cleanup(); err != nil {
			b.Errorf("Cleanup failed: %v", err)
		}
	})
	return h, discarding, discarded
}

// benchServe runs ServeHTTP in a loop after one checked request, and then
// checks that every page view reached the queue and none was dropped.
func benchServe(b *testing.B, r *http.Request, next caddyhttp.Handler, wantPageView, wantCookie bool) {
	h, s, discarded := benchHandler(b)
	w := &benchWriter{header: http.Header{}}

	if err := h.ServeHTTP(w, r, next); err != nil {
		b.Fatalf("ServeHTTP failed: %v", err)
	}
	if w.status != http.StatusOK {
		b.Fatalf("status %d, want 200", w.status)
	}
	if got := len(w.header["Set-Cookie"]) > 0; got != wantCookie {
		b.Fatalf("Set-Cookie present = %v, want %v: the request does not exercise the intended path", got, wantCookie)
	}
	delete(w.header, "Set-Cookie")
	benchWaitDiscarded(b, discarded, 1, wantPageView)

	b.ReportAllocs()
	for b.Loop() {
		if err := h.ServeHTTP(w, r, next); err != nil {
			b.Fatalf("ServeHTTP failed: %v", err)
		}
		delete(w.header, "Set-Cookie")
	}
	b.StopTimer()

	if dropped := s.droppedFull.Load(); dropped != 0 {
		b.Fatalf("%d events were dropped because the queue was full: the benchmark measured drops, not the queueing of events", dropped)
	}
	benchWaitDiscarded(b, discarded, int64(b.N)+1, wantPageView)
}

// benchWaitDiscarded waits until the discarding sender has seen n messages
// when page views are expected, and checks that it saw none otherwise.
func benchWaitDiscarded(b *testing.B, discarded *atomic.Int64, n int64, wantPageView bool) {
	if !wantPageView {
		if got := discarded.Load(); got != 0 {
			b.Fatalf("%d events were queued, want none: the response must not count as a page view", got)
		}
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for discarded.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d events were queued after %d page views, want one per page view", discarded.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// The page-view benchmarks serve the page with file_server's validators,
// so from the second request on its title comes from the title cache. The
// Scanned ones serve it without validators, as an upstream may, so the
// title is read from the body every time.

func BenchmarkPageViewReturningReader(b *testing.B) {
	benchServe(b, benchRequest("/guide/install.html", true), benchNext(benchHTMLType, benchPage, true), true, false)
}

func BenchmarkPageViewNewReader(b *testing.B) {
	benchServe(b, benchRequest("/guide/install.html", false), benchNext(benchHTMLType, benchPage, true), true, true)
}

func BenchmarkPageViewReturningReaderScanned(b *testing.B) {
	benchServe(b, benchRequest("/guide/install.html", true), benchNext(benchHTMLType, benchPage, false), true, false)
}

func BenchmarkPageViewNewReaderScanned(b *testing.B) {
	benchServe(b, benchRequest("/guide/install.html", false), benchNext(benchHTMLType, benchPage, false), true, true)
}

func BenchmarkAsset(b *testing.B) {
	benchServe(b, benchRequest("/assets/style.css", true), benchNext(benchCSSType, benchCSS, true), false, false)
}

// BenchmarkBaselineNext runs the next handler of BenchmarkPageViewReturningReader
// alone, with the same writer and request.
func BenchmarkBaselineNext(b *testing.B) {
	r := benchRequest("/guide/install.html", true)
	next := benchNext(benchHTMLType, benchPage, true)
	w := &benchWriter{header: http.Header{}}

	b.ReportAllocs()
	for b.Loop() {
		if err := next.ServeHTTP(w, r); err != nil {
			b.Fatalf("next handler failed: %v", err)
		}
		delete(w.header, "Set-Cookie")
	}
}

// benchMessage keeps the calls that BenchmarkEventMessage builds, so that
// the compiler cannot leave out their construction.
var benchMessage analytics.Message

// BenchmarkEventMessage measures the build of a page view's analytics-go
// call from its event: the first step of the delivery, which the sender's
// goroutine takes before it hands the call to analytics-go.
func BenchmarkEventMessage(b *testing.B) {
	h := &Handler{WriteKey: benchWriteKey, Endpoint: "http://127.0.0.1:1"}
	if err := h.setDefaults(); err != nil {
		b.Fatalf("setDefaults failed: %v", err)
	}
	builder := newEventBuilder(h)
	r := benchRequest("/guide/install.html", true)
	headers := readPageHeaders(r.Header)
	e := builder.fromPage(r, &headers, originOf(r), readVisitor(headers.cookies), pageTitle{text: "Install | Guide | Acme Docs"}, time.Now())

	b.ReportAllocs()
	for b.Loop() {
		benchMessage = e.message()
	}
}

// BenchmarkDeliveredEvent measures the background cost of one event: the
// sender goroutine, analytics-go's encoding and batching, and the POST to
// a loopback endpoint, from the enqueue of b.N page-view events until the
// endpoint has received all of them. The sender uses the default batch
// size; its stop flushes the last batch at once. Besides the wall time
// per event (ns/op), the work runs on several goroutines in parallel, so
// cpu-ns/op reports the CPU time of the whole process per event. Both,
// and the allocations, include the endpoint's work in this process:
// "recorder" decodes and validates every event, "counting-endpoint" only
// counts them.
func BenchmarkDeliveredEvent(b *testing.B) {
	b.Run("recorder", func(b *testing.B) {
		rec, err := recorder.Start(recorder.Options{WriteKey: benchWriteKey})
		if err != nil {
			b.Fatalf("starting the recorder failed: %v", err)
		}
		defer rec.Close()
		benchDeliver(b, rec.URL(), func() int64 { return int64(rec.Stats().Events) })
	})

	b.Run("counting-endpoint", func(b *testing.B) {
		var received atomic.Int64
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			// Every event has a messageId, and so does the batch itself.
			received.Add(int64(bytes.Count(body, []byte(`"messageId"`)) - 1))
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"success":true}`)
		}))
		defer server.Close()
		benchDeliver(b, server.URL, received.Load)
	})
}

// benchDeliver enqueues b.N copies of a page-view event on a new sender
// for endpoint, stops the sender, which delivers the rest, and checks that
// received reports every event.
func benchDeliver(b *testing.B, endpoint string, received func() int64) {
	h := &Handler{WriteKey: benchWriteKey, Endpoint: endpoint}
	if err := h.setDefaults(); err != nil {
		b.Fatalf("setDefaults failed: %v", err)
	}
	builder := newEventBuilder(h)
	r := benchRequest("/guide/install.html", true)
	headers := readPageHeaders(r.Header)
	page := *builder.fromPage(r, &headers, originOf(r), readVisitor(headers.cookies), pageTitle{text: "Install | Guide | Acme Docs"}, time.Now())

	cfg := h.config
	cfg.queueSize = max(b.N, 1)
	cfg.shutdownTimeout = time.Minute
	s, err := newSender(cfg)
	if err != nil {
		b.Fatalf("newSender failed: %v", err)
	}
	s.logger = zap.NewNop()

	b.ReportAllocs()
	b.ResetTimer()
	cpuBefore := benchCPUTime(b)
	for range b.N {
		// The sender recycles each event it delivers, so each enqueue
		// needs its own, as each page view has.
		e := new(event)
		*e = page
		s.enqueue(e)
	}
	if err := s.Destruct(); err != nil {
		b.Fatalf("stopping the sender failed: %v", err)
	}
	cpu := benchCPUTime(b) - cpuBefore
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")

	if got := received(); got != int64(b.N) {
		b.Fatalf("the endpoint received %d events, want %d (dropped while queued: %d, at shutdown: %d, failed: %d)",
			got, b.N, s.droppedFull.Load(), s.droppedStopping.Load(), s.failed.Load())
	}
}

// benchCPUTime returns the user plus system CPU time of the process.
func benchCPUTime(b *testing.B) time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		b.Fatalf("getrusage failed: %v", err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
