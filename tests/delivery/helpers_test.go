package delivery

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-segment/caddy-segment/caddymodule"
	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

// Ports of the Caddy that these tests start. Another test package of this
// module uses 2999 and 9080 and may run at the same time.
const (
	adminAddress = "localhost:3999"
	siteURL      = "http://localhost:9180"
)

// writeKey is the write key that the recorder accepts.
const writeKey = "delivery-test-write-key"

// waitTimeout bounds every wait for events or counts. It is a deadline for
// a hung test, not a measure of speed.
const waitTimeout = 15 * time.Second

// browserUserAgent is a desktop Chrome User-Agent, so that page views are
// not skipped as bots.
const browserUserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// segmentSettings are the settings of the segment directive in a test
// Caddyfile.
type segmentSettings struct {
	endpoint        string
	batchSize       int
	shutdownTimeout string
	revision        int // sent as the property rev, so a reload changes the config
	dryRun          bool
}

// caddyfile returns the test site's Caddyfile: HTML pages everywhere and
// CSS under /assets/. A nil segment gives a site without the segment
// handler.
func caddyfile(segment *segmentSettings) string {
	directive := ""
	if segment != nil {
		lines := []string{"segment {"}
		if segment.dryRun {
			lines = append(lines, "\t\tdry_run")
		} else {
			lines = append(lines,
				"\t\twrite_key "+writeKey,
				"\t\tendpoint "+segment.endpoint,
				fmt.Sprintf("\t\tbatch_size %d", segment.batchSize),
				"\t\tflush_interval 50ms",
				"\t\tshutdown_timeout "+segment.shutdownTimeout,
			)
		}
		lines = append(lines, fmt.Sprintf("\t\tproperty rev %d", segment.revision), "\t}")
		directive = strings.Join(lines, "\n")
	}

	return fmt.Sprintf(`{
	admin %s
	http_port 9180
	https_port 9543
	metrics
}

%s {
	%s
	handle /assets/* {
		header Content-Type "text/css; charset=utf-8"
		respond "body { margin: 0 }"
	}
	handle {
		header Content-Type "text/html; charset=utf-8"
		respond "<!doctype html><html><head><title>Delivery test</title></head><body><p>Page</p></body></html>"
	}
}
`, adminAddress, siteURL, directive)
}

// caddyStarted is set once this process has started its Caddy.
var caddyStarted bool

// startCaddy starts the in-process Caddy, or reuses the one an earlier test
// started, and loads the Caddyfile.
func startCaddy(t *testing.T, config string) {
	t.Helper()
	// caddytest uses any admin API it finds on the port, so a Caddy of
	// another process (such as a second run of this package) would receive
	// these configs and serve these requests.
	if !caddyStarted {
		if conn, err := net.DialTimeout("tcp", adminAddress, time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s is already in use, by another process: stop it, or any other run of this package, because these tests start their own Caddy there", adminAddress)
		}
		caddyStarted = true
	}

	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: 3999})
	tester.InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// startRecorder starts a recorder that is closed when the test ends. The
// test must release its sender before that, or the sender's last batches
// meet a closed port.
func startRecorder(t *testing.T) *recorder.Recorder {
	t.Helper()
	rec, err := recorder.Start(recorder.Options{WriteKey: writeKey})
	if err != nil {
		t.Fatalf("starting the recorder failed: %v", err)
	}
	t.Cleanup(rec.Close)
	return rec
}

// releaseAtEnd loads a Caddyfile without the segment handler when the test
// ends, which stops the test's sender before its recorder closes. Call it
// after startRecorder, so that its cleanup runs first.
func releaseAtEnd(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := loadConfig(caddyfile(nil)); err != nil {
			t.Errorf("loading the Caddyfile without segment at the end of the test failed: %v", err)
		}
	})
}

// adminClient posts configs to the admin API. Its timeout is far above the
// time a config load takes, so that a load that hangs fails the test.
var adminClient = &http.Client{Timeout: 60 * time.Second}

