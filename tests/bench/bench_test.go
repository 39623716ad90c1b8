package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wrkReport is the output of wrk 4.1.0 --latency with a script whose
// done() prints the page counters, with the socket error and status lines
// that wrk adds when they are not zero.
const wrkReport = `Running 10s test @ http://127.0.0.1:28181/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.20ms    3.52ms  28.66ms   90.42%
    Req/Sec     1.49k   678.85     2.27k    40.00%
  Latency Distribution
     50%  810.00us
     75%    2.08ms
     90%    5.51ms
     99%    1.02s
  14813 requests in 10.02s, 8.90MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:   1478.34
Transfer/sec:      0.89MB
bench-pages-completed: 1346
bench-pages-sent: 1350
`

func TestParseWrkOutput(t *testing.T) {
	got, err := parseWrkOutput(wrkReport)
	if err != nil {
		t.Fatalf("parseWrkOutput returned an error for a complete report: %v", err)
	}

	floats := []struct {
		name      string
		got, want float64
	}{
		{"seconds", got.Seconds, 10.02},
		{"requests/sec", got.RequestsPerSec, 1478.34},
		{"p50 in µs", got.P50, 810},
		{"p75 in µs", got.P75, 2080},
		{"p90 in µs", got.P90, 5510},
		{"p99 in µs", got.P99, 1.02e6},
	}
	for _, f := range floats {
		if math.Abs(f.got-f.want) > 1e-6*math.Max(1, f.want) {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}

	counts := []struct {
		name      string
		got, want int64
	}{
		{"requests", got.Requests, 14813},
		{"connect errors", got.ConnectErrors, 1},
		{"read errors", got.ReadErrors, 2},
		{"write errors", got.WriteErrors, 3},
		{"timeouts", got.Timeouts, 4},
		{"error responses", got.ErrorResponses, 5},
		{"pages completed", got.PagesCompleted, 1346},
		{"pages sent", got.PagesSent, 1350},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestParseWrkOutputWithoutErrorLines(t *testing.T) {
	report := strings.Replace(wrkReport, "  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\n", "", 1)
	got, err := parseWrkOutput(report)
	if err != nil {
		t.Fatalf("parseWrkOutput returned an error for a report without error lines: %v", err)
	}
	if got.ConnectErrors+got.ReadErrors+got.WriteErrors+got.Timeouts != 0 {
		t.Errorf("socket errors = %d/%d/%d/%d, want all 0 when wrk prints no Socket errors line",
			got.ConnectErrors, got.ReadErrors, got.WriteErrors, got.Timeouts)
	}
	if got.ErrorResponses != 0 {
		t.Errorf("error responses = %d, want 0 when wrk prints no Non-2xx line", got.ErrorResponses)
	}
}

func TestParseWrkOutputIncomplete(t *testing.T) {
	cases := []struct {
		name   string
		remove string
	}{
		{"no request count", "  14813 requests in 10.02s, 8.90MB read\n"},
		{"no requests/sec", "Requests/sec:   1478.34\n"},
		{"no 99th percentile", "     99%    1.02s\n"},
		{"no page counters", "bench-pages-sent: 1350\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			report := strings.Replace(wrkReport, c.remove, "", 1)
			if report == wrkReport {
				t.Fatalf("test setup: %q is not in the report", c.remove)
			}
			if _, err := parseWrkOutput(report); err == nil {
				t.Errorf("parseWrkOutput accepted a report without %q", strings.TrimSpace(c.remove))
			}
		})
	}
}

func TestParseWrkTime(t *testing.T) {
	cases := []struct {
		number, unit string
		want         float64
	}{
		{"291.00", "us", 291},
		{"1.42", "ms", 1420},
		{"2.50", "s", 2.5e6},
		{"1.00", "m", 60e6},
		{"1.00", "h", 3600e6},
	}
	for _, c := range cases {
		got, err := parseWrkTime(c.number, c.unit)
		if err != nil {
			t.Errorf("parseWrkTime(%q, %q) returned an error: %v", c.number, c.unit, err)
			continue
		}
		if math.Abs(got-c.want) > 1e-6*c.want {
			t.Errorf("parseWrkTime(%q, %q) = %v µs, want %v", c.number, c.unit, got, c.want)
		}
	}
	if _, err := parseWrkTime("1.00", "ns"); err == nil {
		t.Error("parseWrkTime accepted the unit ns, which wrk never prints")
	}
}

func TestParseSample(t *testing.T) {
	cases := []struct {
		line       string
		wantSeries string
		wantValue  float64
		wantOK     bool
	}{
		{`caddy_segment_page_views_total 1234`, "caddy_segment_page_views_total", 1234, true},
		{`caddy_segment_events_dropped_total{reason="queue_full"} 5`, `caddy_segment_events_dropped_total{reason="queue_full"}`, 5, true},
		{`caddy_segment_queue_depth 1.5e+06`, "caddy_segment_queue_depth", 1.5e6, true},
		{`# HELP caddy_segment_page_views_total Page views seen.`, "", 0, false},
		{``, "", 0, false},
		{`caddy_segment_page_views_total`, "", 0, false},
	}
	for _, c := range cases {
		series, value, ok := parseSample(c.line)
		if ok != c.wantOK || series != c.wantSeries || value != c.wantValue {
			t.Errorf("parseSample(%q) = %q, %v, %v; want %q, %v, %v", c.line, series, value, ok, c.wantSeries, c.wantValue, c.wantOK)
		}
	}
}

func TestSegmentMetricsSum(t *testing.T) {
	m := segmentMetrics{
		`caddy_segment_events_failed_total{reason="http_4xx"}`:      2,
		`caddy_segment_events_failed_total{reason="network"}`:       3,
		`caddy_segment_events_failed_total_extra`:                   100,
		`caddy_segment_events_dropped_total{reason="queue_full"}`:   7,
		`caddy_segment_events_dropped_total{reason="shutdown"}`:     11,
		`caddy_segment_page_views_total`:                            13,
		`caddy_segment_events_delivered_total{reason="unexpected"}`: 1,
	}
	if got := m.sum(metricFailed); got != 5 {
		t.Errorf("sum(%s) = %d, want 5: every reason, and no other metric", metricFailed, got)
	}
	if got := m.sum(metricPageViews); got != 13 {
		t.Errorf("sum(%s) = %d, want 13", metricPageViews, got)
	}
	if got := m.dropped("queue_full"); got != 7 {
		t.Errorf("dropped(queue_full) = %d, want 7", got)
	}
	if got := m.dropped("too_big"); got != 0 {
		t.Errorf("dropped(too_big) = %d, want 0 for a missing series", got)
	}
}

func TestSegmentMetricsByReason(t *testing.T) {
	before := segmentMetrics{
		`caddy_segment_events_failed_total{reason="network"}`:  4,
		`caddy_segment_events_failed_total{reason="overload"}`: 1,
	}
	after := segmentMetrics{
		`caddy_segment_events_failed_total{reason="network"}`:   4,
		`caddy_segment_events_failed_total{reason="overload"}`:  11,
		`caddy_segment_events_failed_total{reason="http_5xx"}`:  2,
		`caddy_segment_events_dropped_total{reason="shutdown"}`: 9,
	}
	got := after.byReason(before, metricFailed)
	if len(got) != 2 {
		t.Errorf("byReason = %v, want only the 2 reasons that grew", got)
	}
	if got["overload"] != 10 {
		t.Errorf("byReason[overload] = %d, want 10", got["overload"])
	}
	if got["http_5xx"] != 2 {
		t.Errorf("byReason[http_5xx] = %d, want 2 for a series missing before", got["http_5xx"])
	}
	if _, ok := got["shutdown"]; ok {
		t.Error("byReason includes a reason of another metric")
	}
	if got, want := formatReasons(12, got), "12 (http_5xx 2, overload 10)"; got != want {
		t.Errorf("formatReasons = %q, want %q", got, want)
	}
}

func TestReadShutdownLog(t *testing.T) {
	lines := []string{
		`{"level":"info","ts":1,"logger":"http.handlers.segment","msg":"Segment sender started","endpoint_host":"127.0.0.1:1"}`,
		`not JSON`,
		`{"level":"warn","ts":2,"logger":"http.handlers.segment","msg":"Segment sender stopped; undelivered events were dropped","duration":5.002,"dropped":20431}`,
		`{"level":"info","ts":3,"logger":"admin","msg":"stopped previous server","dropped":99}`,
	}
	path := filepath.Join(t.TempDir(), "caddy.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := readShutdownLog(path)
	if err != nil {
		t.Fatalf("readShutdownLog failed: %v", err)
	}
	if !got.Found {
		t.Fatal("readShutdownLog found no stopped sender in a log that has one")
	}
	if got.Dropped != 20431 {
		t.Errorf("dropped = %d, want 20431 from the segment logger only", got.Dropped)
	}
	if math.Abs(got.Duration-5.002) > 1e-9 {
		t.Errorf("duration = %v, want 5.002", got.Duration)
	}
}

func TestReadMemoryAndCPUTimeOfSelf(t *testing.T) {
	pid := os.Getpid()
	m, err := readMemory(pid)
	if err != nil {
		t.Fatalf("readMemory(self) failed: %v", err)
	}
	if m.RSSKiB <= 0 || m.PeakKiB < m.RSSKiB {
		t.Errorf("readMemory(self) = RSS %d KiB, peak %d KiB; want RSS > 0 and peak >= RSS", m.RSSKiB, m.PeakKiB)
	}

	if _, err := readCPUTime(pid); err != nil {
		t.Errorf("readCPUTime(self) failed: %v", err)
	}
}

func TestBenchPageSize(t *testing.T) {
	for _, size := range []int{2048, pageSize, pageSize + 1, pageSize + 7} {
		page := benchPage(size)
		if len(page) != size {
			t.Errorf("benchPage(%d) has %d bytes", size, len(page))
		}
		if !strings.Contains(string(page), "<title>Benchmark page | Acme Docs</title>") {
			t.Errorf("benchPage(%d) has no title", size)
		}
		if !strings.HasSuffix(string(page), "</html>\n") {
			t.Errorf("benchPage(%d) does not end with </html>", size)
		}
	}
}

func TestLuaString(t *testing.T) {
	if got, want := luaString(`a "quoted" \ path`), `"a \"quoted\" \\ path"`; got != want {
		t.Errorf("luaString = %s, want %s", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("luaString accepted a newline, which would break the script")
		}
	}()
	luaString("line\nbreak")
}

func TestParseOptions(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		opts, err := parseOptions(nil, io.Discard)
		if err != nil {
			t.Fatalf("parseOptions(no flags) failed: %v", err)
		}
		if opts.duration != 10*time.Second || opts.runs != 3 || opts.connections != 32 || opts.threads != 2 || opts.hangDuration != time.Minute {
			t.Errorf("defaults = %+v, want -duration 10s -runs 3 -connections 32 -threads 2 -hang-duration 60s", opts)
		}
		if got := opts.scenarios; len(got) != 5 || got[0] != 1 || got[4] != 5 {
			t.Errorf("default scenarios = %v, want [1 2 3 4 5]", got)
		}
	})

	t.Run("smoke keeps explicit flags", func(t *testing.T) {
		opts, err := parseOptions([]string{"-smoke", "-runs", "2"}, io.Discard)
		if err != nil {
			t.Fatalf("parseOptions failed: %v", err)
		}
		if opts.runs != 2 {
			t.Errorf("-smoke -runs 2 gives %d runs, want the explicit 2", opts.runs)
		}
		if opts.duration != smokeDuration || opts.hangDuration != smokeHangDuration || opts.warmup != 0 {
			t.Errorf("-smoke gives duration %s, hang %s, warm-up %s; want %s, %s, 0",
				opts.duration, opts.hangDuration, opts.warmup, smokeDuration, smokeHangDuration)
		}
	})

	t.Run("scenarios sorted and unique", func(t *testing.T) {
		opts, err := parseOptions([]string{"-scenarios", "5, 1,3,1"}, io.Discard)
		if err != nil {
			t.Fatalf("parseOptions failed: %v", err)
		}
		if got := opts.scenarios; len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 5 {
			t.Errorf("-scenarios 5,1,3,1 gives %v, want [1 3 5]", got)
		}
	})

	invalid := [][]string{
		{"-scenarios", "6"},
		{"-scenarios", "x"},
		{"-scenarios", ","},
		{"-runs", "0"},
		{"-threads", "4", "-connections", "2"},
		{"-duration", "1500ms"},
		{"-hang-duration", "0s"},
		{"extra"},
	}
	for _, args := range invalid {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) accepted invalid flags", args)
		}
	}
}
