package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// caddyProcess is one running Caddy.
type caddyProcess struct {
	name      string // "plain" or "plugin"
	port      int
	adminPort int // 0 when the admin endpoint is off
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
	exitCode  int  // valid once exited is closed
	stopped   bool // the harness sent SIGINT on purpose
}

// caddyfile returns the config of one Caddy: file_server on the site copy,
// on 127.0.0.1 only, without access logs. The Caddy with the handler has an
// admin endpoint on loopback for /metrics; the other has none.
func (h *harness) caddyfile(withHandler bool, port, adminPort int) string {
	var b strings.Builder
	b.WriteString("{\n")
	if withHandler {
		fmt.Fprintf(&b, "\tadmin 127.0.0.1:%d\n", adminPort)
	} else {
		b.WriteString("\tadmin off\n")
	}
	b.WriteString("\tpersist_config off\n")
	b.WriteString("\tlog {\n\t\toutput stderr\n\t\tformat json\n\t\tlevel INFO\n\t}\n")
	b.WriteString("}\n\n")

	fmt.Fprintf(&b, "http://127.0.0.1:%d {\n", port)
	b.WriteString("\tbind 127.0.0.1\n")
	fmt.Fprintf(&b, "\troot * %s\n", h.siteDir)
	if withHandler {
		b.WriteString("\tsegment {\n")
		fmt.Fprintf(&b, "\t\twrite_key %s\n", writeKey)
		fmt.Fprintf(&b, "\t\tendpoint %s\n", h.recorder.URL())
		fmt.Fprintf(&b, "\t\tbatch_size %d\n", batchSize)
		fmt.Fprintf(&b, "\t\tflush_interval %s\n", flushInterval)
		fmt.Fprintf(&b, "\t\tshutdown_timeout %s\n", shutdownTimeout)
		b.WriteString("\t}\n")
	}
	b.WriteString("\tfile_server\n")
	b.WriteString("}\n")
	return b.String()
}

