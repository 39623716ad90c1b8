package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

const (
	// eventTimeout bounds the wait for the expected events to reach the
	// recorder.
	eventTimeout = 20 * time.Second

	// quietPeriod is how long a test keeps watching the recorder after the
	// expected events arrived, so that an extra event has time to show up:
	// five flush intervals plus a margin for a loaded machine. It bounds an
	// absence check and is no speed requirement.
	quietPeriod = 5*flushInterval + time.Second

	// eventName is the default event name of the segment handler.
	eventName = "[GitBook] space_view"
)

// expectedPage is the page context that one event must carry.
type expectedPage struct {
	path     string
	title    string
	referrer string
}

func TestFullPageNavigation(t *testing.T) {
	s := requireSuite(t)
	logStart := accessLogSize(t, s.accessLog)
	ctx := startBrowser(t, s)
	userAgent := setReaderUserAgent(t, ctx)

	firstURL := s.baseURL + "/"
	secondURL := s.baseURL + "/guide/install.html"
	navigate(t, ctx, firstURL)

	response, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`main a[rel="next"]`)))
	if err != nil {
		t.Fatalf("clicking the Next link on %s failed: %v", firstURL, err)
	}
	if response.URL != secondURL {
		t.Fatalf("the Next link on %s loaded %s, expected %s", firstURL, response.URL, secondURL)
	}
	if response.Status != http.StatusOK {
		t.Fatalf("the Next link loaded %s with status %d, expected 200", secondURL, response.Status)
	}

	cookie := anonymousIDCookie(t, ctx, firstURL)
	checkCookie(t, cookie)

	events := collectEvents(t, s, 2)
	checkPageEvents(t, events, s.baseURL, cookie.Value, userAgent, []expectedPage{
		{path: "/", title: "Overview | Acme Docs", referrer: ""},
		{path: "/guide/install.html", title: "Install | Guide | Acme Docs", referrer: firstURL},
	})

	// The counts above only show that assets send no event if the browser
	// really requested them, so check that in Caddy's access log.
	entries := readAccessLog(t, s.accessLog, logStart)
	assets := []string{
		"/assets/style.css",
		"/assets/app.js",
		"/images/logo.svg",
		"/images/diagram.png",
		"/data.json",
		"/favicon.ico",
	}
	for _, asset := range assets {
		if len(requestsFor(entries, asset)) == 0 {
			t.Errorf("Caddy's access log has no GET %s, so the browser never requested it and the test cannot show that it sends no event", asset)
		}
		for _, event := range events {
			if path := event.String("context.page.path"); path == asset {
				t.Errorf("an event was sent for the asset %s, expected none: %s", asset, describeEvent(event))
			}
		}
	}
}

