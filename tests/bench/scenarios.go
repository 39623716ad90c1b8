package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

// scenarioNames are the scenarios, numbered from 1.
var scenarioNames = []string{
	"returning reader: page views with the ajs_anonymous_id cookie",
	"new readers: page views without a cookie",
	"assets only: CSS, JavaScript and images",
	"mix: one page view per ten assets",
	"returning reader while the Segment endpoint hangs",
}

// scenario is one load pattern.
type scenario struct {
	ID     int
	Name   string
	Cookie bool     // send the returning reader's ajs_anonymous_id cookie
	Paths  []string // requests each wrk thread cycles through
	Hang   bool     // the recorder accepts connections and never responds
}

// assetsPerPage is the number of asset requests per page view in the mix.
const assetsPerPage = 10

func (h *harness) scenario(id int) scenario {
	sc := scenario{ID: id, Name: scenarioNames[id-1], Cookie: id != 2, Hang: id == 5}
	switch id {
	case 3:
		sc.Paths = h.assets
	case 4:
		sc.Paths = []string{pagePath}
		for i := range assetsPerPage {
			sc.Paths = append(sc.Paths, h.assets[i%len(h.assets)])
		}
	default:
		sc.Paths = []string{pagePath}
	}
	return sc
}

// serverRun is one measured wrk run against one Caddy.
type serverRun struct {
	Wrk wrkResult `json:"wrk"`
	// CPUSeconds is the CPU time Caddy used during the run.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Before and After are read just before and just after wrk runs; the
	// peak is reset before the run, so After.PeakKiB is the run's peak.
	Before memory `json:"memory_before"`
	After  memory `json:"memory_after"`
	// HarnessCPUSeconds is the CPU time this process used during the run,
	// which is almost all the recorder decoding batches.
	HarnessCPUSeconds float64 `json:"harness_cpu_seconds"`
	// LoadAverage is the machine's 1-minute load average before the run.
	LoadAverage float64 `json:"load_average"`
}

// CPUPerRequest returns Caddy's CPU time per request in microseconds.
func (s serverRun) CPUPerRequest() float64 {
	if s.Wrk.Requests == 0 {
		return 0
	}
	return s.CPUSeconds * 1e6 / float64(s.Wrk.Requests)
}

// delivery is what reached the recorder from one run of the Caddy with the
// handler, next to that Caddy's own counters.
type delivery struct {
	// PluginPageViews is the increase of caddy_segment_page_views_total.
	PluginPageViews     int64   `json:"plugin_page_views"`
	EventsReceived      int64   `json:"events_received"`
	Batches             int     `json:"batches"`
	MeanEventsPerBatch  float64 `json:"mean_events_per_batch"`
	MaxEventsPerBatch   int     `json:"max_events_per_batch"`
	DuplicateMessageIDs int     `json:"duplicate_message_ids"`
	RejectedRequests    int     `json:"rejected_requests"`
	Delivered           int64   `json:"delivered"`
	Failed              int64   `json:"failed"`
	// FailedByReason splits Failed by the reason label of
	// caddy_segment_events_failed_total.
	FailedByReason   map[string]int64 `json:"failed_by_reason,omitempty"`
	DroppedQueueFull int64            `json:"dropped_queue_full"`
	DroppedShutdown  int64            `json:"dropped_shutdown"`
	DroppedTooBig    int64            `json:"dropped_too_big"`
	// WaitSeconds is how long the events took to arrive after wrk ended.
	WaitSeconds float64 `json:"wait_seconds"`
}

// shutdown is the timed stop of the Caddy with the handler after a run of
// scenario 5.
type shutdown struct {
	Seconds  float64     `json:"seconds"`
	ExitCode int         `json:"exit_code"`
	Log      shutdownLog `json:"log"`
	// Unaccounted is page views minus every outcome counted for them:
	// delivered, failed, dropped while queued and dropped at shutdown.
	Unaccounted int64 `json:"unaccounted"`
}

// runResult is one plain run followed by one plugin run.
type runResult struct {
	Run      int       `json:"run"`
	Plain    serverRun `json:"plain"`
	Plugin   serverRun `json:"plugin"`
	Delivery delivery  `json:"delivery"`
	Shutdown *shutdown `json:"shutdown,omitempty"`
}

