package caddymodule

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
)

const unitHTML = "<!DOCTYPE html><html><head><title>Intro</title></head><body>Hello</body></html>"

// unitReaderFromRecorder is an httptest recorder with a ReadFrom method,
// as net/http's own writer has, that counts its calls.
type unitReaderFromRecorder struct {
	*httptest.ResponseRecorder
	readFromCalls int
}

func (w *unitReaderFromRecorder) ReadFrom(r io.Reader) (int64, error) {
	w.readFromCalls++
	return io.Copy(w.ResponseRecorder, r)
}

// unitInterimRecorder is an httptest recorder that records 1xx responses
// apart, with the headers they carried, and passes final ones on.
type unitInterimRecorder struct {
	*httptest.ResponseRecorder
	interim        []int
	interimHeaders []http.Header
}

func (w *unitInterimRecorder) WriteHeader(status int) {
	if status >= 100 && status < 200 {
		w.interim = append(w.interim, status)
		w.interimHeaders = append(w.interimHeaders, w.Header().Clone())
		return
	}
	w.ResponseRecorder.WriteHeader(status)
}

// unitBrowserRequest returns a GET from a browser for a page of
// docs.example.com.
func unitBrowserRequest(header http.Header) *http.Request {
	r := unitRequest(http.MethodGet, "/guide/intro")
	r.Host = "docs.example.com"
	r.Header.Set("User-Agent", unitChromeUA)
	r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	for name, values := range header {
		r.Header[name] = values
	}
	return r
}