func TestLegacyClientNavigation(t *testing.T) {
	s := requireSuite(t)
	logStart := accessLogSize(t, s.accessLog)
	ctx := startBrowser(t, s)
	userAgent := setReaderUserAgent(t, ctx)

	startURL := s.baseURL + "/legacy/index.html"
	nextURL := s.baseURL + "/legacy/page2.html"
	navigate(t, ctx, startURL)

	// A value set on window survives only if the click does not load a new
	// document, which shows that the page change happened in the page.
	const marker = "start page"
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.e2eMarker = "`+marker+`"`)); err != nil {
		t.Fatalf("setting a marker on %s failed: %v", startURL, err)
	}
	err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("next")),
		chromedp.WaitReady(chromedp.CSS(`html[data-client-navigations="1"]`)),
	)
	if err != nil {
		t.Fatalf("clicking #next on %s and waiting for the client-side page change failed: %v", startURL, err)
	}

	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatalf("reading the location after the page change failed: %v", err)
	}
	if location != nextURL {
		t.Errorf("the location after clicking #next is %s, expected %s from history.pushState", location, nextURL)
	}
	markerAfter, err := chromedp.Run(ctx, chromedp.Evaluate[string](`String(window.e2eMarker)`))
	if err != nil {
		t.Fatalf("reading the marker after the page change failed: %v", err)
	}
	if markerAfter != marker {
		t.Errorf("the window marker is %q after clicking #next, expected %q: the browser loaded a new document instead of changing the page in place", markerAfter, marker)
	}

	cookie := anonymousIDCookie(t, ctx, startURL)
	checkCookie(t, cookie)

	events := collectEvents(t, s, 2)
	checkPageEvents(t, events, s.baseURL, cookie.Value, userAgent, []expectedPage{
		{path: "/legacy/index.html", title: "Start | Legacy Guide | Acme Docs", referrer: ""},
		{path: "/legacy/page2.html", title: "Page Two | Legacy Guide | Acme Docs", referrer: startURL},
	})

	entries := readAccessLog(t, s.accessLog, logStart)
	fetches := requestsFor(entries, "/legacy/page2.html")
	if len(fetches) != 1 {
		t.Fatalf("Caddy's access log has %d GET /legacy/page2.html, expected 1", len(fetches))
	}
	if got := fetches[0].header("X-Requested-With"); got != "XMLHttpRequest" {
		t.Errorf("GET /legacy/page2.html has X-Requested-With %q, expected XMLHttpRequest from the page script", got)
	}
}

func TestHeadlessUserAgentSkipped(t *testing.T) {
	s := requireSuite(t)
	logStart := accessLogSize(t, s.accessLog)
	ctx := startBrowser(t, s)

	userAgent := browserUserAgent(t, ctx)
	if !strings.Contains(userAgent, "HeadlessChrome") {
		t.Skipf("the browser's User-Agent %q does not name HeadlessChrome, so this Chromium does not look like a bot", userAgent)
	}

	pageURL := s.baseURL + "/guide/configure.html"
	navigate(t, ctx, pageURL)

	collectEvents(t, s, 0)

	entries := readAccessLog(t, s.accessLog, logStart)
	requests := requestsFor(entries, "/guide/configure.html")
	if len(requests) != 1 {
		t.Fatalf("Caddy's access log has %d GET /guide/configure.html, expected 1", len(requests))
	}
	if got := requests[0].header("User-Agent"); !strings.Contains(got, "HeadlessChrome") {
		t.Errorf("GET /guide/configure.html has User-Agent %q, expected one that names HeadlessChrome", got)
	}
}

// navigate opens url in the tab, waits for the page to load and fails the
// test unless the document's status is 200.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	response, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("opening %s failed: %v", url, err)
	}
	if response.Status != http.StatusOK {
		t.Fatalf("opening %s returned status %d, expected 200", url, response.Status)
	}
}

// checkCookie checks the attributes that let Segment's browser library read
// the anonymous id that the handler set and keep using it.
func checkCookie(t *testing.T, cookie *network.Cookie) {
	t.Helper()
	if _, err := uuid.Parse(cookie.Value); err != nil {
		t.Errorf("ajs_anonymous_id %q is not a UUID, the format of Segment's anonymous ids: %v", cookie.Value, err)
	}
	if cookie.HTTPOnly {
		t.Error("ajs_anonymous_id is HttpOnly, so Segment's browser library cannot read it and would create a second id")
	}
	if cookie.Path != "/" {
		t.Errorf("ajs_anonymous_id has path %q, expected / so that every page sends it", cookie.Path)
	}
	if cookie.Session {
		t.Error("ajs_anonymous_id is a session cookie, expected a lifetime so that the reader keeps the id")
	}
}

// collectEvents waits for want events, keeps watching the recorder for
// quietPeriod, and fails the test unless exactly want events arrived.
func collectEvents(t *testing.T, s *suite, want int) []recorder.Event {
	t.Helper()
	events, err := s.recorder.WaitEvents(want, eventTimeout)
	if err != nil {
		t.Fatalf("%v; events: %s", err, describeEvents(events))
	}

	time.Sleep(quietPeriod)
	events = s.recorder.Events()
	t.Logf("recorder received %d events, expected %d, counted %s after the expected ones arrived", len(events), want, quietPeriod)
	if len(events) != want {
		t.Fatalf("recorder received %d events, expected exactly %d: %s", len(events), want, describeEvents(events))
	}
	return events
}

// checkPageEvents checks that events holds one event for each page, carrying
// the reader's anonymous id, User-Agent and the page's context.
func checkPageEvents(t *testing.T, events []recorder.Event, baseURL, anonymousID, userAgent string, pages []expectedPage) {
	t.Helper()
	for _, page := range pages {
		var matched []recorder.Event
		for _, event := range events {
			if event.String("context.page.path") == page.path {
				matched = append(matched, event)
			}
		}
		if len(matched) != 1 {
			t.Errorf("%d events have context.page.path %q, expected 1: %s", len(matched), page.path, describeEvents(events))
			continue
		}
		event := matched[0]

		checks := []struct {
			field string
			want  string
		}{
			{"type", "track"},
			{"event", eventName},
			{"anonymousId", anonymousID},
			{"properties.spaceId", spaceID},
			{"context.page.url", baseURL + page.path},
			{"context.page.title", page.title},
			{"context.page.referrer", page.referrer},
			{"context.page.search", ""},
			{"context.userAgent", userAgent},
		}
		for _, check := range checks {
			if got := event.String(check.field); got != check.want {
				t.Errorf("event for %s has %s %q, expected %q", page.path, check.field, got, check.want)
			}
		}
	}
}

// describeEvents formats events as JSON for a failure message.
func describeEvents(events []recorder.Event) string {
	if len(events) == 0 {
		return "(none)"
	}
	parts := make([]string, len(events))
	for i, event := range events {
		parts[i] = describeEvent(event)
	}
	return strings.Join(parts, "\n")
}

func describeEvent(event recorder.Event) string {
	data, err := json.Marshal(event)
	if err != nil {
		return "(event not encodable as JSON: " + err.Error() + ")"
	}
	return string(data)
}
