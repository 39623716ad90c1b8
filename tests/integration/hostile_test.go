package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

// Field limits of the handler, in bytes of JSON-encoded text.
const (
	maxURLBytes       = 2048
	maxPathBytes      = 1024
	maxSearchBytes    = 1024
	maxReferrerBytes  = 2048
	maxUserAgentBytes = 1024
)

// jsonLength returns the length of s as a JSON string without its quotes,
// as encoding/json writes it.
func jsonLength(t *testing.T, s string) int {
	t.Helper()
	encoded, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("encoding %.40q as JSON failed: %v", s, err)
	}
	return len(encoded) - 2
}

// checkCut asserts that the field at path was cut to at most limit bytes
// of JSON and still starts with prefix.
func checkCut(t *testing.T, event recorder.Event, path string, limit int, prefix string) {
	t.Helper()
	got := event.String(path)
	if n := jsonLength(t, got); n > limit {
		t.Errorf("%s is %d bytes of JSON, expected at most %d", path, n, limit)
	}
	if !strings.HasPrefix(got, prefix) {
		t.Errorf("%s = %.80q…, expected it to start with %.80q", path, got, prefix)
	}
}

// checkEventSize asserts that the event's JSON stays under Segment's limit
// of 32 KB per event.
func checkEventSize(t *testing.T, event recorder.Event) {
	t.Helper()
	encoded, err := json.Marshal(event)
	if err != nil {
		t.Fatalf("encoding the event as JSON failed: %v", err)
	}
	if len(encoded) >= recorder.MaxEventBytes {
		t.Errorf("event is %d bytes of JSON, expected under %d", len(encoded), recorder.MaxEventBytes)
	}
}

