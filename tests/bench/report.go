package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// report is everything one invocation measured. It is written as JSON, or
// as Markdown tables.
type report struct {
	Machine         machineInfo      `json:"machine"`
	Options         reportOptions    `json:"options"`
	HandlerSettings string           `json:"handler_settings"`
	PageBytes       int              `json:"page_bytes"`
	Scenarios       []scenarioResult `json:"scenarios"`
	Violations      []string         `json:"violations"`
}

type reportOptions struct {
	DurationSeconds     float64 `json:"duration_seconds"`
	HangDurationSeconds float64 `json:"hang_duration_seconds"`
	WarmupSeconds       float64 `json:"warmup_seconds"`
	Runs                int     `json:"runs"`
	Connections         int     `json:"connections"`
	Threads             int     `json:"threads"`
	Smoke               bool    `json:"smoke"`
}

// write saves the report: Markdown when path ends in .md, JSON otherwise.
func (r *report) write(path string) error {
	var data []byte
	if strings.HasSuffix(path, ".md") {
		data = []byte(r.markdown())
	} else {
		var err error
		if data, err = json.MarshalIndent(r, "", "  "); err != nil {
			return err
		}
		data = append(data, '\n')
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing the results to %s failed: %w", path, err)
	}
	return nil
}

// markdown renders the report as Markdown tables. Figures over several runs
// show the minimum and maximum.
func (r *report) markdown() string {
	var b strings.Builder
	m := r.Machine
	o := r.Options
	fmt.Fprintf(&b, "Measured on %d CPUs (%s), %s, %s, Caddy %s. wrk, both Caddy processes and the recorder share these CPUs.\n\n",
		m.CPUs, m.CPUModel, m.OS, m.GoVersion, m.CaddyVersion)
	fmt.Fprintf(&b, "wrk -t %d -c %d, %.0f s per run (scenario 5: %.0f s), %d run(s) per server alternating plain and plugin, warm-up %.0f s. ",
		o.Threads, o.Connections, o.DurationSeconds, o.HangDurationSeconds, o.Runs, o.WarmupSeconds)
	fmt.Fprintf(&b, "Page: %d bytes of HTML. Handler: %s. ", r.PageBytes, r.HandlerSettings)
	fmt.Fprintf(&b, "1-minute load average before the runs: %s.\n\n", r.loadAverages())

	r.writeThroughput(&b)
	r.writeResources(&b)
	r.writeEvents(&b)
	r.writeHang(&b)
	r.writePageViewRate(&b)

	b.WriteString("### Invariants\n\n")
	if len(r.Violations) == 0 {
		b.WriteString("All invariants held.\n")
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "- FAILED: %s\n", v)
	}
	return b.String()
}

func (r *report) writeThroughput(b *strings.Builder) {
	b.WriteString("### Throughput and latency (min – max over runs)\n\n")
	b.WriteString("| Scenario | Plain req/s | Plugin req/s | Ratio | Plain p50 | Plugin p50 | p50 ratio | Plain p99 | Plugin p99 | p99 ratio |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.Scenarios {
		if len(sc.Runs) == 0 {
			continue
		}
		fmt.Fprintf(b, "| %d %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sc.ID, sc.Name,
			span(sc, func(x runResult) float64 { return x.Plain.Wrk.RequestsPerSec }, formatRate),
			span(sc, func(x runResult) float64 { return x.Plugin.Wrk.RequestsPerSec }, formatRate),
			span(sc, func(x runResult) float64 { return ratio(x.Plugin.Wrk.RequestsPerSec, x.Plain.Wrk.RequestsPerSec) }, formatRatio),
			span(sc, func(x runResult) float64 { return x.Plain.Wrk.P50 }, formatLatency),
			span(sc, func(x runResult) float64 { return x.Plugin.Wrk.P50 }, formatLatency),
			span(sc, func(x runResult) float64 { return ratio(x.Plugin.Wrk.P50, x.Plain.Wrk.P50) }, formatRatio),
			span(sc, func(x runResult) float64 { return x.Plain.Wrk.P99 }, formatLatency),
			span(sc, func(x runResult) float64 { return x.Plugin.Wrk.P99 }, formatLatency),
			span(sc, func(x runResult) float64 { return ratio(x.Plugin.Wrk.P99, x.Plain.Wrk.P99) }, formatRatio))
	}
	b.WriteString("\n")
}