func TestPageViewRecorder(t *testing.T) {
	html := func(rec *pageViewRecorder) {
		rec.Header().Set("Content-Type", "text/html; charset=utf-8")
		rec.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(rec, unitHTML)
	}
	withStatus := func(contentType string, status int) func(*pageViewRecorder) {
		return func(rec *pageViewRecorder) {
			rec.Header().Set("Content-Type", contentType)
			rec.WriteHeader(status)
			_, _ = io.WriteString(rec, unitHTML)
		}
	}
	upstreamCookie := func(line string) func(*pageViewRecorder) {
		return func(rec *pageViewRecorder) {
			rec.Header().Add("Set-Cookie", line)
			html(rec)
		}
	}
	const (
		wantNone = ""    // no visitor read
		wantNew  = "new" // a new UUID v4
	)

	tests := []struct {
		name         string
		config       Handler
		header       http.Header
		respond      func(rec *pageViewRecorder)
		wantPageView bool
		wantCookies  int
		wantID       string
		wantUserID   string
		wantReadFrom int
		wantStatus   int
	}{
		{name: "html new reader", respond: html, wantPageView: true, wantCookies: 1, wantID: wantNew},
		{
			name: "html with repeated WriteHeader",
			respond: func(rec *pageViewRecorder) {
				rec.Header().Set("Content-Type", "text/html")
				rec.WriteHeader(http.StatusOK)
				rec.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(rec, unitHTML)
			},
			wantPageView: true, wantCookies: 1, wantID: wantNew,
		},
		{name: "stylesheet", respond: withStatus("text/css", http.StatusOK)},
		{name: "not found page", respond: withStatus("text/html", http.StatusNotFound), wantStatus: http.StatusNotFound},
		{
			name: "write without WriteHeader sniffs html",
			respond: func(rec *pageViewRecorder) {
				_, _ = io.WriteString(rec, unitHTML)
			},
			wantPageView: true, wantCookies: 1, wantID: wantNew,
		},
		{
			name: "write without WriteHeader sniffs png",
			respond: func(rec *pageViewRecorder) {
				_, _ = rec.Write([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
			},
		},
		{
			name: "write without WriteHeader keeps content type",
			respond: func(rec *pageViewRecorder) {
				rec.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(rec, unitHTML)
			},
		},
		{
			name: "readfrom html",
			respond: func(rec *pageViewRecorder) {
				rec.Header().Set("Content-Type", "text/html")
				rec.WriteHeader(http.StatusOK)
				_, _ = rec.ReadFrom(strings.NewReader(unitHTML))
			},
			wantPageView: true, wantCookies: 1, wantID: wantNew,
		},
		{
			name: "readfrom html without WriteHeader",
			respond: func(rec *pageViewRecorder) {
				_, _ = rec.ReadFrom(strings.NewReader(unitHTML))
			},
			wantPageView: true, wantCookies: 1, wantID: wantNew,
		},
		{
			name: "readfrom stylesheet",
			respond: func(rec *pageViewRecorder) {
				rec.Header().Set("Content-Type", "text/css")
				rec.WriteHeader(http.StatusOK)
				_, _ = rec.ReadFrom(strings.NewReader(unitHTML))
			},
			wantReadFrom: 1,
		},
		{name: "upstream raw cookie", respond: upstreamCookie("ajs_anonymous_id=upstream-id; Path=/"), wantPageView: true, wantCookies: 1, wantID: "upstream-id"},
		{name: "upstream classic cookie", respond: upstreamCookie("ajs_anonymous_id=%22" + unitID + "%22; Path=/"), wantPageView: true, wantCookies: 1, wantID: unitID},
		{name: "upstream deletes cookie", respond: upstreamCookie("ajs_anonymous_id=; Max-Age=0"), wantPageView: true, wantCookies: 1, wantID: wantNew},
		{name: "upstream sets another cookie", respond: upstreamCookie("session=abc; Path=/"), wantPageView: true, wantCookies: 2, wantID: wantNew},
		{
			name:    "returning reader",
			header:  http.Header{"Cookie": {"ajs_anonymous_id=" + unitID + "; ajs_user_id=user-42"}},
			respond: html, wantPageView: true, wantID: unitID, wantUserID: "user-42",
		},
		{
			name:    "returning reader with classic cookie",
			header:  http.Header{"Cookie": {"ajs_anonymous_id=%22" + unitID + "%22"}},
			respond: html, wantPageView: true, wantID: unitID,
		},
		{
			name:   "revisit not modified",
			header: http.Header{"Cookie": {"ajs_anonymous_id=" + unitID}},
			respond: func(rec *pageViewRecorder) {
				rec.WriteHeader(http.StatusNotModified)
			},
			wantPageView: true, wantID: unitID, wantStatus: http.StatusNotModified,
		},
		{
			name:   "image not modified",
			header: http.Header{"Accept": {"image/avif,image/webp,*/*"}, "Sec-Fetch-Dest": {"image"}},
			respond: func(rec *pageViewRecorder) {
				rec.WriteHeader(http.StatusNotModified)
			},
			wantStatus: http.StatusNotModified,
		},
		{name: "prefetch", header: http.Header{"Sec-Purpose": {"prefetch"}}, respond: html},
		{name: "bot", header: http.Header{"User-Agent": {unitGooglebotUA}}, respond: html},
		{name: "consent missing", config: Handler{ConsentCookies: []ConsentCookie{{Name: "granted", Value: "yes"}}}, respond: html},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			config := tt.config
			config.WriteKey = unitWriteKey
			h, _ := unitProvision(t, config)
			w := &unitReaderFromRecorder{ResponseRecorder: httptest.NewRecorder()}
			rec := newPageViewRecorder(h, w, unitBrowserRequest(tt.header))
			defer rec.release()

			tt.respond(rec)

			res := w.Result()
			wantStatus := tt.wantStatus
			if wantStatus == 0 {
				wantStatus = http.StatusOK
			}
			if res.StatusCode != wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, wantStatus)
			}
			if wantStatus == http.StatusOK && w.Body.String() != unitHTML && !strings.HasPrefix(w.Body.String(), "\x89PNG") {
				t.Errorf("body = %q, want it passed on unchanged", w.Body.String())
			}
			if rec.pageView != tt.wantPageView {
				t.Errorf("pageView = %v, want %v", rec.pageView, tt.wantPageView)
			}
			cookies := res.Header.Values("Set-Cookie")
			if len(cookies) != tt.wantCookies {
				t.Errorf("got %d Set-Cookie headers, want %d: %q", len(cookies), tt.wantCookies, cookies)
			}
			if w.readFromCalls != tt.wantReadFrom {
				t.Errorf("underlying ReadFrom called %d times, want %d", w.readFromCalls, tt.wantReadFrom)
			}
			if rec.visitor.userID != tt.wantUserID {
				t.Errorf("userID = %q, want %q", rec.visitor.userID, tt.wantUserID)
			}

			id := rec.visitor.anonymousID
			switch tt.wantID {
			case wantNew:
				if parsed, err := uuid.Parse(id); err != nil || parsed.Version() != 4 {
					t.Errorf("anonymousID = %q, want a new UUID v4", id)
				}
			default:
				if id != tt.wantID {
					t.Errorf("anonymousID = %q, want %q", id, tt.wantID)
				}
			}

			// A cookie this handler set carries the id the event uses.
			if tt.wantID == wantNew && tt.wantCookies > 0 && !strings.Contains(strings.Join(cookies, "\n"), "Max-Age=0") {
				if !strings.Contains(strings.Join(cookies, "\n"), anonymousIDCookie+"="+id+";") {
					t.Errorf("Set-Cookie %q does not carry the event's id %q", cookies, id)
				}
			}
		})
	}
}

