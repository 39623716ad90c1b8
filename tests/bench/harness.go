package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

// Settings of the segment handler in the Caddy under test. A batch is sent
// when it holds batch_size events or is flush_interval old, so a server
// with a few hundred page views per second posts hundreds of events per
// request. With events of about 540 bytes, 500 events stay under the
// 500,000 bytes at which analytics-go cuts a batch, so batches are cut by
// count or time, never by size, and each goes out as one request.
const (
	writeKey        = "bench"
	batchSize       = 500
	flushInterval   = time.Second
	shutdownTimeout = 5 * time.Second
)

// Paths served in the site copy, besides the files of sample/site.
const (
	pagePath     = "/page10k.html"
	pageSize     = 10 * 1024
	benchCSSPath = "/bench.css"
)

// sampleAssets are the files of sample/site that the asset scenarios
// request, with the generated stylesheet.
var sampleAssets = []string{"/assets/style.css", "/assets/app.js", "/images/diagram.png", "/images/logo.svg"}

// harness owns the working directory, the recorder and the Caddy processes.
type harness struct {
	opts     options
	dir      string
	root     string
	caddyBin string
	wrkBin   string
	siteDir  string
	assets   []string
	machine  machineInfo

	recorder *recorder.Recorder
	plain    *caddyProcess
	plugin   *caddyProcess
	started  []*caddyProcess
	client   *http.Client

	violations []string
}

// newHarness builds Caddy, prepares the site and starts the recorder and
// both Caddy processes. On error it stops what it started.
func newHarness(ctx context.Context, opts options) (h *harness, err error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	wrkBin, err := ensureWrk(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "caddy-segment-bench-")
	if err != nil {
		return nil, fmt.Errorf("creating the working directory failed: %w", err)
	}

	h = &harness{
		opts:    opts,
		dir:     dir,
		root:    root,
		wrkBin:  wrkBin,
		siteDir: filepath.Join(dir, "site"),
		client:  &http.Client{Timeout: 5 * time.Second},
	}
	defer func() {
		if err != nil {
			h.close(true)
			h = nil
		}
	}()
	fmt.Fprintf(os.Stderr, "bench: working directory %s\n", dir)

	if err := h.buildCaddy(ctx); err != nil {
		return nil, err
	}
	if err := h.prepareSite(); err != nil {
		return nil, err
	}
	h.machine, err = describeMachine(ctx, h.caddyBin)
	if err != nil {
		return nil, err
	}

	// Segment runs on other machines, but the recorder shares this
	// machine's CPUs with both Caddy processes. It keeps only counts and
	// messageIds, which is all the checks need, and so does not decode
	// each event in full.
	h.recorder, err = recorder.Start(recorder.Options{WriteKey: writeKey, CountOnly: true})
	if err != nil {
		return nil, err
	}
	if h.plain, err = h.startCaddy(ctx, false); err != nil {
		return nil, err
	}
	if h.plugin, err = h.startCaddy(ctx, true); err != nil {
		return nil, err
	}
	return h, nil
}

// close stops every Caddy process and the recorder, and removes the
// working directory unless keep is set.
func (h *harness) close(keep bool) {
	for _, p := range h.started {
		p.kill()
	}
	if h.recorder != nil {
		h.recorder.Close()
	}
	if keep {
		fmt.Fprintf(os.Stderr, "bench: kept the working directory %s (Caddyfiles, Caddy logs, wrk scripts)\n", h.dir)
		return
	}
	if err := os.RemoveAll(h.dir); err != nil {
		fmt.Fprintf(os.Stderr, "bench: removing the working directory %s failed: %v\n", h.dir, err)
	}
}

// moduleRoot finds the directory of go.mod, starting at the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory: run bench from the repository, for example go run ./tests/bench")
		}
		dir = parent
	}
}

// ensureWrk returns the path of wrk, installing Debian's wrk package with
// apt-get when wrk is not on PATH.
func ensureWrk(ctx context.Context) (string, error) {
	if path, err := exec.LookPath("wrk"); err == nil {
		return path, nil
	}
	fmt.Fprintln(os.Stderr, "bench: wrk not found on PATH; running apt-get install -y wrk")
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "wrk")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("wrk is missing and apt-get install -y wrk failed (%v): install wrk yourself (Debian and Ubuntu package wrk, or https://github.com/wg/wrk) and put it on PATH", err)
	}
	path, err := exec.LookPath("wrk")
	if err != nil {
		return "", fmt.Errorf("apt-get installed wrk but it is still not on PATH: %w", err)
	}
	return path, nil
}

