package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

const (
	// writeKey is the write key that Caddy sends and the recorder accepts.
	writeKey = "test-key"

	// spaceID is the space_id of the Caddyfile, sent as properties.spaceId.
	spaceID = "e2e"

	// flushInterval is the flush_interval of the Caddyfile: the longest
	// time an event waits in Caddy before its batch is posted.
	flushInterval = 200 * time.Millisecond

	// startTimeout bounds the wait for Caddy to respond after it starts.
	startTimeout = 30 * time.Second

	// stopTimeout bounds the wait for Caddy to exit after SIGINT. Caddy
	// then kills the process.
	stopTimeout = 15 * time.Second
)

// suite is the environment that TestMain sets up once for every test: the
// built binary, the recorder and the running Caddy.
type suite struct {
	tempDir   string
	buildTime time.Duration
	recorder  *recorder.Recorder
	caddy     *caddyProcess
	baseURL   string // http://localhost:PORT, without a trailing slash
	accessLog string // path of Caddy's JSON access log
}

// env is set by TestMain. It is nil when Chromium is missing, so that the
// tests skip without building anything.
var env *suite

// setupErr is why TestMain could not set up env, reported by every test.
var setupErr error

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if _, err := os.Stat(chromiumPath); err != nil {
		// Every test skips or fails through requireSuite.
		return m.Run()
	}

	s, err := setUp()
	if err != nil {
		setupErr = err
		if s != nil {
			s.tearDown()
		}
		return m.Run()
	}
	env = s
	code := m.Run()
	if err := s.tearDown(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// requireSuite returns the shared environment. It skips the test when
// Chromium is missing, or fails it when CADDY_SEGMENT_REQUIRE_BROWSER is 1
// or when the setup failed.
func requireSuite(t *testing.T) *suite {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CADDY_SEGMENT_REQUIRE_BROWSER") == "1" {
			t.Fatalf("chromium not found at %s and CADDY_SEGMENT_REQUIRE_BROWSER=1: install Debian's chromium package (apt-get install chromium): %v", chromiumPath, err)
		}
		t.Skipf("chromium not found at %s: install Debian's chromium package to run the browser test", chromiumPath)
	}
	if setupErr != nil {
		t.Fatalf("setting up the end-to-end environment failed: %v", setupErr)
	}

	t.Logf("caddy binary built in %s", env.buildTime.Round(time.Millisecond))
	env.recorder.Reset()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy output:\n%s", env.caddy.output())
			t.Logf("caddy access log:\n%s", readFileForLog(env.accessLog))
		}
	})
	return env
}

// setUp builds the binary, starts the recorder and starts Caddy. On error it
// returns what it has set up so far, for tearDown.
func setUp() (*suite, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	tempDir, err := os.MkdirTemp("", "caddy-segment-e2e-")
	if err != nil {
		return nil, fmt.Errorf("creating a temporary directory failed: %w", err)
	}
	s := &suite{tempDir: tempDir}

	binary := filepath.Join(tempDir, "caddy")
	s.buildTime, err = buildCaddy(root, binary)
	if err != nil {
		return s, err
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", binary, s.buildTime.Round(time.Millisecond))

	s.recorder, err = recorder.Start(recorder.Options{WriteKey: writeKey})
	if err != nil {
		return s, err
	}

	port, err := freePort()
	if err != nil {
		return s, err
	}
	s.baseURL = "http://localhost:" + strconv.Itoa(port)
	s.accessLog = filepath.Join(tempDir, "access.log")
	caddyfile := filepath.Join(tempDir, "Caddyfile")
	config := writeCaddyfile(filepath.Join(root, "sample", "site"), port, s.recorder.URL(), s.accessLog)
	if err := os.WriteFile(caddyfile, []byte(config), 0o644); err != nil {
		return s, fmt.Errorf("writing %s failed: %w", caddyfile, err)
	}

	s.caddy, err = startCaddy(binary, caddyfile, tempDir)
	if err != nil {
		return s, err
	}
	if err := s.caddy.waitReady(s.baseURL+"/", startTimeout); err != nil {
		return s, fmt.Errorf("%w\ncaddy output:\n%s", err, s.caddy.output())
	}
	return s, nil
}

// tearDown stops Caddy and the recorder and removes the temporary directory.
// It returns an error when Caddy did not stop on SIGINT.
func (s *suite) tearDown() error {
	var err error
	if s.caddy != nil {
		err = s.caddy.stop(stopTimeout)
	}
	if s.recorder != nil {
		s.recorder.Close()
	}
	// Chromium may still be deleting its profile directories under tempDir,
	// so a failed removal only leaves files in the system's temp directory.
	_ = os.RemoveAll(s.tempDir)
	return err
}

// repoRoot returns the repository root, two levels above this package's
// directory, which is the working directory of `go test`.
func repoRoot() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", fmt.Errorf("resolving the repository root failed: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("go.mod not found in %s, which should be the repository root: %w", root, err)
	}
	return root, nil
}