func TestPageViewRecorderSniffedContentType(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	w := httptest.NewRecorder()
	rec := newPageViewRecorder(h, w, unitBrowserRequest(nil))
	defer rec.release()

	_, _ = io.WriteString(rec, unitHTML)

	if got := w.Result().Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q, want the sniffed text/html; charset=utf-8", got)
	}
}

func TestPageViewRecorderClassicCookie(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey, CookieFormat: cookieFormatClassic})
	w := httptest.NewRecorder()
	rec := newPageViewRecorder(h, w, unitBrowserRequest(nil))
	defer rec.release()

	rec.Header().Set("Content-Type", "text/html")
	rec.WriteHeader(http.StatusOK)

	id := rec.visitor.anonymousID
	cookies := w.Result().Header.Values("Set-Cookie")
	if len(cookies) != 1 {
		t.Fatalf("got %d Set-Cookie headers, want 1: %q", len(cookies), cookies)
	}
	if want := anonymousIDCookie + "=%22" + id + "%22;"; !strings.HasPrefix(cookies[0], want) {
		t.Errorf("Set-Cookie = %q, want it to start with %q", cookies[0], want)
	}
	if strings.Contains(id, "%22") || strings.Contains(id, `"`) {
		t.Errorf("anonymousID = %q, want the bare id without quotes", id)
	}
}

func TestPageViewRecorderEarlyHints(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	w := &unitInterimRecorder{ResponseRecorder: httptest.NewRecorder()}
	rec := newPageViewRecorder(h, w, unitBrowserRequest(nil))
	defer rec.release()

	rec.Header().Set("Link", "</style.css>; rel=preload; as=style")
	rec.WriteHeader(http.StatusEarlyHints)
	rec.Header().Set("Content-Type", "text/html")
	rec.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(rec, unitHTML)

	if len(w.interim) != 1 || w.interim[0] != http.StatusEarlyHints {
		t.Fatalf("interim responses = %v, want [103]", w.interim)
	}
	if got := w.interimHeaders[0].Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("103 response carries Set-Cookie %q, want none", got)
	}
	res := w.Result()
	if res.StatusCode != http.StatusOK {
		t.Errorf("final status = %d, want 200", res.StatusCode)
	}
	if got := res.Header.Values("Set-Cookie"); len(got) != 1 {
		t.Errorf("final response has %d Set-Cookie headers, want 1: %q", len(got), got)
	}
	if !rec.pageView {
		t.Errorf("pageView = false after 103 then 200 HTML, want true")
	}
}

// TestPageViewRecorderEarlyHintsLoopback sends 103 then 200 through a real
// net/http server and client.
func TestPageViewRecorderEarlyHintsLoopback(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
		rec := newPageViewRecorder(h, w, r)
		defer rec.release()

		rec.Header().Set("Link", "</style.css>; rel=preload; as=style")
		rec.WriteHeader(http.StatusEarlyHints)
		rec.Header().Set("Content-Type", "text/html")
		rec.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(rec, unitHTML)
	}))
	defer server.Close()

	var interimStatus []int
	var interimCookies []string
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			interimStatus = append(interimStatus, code)
			interimCookies = append(interimCookies, header.Values("Set-Cookie")...)
			return nil
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, server.URL+"/guide/", nil)
	if err != nil {
		t.Fatalf("building the request: %v", err)
	}
	req.Header.Set("User-Agent", unitChromeUA)
	res, err := server.Client().Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()

	if len(interimStatus) != 1 || interimStatus[0] != http.StatusEarlyHints {
		t.Errorf("interim responses = %v, want [103]", interimStatus)
	}
	if len(interimCookies) != 0 {
		t.Errorf("103 response carries Set-Cookie %q, want none", interimCookies)
	}
	if res.StatusCode != http.StatusOK {
		t.Errorf("final status = %d, want 200", res.StatusCode)
	}
	if got := res.Header.Values("Set-Cookie"); len(got) != 1 {
		t.Errorf("final response has %d Set-Cookie headers, want 1: %q", len(got), got)
	}
	if string(body) != unitHTML {
		t.Errorf("body = %q, want %q", body, unitHTML)
	}
}

