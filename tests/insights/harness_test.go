package insights

import (
	"bytes"
	"fmt"
	"io"
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
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/caddy-segment/caddy-segment/tests/recorder"

	_ "github.com/caddy-segment/caddy-segment/caddymodule"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// Addresses of the Caddy that caddytest runs in this process. Other test
// packages of this module use 2999/9080 and 3999/9180 and may run at the
// same time.
const (
	adminPort = 4999
	adminURL  = "http://localhost:4999"
	siteHost  = "127.0.0.1:9280"
	siteURL   = "http://" + siteHost
	// beaconHost is the host of the GitBook site the beacons report on.
	// Beacon requests carry it as their Host, as a browser on that site
	// would.
	beaconHost = "docs.example.com"
)

// testWriteKey is the write key the recorder accepts.
const testWriteKey = "insights-write-key"

// chromeUA is the User-Agent of every request unless a test sets another,
// because the handler skips crawlers and requests without a User-Agent.
const chromeUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36"

// eventTimeout bounds every wait for events. It is a deadline for a hung
// test, not a measure of speed: events normally arrive within one flush
// interval (100ms).
const eventTimeout = 10 * time.Second

// Shared by every test: the Segment endpoint, the imitation of a GitBook
// site that reverse_proxy forwards to, and the directory that file_server
// serves.
var (
	rec         *recorder.Recorder
	gitbook     *upstream
	staticRoot  string
	sentinelSeq atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	rec, err = recorder.Start(recorder.Options{WriteKey: testWriteKey})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer rec.Close()

	gitbook, err = startUpstream()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer gitbook.close()

	staticRoot, err = filepath.Abs("testdata")
	if err != nil {
		fmt.Fprintf(os.Stderr, "finding the absolute path of testdata failed: %v\n", err)
		return 1
	}
	return m.Run()
}

// siteOptions is the part of the Caddyfile that a test chooses.
type siteOptions struct {
	// segment lists extra subdirectives of the segment block, one a line.
	segment []string
	// global lists extra global options, one a line.
	global []string
	// sentinelHeader holds the headers that the sentinel page view needs to
	// be tracked under this config, such as a consent cookie.
	sentinelHeader http.Header
}

// site is the config that a test loaded.
type site struct {
	// insights is set when beacons, not HTML page loads, are counted, so
	// the sentinel page view is a beacon.
	insights       bool
	sentinelHeader http.Header
}

// caddyfile returns the whole Caddyfile of a test: one site on
// 127.0.0.1:9280 whose segment handler posts to the recorder every 100ms.
// The site serves /static/ from testdata with file_server and proxies every
// other path to the GitBook imitation.
func caddyfile(opts siteOptions) string {
	segment := []string{
		"write_key " + testWriteKey,
		"endpoint " + rec.URL(),
		"flush_interval 100ms",
		"shutdown_timeout 1s",
	}
	segment = append(segment, opts.segment...)

	return fmt.Sprintf(`{
	admin localhost:%d
	http_port 9280
	https_port 9643
	auto_https off
	persist_config off
	grace_period 1s
	metrics
	%s
}

:9280 {
	bind 127.0.0.1
	segment {
		%s
	}
	handle_path /static/* {
		root * %s
		file_server
	}
	handle {
		reverse_proxy %s
	}
}
`, adminPort, strings.Join(opts.global, "\n\t"), strings.Join(segment, "\n\t\t"), staticRoot, gitbook.address())
}

// startSite loads the test's Caddyfile into the in-process Caddy, starting
// Caddy first if no earlier test did.
func startSite(t *testing.T, opts siteOptions) *site {
	t.Helper()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	tester.InitServer(caddyfile(opts), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return &site{
		insights:       slices.Contains(opts.segment, "gitbook_insights"),
		sentinelHeader: opts.sentinelHeader,
	}
}

// client talks to Caddy with no cookie jar, no proxy, no transparent
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

// request is one request to Caddy.
type request struct {
	method string // GET when empty
	target string // path and query
	header http.Header
	body   []byte
}

// response is a fully read response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// setHeaders replaces headers of h by name and value pairs. A User-Agent
// of "" makes net/http send no User-Agent at all.
func setHeaders(h http.Header, pairs []string) http.Header {
	if len(pairs)%2 != 0 {
		panic(fmt.Sprintf("header pairs %q have a name without a value", pairs))
	}
	for i := 0; i < len(pairs); i += 2 {
		h.Set(pairs[i], pairs[i+1])
	}
	return h
}

// pageRequest returns a GET of target with the headers of a browser that
// navigates to a page, changed by the name and value pairs.
func pageRequest(target string, pairs ...string) request {
	header := http.Header{
		"User-Agent":      {chromeUA},
		"Accept":          {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Encoding": {"gzip, deflate, br, zstd"},
		"Accept-Language": {"en-US,en;q=0.9"},
		"Sec-Fetch-Dest":  {"document"},
		"Sec-Fetch-Mode":  {"navigate"},
	}
	return request{target: target, header: setHeaders(header, pairs)}
}

// beaconRequest returns a POST of body to target with the headers of
// GitBook's fetch call, changed by the name and value pairs.
func beaconRequest(target string, body []byte, pairs ...string) request {
	header := http.Header{
		"User-Agent":      {chromeUA},
		"Content-Type":    {"application/json"},
		"Accept":          {"*/*"},
		"Accept-Encoding": {"gzip, deflate, br, zstd"},
		"Host":            {beaconHost},
		"Origin":          {"https://" + beaconHost},
		"Sec-Fetch-Dest":  {"empty"},
		"Sec-Fetch-Mode":  {"cors"},
	}
	return request{method: http.MethodPost, target: target, header: setHeaders(header, pairs), body: body}
}

// send performs req against Caddy and fails the test on a transport error.
func send(t *testing.T, req request) response {
	t.Helper()
	method := req.method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	httpReq, err := http.NewRequest(method, siteURL+req.target, body)
	if err != nil {
		t.Fatalf("building %s %.80s failed: %v", method, req.target, err)
	}
	for name, values := range req.header {
		httpReq.Header[name] = slices.Clone(values)
	}
	// The site serves any host. A Host header in req names the one the
	// browser would send.
	if host := httpReq.Header.Get("Host"); host != "" {
		httpReq.Host = host
		httpReq.Header.Del("Host")
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
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// outcome is what the requests of one step led to: the events they
// produced and the growth of the plugin's counters.
type outcome struct {
	events        []recorder.Event
	before, after counters
}

// run clears the recorder, performs action, then sends the sentinel: a page
// view that the loaded config tracks, with a unique path. It waits until
// the sentinel's event and at least want other events have arrived, and
// returns the other events with the counter growth. The sentinel's event
// proves that every request of action has been handled, so a step that
// should produce no event is checked with want 0 and no sleep.
//
// NOTE: analytics-go v3.3.0 posts batches concurrently, so an event that
// should not exist could still arrive after the sentinel when its batch,
// posted at least one flush interval earlier, is accepted that much later.
func (s *site) run(t *testing.T, want int, action func()) outcome {
	t.Helper()
	rec.Reset()
	before := scrapeCounters(t)

	action()

	sentinelPath := s.sendSentinel(t)
	isSentinel := func(event recorder.Event) bool {
		return event.String("context.page.path") == sentinelPath
	}
	deadline := time.Now().Add(eventTimeout)
	events, _ := rec.WaitEvents(want+1, eventTimeout)
	for !slices.ContainsFunc(events, isSentinel) || len(events) < want+1 {
		var err error
		events, err = rec.WaitEvents(len(events)+1, time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for the sentinel page view %s and %d other events: %v; recorder rejections by status: %v; events: %v",
				sentinelPath, want, err, rec.Stats().Rejected, events)
		}
	}

	return outcome{
		events: slices.DeleteFunc(events, isSentinel),
		before: before,
		after:  scrapeCounters(t),
	}
}

// sendSentinel sends a page view that the loaded config tracks and returns
// its path: a beacon page view with gitbook_insights, else a page load.
func (s *site) sendSentinel(t *testing.T) string {
	t.Helper()
	path := "/sentinel/" + strconv.FormatInt(sentinelSeq.Add(1), 10)

	var req request
	wantStatus := http.StatusOK
	if s.insights {
		body := beaconBody(t, beaconView{url: "https://docs.example.com" + path, space: "spc_sentinel"})
		req = beaconRequest(beaconTarget, body)
		wantStatus = upstreamBeaconStatus
	} else {
		req = pageRequest(path)
	}
	for name, values := range s.sentinelHeader {
		req.header[name] = slices.Clone(values)
	}

	if resp := send(t, req); resp.status != wantStatus {
		t.Fatalf("sentinel %s %s returned status %d, expected %d", req.method, req.target, resp.status, wantStatus)
	}
	return path
}

// onlyEvent returns the single event of an outcome, and fails the test when
// there is not exactly one.
func onlyEvent(t *testing.T, o outcome) recorder.Event {
	t.Helper()
	if len(o.events) != 1 {
		t.Fatalf("got %d events, expected exactly 1: %v", len(o.events), o.events)
	}
	return o.events[0]
}

// expectNoEvents checks that a step produced no event.
func expectNoEvents(t *testing.T, o outcome) {
	t.Helper()
	if len(o.events) != 0 {
		t.Errorf("got %d events, expected none: %v", len(o.events), o.events)
	}
}

// expectField checks that the event has the string want at path.
func expectField(t *testing.T, event recorder.Event, path, want string) {
	t.Helper()
	value, ok := event.Lookup(path)
	if !ok {
		t.Errorf("event has no %s, expected %q: %v", path, want, event)
		return
	}
	if got, _ := value.(string); got != want {
		t.Errorf("event %s = %#v, expected %q", path, value, want)
	}
}

// expectAbsent checks that the event has nothing at path.
func expectAbsent(t *testing.T, event recorder.Event, path string) {
	t.Helper()
	if value, ok := event.Lookup(path); ok {
		t.Errorf("event has %s = %#v, expected it absent", path, value)
	}
}

// expectTimestamp checks that the event's timestamp is the instant want.
func expectTimestamp(t *testing.T, event recorder.Event, want time.Time) {
	t.Helper()
	text := event.String("timestamp")
	got, err := time.Parse(time.RFC3339Nano, text)
	if err != nil {
		t.Errorf("event timestamp %q is not an RFC 3339 time: %v", text, err)
		return
	}
	if !got.Equal(want) {
		t.Errorf("event timestamp = %s, expected %s", got.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano))
	}
}

// skipReasons lists every value of the reason label of
// caddy_segment_requests_skipped_total.
var skipReasons = []string{
	"prefetch", "rsc", "gpc", "consent", "bot",
	"beacon_invalid", "beacon_too_large", "beacon_stale", "beacon_overflow",
	"beacon_foreign",
}

// counters are the plugin's counters that these tests read from Caddy's
// admin /metrics.
type counters struct {
	pageViews float64
	skipped   map[string]float64 // by reason; an absent reason is 0
}

// scrapeCounters reads caddy_segment_page_views_total and
// caddy_segment_requests_skipped_total from the admin API.
func scrapeCounters(t *testing.T) counters {
	t.Helper()
	resp, err := client.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics failed: %v", adminURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics returned %s", adminURL, resp.Status)
	}

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics of the admin API failed: %v", err)
	}

	c := counters{skipped: make(map[string]float64)}
	if family, ok := families["caddy_segment_page_views_total"]; ok {
		for _, m := range family.GetMetric() {
			c.pageViews += m.GetCounter().GetValue()
		}
	}
	if family, ok := families["caddy_segment_requests_skipped_total"]; ok {
		for _, m := range family.GetMetric() {
			for _, label := range m.GetLabel() {
				if label.GetName() == "reason" {
					c.skipped[label.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return c
}

// expectSkips checks the growth of every skip reason: the reasons in want
// by the given amount, every other reason not at all.
func expectSkips(t *testing.T, o outcome, want map[string]float64) {
	t.Helper()
	for reason := range want {
		if !slices.Contains(skipReasons, reason) {
			t.Fatalf("skip reason %q is not one of %v", reason, skipReasons)
		}
	}
	for _, reason := range skipReasons {
		got := o.after.skipped[reason] - o.before.skipped[reason]
		if got != want[reason] {
			t.Errorf(`caddy_segment_requests_skipped_total{reason=%q} grew by %v, expected %v`, reason, got, want[reason])
		}
	}
}

// expectPageViews checks the growth of caddy_segment_page_views_total,
// leaving out the sentinel's page view.
func expectPageViews(t *testing.T, o outcome, want float64) {
	t.Helper()
	if got := o.after.pageViews - o.before.pageViews - 1; got != want {
		t.Errorf("caddy_segment_page_views_total grew by %v besides the sentinel, expected %v", got, want)
	}
}

// anonymousIDCookies returns the values of the ajs_anonymous_id cookies
// that a response sets, exactly as sent.
func anonymousIDCookies(header http.Header) []string {
	var values []string
	for _, line := range header.Values("Set-Cookie") {
		pair, _, _ := strings.Cut(line, ";")
		name, value, _ := strings.Cut(strings.TrimSpace(pair), "=")
		if name == "ajs_anonymous_id" {
			values = append(values, value)
		}
	}
	return values
}

// onlyAnonymousIDCookie returns the value of the single ajs_anonymous_id
// cookie of a response, and fails the test when there is not exactly one.
func onlyAnonymousIDCookie(t *testing.T, resp response) string {
	t.Helper()
	values := anonymousIDCookies(resp.header)
	if len(values) != 1 {
		t.Fatalf("response sets %d ajs_anonymous_id cookies, expected 1: %q", len(values), resp.header.Values("Set-Cookie"))
	}
	return values[0]
}

// expectNoAnonymousIDCookie checks that a response sets no
// ajs_anonymous_id cookie.
func expectNoAnonymousIDCookie(t *testing.T, resp response) {
	t.Helper()
	if values := anonymousIDCookies(resp.header); len(values) != 0 {
		t.Errorf("response sets ajs_anonymous_id %q, expected no such cookie", values)
	}
}

// expectStatus checks a response's status.
func expectStatus(t *testing.T, resp response, want int) {
	t.Helper()
	if resp.status != want {
		t.Errorf("response status = %d, expected %d; body %.200q", resp.status, want, resp.body)
	}
}
