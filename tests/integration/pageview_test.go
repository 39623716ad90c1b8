package integration

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// pageViewCase is one request and whether it must count as a page view.
type pageViewCase struct {
	name       string
	req        request
	repeat     int // number of identical requests; 1 when zero
	wantStatus int
	pageView   bool // each request yields exactly one event, else none
}

// runPageViewCases sends each case, checks its status and cookie, and
// counts its events with a marker page view at markerPath.
func runPageViewCases(t *testing.T, cases []pageViewCase, markerPath string) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			repeat := max(tc.repeat, 1)
			for range repeat {
				resp := send(t, tc.req)
				if resp.status != tc.wantStatus {
					t.Fatalf("status = %d, expected %d", resp.status, tc.wantStatus)
				}
				cookies := anonymousIDCookies(resp.header)
				switch {
				case tc.pageView && len(cookies) != 1:
					t.Errorf("a page view for a new reader sets %d ajs_anonymous_id cookies, expected 1: %q", len(cookies), resp.header.Values("Set-Cookie"))
				case !tc.pageView && len(cookies) != 0:
					t.Errorf("a request that is not a page view sets an ajs_anonymous_id cookie: %q", resp.header.Values("Set-Cookie"))
				}
			}

			want := 0
			if tc.pageView {
				want = repeat
			}
			events := eventsWithMarker(t, markerPath, want)
			if len(events) != want {
				t.Fatalf("got %d events, expected %d: %v", len(events), want, events)
			}

			wantPath, _, _ := strings.Cut(tc.req.target, "?")
			for i, event := range events {
				if got := event.String("context.page.path"); got != wantPath {
					t.Errorf("event %d: context.page.path = %q, expected %q", i, got, wantPath)
				}
			}
		})
	}
}