func TestPageViewRecorderUnwrap(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	w := httptest.NewRecorder()
	rec := newPageViewRecorder(h, w, unitBrowserRequest(nil))
	defer rec.release()

	rec.Header().Set("Content-Type", "text/css")
	rec.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(rec).Flush(); err != nil {
		t.Errorf("ResponseController.Flush: %v", err)
	}
	if !w.Flushed {
		t.Errorf("the underlying writer was not flushed through Unwrap")
	}
}

func TestPageViewRecorderRelease(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	rec := newPageViewRecorder(h, httptest.NewRecorder(), unitBrowserRequest(nil))
	rec.Header().Set("Content-Type", "text/html")
	rec.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(rec, unitHTML)
	if !rec.pageView {
		t.Fatalf("pageView = false before release, want true")
	}

	rec.release()

	checks := []struct {
		field string
		clear bool
	}{
		{"ResponseWriter", rec.ResponseWriter == nil},
		{"handler", rec.handler == nil},
		{"request", rec.request == nil},
		{"wroteHeader", !rec.wroteHeader},
		{"pageView", !rec.pageView},
		{"scanTitle", !rec.scanTitle},
		{"visitor", rec.visitor == visitor{}},
	}
	for _, c := range checks {
		if !c.clear {
			t.Errorf("%s is still set after release", c.field)
		}
	}

	// A recorder taken from the pool starts clean, whichever one it is.
	next := newPageViewRecorder(h, httptest.NewRecorder(), unitBrowserRequest(nil))
	defer next.release()
	if next.wroteHeader || next.pageView || next.scanTitle || next.visitor != (visitor{}) {
		t.Errorf("recorder from the pool carries state: %+v", next)
	}
	if next.Title() != (pageTitle{}) {
		t.Errorf("Title() = %+v before any response, want empty", next.Title())
	}
}