// scenarioResult holds the runs of one scenario.
type scenarioResult struct {
	ID              int         `json:"id"`
	Name            string      `json:"name"`
	Paths           []string    `json:"paths"`
	DurationSeconds float64     `json:"duration_seconds"`
	Runs            []runResult `json:"runs"`
	Error           string      `json:"error,omitempty"`
}

// runAll runs every selected scenario. It returns the report and an error
// when the run could not go on, such as an interrupt or a dead Caddy.
func (h *harness) runAll(ctx context.Context) (*report, error) {
	rep := &report{
		Machine: h.machine,
		Options: reportOptions{
			DurationSeconds:     h.opts.duration.Seconds(),
			HangDurationSeconds: h.opts.hangDuration.Seconds(),
			WarmupSeconds:       h.opts.warmup.Seconds(),
			Runs:                h.opts.runs,
			Connections:         h.opts.connections,
			Threads:             h.opts.threads,
			Smoke:               h.opts.smoke,
		},
		HandlerSettings: fmt.Sprintf("batch_size %d, flush_interval %s, shutdown_timeout %s, queue_size default", batchSize, flushInterval, shutdownTimeout),
		PageBytes:       pageSize,
	}

	for _, id := range h.opts.scenarios {
		sc := h.scenario(id)
		fmt.Fprintf(os.Stderr, "bench: scenario %d: %s\n", sc.ID, sc.Name)

		var result scenarioResult
		var err error
		if sc.Hang {
			result, err = h.runHangScenario(ctx, sc)
		} else {
			result, err = h.runScenario(ctx, sc)
		}
		if err != nil && ctx.Err() == nil {
			result.Error = err.Error()
			h.violate("scenario %d: %v", sc.ID, err)
		}
		rep.Scenarios = append(rep.Scenarios, result)

		if ctx.Err() != nil {
			rep.Violations = h.violations
			return rep, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		if dead := h.deadProcess(); dead != nil {
			rep.Violations = h.violations
			return rep, fmt.Errorf("caddy (%s) exited with status %d during the run; its log ends:\n%s", dead.name, dead.exitCode, tail(dead.logPath, 2000))
		}
	}
	rep.Violations = h.violations
	return rep, nil
}

func (h *harness) violate(format string, args ...any) {
	message := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "bench: FAILED:", message)
	h.violations = append(h.violations, message)
}

// deadProcess returns a Caddy that exited without being stopped.
func (h *harness) deadProcess() *caddyProcess {
	for _, p := range h.started {
		if !p.stopped && !p.alive() {
			return p
		}
	}
	return nil
}

// runScenario runs scenarios 1 to 4: an optional warm-up of each server,
// then plain and plugin runs in turn, waiting after each plugin run until
// its events have reached the recorder.
func (h *harness) runScenario(ctx context.Context, sc scenario) (scenarioResult, error) {
	result := scenarioResult{ID: sc.ID, Name: sc.Name, Paths: sc.Paths, DurationSeconds: h.opts.duration.Seconds()}
	script, err := h.writeScript(sc)
	if err != nil {
		return result, err
	}

	if h.opts.warmup > 0 {
		if _, err := h.runWrk(ctx, script, h.plain, h.opts.warmup); err != nil {
			return result, fmt.Errorf("warm-up of the plain Caddy: %w", err)
		}
		before, err := h.scrapeMetrics(h.plugin)
		if err != nil {
			return result, err
		}
		if _, err := h.runWrk(ctx, script, h.plugin, h.opts.warmup); err != nil {
			return result, fmt.Errorf("warm-up of the plugin Caddy: %w", err)
		}
		if _, err := h.waitForDelivery(before); err != nil {
			return result, err
		}
	}

	for run := 1; run <= h.opts.runs; run++ {
		r := runResult{Run: run}
		if r.Plain, err = h.measure(ctx, h.plain, script, h.opts.duration); err != nil {
			return result, fmt.Errorf("run %d, plain Caddy: %w", run, err)
		}

		before, err := h.scrapeMetrics(h.plugin)
		if err != nil {
			return result, err
		}
		h.recorder.Reset()
		if r.Plugin, err = h.measure(ctx, h.plugin, script, h.opts.duration); err != nil {
			return result, fmt.Errorf("run %d, plugin Caddy: %w", run, err)
		}
		if r.Delivery, err = h.waitForDelivery(before); err != nil {
			return result, err
		}

		result.Runs = append(result.Runs, r)
		h.checkRun(sc, r)
		fmt.Fprintf(os.Stderr, "bench:   run %d: plain %.0f req/s, plugin %.0f req/s, %d page views, %d events received\n",
			run, r.Plain.Wrk.RequestsPerSec, r.Plugin.Wrk.RequestsPerSec, r.Plugin.Wrk.PagesCompleted, r.Delivery.EventsReceived)
	}
	return result, nil
}

