package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-segment/caddy-segment/tests/recorder"

	_ "github.com/caddy-segment/caddy-segment/caddymodule"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// Addresses of the Caddy that caddytest runs in this process.
const (
	adminURL = "http://localhost:2999"
	siteURL  = "http://127.0.0.1:9080"
)

// testWriteKey is the write key the recorder accepts.
const testWriteKey = "integration-write-key"

// browserUA is sent by default, because the handler skips requests from
// crawlers and requests without a User-Agent.
const browserUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

// eventTimeout bounds every wait for events. Events normally arrive within
// one flush interval (100ms).
const eventTimeout = 10 * time.Second

// rec is the Segment endpoint shared by all tests. Each test resets it
// after loading its config.
var rec *recorder.Recorder

func TestMain(m *testing.M) {
	// caddytest loads configs into any admin API it finds on its port, so a
	// Caddy of another process there would run these tests' configs.
	for _, address := range []string{"localhost:2999", "127.0.0.1:9080"} {
		if conn, err := net.DialTimeout("tcp", address, time.Second); err == nil {
			conn.Close()
			fmt.Fprintf(os.Stderr, "%s is already in use by another process: stop it, or any other run of this package, because these tests start their own Caddy there\n", address)
			os.Exit(1)
		}
	}

	var err error
	rec, err = recorder.Start(recorder.Options{WriteKey: testWriteKey})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	rec.Close()
	os.Exit(code)
}