// sendRaw writes a request to Caddy over a plain TCP connection, so that
// bytes the Go client would escape or reject reach the server unchanged,
// and returns the response status.
func sendRaw(t *testing.T, raw string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:9080", 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to Caddy failed: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("setting the connection deadline failed: %v", err)
	}
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatalf("writing the raw request failed: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response to the raw request failed: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestHostileInput(t *testing.T) {
	root := writeSite(t)
	// Every path under /hostile/ serves the guide page, so that a long path
	// is a page view whose event reports the path the reader requested.
	site := "\troot * " + root + `
	rewrite /hostile/* /guide.html
	` + segmentBlock() + `
	file_server`
	// Caddy's default limit of 16 KB of request headers would stop the
	// largest headers before they reach the handler.
	global := `	servers {
		max_header_size 1MB
	}`
	startCaddy(t, caddyfile(global, site))

	const anonymousID = "2b6f0cc9-04a3-4c8e-9b1d-7e5f3a2c1d0b"
	longPath := "/hostile/" + strings.Repeat("a", 8192)
	longQuery := "?q=" + strings.Repeat("b", 8192)
	longReferrer := "https://example.net/" + strings.Repeat("r", 64<<10)
	longUserAgent := browserUA + " " + strings.Repeat("u", 64<<10)

	var manyCookies []string
	for i := range 300 {
		manyCookies = append(manyCookies, fmt.Sprintf("cookie%d=value%d", i, i))
	}
	manyCookies = append(manyCookies, "ajs_anonymous_id="+anonymousID)

	cases := []struct {
		name   string
		req    request
		check  func(t *testing.T, event recorder.Event)
		wantID string // anonymousId when the request carries one
	}{
		{
			name: "8 KB path",
			req:  request{target: longPath},
			check: func(t *testing.T, event recorder.Event) {
				checkCut(t, event, "context.page.url", maxURLBytes, siteURL+"/hostile/aaaa")
				checkCut(t, event, "context.page.path", maxPathBytes, "/hostile/aaaa")
			},
		},
		{
			name: "8 KB query",
			req:  request{target: "/guide.html" + longQuery},
			check: func(t *testing.T, event recorder.Event) {
				checkCut(t, event, "context.page.url", maxURLBytes, siteURL+"/guide.html?q=bbbb")
				checkCut(t, event, "context.page.search", maxSearchBytes, "?q=bbbb")
			},
		},
		{
			name: "query of HTML-sensitive characters",
			req:  request{target: "/guide.html?q=" + strings.Repeat("<", 2000)},
			check: func(t *testing.T, event recorder.Event) {
				checkCut(t, event, "context.page.search", maxSearchBytes, "?q=<<<")
				checkCut(t, event, "context.page.url", maxURLBytes, siteURL+"/guide.html?q=<<<")
			},
		},
		{
			name: "encoded invalid UTF-8 in query",
			req:  request{target: "/guide.html?q=%ff%fe%c3"},
			check: func(t *testing.T, event recorder.Event) {
				checkFields(t, event, []field{{"context.page.search", "?q=%ff%fe%c3"}})
			},
		},
		{
			name: "64 KB Referer",
			req:  request{target: "/guide.html", header: http.Header{"Referer": {longReferrer}}},
			check: func(t *testing.T, event recorder.Event) {
				checkCut(t, event, "context.page.referrer", maxReferrerBytes, "https://example.net/rrrr")
			},
		},
		{
			name: "64 KB User-Agent",
			req:  request{target: "/guide.html", header: http.Header{"User-Agent": {longUserAgent}}},
			check: func(t *testing.T, event recorder.Event) {
				checkCut(t, event, "context.userAgent", maxUserAgentBytes, browserUA)
			},
		},
		{
			name: "invalid UTF-8 in Referer and User-Agent",
			req: request{target: "/guide.html", header: http.Header{
				"Referer":    {"https://example.net/\xff\xfe/page"},
				"User-Agent": {browserUA + " \xc3\x28"},
			}},
			check: func(t *testing.T, event recorder.Event) {
				checkCut(t, event, "context.page.referrer", maxReferrerBytes, "https://example.net/")
				checkCut(t, event, "context.userAgent", maxUserAgentBytes, browserUA)
			},
		},
		{
			name:   "300 cookies",
			req:    request{target: "/guide.html", header: http.Header{"Cookie": {strings.Join(manyCookies, "; ")}}},
			wantID: anonymousID,
		},
		{
			name: "300 malformed anonymous id cookies",
			req:  request{target: "/guide.html", header: http.Header{"Cookie": {strings.Repeat("ajs_anonymous_id=%01; ", 300)}}},
		},
		{
			name: "64 KB cookie",
			req:  request{target: "/guide.html", header: http.Header{"Cookie": {"big=" + strings.Repeat("c", 64<<10)}}},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			resp := send(t, tc.req)
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d, expected 200", resp.status)
			}

			event := waitEvent(t)
			checkEventSize(t, event)
			if tc.check != nil {
				tc.check(t, event)
			}
			if tc.wantID != "" {
				if got := event.String("anonymousId"); got != tc.wantID {
					t.Errorf("anonymousId = %q, expected %q from the cookie", got, tc.wantID)
				}
				if cookies := resp.header.Values("Set-Cookie"); len(cookies) != 0 {
					t.Errorf("a returning reader got Set-Cookie %q, expected none", cookies)
				}
			} else if len(anonymousIDCookies(resp.header)) != 1 {
				t.Errorf("a new reader got %d ajs_anonymous_id cookies, expected 1", len(anonymousIDCookies(resp.header)))
			}
		})
	}

	t.Run("raw invalid UTF-8 in request target", func(t *testing.T) {
		rec.Reset()
		status := sendRaw(t, "GET /guide.html?q=\xff\xfe\xc3 HTTP/1.1\r\nHost: 127.0.0.1:9080\r\nUser-Agent: "+browserUA+"\r\nConnection: close\r\n\r\n")
		if status != http.StatusOK && status != http.StatusBadRequest {
			t.Fatalf("status = %d, expected 200, or 400 if the request line is rejected", status)
		}
		if status == http.StatusBadRequest {
			t.Log("Caddy rejected the request line with 400 before the handler ran")
			return
		}
		event := waitEvent(t)
		checkEventSize(t, event)
		search := event.String("context.page.search")
		if !strings.HasPrefix(search, "?q=") || !utf8.ValidString(search) {
			t.Errorf("context.page.search = %q, expected valid UTF-8 starting with ?q=", search)
		}
	})
}