// loadConfig replaces Caddy's config through POST /load and returns how long
// the call took. Caddy responds once the new config runs and the old one is
// cleaned up, which includes stopping senders that are no longer used.
func loadConfig(config string) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, "http://"+adminAddress+"/load", strings.NewReader(config))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "text/caddyfile")

	res, err := adminClient.Do(req)
	if err != nil {
		return time.Since(start), fmt.Errorf("POST /load failed: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	took := time.Since(start)
	if res.StatusCode != http.StatusOK {
		return took, fmt.Errorf("POST /load returned %s: %s", res.Status, body)
	}
	return took, nil
}

// newPageClient returns a client for the site, with no cookie jar so that
// each page view is a new reader.
func newPageClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

// requestKind selects the headers of a request to the site.
type requestKind int

const (
	pageView requestKind = iota // a browser loading a page
	prefetch                    // a browser prefetching a page
	asset                       // a browser loading a stylesheet
)

// get requests path from the site and returns the response status.
func get(client *http.Client, path string, kind requestKind) (int, error) {
	req, err := http.NewRequest(http.MethodGet, siteURL+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", browserUserAgent)
	switch kind {
	case pageView:
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		req.Header.Set("Sec-Fetch-Dest", "document")
	case prefetch:
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		req.Header.Set("Sec-Purpose", "prefetch")
	case asset:
		req.Header.Set("Accept", "text/css,*/*;q=0.1")
		req.Header.Set("Sec-Fetch-Dest", "style")
	}

	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return res.StatusCode, fmt.Errorf("reading the body of %s failed: %w", path, err)
	}
	return res.StatusCode, nil
}

// metrics maps a series, written as name{label="value",...} with labels in
// name order, to its value.
type metrics map[string]float64

// scrapeMetrics reads the caddy_segment_ series that the admin API serves at
// /metrics.
func scrapeMetrics(t *testing.T) metrics {
	t.Helper()
	res, err := http.Get("http://" + adminAddress + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics from the admin API failed: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics from the admin API returned %s", res.Status)
	}

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing the metrics from the admin API failed: %v", err)
	}

	series := make(metrics)
	for name, family := range families {
		if !strings.HasPrefix(name, "caddy_segment_") {
			continue
		}
		for _, m := range family.GetMetric() {
			series[seriesName(name, m.GetLabel())] = metricValue(m)
		}
	}
	return series
}

func seriesName(name string, labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return name
	}
	pairs := make([]string, 0, len(labels))
	for _, label := range labels {
		pairs = append(pairs, fmt.Sprintf("%s=%q", label.GetName(), label.GetValue()))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

// increase returns how much a series grew since before. A series that is
// absent counts as 0, as a counter does before its first increment.
func (m metrics) increase(before metrics, series string) float64 {
	return m[series] - before[series]
}

// increaseWithPrefix sums the growth of every series whose name starts with
// prefix, such as all reasons of one counter.
func (m metrics) increaseWithPrefix(before metrics, prefix string) float64 {
	total := 0.0
	for series, value := range m {
		if strings.HasPrefix(series, prefix) {
			total += value - before[series]
		}
	}
	return total
}

// expectIncrease checks the growth of each series in want.
func expectIncrease(t *testing.T, after, before metrics, want map[string]float64) {
	t.Helper()
	names := make([]string, 0, len(want))
	for series := range want {
		names = append(names, series)
	}
	sort.Strings(names)
	for _, series := range names {
		if got := after.increase(before, series); got != want[series] {
			t.Errorf("%s increased by %v, expected %v", series, got, want[series])
		}
	}
}

// waitForMetric scrapes until series has grown by want since before, and
// returns that scrape. analytics-go counts a delivery after the response,
// so the count can trail the recorder's events.
func waitForMetric(t *testing.T, before metrics, series string, want float64) metrics {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		after := scrapeMetrics(t)
		if after.increase(before, series) >= want {
			return after
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s to grow by %v: it grew by %v",
				waitTimeout, series, want, after.increase(before, series))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, and fails the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