// startCaddy writes a Caddyfile, starts Caddy with it and waits until it
// serves the site.
func (h *harness) startCaddy(ctx context.Context, withHandler bool) (*caddyProcess, error) {
	name := "plain"
	if withHandler {
		name = "plugin"
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort := 0
	if withHandler {
		if adminPort, err = freePort(); err != nil {
			return nil, err
		}
	}

	// Each start gets its own Caddyfile and log, so that a restarted
	// process's shutdown log holds only its own lines.
	base := fmt.Sprintf("%s-%d", name, len(h.started)+1)
	configPath := filepath.Join(h.dir, base+".Caddyfile")
	logPath := filepath.Join(h.dir, base+".log")
	if err := os.WriteFile(configPath, []byte(h.caddyfile(withHandler, port, adminPort)), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	home := filepath.Join(h.dir, "home")
	cmd := exec.Command(h.caddyBin, "run", "--config", configPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group keeps a terminal's Ctrl-C away from Caddy, so
	// that the harness decides how each Caddy stops.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s failed: %w", h.caddyBin, err)
	}

	p := &caddyProcess{
		name:      name,
		port:      port,
		adminPort: adminPort,
		logPath:   logPath,
		cmd:       cmd,
		exited:    make(chan struct{}),
	}
	h.started = append(h.started, p)
	go func() {
		_ = cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		close(p.exited)
	}()

	if err := p.waitReady(ctx, h.client); err != nil {
		return nil, err
	}
	return p, nil
}

// waitReady polls the stylesheet, which is not a page view, until Caddy
// serves it.
func (p *caddyProcess) waitReady(ctx context.Context, client *http.Client) error {
	url := fmt.Sprintf("http://127.0.0.1:%d%s", p.port, benchCSSPath)
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := client.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.alive() {
			return fmt.Errorf("caddy (%s) exited with status %d before serving; its log ends:\n%s", p.name, p.exitCode, tail(p.logPath, 2000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy (%s) did not serve %s within 20s (last error: %v); its log ends:\n%s", p.name, url, err, tail(p.logPath, 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *caddyProcess) pid() int {
	return p.cmd.Process.Pid
}

func (p *caddyProcess) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGINT, which makes Caddy stop its apps and clean up its
// modules (the segment sender delivers or drops its queue then), and
// returns how long Caddy took to exit. After timeout it kills Caddy.
func (p *caddyProcess) stop(timeout time.Duration) (time.Duration, error) {
	p.stopped = true
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return 0, fmt.Errorf("sending SIGINT to caddy (%s) failed: %w", p.name, err)
	}
	select {
	case <-p.exited:
		return time.Since(start), nil
	case <-time.After(timeout):
		p.kill()
		return time.Since(start), fmt.Errorf("caddy (%s) did not exit within %s of SIGINT and was killed", p.name, timeout)
	}
}

// kill ends the process group at once, if it still runs, and waits for it.
func (p *caddyProcess) kill() {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.exited
}

// memory is a process's resident set size and its peak, in KiB.
type memory struct {
	RSSKiB  int64 `json:"rss_kib"`
	PeakKiB int64 `json:"peak_kib"`
}

// readMemory reads VmRSS and VmHWM from /proc/<pid>/status.
func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	for _, line := range strings.Split(string(data), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		kib, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			m.RSSKiB = kib
		case "VmHWM":
			m.PeakKiB = kib
		}
	}
	if m.RSSKiB == 0 {
		return memory{}, fmt.Errorf("VmRSS missing in /proc/%d/status", pid)
	}
	return m, nil
}

// resetPeak sets VmHWM back to the current RSS (Linux 4.0 and later), so
// that the next reading is the peak of one run.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// clockTicksPerSecond is the unit of utime and stime in /proc/<pid>/stat.
// Linux reports them in USER_HZ, which is 100 on every architecture Go
// supports.
const clockTicksPerSecond = 100

// readCPUTime returns the user plus system CPU time of all threads of a
// process, from /proc/<pid>/stat.
func readCPUTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in brackets may contain spaces, so the fields are
	// counted from the last ')'. After it come state (field 3), ..., utime
	// (field 14) and stime (field 15).
	end := strings.LastIndexByte(string(data), ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat has no ')'", pid)
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat has %d fields after the command name, want at least 13", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicksPerSecond, nil
}

// segmentMetrics holds the caddy_segment_* series of one /metrics scrape,
// keyed by series name with labels, such as
// `caddy_segment_events_dropped_total{reason="queue_full"}`.
type segmentMetrics map[string]float64

// Series names read by the harness.
const (
	metricPageViews = "caddy_segment_page_views_total"
	metricDelivered = "caddy_segment_events_delivered_total"
	metricFailed    = "caddy_segment_events_failed_total"
	metricDropped   = "caddy_segment_events_dropped_total"
	metricQueue     = "caddy_segment_queue_depth"
)

// scrapeMetrics reads the Prometheus text format from the admin endpoint.
func (h *harness) scrapeMetrics(p *caddyProcess) (segmentMetrics, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", p.adminPort)
	res, err := h.client.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scraping %s failed: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s failed: status %s", url, res.Status)
	}

	metrics := segmentMetrics{}
	scanner := bufio.NewScanner(res.Body)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		series, value, ok := parseSample(scanner.Text())
		if ok && strings.HasPrefix(series, "caddy_segment_") {
			metrics[series] = value
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("reading %s failed: %w", url, err)
	}
	if _, ok := metrics[metricPageViews]; !ok {
		return nil, fmt.Errorf("%s has no %s series: is the segment handler loaded?", url, metricPageViews)
	}
	return metrics, nil
}

// parseSample splits a sample line of the Prometheus text format into its
// series and value. Comments, blank lines and lines with a timestamp are
// not samples here.
func parseSample(line string) (string, float64, bool) {
	if line == "" || strings.HasPrefix(line, "#") {
		return "", 0, false
	}
	cut := strings.LastIndexByte(line, ' ')
	if cut < 0 {
		return "", 0, false
	}
	value, err := strconv.ParseFloat(line[cut+1:], 64)
	if err != nil {
		return "", 0, false
	}
	return line[:cut], value, true
}

// sum adds up every series of a metric, whatever its labels.
func (m segmentMetrics) sum(metric string) int64 {
	var total float64
	for series, value := range m {
		name, _, _ := strings.Cut(series, "{")
		if name == metric {
			total += value
		}
	}
	return int64(total)
}

// byReason returns the increase of each reason of a labelled metric from
// before to m, leaving out reasons that did not grow.
func (m segmentMetrics) byReason(before segmentMetrics, metric string) map[string]int64 {
	increase := map[string]int64{}
	prefix := metric + `{reason="`
	for series, value := range m {
		reason, ok := strings.CutPrefix(series, prefix)
		if !ok {
			continue
		}
		reason = strings.TrimSuffix(reason, `"}`)
		if delta := int64(value - before[series]); delta != 0 {
			increase[reason] = delta
		}
	}
	return increase
}

// dropped returns the dropped-events count for one reason.
func (m segmentMetrics) dropped(reason string) int64 {
	return int64(m[fmt.Sprintf("%s{reason=%q}", metricDropped, reason)])
}

// shutdownLog is what the segment handler logged when its sender stopped.
type shutdownLog struct {
	Found    bool    `json:"found"`
	Dropped  int64   `json:"dropped"`
	Duration float64 `json:"duration_seconds"`
}

// readShutdownLog finds the log lines of the segment logger that report a
// stopped sender, and adds up the events they report as dropped.
func readShutdownLog(path string) (shutdownLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return shutdownLog{}, err
	}
	defer f.Close()

	var result shutdownLog
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		var entry struct {
			Logger   string   `json:"logger"`
			Msg      string   `json:"msg"`
			Dropped  *int64   `json:"dropped"`
			Duration *float64 `json:"duration"`
		}
		if json.Unmarshal(scanner.Bytes(), &entry) != nil {
			continue
		}
		if entry.Logger != "http.handlers.segment" || entry.Dropped == nil || !strings.Contains(entry.Msg, "stopped") {
			continue
		}
		result.Found = true
		result.Dropped += *entry.Dropped
		if entry.Duration != nil {
			result.Duration += *entry.Duration
		}
	}
	return result, scanner.Err()
}