// buildCaddy builds ./cmd/caddy into binary and returns how long it took.
func buildCaddy(root, binary string) (time.Duration, error) {
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", binary, "./cmd/caddy")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return elapsed, fmt.Errorf("go build -o %s ./cmd/caddy in %s failed: %w\n%s", binary, root, err, out)
	}
	return elapsed, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port on 127.0.0.1 failed: %w", err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

// writeCaddyfile returns a Caddyfile that serves siteRoot on localhost:port,
// bound to 127.0.0.1 only, with the segment handler posting to endpoint and a
// JSON access log in accessLog.
func writeCaddyfile(siteRoot string, port int, endpoint, accessLog string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
}

http://localhost:%d {
	bind 127.0.0.1
	root * %s

	log {
		output file %s
		format json
	}

	segment {
		write_key %s
		endpoint %s
		flush_interval %dms
		space_id %s
	}

	file_server
}
`, port, strconv.Quote(siteRoot), strconv.Quote(accessLog), writeKey, endpoint, flushInterval.Milliseconds(), spaceID)
}

// caddyProcess is a running `caddy run` with its combined output.
type caddyProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // the result of Wait, set before done is closed
}

// startCaddy runs `caddy run` with the Caddyfile. Caddy's data and config
// directories go under dir, so the test leaves nothing in the home directory.
func startCaddy(binary, caddyfile, dir string) (*caddyProcess, error) {
	cmd := exec.Command(binary, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
	)
	out := &syncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s failed: %w", binary, err)
	}

	p := &caddyProcess{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls url with HEAD requests until Caddy responds, the process
// exits or timeout passes. HEAD requests are never page views, so polling
// sends no event.
func (p *caddyProcess) waitReady(url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequest(http.MethodHead, url, nil)
		if err != nil {
			return fmt.Errorf("building the readiness request for %s failed: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}

		select {
		case <-p.done:
			return fmt.Errorf("caddy exited before it responded on %s: %v", url, p.err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not respond on %s within %s: %v", url, timeout, err)
		}
	}
}

// stop sends SIGINT, which makes Caddy shut down gracefully and flush its
// queued events, and kills the process if it has not exited after timeout.
func (p *caddyProcess) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("caddy exited before the tests finished: %v\ncaddy output:\n%s", p.err, p.output())
	default:
	}

	if err := p.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGINT to caddy failed: %w", err)
	}
	select {
	case <-p.done:
		return p.exitError()
	case <-time.After(timeout):
	}

	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("caddy did not exit within %s of SIGINT and was killed\ncaddy output:\n%s", timeout, p.output())
}

// exitError returns nil when Caddy exited with status 0, which it does after
// a clean shutdown on SIGINT.
func (p *caddyProcess) exitError() error {
	if p.err == nil {
		return nil
	}
	return fmt.Errorf("caddy exited with %v after SIGINT\ncaddy output:\n%s", p.err, p.output())
}

func (p *caddyProcess) output() string {
	return p.out.String()
}

// syncBuffer is a bytes.Buffer that the process output and the tests may use
// at the same time.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// readFileForLog returns the file's content, or the reason it could not be
// read, for a failure message.
func readFileForLog(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s failed: %v)", path, err)
	}
	return string(data)
}