// client talks to Caddy with no cookie jar, no proxy, no transparent gzip
// decoding and no redirect following, so each test gets the raw response.
var client = &http.Client{
	Transport: &http.Transport{
		Proxy:              nil,
		DisableCompression: true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Timeout: 10 * time.Second,
}

// caddyfile returns a complete Caddyfile: the global options shared by all
// tests plus globalExtra, and one catch-all HTTP site on 127.0.0.1:9080
// with siteBody. Any Host header reaches that site.
func caddyfile(globalExtra, siteBody string) string {
	return fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	auto_https off
	persist_config off
	grace_period 1s
%s
}

:9080 {
	bind 127.0.0.1
%s
}
`, globalExtra, siteBody)
}

// segmentBlock returns a segment directive that sends to the recorder with
// the accepted write key, a 100ms flush interval and batches of at most 2
// events, followed by the extra subdirective lines.
func segmentBlock(extra ...string) string {
	return segmentBlockWith(testWriteKey, 2, extra...)
}

// segmentBlockWith is segmentBlock with another write key and batch size.
func segmentBlockWith(writeKey string, batchSize int, extra ...string) string {
	lines := []string{
		"write_key " + writeKey,
		"endpoint " + rec.URL(),
		"flush_interval 100ms",
		"batch_size " + strconv.Itoa(batchSize),
		"shutdown_timeout 1s",
	}
	lines = append(lines, extra...)
	return "segment {\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}"
}

// startCaddy loads config into the test process's Caddy, starting Caddy
// first if needed, and resets the recorder.
func startCaddy(t *testing.T, config string) {
	t.Helper()
	tester := caddytest.NewTester(t)
	tester.InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	rec.Reset()
}

// loadCaddyfile posts config to the admin API's /load endpoint and returns
// the error body when Caddy rejects it. Caddy keeps running the previous
// config after a rejected load.
func loadCaddyfile(t *testing.T, config string) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, adminURL+"/load", strings.NewReader(config))
	if err != nil {
		t.Fatalf("building the /load request failed: %v", err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")

	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("posting to %s/load failed: %v", adminURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the /load response failed: %v", err)
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return errors.New(string(body))
}

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   string
}

// request describes one request to Caddy. Header values replace the
// defaults, and a User-Agent of "" sends none.
type request struct {
	method string // GET when empty
	target string // path and query
	host   string // Host header; 127.0.0.1:9080 when empty
	header http.Header
	body   string
}

// send performs req against Caddy with a browser User-Agent unless req sets
// one, and fails the test on a transport error, which is what a panic in a
// handler looks like to the client.
func send(t *testing.T, req request) response {
	t.Helper()
	method := req.method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	httpReq, err := http.NewRequest(method, siteURL+req.target, body)
	if err != nil {
		t.Fatalf("building %s %.80s failed: %v", method, req.target, err)
	}
	httpReq.Header.Set("User-Agent", browserUA)
	for name, values := range req.header {
		httpReq.Header.Del(name)
		for _, value := range values {
			httpReq.Header.Add(name, value)
		}
	}
	if req.host != "" {
		httpReq.Host = req.host
	}

	resp, err := client.Do(httpReq)
	if err != nil {
		t.Fatalf("%s %.80s failed: %v", method, req.target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of %s %.80s failed: %v", method, req.target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// get sends a GET of target with the given header.
func get(t *testing.T, target string, header http.Header) response {
	t.Helper()
	return send(t, request{target: target, header: header})
}

// markerCount makes each marker query unique within the test process.
var markerCount atomic.Int64

// eventsWithMarker returns the events that arrived since the last Reset,
// once they include at least want events besides a marker: a page view of
// pagePath with a unique query, requested here after the requests under
// test. The marker's event proves that every earlier request was processed,
// so a request that should produce no event is checked with want 0.
//
// analytics-go posts batches concurrently, so the response to a batch can
// arrive before that of an earlier one. That is why the wait also counts up
// to want. NOTE: an event that should not exist escapes the check when its
// batch, posted before the marker's batch, gets its response after it.
func eventsWithMarker(t *testing.T, pagePath string, want int) []recorder.Event {
	t.Helper()
	marker := "?marker=" + strconv.FormatInt(markerCount.Add(1), 10)
	resp := get(t, pagePath+marker, nil)
	if resp.status != http.StatusOK {
		t.Fatalf("marker page view GET %s returned status %d, expected 200", pagePath, resp.status)
	}

	isMarker := func(event recorder.Event) bool {
		return event.String("context.page.search") == marker
	}
	events, _ := rec.WaitEvents(want+1, eventTimeout)
	for !slices.ContainsFunc(events, isMarker) {
		var err error
		events, err = rec.WaitEvents(len(events)+1, eventTimeout)
		if err != nil {
			t.Fatalf("waiting for the marker page view event of %s: %v; events: %v", pagePath, err, events)
		}
	}
	return slices.DeleteFunc(events, isMarker)
}

// waitEvent waits for exactly one event after the last Reset and returns it.
func waitEvent(t *testing.T) recorder.Event {
	t.Helper()
	events, err := rec.WaitEvents(1, eventTimeout)
	if err != nil {
		t.Fatalf("waiting for one event: %v; recorder rejections by status: %v", err, rec.Stats().Rejected)
	}
	if len(events) != 1 {
		t.Fatalf("got %d events, expected exactly 1: %v", len(events), events)
	}
	return events[0]
}

// eventually polls cond every 20ms until it holds, and fails the test with
// what when it still does not hold after eventTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", eventTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cookie is a parsed Set-Cookie header.
type cookie struct {
	name  string
	value string
	// attrs maps each lower-case attribute name to its value, "" for a flag
	// such as Secure.
	attrs map[string]string
}

func (c cookie) has(attr string) bool {
	_, ok := c.attrs[attr]
	return ok
}

// parseSetCookie splits a Set-Cookie header by hand, so that every
// attribute is checked exactly as sent.
func parseSetCookie(line string) cookie {
	parts := strings.Split(line, ";")
	name, value, _ := strings.Cut(strings.TrimSpace(parts[0]), "=")
	c := cookie{name: name, value: value, attrs: make(map[string]string)}
	for _, part := range parts[1:] {
		key, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		c.attrs[strings.ToLower(key)] = val
	}
	return c
}

// anonymousIDCookies returns the ajs_anonymous_id cookies a response sets.
func anonymousIDCookies(header http.Header) []cookie {
	var cookies []cookie
	for _, line := range header.Values("Set-Cookie") {
		if c := parseSetCookie(line); c.name == "ajs_anonymous_id" {
			cookies = append(cookies, c)
		}
	}
	return cookies
}

// onlyAnonymousIDCookie returns the single ajs_anonymous_id cookie of a
// response and fails the test when there is not exactly one.
func onlyAnonymousIDCookie(t *testing.T, header http.Header) cookie {
	t.Helper()
	cookies := anonymousIDCookies(header)
	if len(cookies) != 1 {
		t.Fatalf("response sets %d ajs_anonymous_id cookies, expected 1: %q", len(cookies), header.Values("Set-Cookie"))
	}
	return cookies[0]
}

// writeSite creates a small docs site in a temporary directory and returns
// its root. Every directory in dirs gets an index.html of its own.
func writeSite(t *testing.T, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"index.html": "<!doctype html><html><head><title>Home</title></head><body>home</body></html>",
		"guide.html": "<!doctype html><html><head><title>Guide</title></head><body>guide</body></html>",
		"style.css":  "body { color: black; }",
		"app.js":     "console.log('app');",
		"data.json":  `{"pages": 2}`,
		"logo.png":   string(pngImage),
	}
	for _, dir := range dirs {
		files[filepath.Join(dir, "index.html")] = "<!doctype html><html><head><title>" + dir + "</title></head><body>" + dir + "</body></html>"
	}
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("creating the site directory for %s failed: %v", name, err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatalf("writing %s failed: %v", name, err)
		}
	}
	return root
}

// pngImage is a valid 1×1 transparent PNG.
var pngImage = []byte{
	0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d,
	0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
	0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00,
	0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
	0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49,
	0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
}

// checkTitle asserts the event's page title.
func checkTitle(t *testing.T, event recorder.Event, want string) {
	t.Helper()
	if got := event.String("context.page.title"); got != want {
		t.Errorf("context.page.title = %q, expected %q from the page's <title>", got, want)
	}
}