// measure runs wrk against one Caddy and reads its CPU time and memory
// around the run.
func (h *harness) measure(ctx context.Context, p *caddyProcess, script string, duration time.Duration) (serverRun, error) {
	var s serverRun
	if !p.alive() {
		return s, fmt.Errorf("caddy (%s) is not running (exit status %d)", p.name, p.exitCode)
	}
	if err := resetPeak(p.pid()); err != nil {
		return s, fmt.Errorf("resetting the peak RSS of caddy (%s) failed: %w", p.name, err)
	}

	var err error
	if s.Before, err = readMemory(p.pid()); err != nil {
		return s, err
	}
	cpuBefore, err := readCPUTime(p.pid())
	if err != nil {
		return s, err
	}
	harnessBefore := harnessCPUTime()
	s.LoadAverage = loadAverage()

	if s.Wrk, err = h.runWrk(ctx, script, p, duration); err != nil {
		return s, err
	}

	harnessAfter := harnessCPUTime()
	cpuAfter, err := readCPUTime(p.pid())
	if err != nil {
		return s, fmt.Errorf("caddy (%s) after the run: %w", p.name, err)
	}
	if s.After, err = readMemory(p.pid()); err != nil {
		return s, fmt.Errorf("caddy (%s) after the run: %w", p.name, err)
	}
	s.CPUSeconds = (cpuAfter - cpuBefore).Seconds()
	s.HarnessCPUSeconds = (harnessAfter - harnessBefore).Seconds()
	return s, nil
}

// harnessCPUTime returns the user plus system CPU time of this process.
func harnessCPUTime() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// loadAverage returns the 1-minute load average from /proc/loadavg, or 0.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	load, _ := strconv.ParseFloat(fields[0], 64)
	return load
}

// deliveryTimeout bounds the wait for the events of one run, counted from
// the end of wrk: one flush interval plus ample time to post the batches.
const deliveryTimeout = flushInterval + 15*time.Second