func (r *report) writeResources(b *strings.Builder) {
	b.WriteString("### CPU time and memory (min – max over runs)\n\n")
	b.WriteString("CPU per request is the Caddy process's user plus system CPU time during the run divided by the requests wrk completed. ")
	b.WriteString("Recorder CPU is this process's CPU time during the plugin run, almost all of it the recorder decoding batches. ")
	b.WriteString("Peak RSS is VmHWM, reset before each run.\n\n")
	b.WriteString("| Scenario | Plain CPU/request | Plugin CPU/request | Difference | Recorder CPU | wrk CPU (plugin run) | Plain peak RSS | Plugin peak RSS |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.Scenarios {
		if len(sc.Runs) == 0 {
			continue
		}
		fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", sc.ID,
			span(sc, func(x runResult) float64 { return x.Plain.CPUPerRequest() }, formatMicros),
			span(sc, func(x runResult) float64 { return x.Plugin.CPUPerRequest() }, formatMicros),
			span(sc, func(x runResult) float64 { return x.Plugin.CPUPerRequest() - x.Plain.CPUPerRequest() }, formatMicros),
			span(sc, func(x runResult) float64 { return x.Plugin.HarnessCPUSeconds }, formatSeconds),
			span(sc, func(x runResult) float64 { return x.Plugin.Wrk.CPUSeconds }, formatSeconds),
			span(sc, func(x runResult) float64 { return float64(x.Plain.After.PeakKiB) }, formatKiB),
			span(sc, func(x runResult) float64 { return float64(x.Plugin.After.PeakKiB) }, formatKiB))
	}
	b.WriteString("\n")
}

func (r *report) writeEvents(b *strings.Builder) {
	b.WriteString("### Events received by the recorder (plugin runs of scenarios 1 to 4)\n\n")
	b.WriteString("Page views (wrk) counts the 200 HTML responses wrk completed. In flight counts page requests wrk sent whose response it did not wait for when it stopped; Caddy may still serve them and send their events. ")
	b.WriteString("Events per request is the mean number of events per batch request to the recorder. Lost adds up failed and dropped events.\n\n")
	b.WriteString("| Scenario | Run | Page views (wrk) | In flight | Page views (plugin counter) | Events received | Events per request | Max per request | Duplicates | Lost | Wait after wrk |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.Scenarios {
		if sc.ID == 5 {
			continue
		}
		for _, x := range sc.Runs {
			d := x.Delivery
			fmt.Fprintf(b, "| %d | %d | %d | %d | %d | %d | %.0f | %d | %d | %d | %.1f s |\n", sc.ID, x.Run,
				x.Plugin.Wrk.PagesCompleted, x.Plugin.Wrk.PagesSent-x.Plugin.Wrk.PagesCompleted,
				d.PluginPageViews, d.EventsReceived, d.MeanEventsPerBatch, d.MaxEventsPerBatch,
				d.DuplicateMessageIDs, d.Failed+d.DroppedQueueFull+d.DroppedShutdown+d.DroppedTooBig, d.WaitSeconds)
		}
	}
	b.WriteString("\n")
}