func TestFileServerPageViews(t *testing.T) {
	root := writeSite(t, "docs")
	startCaddy(t, caddyfile("", "\troot * "+root+"\n\t"+segmentBlock()+"\n\tfile_server"))

	// The ETags come from a first visit, whose event is drained here.
	pageETag := get(t, "/guide.html", nil).header.Get("Etag")
	imageETag := get(t, "/logo.png", nil).header.Get("Etag")
	if pageETag == "" || imageETag == "" {
		t.Fatalf("file_server sent no ETag (page %q, image %q); the 304 cases need one", pageETag, imageETag)
	}
	eventsWithMarker(t, "/", 1)

	acceptHTML := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	acceptImage := "image/avif,image/webp,image/apng,*/*;q=0.8"

	cases := []pageViewCase{
		{name: "HTML page", req: request{target: "/guide.html"}, wantStatus: 200, pageView: true},
		{name: "site root index", req: request{target: "/"}, wantStatus: 200, pageView: true},
		{name: "directory index", req: request{target: "/docs/"}, wantStatus: 200, pageView: true},
		{name: "three views of one page", req: request{target: "/guide.html"}, repeat: 3, wantStatus: 200, pageView: true},
		{name: "page with query", req: request{target: "/guide.html?tab=1"}, wantStatus: 200, pageView: true},
		{name: "directory redirect", req: request{target: "/docs"}, wantStatus: 308},
		{name: "stylesheet", req: request{target: "/style.css"}, wantStatus: 200},
		{name: "script", req: request{target: "/app.js"}, wantStatus: 200},
		{name: "PNG image", req: request{target: "/logo.png"}, wantStatus: 200},
		{name: "JSON file", req: request{target: "/data.json"}, wantStatus: 200},
		{name: "missing page", req: request{target: "/missing.html"}, wantStatus: 404},
		{name: "HEAD of a page", req: request{method: http.MethodHead, target: "/guide.html"}, wantStatus: 200},
		{name: "POST to a page", req: request{method: http.MethodPost, target: "/guide.html", body: "a=1"}, wantStatus: 405},
		{
			name:       "Sec-Purpose prefetch",
			req:        request{target: "/guide.html", header: http.Header{"Sec-Purpose": {"prefetch"}}},
			wantStatus: 200,
		},
		{
			name:       "Sec-Purpose prerender",
			req:        request{target: "/guide.html", header: http.Header{"Sec-Purpose": {"prefetch;prerender"}}},
			wantStatus: 200,
		},
		{
			name:       "Purpose prefetch",
			req:        request{target: "/guide.html", header: http.Header{"Purpose": {"prefetch"}}},
			wantStatus: 200,
		},
		{
			name:       "X-Moz prefetch",
			req:        request{target: "/guide.html", header: http.Header{"X-Moz": {"prefetch"}}},
			wantStatus: 200,
		},
		{
			name:       "React Server Component request",
			req:        request{target: "/guide.html", header: http.Header{"Rsc": {"1"}}},
			wantStatus: 200,
		},
		{
			name:       "Global Privacy Control",
			req:        request{target: "/guide.html", header: http.Header{"Sec-Gpc": {"1"}}},
			wantStatus: 200,
		},
		{
			name:       "crawler User-Agent",
			req:        request{target: "/guide.html", header: http.Header{"User-Agent": {"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}}},
			wantStatus: 200,
		},
		{
			name:       "missing User-Agent",
			req:        request{target: "/guide.html", header: http.Header{"User-Agent": {""}}},
			wantStatus: 200,
		},
		{
			name: "304 revisit of a page asking for HTML",
			req: request{target: "/guide.html", header: http.Header{
				"If-None-Match": {pageETag},
				"Accept":        {acceptHTML},
			}},
			wantStatus: 304,
			pageView:   true,
		},
		{
			name: "304 revisit of a page as a document",
			req: request{target: "/guide.html", header: http.Header{
				"If-None-Match":  {pageETag},
				"Sec-Fetch-Dest": {"document"},
			}},
			wantStatus: 304,
			pageView:   true,
		},
		{
			name: "304 of a page not asking for HTML",
			req: request{target: "/guide.html", header: http.Header{
				"If-None-Match": {pageETag},
				"Accept":        {"*/*"},
			}},
			wantStatus: 304,
		},
		{
			name: "304 of an image",
			req: request{target: "/logo.png", header: http.Header{
				"If-None-Match": {imageETag},
				"Accept":        {acceptImage},
			}},
			wantStatus: 304,
		},
	}
	runPageViewCases(t, cases, "/")
}

// upstreamAnonymousID is the id that the proxied upstream sets in its own
// ajs_anonymous_id cookie.
const upstreamAnonymousID = "0d9b6c1e-3f7a-4b2c-9e8d-5a4b3c2d1e0f"

// zippedPage is the HTML that the upstream serves gzip-encoded.
const zippedPage = "<!doctype html><html><head><title>Zipped</title></head><body>zipped</body></html>"

// startUpstream starts an HTTP server on 127.0.0.1 that plays a docs site
// behind reverse_proxy.
func startUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	html := func(w http.ResponseWriter, body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, body)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/page.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		html(w, "<!doctype html><html><head><title>Proxied</title></head><body>proxied</body></html>")
	})
	mux.HandleFunc("/style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		_, _ = io.WriteString(w, "body { color: black; }")
	})
	mux.HandleFunc("/api/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok": true}`)
	})
	mux.HandleFunc("/missing.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "<!doctype html><title>Not found</title>")
	})
	mux.HandleFunc("/own-cookie.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "ajs_anonymous_id="+upstreamAnonymousID+"; Path=/; Max-Age=600")
		html(w, "<!doctype html><title>Own cookie</title>")
	})
	mux.HandleFunc("/own-classic-cookie.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "ajs_anonymous_id=%22"+upstreamAnonymousID+"%22; Path=/; Max-Age=600")
		html(w, "<!doctype html><title>Own classic cookie</title>")
	})
	mux.HandleFunc("/zipped.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, zippedPage)
		_ = zw.Close()
	})

	upstream := httptest.NewServer(mux)
	t.Cleanup(upstream.Close)
	return upstream
}

func TestReverseProxyPageViews(t *testing.T) {
	upstream := startUpstream(t)
	startCaddy(t, caddyfile("", "\t"+segmentBlock()+"\n\treverse_proxy "+upstream.Listener.Addr().String()))

	cases := []pageViewCase{
		{name: "HTML page", req: request{target: "/page.html"}, wantStatus: 200, pageView: true},
		{name: "two views of one page", req: request{target: "/page.html"}, repeat: 2, wantStatus: 200, pageView: true},
		{name: "stylesheet", req: request{target: "/style.css"}, wantStatus: 200},
		{name: "JSON API", req: request{target: "/api/data"}, wantStatus: 200},
		{name: "HTML 404 from upstream", req: request{target: "/missing.html"}, wantStatus: 404},
		{name: "HEAD of a page", req: request{method: http.MethodHead, target: "/page.html"}, wantStatus: 200},
		{name: "POST to a page", req: request{method: http.MethodPost, target: "/page.html", body: "a=1"}, wantStatus: 200},
		{
			name:       "Sec-Purpose prefetch",
			req:        request{target: "/page.html", header: http.Header{"Sec-Purpose": {"prefetch"}}},
			wantStatus: 200,
		},
		{
			name:       "Purpose prefetch",
			req:        request{target: "/page.html", header: http.Header{"Purpose": {"prefetch"}}},
			wantStatus: 200,
		},
		{
			name:       "X-Moz prefetch",
			req:        request{target: "/page.html", header: http.Header{"X-Moz": {"prefetch"}}},
			wantStatus: 200,
		},
		{
			name: "304 revisit of a page asking for HTML",
			req: request{target: "/page.html", header: http.Header{
				"If-None-Match": {`"v1"`},
				"Accept":        {"text/html"},
			}},
			wantStatus: 304,
			pageView:   true,
		},
		{
			name: "304 not asking for HTML",
			req: request{target: "/page.html", header: http.Header{
				"If-None-Match": {`"v1"`},
				"Accept":        {"image/webp,*/*"},
			}},
			wantStatus: 304,
		},
		{name: "gzip-encoded HTML page", req: request{target: "/zipped.html"}, wantStatus: 200, pageView: true},
	}
	runPageViewCases(t, cases, "/page.html")

	t.Run("upstream sets the cookie", func(t *testing.T) {
		for _, target := range []string{"/own-cookie.html", "/own-classic-cookie.html"} {
			rec.Reset()
			resp := get(t, target, nil)
			if resp.status != http.StatusOK {
				t.Fatalf("GET %s: status = %d, expected 200", target, resp.status)
			}
			got := onlyAnonymousIDCookie(t, resp.header)
			if !strings.Contains(got.value, upstreamAnonymousID) {
				t.Errorf("GET %s: the only ajs_anonymous_id cookie has value %q, expected the upstream's %q", target, got.value, upstreamAnonymousID)
			}
			event := waitEvent(t)
			if id := event.String("anonymousId"); id != upstreamAnonymousID {
				t.Errorf("GET %s: anonymousId = %q, expected the upstream's id %q", target, id, upstreamAnonymousID)
			}
		}
	})

	t.Run("gzip body passes unchanged", func(t *testing.T) {
		rec.Reset()
		resp := get(t, "/zipped.html", http.Header{"Accept-Encoding": {"gzip"}})
		if got := resp.header.Get("Content-Encoding"); got != "gzip" {
			t.Fatalf("Content-Encoding = %q, expected the upstream's gzip", got)
		}
		zr, err := gzip.NewReader(bytes.NewReader([]byte(resp.body)))
		if err != nil {
			t.Fatalf("the response body is not gzip: %v", err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("decoding the gzip body failed: %v", err)
		}
		if string(plain) != zippedPage {
			t.Errorf("decoded body = %q, expected the upstream's page %q", plain, zippedPage)
		}

		event := waitEvent(t)
		checkTitle(t, event, "Zipped")
	})
}

func TestNextHandlerErrorsPassThrough(t *testing.T) {
	root := writeSite(t)
	site := "\troot * " + root + "\n\t" + segmentBlock() + `
	error /forbidden/* "Forbidden by test" 403
	file_server
	handle_errors {
		respond "handled {err.status_code} {err.message}"
	}`
	startCaddy(t, caddyfile("", site))

	cases := []struct {
		name       string
		target     string
		wantStatus int
		wantBody   string
	}{
		{name: "file_server 404", target: "/missing.html", wantStatus: 404, wantBody: "handled 404 "},
		{name: "error directive 403", target: "/forbidden/page.html", wantStatus: 403, wantBody: "handled 403 Forbidden by test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			resp := get(t, tc.target, http.Header{"Accept": {"text/html"}})
			if resp.status != tc.wantStatus {
				t.Errorf("status = %d, expected %d from the next handler", resp.status, tc.wantStatus)
			}
			if !strings.HasPrefix(resp.body, tc.wantBody) {
				t.Errorf("body = %q, expected the error handler's %q", resp.body, tc.wantBody)
			}
			if cookies := anonymousIDCookies(resp.header); len(cookies) != 0 {
				t.Errorf("an error response sets an ajs_anonymous_id cookie: %q", resp.header.Values("Set-Cookie"))
			}
			if events := eventsWithMarker(t, "/", 0); len(events) != 0 {
				t.Errorf("an error response produced %d events, expected none: %v", len(events), events)
			}
		})
	}
}