func (h *harness) buildCaddy(ctx context.Context) error {
	h.caddyBin = filepath.Join(h.dir, "caddy")
	fmt.Fprintln(os.Stderr, "bench: go build -o", h.caddyBin, "./cmd/caddy")

	cmd := exec.CommandContext(ctx, "go", "build", "-o", h.caddyBin, "./cmd/caddy")
	cmd.Dir = h.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/caddy failed: %v\n%s", err, out)
	}
	return nil
}

// prepareSite copies sample/site and adds a 10 KB page and a stylesheet.
func (h *harness) prepareSite() error {
	sample := filepath.Join(h.root, "sample", "site")
	if err := copyTree(sample, h.siteDir); err != nil {
		return fmt.Errorf("copying the sample site %s failed: %w", sample, err)
	}
	if err := os.WriteFile(filepath.Join(h.siteDir, pagePath), benchPage(pageSize), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.siteDir, benchCSSPath), benchStylesheet(), 0o644); err != nil {
		return err
	}

	h.assets = []string{benchCSSPath}
	for _, asset := range sampleAssets {
		if _, err := os.Stat(filepath.Join(h.siteDir, filepath.FromSlash(asset))); err != nil {
			return fmt.Errorf("sample site file %s is missing (%v): the asset scenarios request it", asset, err)
		}
		h.assets = append(h.assets, asset)
	}
	return nil
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if entry.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !entry.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

// benchPage returns an HTML page of exactly size bytes, with a title.
func benchPage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	b.WriteString("<title>Benchmark page | Acme Docs</title>\n")
	b.WriteString("<link rel=\"stylesheet\" href=\"" + benchCSSPath + "\">\n")
	b.WriteString("<link rel=\"stylesheet\" href=\"/assets/style.css\">\n")
	b.WriteString("<script src=\"/assets/app.js\" defer></script>\n")
	b.WriteString("</head>\n<body>\n<main>\n<h1>Benchmark page</h1>\n")

	const tail = "</main>\n</body>\n</html>\n"
	const paragraph = "<p>This paragraph fills the page to the size of a typical documentation page, " +
		"so that the server copies a realistic body for every page view.</p>\n"
	for b.Len()+len(paragraph)+len(tail) <= size {
		b.WriteString(paragraph)
	}
	// An HTML comment takes up the remaining bytes: 4 for "<!--" and 3 for "-->".
	if fill := size - b.Len() - len(tail); fill >= 7 {
		b.WriteString("<!--" + strings.Repeat(".", fill-7) + "-->")
	} else {
		b.WriteString(strings.Repeat("\n", fill))
	}
	b.WriteString(tail)
	return b.Bytes()
}

// benchStylesheet returns about 2 KB of CSS rules.
func benchStylesheet() []byte {
	var b bytes.Buffer
	for i := range 40 {
		fmt.Fprintf(&b, ".bench-%02d { margin: %dpx; color: #%06x; }\n", i, i, i*0x040404)
	}
	return b.Bytes()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port failed: %w", err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

// machineInfo describes where the figures were measured.
type machineInfo struct {
	CPUs         int    `json:"cpus"`
	CPUModel     string `json:"cpu_model"`
	GoVersion    string `json:"go_version"`
	CaddyVersion string `json:"caddy_version"`
	OS           string `json:"os"`
}

func describeMachine(ctx context.Context, caddyBin string) (machineInfo, error) {
	info := machineInfo{
		CPUs:      runtime.NumCPU(),
		CPUModel:  cpuModel(),
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
	}
	out, err := exec.CommandContext(ctx, caddyBin, "version").Output()
	if err != nil {
		return info, fmt.Errorf("%s version failed: %w", caddyBin, err)
	}
	info.CaddyVersion, _, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	return info, nil
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > n {
		_, _ = f.Seek(info.Size()-n, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	return string(data)
}