func TestPageViewRecorderTitleCache(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	cookie := http.Header{"Cookie": {"ajs_anonymous_id=" + unitID}}

	// serve sends body for path with the validators in validators, through
	// ReadFrom as file_server does, and returns the event's title, whether
	// the body was scanned, and whether it went to the underlying ReadFrom.
	serve := func(path string, status int, validators http.Header, body string) (title string, scanned, readFrom bool) {
		t.Helper()
		w := &unitReaderFromRecorder{ResponseRecorder: httptest.NewRecorder()}
		r := unitBrowserRequest(cookie)
		r.URL.Path = path
		rec := newPageViewRecorder(h, w, r)
		defer rec.release()

		rec.Header().Set("Content-Type", "text/html")
		for name, values := range validators {
			rec.Header()[name] = values
		}
		rec.WriteHeader(status)
		if status == http.StatusOK {
			_, _ = rec.ReadFrom(strings.NewReader(body))
			if w.Body.String() != body {
				t.Errorf("%s: body = %q, want it passed on unchanged", path, w.Body.String())
			}
		}
		if !rec.pageView {
			t.Fatalf("%s: not a page view", path)
		}
		return rec.Title().text, rec.scanTitle, w.readFromCalls > 0
	}
	page := func(title string) string {
		return "<!DOCTYPE html><html><head><title>" + title + "</title></head><body>Hello</body></html>"
	}
	etag := func(value string) http.Header { return http.Header{"Etag": {value}} }

	tests := []struct {
		name        string
		path        string
		status      int
		validators  http.Header
		body        string
		wantTitle   string
		wantScanned bool
	}{
		{"first view is scanned", "/a", http.StatusOK, etag(`"v1"`), page("First"), "First", true},
		{"same page and ETag comes from the cache", "/a", http.StatusOK, etag(`"v1"`), page("First"), "First", false},
		{"revalidation gets the cached title", "/a", http.StatusNotModified, etag(`"v1"`), "", "First", false},
		{"new ETag is scanned", "/a", http.StatusOK, etag(`"v2"`), page("Second"), "Second", true},
		{"new ETag is cached", "/a", http.StatusOK, etag(`"v2"`), page("Second"), "Second", false},
		{"other path with the same ETag is scanned", "/b", http.StatusOK, etag(`"v1"`), page("Other"), "Other", true},
		{"no validator is scanned", "/c", http.StatusOK, nil, page("Plain"), "Plain", true},
		{"no validator is scanned every time", "/c", http.StatusOK, nil, page("Plain"), "Plain", true},
		{"revalidation without validator has no title", "/c", http.StatusNotModified, nil, "", "", false},
		{"Last-Modified alone is scanned", "/d", http.StatusOK, http.Header{"Last-Modified": {"Tue, 01 Dec 2026 09:12:44 GMT"}}, page("Dated"), "Dated", true},
		{"Last-Modified alone is not cached", "/d", http.StatusOK, http.Header{"Last-Modified": {"Tue, 01 Dec 2026 09:12:44 GMT"}}, page("Dated"), "Dated", true},
		{"compressed by encode", "/g", http.StatusOK, http.Header{"Etag": {`"v1-gzip"`}, "Content-Encoding": {"gzip"}}, unitGzip(t, page("Zipped")), "Zipped", true},
		{"revalidation of a compressed page", "/g", http.StatusNotModified, etag(`"v1"`), "", "Zipped", false},
		{"unclosed title is not cached", "/e", http.StatusOK, etag(`"v1"`), "<html><head><title>Cut sho", "Cut sho", true},
		{"unclosed title is scanned again", "/e", http.StatusOK, etag(`"v1"`), "<html><head><title>Cut short</title>", "Cut short", true},
		{"page without title is not cached", "/f", http.StatusOK, etag(`"v1"`), "<html><body>No title</body></html>", "", true},
		{"page without title is scanned again", "/f", http.StatusOK, etag(`"v1"`), "<html><body>No title</body></html>", "", true},
	}
	for _, tt := range tests {
		title, scanned, readFrom := serve(tt.path, tt.status, tt.validators, tt.body)
		if title != tt.wantTitle {
			t.Errorf("%s: title = %q, want %q", tt.name, title, tt.wantTitle)
		}
		if scanned != tt.wantScanned {
			t.Errorf("%s: scanned = %v, want %v", tt.name, scanned, tt.wantScanned)
		}
		// A page's body goes through Write, scanned or not.
		if readFrom {
			t.Errorf("%s: the body went to the underlying ReadFrom, want Write", tt.name)
		}
	}
}

// unitGzip returns text compressed with gzip.
func unitGzip(t *testing.T, text string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := io.WriteString(w, text); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	return b.String()
}

// A title that the scanner cuts counts as a cut title in every event,
// also when it comes from the title cache.
func TestPageViewRecorderCutTitleCounted(t *testing.T) {
	h, _ := unitProvision(t, Handler{WriteKey: unitWriteKey})
	cuts := func() float64 { return senderMetricValue(t, fieldsTruncated.WithLabelValues("title")) }
	long := strings.Repeat("word ", 1000)
	body := "<html><head><title>" + long + "</title></head></html>"

	before := cuts()
	for view := range 2 {
		w := httptest.NewRecorder()
		r := unitBrowserRequest(http.Header{"Cookie": {"ajs_anonymous_id=" + unitID}})
		rec := newPageViewRecorder(h, w, r)
		rec.Header().Set("Content-Type", "text/html")
		rec.Header().Set("Etag", `"long"`)
		rec.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(rec, body)
		title := rec.Title()
		rec.release()

		if !title.cut || len(title.text) > titleMaxBytes {
			t.Errorf("view %d: title of %d bytes, cut = %v; want at most %d bytes, cut", view, len(title.text), title.cut, titleMaxBytes)
		}
		h.builder.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID}, title, time.Now()).message()
		if got := cuts() - before; got != float64(view+1) {
			t.Errorf("after view %d, %v title cuts counted, want %d", view, got, view+1)
		}
	}
}
