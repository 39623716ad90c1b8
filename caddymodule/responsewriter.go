package caddymodule

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// pageViewRecorder watches a response go by: it decides at WriteHeader
// whether the response is a page view, sets the reader's cookie before the
// headers leave, and looks for the page title in the body. It never holds
// the body back.
type pageViewRecorder struct {
	caddyhttp.ResponseWriterWrapper

	handler     *Handler
	request     *http.Request
	wroteHeader bool
	pageView    bool
	scanTitle   bool
	visitor     visitor
	titleKey    uint64    // the title's key in the handler's title cache, 0 for none
	knownTitle  pageTitle // the title from the cache
	headers     pageHeaders
	origin      origin
	at          time.Time // when the page response's header was written
	title       titleScanner
}

// Recorders are reused: a request that is not a page view should cost as
// little as possible.
var recorderPool = sync.Pool{New: func() any { return new(pageViewRecorder) }}

func newPageViewRecorder(h *Handler, w http.ResponseWriter, r *http.Request) *pageViewRecorder {
	rec := recorderPool.Get().(*pageViewRecorder)
	rec.ResponseWriter = w
	rec.handler = h
	rec.request = r
	return rec
}

// release returns the recorder to the pool. The caller must not use it, or
// anything read from it, afterwards.
func (rec *pageViewRecorder) release() {
	rec.ResponseWriter = nil
	rec.handler = nil
	rec.request = nil
	rec.wroteHeader = false
	rec.pageView = false
	if rec.scanTitle {
		// Hands an encoded body's buffer back to its pool.
		rec.title.reset("")
		rec.scanTitle = false
	}
	rec.visitor = visitor{}
	rec.titleKey = 0
	rec.knownTitle = pageTitle{}
	rec.headers = pageHeaders{}
	rec.origin = origin{}
	rec.at = time.Time{}
	recorderPool.Put(rec)
}

// WriteHeader decides whether the response is a page view and, for a new
// reader, adds the cookie while headers can still change.
func (rec *pageViewRecorder) WriteHeader(status int) {
	// 1xx responses such as 103 Early Hints are not final.
	if rec.wroteHeader || status < http.StatusOK {
		rec.ResponseWriter.WriteHeader(status)
		return
	}
	rec.wroteHeader = true

	header := rec.Header()
	if isPageResponse(rec.request, status, header) {
		rec.pageView = rec.handler.preparePageView(rec, header)
		// With gitbook_insights the beacon reports the page, so no title
		// is needed from the body. A page served again unchanged has its
		// title in the cache, and its body passes through unscanned.
		if rec.pageView && !rec.handler.GitBookInsights {
			titles := rec.handler.titles
			rec.titleKey = titles.key(rec.request, header)
			if title, ok := titles.get(rec.titleKey); ok {
				rec.knownTitle = title
			} else if status == http.StatusOK {
				rec.scanTitle = true
				rec.title.reset(headerValue(header, "Content-Encoding"))
			}
		}
	}
	rec.ResponseWriter.WriteHeader(status)
}

// Write passes the body on, showing it to the title scanner on the way. A
// body written without WriteHeader gets its Content-Type sniffed first, as
// net/http would, so the page-view decision can use it.
func (rec *pageViewRecorder) Write(p []byte) (int, error) {
	if !rec.wroteHeader {
		header := rec.Header()
		if _, set := header["Content-Type"]; !set && len(p) > 0 {
			header.Set("Content-Type", http.DetectContentType(p))
		}
		rec.WriteHeader(http.StatusOK)
	}
	if rec.scanTitle {
		rec.title.Write(p)
	}
	return rec.ResponseWriter.Write(p)
}

// ReadFrom keeps the underlying writer's fast path (such as sendfile) for
// responses that are not page views. A page's body goes through Write,
// whether its title is scanned or comes from the cache. Pages are small,
// and for them Write costs less: in the load test of BENCHMARKS.md, a
// 10 KB page takes 13 to 23 µs less CPU time than through net/http's
// ReadFrom.
func (rec *pageViewRecorder) ReadFrom(r io.Reader) (int64, error) {
	if rec.wroteHeader && !rec.pageView {
		return rec.ResponseWriterWrapper.ReadFrom(r)
	}
	return io.Copy(writerOnly{rec}, r)
}

// Title returns the page title found in the body or the cache, empty
// when there is none.
func (rec *pageViewRecorder) Title() pageTitle {
	if !rec.scanTitle {
		return rec.knownTitle
	}
	title := pageTitle{text: rec.title.Title(), cut: rec.title.titleCut}
	if rec.title.complete() {
		rec.handler.titles.put(rec.titleKey, title)
	}
	return title
}

// writerOnly hides ReadFrom so that io.Copy calls Write.
type writerOnly struct{ io.Writer }

// Interface guards
var (
	_ http.ResponseWriter = (*pageViewRecorder)(nil)
	_ io.ReaderFrom       = (*pageViewRecorder)(nil)
)