// waitForDelivery waits until the recorder has at least as many events as
// the plugin counted page views since before, and that count has stopped
// growing, then reads both sides. It returns what arrived by then, also
// after deliveryTimeout; checkRun judges the numbers.
func (h *harness) waitForDelivery(before segmentMetrics) (delivery, error) {
	start := time.Now()
	lastPageViews := int64(-1)
	for {
		after, err := h.scrapeMetrics(h.plugin)
		if err != nil {
			return delivery{}, err
		}
		stats := h.recorder.Stats()
		pageViews := after.sum(metricPageViews) - before.sum(metricPageViews)

		settled := int64(stats.Events) >= pageViews && pageViews == lastPageViews
		if settled || time.Since(start) > deliveryTimeout {
			d := delivery{
				PluginPageViews:     pageViews,
				EventsReceived:      int64(stats.Events),
				Batches:             stats.Batches,
				MeanEventsPerBatch:  stats.MeanEventsPerBatch(),
				MaxEventsPerBatch:   stats.MaxEventsPerBatch,
				DuplicateMessageIDs: stats.DuplicateMessageIDs,
				Delivered:           after.sum(metricDelivered) - before.sum(metricDelivered),
				Failed:              after.sum(metricFailed) - before.sum(metricFailed),
				FailedByReason:      after.byReason(before, metricFailed),
				DroppedQueueFull:    after.dropped("queue_full") - before.dropped("queue_full"),
				DroppedShutdown:     after.dropped("shutdown") - before.dropped("shutdown"),
				DroppedTooBig:       after.dropped("too_big") - before.dropped("too_big"),
				WaitSeconds:         time.Since(start).Seconds(),
			}
			for _, count := range stats.Rejected {
				d.RejectedRequests += count
			}
			return d, nil
		}
		lastPageViews = pageViews
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRun records every broken invariant of one run of scenarios 1 to 4.
func (h *harness) checkRun(sc scenario, r runResult) {
	where := fmt.Sprintf("scenario %d run %d", sc.ID, r.Run)
	h.checkWrk(where+", plain Caddy", r.Plain.Wrk)
	h.checkWrk(where+", plugin Caddy", r.Plugin.Wrk)

	d := r.Delivery
	w := r.Plugin.Wrk
	// wrk stops with requests in flight: Caddy may serve them, and send
	// their events, after wrk stopped counting responses. So the events lie
	// between the page views wrk saw complete and the page requests it sent.
	if d.EventsReceived < w.PagesCompleted || d.EventsReceived > w.PagesSent {
		h.violate("%s: %d events received, want between %d (page views completed) and %d (page requests sent)",
			where, d.EventsReceived, w.PagesCompleted, w.PagesSent)
	}
	if d.EventsReceived != d.PluginPageViews {
		h.violate("%s: %d events received, but caddy_segment_page_views_total rose by %d", where, d.EventsReceived, d.PluginPageViews)
	}
	if d.DuplicateMessageIDs != 0 {
		h.violate("%s: %d events arrived twice (duplicate messageId)", where, d.DuplicateMessageIDs)
	}
	if d.RejectedRequests != 0 {
		h.violate("%s: the recorder rejected %d batch requests; see the plugin Caddy's log", where, d.RejectedRequests)
	}
	if lost := d.Failed + d.DroppedQueueFull + d.DroppedShutdown + d.DroppedTooBig; lost != 0 {
		h.violate("%s: %d events failed or were dropped (failed %d, queue_full %d, shutdown %d, too_big %d)",
			where, lost, d.Failed, d.DroppedQueueFull, d.DroppedShutdown, d.DroppedTooBig)
	}
}

// checkWrk records a wrk run that saw no requests, error responses or
// failed connections.
func (h *harness) checkWrk(where string, w wrkResult) {
	if w.Requests == 0 {
		h.violate("%s: wrk completed no request", where)
	}
	if w.ErrorResponses != 0 {
		h.violate("%s: wrk got %d responses with a status other than 2xx or 3xx", where, w.ErrorResponses)
	}
	if w.ConnectErrors != 0 {
		h.violate("%s: wrk failed to connect %d times", where, w.ConnectErrors)
	}
}

// runHangScenario runs scenario 5. Each run starts two new Caddy
// processes, so that every run's memory growth starts from the same state
// and both servers are equally fresh. It drives the plain Caddy, then the
// plugin Caddy while the recorder hangs, and then stops the plugin Caddy
// with SIGINT and times its exit.
func (h *harness) runHangScenario(ctx context.Context, sc scenario) (scenarioResult, error) {
	result := scenarioResult{ID: sc.ID, Name: sc.Name, Paths: sc.Paths, DurationSeconds: h.opts.hangDuration.Seconds()}
	script, err := h.writeScript(sc)
	if err != nil {
		return result, err
	}

	for run := 1; run <= h.opts.runs; run++ {
		if err := h.restartServers(ctx); err != nil {
			return result, err
		}

		r := runResult{Run: run}
		if r.Plain, err = h.measure(ctx, h.plain, script, h.opts.hangDuration); err != nil {
			return result, fmt.Errorf("run %d, plain Caddy: %w", run, err)
		}

		before, err := h.scrapeMetrics(h.plugin)
		if err != nil {
			return result, err
		}
		h.recorder.Reset()
		h.recorder.SetMode(recorder.Mode{Hang: true})
		r.Plugin, err = h.measure(ctx, h.plugin, script, h.opts.hangDuration)
		if err != nil {
			h.recorder.SetMode(recorder.Mode{})
			return result, fmt.Errorf("run %d, plugin Caddy: %w", run, err)
		}

		// Requests that wrk left in flight finish within milliseconds.
		time.Sleep(200 * time.Millisecond)
		after, err := h.scrapeMetrics(h.plugin)
		if err != nil {
			h.recorder.SetMode(recorder.Mode{})
			return result, err
		}
		r.Delivery = hangDelivery(before, after, h.recorder.Stats())

		stopped, err := h.stopPlugin()
		h.recorder.SetMode(recorder.Mode{})
		if err != nil {
			return result, err
		}
		stopped.Unaccounted = r.Delivery.PluginPageViews - r.Delivery.Delivered - r.Delivery.Failed -
			r.Delivery.DroppedQueueFull - r.Delivery.DroppedTooBig - stopped.Log.Dropped
		r.Shutdown = &stopped

		result.Runs = append(result.Runs, r)
		h.checkHangRun(sc, r)
		fmt.Fprintf(os.Stderr, "bench:   run %d: plain %.0f req/s, plugin %.0f req/s, RSS %+.1f MiB, %d dropped while queued, %d at shutdown, exit after %.2fs\n",
			run, r.Plain.Wrk.RequestsPerSec, r.Plugin.Wrk.RequestsPerSec,
			float64(r.Plugin.After.RSSKiB-r.Plugin.Before.RSSKiB)/1024,
			r.Delivery.DroppedQueueFull, stopped.Log.Dropped, stopped.Seconds)
	}
	return result, nil
}

// hangDelivery reads the plugin's counters after a run against the hung
// recorder.
func hangDelivery(before, after segmentMetrics, stats recorder.Stats) delivery {
	return delivery{
		PluginPageViews:     after.sum(metricPageViews) - before.sum(metricPageViews),
		EventsReceived:      int64(stats.Events),
		Batches:             stats.Batches,
		MeanEventsPerBatch:  stats.MeanEventsPerBatch(),
		MaxEventsPerBatch:   stats.MaxEventsPerBatch,
		DuplicateMessageIDs: stats.DuplicateMessageIDs,
		Delivered:           after.sum(metricDelivered) - before.sum(metricDelivered),
		Failed:              after.sum(metricFailed) - before.sum(metricFailed),
		FailedByReason:      after.byReason(before, metricFailed),
		DroppedQueueFull:    after.dropped("queue_full") - before.dropped("queue_full"),
		DroppedShutdown:     after.dropped("shutdown") - before.dropped("shutdown"),
		DroppedTooBig:       after.dropped("too_big") - before.dropped("too_big"),
	}
}

// stopGrace bounds the wait for Caddy to exit after SIGINT: the segment
// sender takes at most shutdown_timeout plus a short grace, and Caddy's
// own shutdown a moment more.
const stopGrace = shutdownTimeout + 25*time.Second

// stopPlugin stops the plugin Caddy with SIGINT, times its exit and reads
// its shutdown log.
func (h *harness) stopPlugin() (shutdown, error) {
	p := h.plugin
	elapsed, err := p.stop(stopGrace)
	s := shutdown{Seconds: elapsed.Seconds(), ExitCode: p.exitCode}
	if err != nil {
		return s, err
	}
	s.Log, err = readShutdownLog(p.logPath)
	return s, err
}

// restartServers stops both Caddy processes, if they run, and starts new
// ones with new configs and logs.
func (h *harness) restartServers(ctx context.Context) error {
	for _, p := range []*caddyProcess{h.plain, h.plugin} {
		if p != nil && p.alive() {
			if _, err := p.stop(stopGrace); err != nil {
				return err
			}
		}
	}

	var err error
	if h.plain, err = h.startCaddy(ctx, false); err != nil {
		return err
	}
	h.plugin, err = h.startCaddy(ctx, true)
	return err
}

// checkHangRun records every broken invariant of one run of scenario 5.
func (h *harness) checkHangRun(sc scenario, r runResult) {
	where := fmt.Sprintf("scenario %d run %d", sc.ID, r.Run)
	h.checkWrk(where+", plain Caddy", r.Plain.Wrk)
	h.checkWrk(where+", plugin Caddy", r.Plugin.Wrk)

	s := r.Shutdown
	if s.ExitCode != 0 {
		h.violate("%s: the plugin Caddy exited with status %d after SIGINT", where, s.ExitCode)
	}
	if !s.Log.Found {
		h.violate("%s: the plugin Caddy logged no stopped sender; see its log", where)
	}
	if s.Unaccounted != 0 {
		h.violate("%s: %d page views are neither delivered, failed nor counted as dropped", where, s.Unaccounted)
	}
}