func (r *report) writeHang(b *strings.Builder) {
	i := slices.IndexFunc(r.Scenarios, func(sc scenarioResult) bool { return sc.ID == 5 })
	if i < 0 || len(r.Scenarios[i].Runs) == 0 {
		return
	}
	sc := r.Scenarios[i]
	fmt.Fprintf(b, "### Scenario 5: the Segment endpoint accepts connections and never responds (%.0f s per run)\n\n", sc.DurationSeconds)
	b.WriteString("RSS before and after are read just before wrk starts and just after it ends. Dropped and failed counts are the plugin's caddy_segment_events_* counters (failed split by reason), ")
	b.WriteString("except dropped at shutdown, which the plugin logs as it stops. Shutdown is the time from SIGINT to the exit of the plugin Caddy (shutdown_timeout 5s). ")
	b.WriteString("Unaccounted is page views minus all those outcomes.\n\n")
	b.WriteString("| Run | Page views (plugin counter) | Events received | RSS before | RSS after | Growth | Peak RSS | Dropped: queue full | Dropped: shutdown | Failed | Unaccounted | Shutdown | Exit status |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range sc.Runs {
		d := x.Delivery
		s := x.Shutdown
		fmt.Fprintf(b, "| %d | %d | %d | %s | %s | %s | %s | %d | %d | %s | %d | %.2f s | %d |\n", x.Run,
			d.PluginPageViews, d.EventsReceived,
			formatKiB(float64(x.Plugin.Before.RSSKiB)), formatKiB(float64(x.Plugin.After.RSSKiB)),
			formatKiB(float64(x.Plugin.After.RSSKiB-x.Plugin.Before.RSSKiB)), formatKiB(float64(x.Plugin.After.PeakKiB)),
			d.DroppedQueueFull, s.Log.Dropped, formatReasons(d.Failed, d.FailedByReason), s.Unaccounted, s.Seconds, s.ExitCode)
	}
	b.WriteString("\n")
}

// writePageViewRate shows the page views per second of the plugin Caddy,
// in total and per CPU of this machine.
func (r *report) writePageViewRate(b *strings.Builder) {
	b.WriteString("### Page views per second of the plugin Caddy (min – max over runs)\n\n")
	fmt.Fprintf(b, "Per CPU divides by all %d CPUs, although wrk and the recorder use part of them.\n\n", r.Machine.CPUs)
	b.WriteString("| Scenario | Page views/s | Per CPU |\n|---|---|---|\n")
	for _, sc := range r.Scenarios {
		if len(sc.Runs) == 0 || sc.Runs[0].Plugin.Wrk.PagesCompleted == 0 {
			continue
		}
		rate := func(x runResult) float64 {
			if x.Plugin.Wrk.Seconds == 0 {
				return 0
			}
			return float64(x.Plugin.Wrk.PagesCompleted) / x.Plugin.Wrk.Seconds
		}
		cpus := float64(max(r.Machine.CPUs, 1))
		fmt.Fprintf(b, "| %d | %s | %s |\n", sc.ID,
			span(sc, rate, formatRate),
			span(sc, func(x runResult) float64 { return rate(x) / cpus }, formatRate))
	}
	b.WriteString("\n")
}

// loadAverages formats the range of the load averages read before each run.
func (r *report) loadAverages() string {
	var loads []float64
	for _, sc := range r.Scenarios {
		for _, x := range sc.Runs {
			loads = append(loads, x.Plain.LoadAverage, x.Plugin.LoadAverage)
		}
	}
	if len(loads) == 0 {
		return "not read"
	}
	return fmt.Sprintf("%.2f – %.2f", slices.Min(loads), slices.Max(loads))
}

// span formats the minimum and maximum of a figure over a scenario's runs.
func span(sc scenarioResult, figure func(runResult) float64, format func(float64) string) string {
	values := make([]float64, 0, len(sc.Runs))
	for _, x := range sc.Runs {
		values = append(values, figure(x))
	}
	low, high := slices.Min(values), slices.Max(values)
	if format(low) == format(high) {
		return format(low)
	}
	return format(low) + " – " + format(high)
}

// formatReasons formats a count with its split by reason, such as
// "12 (network 2, overload 10)".
func formatReasons(total int64, reasons map[string]int64) string {
	if len(reasons) == 0 {
		return fmt.Sprint(total)
	}
	names := slices.Sorted(maps.Keys(reasons))
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s %d", name, reasons[name]))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func formatRate(v float64) string  { return fmt.Sprintf("%.0f", v) }
func formatRatio(v float64) string { return fmt.Sprintf("%.3f", v) }

func formatMicros(v float64) string { return fmt.Sprintf("%.2f µs", v) }

func formatSeconds(v float64) string { return fmt.Sprintf("%.2f s", v) }

func formatKiB(v float64) string { return fmt.Sprintf("%.1f MiB", v/1024) }

// formatLatency formats microseconds in µs, ms or s.
func formatLatency(us float64) string {
	switch {
	case us < 1e3:
		return fmt.Sprintf("%.0f µs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2f ms", us/1e3)
	default:
		return fmt.Sprintf("%.2f s", us/1e6)
	}
}
