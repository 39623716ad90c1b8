package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// browserTimeout bounds all browser actions of one test.
const browserTimeout = 60 * time.Second

// startBrowser starts a headless Chromium with a fresh profile under the
// suite's temporary directory and returns a context for its first tab. The
// browser stops when the test ends, and its output goes to the test log if
// the test fails.
func startBrowser(t *testing.T, s *suite) context.Context {
	t.Helper()
	profile, err := os.MkdirTemp(s.tempDir, "chromium-profile-")
	if err != nil {
		t.Fatalf("creating a Chromium profile directory failed: %v", err)
	}

	output := &syncBuffer{}
	// DefaultExecAllocatorOptions already sets headless, --no-first-run,
	// --disable-background-networking and --disable-sync. --no-sandbox lets
	// Chromium run as root in a container, and the other flags turn off the
	// GPU, QUIC and component updates, which a test run does not need.
	options := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(output),
	)
	allocatorCtx, cancelAllocator := chromedp.NewExecAllocator(context.Background(), options...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocatorCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAllocator()
		if t.Failed() {
			t.Logf("chromium output:\n%s", output.String())
		}
	})

	// The first Do starts the browser and binds its life to browserCtx, which
	// has no deadline. Later actions run under a context with a deadline.
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting %s failed: %v\nchromium output:\n%s", chromiumPath, err, output.String())
	}

	ctx, cancel := context.WithTimeout(browserCtx, browserTimeout)
	t.Cleanup(cancel)
	return ctx
}

// browserUserAgent returns the User-Agent header that the browser sends by
// default. Headless Chromium names itself HeadlessChrome in it.
func browserUserAgent(t *testing.T, ctx context.Context) string {
	t.Helper()
	version, err := chromedp.CallBrowser(ctx, browser.GetVersion, cdp.Empty{})
	if err != nil {
		t.Fatalf("reading the browser version failed: %v", err)
	}
	return version.UserAgent
}

// setReaderUserAgent makes the tab send the User-Agent of a headed Chromium
// of the same version, and returns it. The handler's crawler detection counts
// a User-Agent that contains "Headless" as a bot and sends no event for it.
func setReaderUserAgent(t *testing.T, ctx context.Context) string {
	t.Helper()
	userAgent := strings.Replace(browserUserAgent(t, ctx), "HeadlessChrome/", "Chrome/", 1)
	if strings.Contains(userAgent, "Headless") {
		t.Fatalf("the browser's User-Agent %q still names a headless browser after replacing HeadlessChrome", userAgent)
	}
	_, err := chromedp.Call(ctx, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{UserAgent: userAgent})
	if err != nil {
		t.Fatalf("setting the User-Agent override failed: %v", err)
	}
	return userAgent
}

// anonymousIDCookie returns the browser's ajs_anonymous_id cookie for url.
// It fails the test unless there is exactly one: a second cookie of that name
// would mean the reader has two identities.
func anonymousIDCookie(t *testing.T, ctx context.Context, url string) *network.Cookie {
	t.Helper()
	result, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
	if err != nil {
		t.Fatalf("reading the browser's cookies for %s failed: %v", url, err)
	}

	var found []*network.Cookie
	for _, cookie := range result.Cookies {
		if cookie.Name == "ajs_anonymous_id" {
			found = append(found, cookie)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the browser has %d ajs_anonymous_id cookies for %s, expected 1: %+v", len(found), url, found)
	}
	return found[0]
}

// accessEntry is one line of Caddy's JSON access log.
type accessEntry struct {
	Request struct {
		Method  string              `json:"method"`
		URI     string              `json:"uri"`
		Headers map[string][]string `json:"headers"`
	} `json:"request"`
	Status int `json:"status"`
}

// header returns the first value of a request header in the entry. Caddy logs
// header names in canonical form.
func (e accessEntry) header(name string) string {
	values := e.Request.Headers[name]
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// accessLogSize returns the current size of Caddy's access log, for
// readAccessLog to skip the entries of earlier tests.
func accessLogSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("reading the size of Caddy's access log failed: %v", err)
	}
	return info.Size()
}

// readAccessLog returns the entries of Caddy's access log that start at or
// after offset bytes.
func readAccessLog(t *testing.T, path string, offset int64) []accessEntry {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatalf("opening Caddy's access log failed: %v", err)
	}
	defer file.Close()
	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		t.Fatalf("seeking to byte %d of Caddy's access log failed: %v", offset, err)
	}

	var entries []accessEntry
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for scanner.Scan() {
		var entry accessEntry
		if err := json.Unmarshal(scanner.Bytes(), &entry); err != nil {
			t.Fatalf("decoding an access log line failed: %v\n%s", err, scanner.Text())
		}
		entries = append(entries, entry)
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("reading Caddy's access log failed: %v", err)
	}
	return entries
}

// requestsFor returns the access log entries of GET requests for uri.
func requestsFor(entries []accessEntry, uri string) []accessEntry {
	var matched []accessEntry
	for _, entry := range entries {
		if entry.Request.Method == "GET" && entry.Request.URI == uri {
			matched = append(matched, entry)
		}
	}
	return matched
}
