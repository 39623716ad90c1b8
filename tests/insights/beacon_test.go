package insights

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Beacon URLs as GitBook's client builds them, at the site root and under
// a site base path, with the organization id in o and the site id in s.
const (
	beaconTarget         = "/~gitbook/__evt?o=org_Test7&s=" + beaconSiteID
	basePathBeaconTarget = "/docs/~gitbook/__evt?o=org_Test7&s=" + beaconSiteID
	beaconQuery          = "o=org_Test7&s=" + beaconSiteID
	beaconSiteID         = "site_Docs42"
)

// Values in the beacon fixtures of caddymodule/testdata/beacon.
const (
	fixtureSpaceID      = "spc_7Hq2LmNx4Rt"
	fixturePageID       = "pg_3Vd8KwZp1Ys"
	fixtureURL          = "https://docs.example.com/guides/install"
	fixturePath         = "/guides/install"
	fixtureSecondPageID = "pg_8Tn4QeRb6Wc"
	fixtureSecondURL    = "https://docs.example.com/guides/configure"
	fixtureSecondPath   = "/guides/configure"
	fixtureReferrer     = "https://www.google.com/"
)

const (
	googlebotUA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	bingbotUA   = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
)

// insightsOptions is the config of every beacon test.
var insightsOptions = siteOptions{segment: []string{"gitbook_insights"}}

// beaconView is one event of a beacon built by beaconBody.
type beaconView struct {
	eventType string    // page_view when empty
	timestamp time.Time // now when zero
	url       string    // location.url
	space     string    // location.space
	page      string    // location.page; null when empty
	referrer  string    // session.referrer; null when empty
	padding   int       // bytes of filler in session.cookies, to make the body large
}

// beaconBody returns a beacon body in the shape GitBook's client sends.
func beaconBody(t *testing.T, views ...beaconView) []byte {
	t.Helper()
	events := make([]map[string]any, 0, len(views))
	for _, view := range views {
		eventType := view.eventType
		if eventType == "" {
			eventType = "page_view"
		}
		timestamp := view.timestamp
		if timestamp.IsZero() {
			timestamp = time.Now()
		}
		cookies := map[string]any{"__gitbook_cookie_granted": "yes"}
		if view.padding > 0 {
			cookies["_filler"] = strings.Repeat("x", view.padding)
		}

		events = append(events, map[string]any{
			"type":      eventType,
			"timestamp": isoTime(timestamp),
			"session": map[string]any{
				"sessionId":         "3f1c2a9e-8b7d-4c11-9e2f-5a6b7c8d9e0fR",
				"visitorId":         "b2d4f6a8-1c3e-4a5b-8d7f-9e0a1b2c3d4eR",
				"userAgent":         chromeUA,
				"language":          "en-US",
				"cookies":           cookies,
				"referrer":          nullIfEmpty(view.referrer),
				"visitorAuthClaims": map[string]any{},
			},
			"location": map[string]any{
				"url":            view.url,
				"siteSection":    "sitesc_Test",
				"siteSpace":      "sitesp_Test",
				"space":          view.space,
				"siteShareKey":   nil,
				"revision":       "rev_Test",
				"page":           nullIfEmpty(view.page),
				"displayContext": "site",
			},
		})
	}

	body, err := json.Marshal(map[string]any{"events": events})
	if err != nil {
		t.Fatalf("encoding a beacon body failed: %v", err)
	}
	return body
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// isoTime formats a time as JavaScript's Date.toISOString does.
func isoTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// nowMillis returns the current time cut to whole milliseconds, the
// precision of a beacon timestamp.
func nowMillis() time.Time {
	return time.Now().UTC().Truncate(time.Millisecond)
}

var timestampField = regexp.MustCompile(`"timestamp":"[^"]*"`)

// fixtureBeacon reads a beacon fixture and sets the timestamps of its
// events, in order, to timestamps. The fixtures carry fixed dates that the
// handler would skip as stale.
func fixtureBeacon(t *testing.T, name string, timestamps ...time.Time) []byte {
	t.Helper()
	path := filepath.Join("..", "..", "caddymodule", "testdata", "beacon", name)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the beacon fixture failed: %v", err)
	}
	if n := len(timestampField.FindAll(data, -1)); n != len(timestamps) {
		t.Fatalf("beacon fixture %s has %d timestamps, expected %d to replace", path, n, len(timestamps))
	}

	next := 0
	return timestampField.ReplaceAllFunc(data, func([]byte) []byte {
		field := `"timestamp":"` + isoTime(timestamps[next]) + `"`
		next++
		return []byte(field)
	})
}

// sendBeacon sends req and returns Caddy's response with the beacon
// requests that the upstream received meanwhile.
func sendBeacon(t *testing.T, req request) (response, []receivedBeacon) {
	t.Helper()
	gitbook.takeBeacons()
	resp := send(t, req)
	return resp, gitbook.takeBeacons()
}

// expectForwarded checks that the upstream received the beacon exactly as
// the browser sent it.
func expectForwarded(t *testing.T, req request, wantPath string, received []receivedBeacon) {
	t.Helper()
	if len(received) != 1 {
		t.Fatalf("upstream received %d beacon requests, expected 1", len(received))
	}
	got := received[0]
	if got.path != wantPath {
		t.Errorf("upstream received the beacon at %q, expected %q", got.path, wantPath)
	}
	if got.query != beaconQuery {
		t.Errorf("upstream received the beacon query %q, expected %q", got.query, beaconQuery)
	}
	if !bytes.Equal(got.body, req.body) {
		t.Errorf("upstream received a body of %d bytes that differs from the %d bytes sent; received %.200q", len(got.body), len(req.body), got.body)
	}
	if want := strconv.Itoa(len(req.body)); got.header.Get("Content-Length") != want {
		t.Errorf("upstream received Content-Length %q, expected %q, the length sent", got.header.Get("Content-Length"), want)
	}
	for _, name := range []string{"Content-Type", "Cookie"} {
		if sent, forwarded := req.header.Values(name), got.header.Values(name); !slices.Equal(sent, forwarded) {
			t.Errorf("upstream received %s %q, expected %q as sent", name, forwarded, sent)
		}
	}
}

// expectUpstreamResponse checks that the browser got the upstream's
// response to the beacon unchanged.
func expectUpstreamResponse(t *testing.T, resp response) {
	t.Helper()
	expectStatus(t, resp, upstreamBeaconStatus)
	if string(resp.body) != upstreamBeaconBody {
		t.Errorf("beacon response body = %q, expected the upstream's %q", resp.body, upstreamBeaconBody)
	}
	if got := resp.header.Get(upstreamBeaconHeader); got != upstreamBeaconMark {
		t.Errorf("beacon response header %s = %q, expected the upstream's %q", upstreamBeaconHeader, got, upstreamBeaconMark)
	}
}

func TestBeaconPageView(t *testing.T) {
	s := startSite(t, insightsOptions)
	const id = "0f6a3c52-9e1b-4d87-a2c4-5b7e8d9f1a03"

	tests := []struct {
		name        string
		cookieValue string
	}{
		{name: "raw cookie", cookieValue: id},
		{name: "classic cookie", cookieValue: "%22" + id + "%22"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			viewed := nowMillis().Add(-3 * time.Second)
			body := fixtureBeacon(t, "page_view.json", viewed, viewed.Add(time.Second))
			req := beaconRequest(beaconTarget, body,
				"Cookie", "__gitbook_cookie_granted=yes; ajs_anonymous_id="+tc.cookieValue+"; _ga=GA1.1.1843207765.1755768600",
				"Referer", "https://docs.example.com/guides/install")

			var resp response
			var received []receivedBeacon
			o := s.run(t, 1, func() { resp, received = sendBeacon(t, req) })

			event := onlyEvent(t, o)
			expectField(t, event, "type", "track")
			expectField(t, event, "event", "[GitBook] space_view")
			expectField(t, event, "anonymousId", id)
			expectField(t, event, "properties.spaceId", fixtureSpaceID)
			expectField(t, event, "properties.pageId", fixturePageID)
			expectField(t, event, "properties.siteId", beaconSiteID)
			expectField(t, event, "context.page.url", fixtureURL)
			expectField(t, event, "context.page.path", fixturePath)
			expectAbsent(t, event, "context.page.search")
			expectField(t, event, "context.page.referrer", fixtureReferrer)
			expectTimestamp(t, event, viewed)
			expectPageViews(t, o, 1)
			expectSkips(t, o, nil)

			expectUpstreamResponse(t, resp)
			expectNoAnonymousIDCookie(t, resp)
			expectForwarded(t, req, "/~gitbook/__evt", received)
		})
	}
}

func TestBeaconNewReader(t *testing.T) {
	s := startSite(t, insightsOptions)
	body := fixtureBeacon(t, "page_view.json", nowMillis(), nowMillis())
	req := beaconRequest(beaconTarget, body)

	var resp response
	var received []receivedBeacon
	o := s.run(t, 1, func() { resp, received = sendBeacon(t, req) })

	id := onlyAnonymousIDCookie(t, resp)
	if _, err := uuid.Parse(id); err != nil {
		t.Errorf("new ajs_anonymous_id %q is not a UUID: %v", id, err)
	}
	event := onlyEvent(t, o)
	expectField(t, event, "anonymousId", id)
	expectPageViews(t, o, 1)
	expectUpstreamResponse(t, resp)
	expectForwarded(t, req, "/~gitbook/__evt", received)
}

func TestBeaconMultiPage(t *testing.T) {
	s := startSite(t, insightsOptions)
	first := nowMillis().Add(-20 * time.Second)
	searched := first.Add(5 * time.Second)
	second := first.Add(10 * time.Second)
	body := fixtureBeacon(t, "multi_page.json", first, searched, second)
	req := beaconRequest(basePathBeaconTarget, body, "Cookie", "ajs_anonymous_id=7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")

	var resp response
	var received []receivedBeacon
	o := s.run(t, 2, func() { resp, received = sendBeacon(t, req) })

	if len(o.events) != 2 {
		t.Fatalf("got %d events, expected one per page_view, 2: %v", len(o.events), o.events)
	}
	byPage := make(map[string]int)
	for i, event := range o.events {
		byPage[event.String("properties.pageId")] = i
	}
	want := []struct {
		pageID, url, path string
		timestamp         time.Time
	}{
		{fixturePageID, fixtureURL, fixturePath, first},
		{fixtureSecondPageID, fixtureSecondURL, fixtureSecondPath, second},
	}
	for _, w := range want {
		i, ok := byPage[w.pageID]
		if !ok {
			t.Errorf("no event has properties.pageId %q: %v", w.pageID, o.events)
			continue
		}
		event := o.events[i]
		expectField(t, event, "context.page.url", w.url)
		expectField(t, event, "context.page.path", w.path)
		expectField(t, event, "properties.spaceId", fixtureSpaceID)
		expectField(t, event, "properties.siteId", beaconSiteID)
		expectTimestamp(t, event, w.timestamp)
	}
	expectPageViews(t, o, 2)
	expectSkips(t, o, nil)
	expectUpstreamResponse(t, resp)
	expectForwarded(t, req, "/docs/~gitbook/__evt", received)
}

func TestBeaconURLWithQuery(t *testing.T) {
	s := startSite(t, insightsOptions)
	viewed := nowMillis()
	body := beaconBody(t, beaconView{
		timestamp: viewed,
		url:       "https://docs.example.com/docs/guides/install?q=caddy&utm_source=news&utm_campaign=launch",
		space:     "spc_Query1",
	})
	req := beaconRequest(beaconTarget, body, "Cookie", "ajs_anonymous_id=7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")

	o := s.run(t, 1, func() { send(t, req) })

	event := onlyEvent(t, o)
	expectField(t, event, "context.page.path", "/docs/guides/install")
	expectField(t, event, "context.page.search", "?q=caddy&utm_source=news&utm_campaign=launch")
	expectField(t, event, "context.campaign.source", "news")
	expectField(t, event, "context.campaign.name", "launch")
	expectField(t, event, "properties.spaceId", "spc_Query1")
	expectAbsent(t, event, "properties.pageId")
	expectAbsent(t, event, "context.page.referrer")
	expectTimestamp(t, event, viewed)
	expectPageViews(t, o, 1)
}

// TestBeaconSkipped covers beacons whose page views are not tracked: the
// body still reaches the upstream byte for byte, and the reason is counted.
func TestBeaconSkipped(t *testing.T) {
	s := startSite(t, insightsOptions)
	valid := beaconBody(t, beaconView{url: fixtureURL, space: fixtureSpaceID, page: fixturePageID})

	tests := []struct {
		name   string
		body   []byte
		reason string
	}{
		{
			name:   "truncated JSON",
			body:   valid[:len(valid)/2],
			reason: "beacon_invalid",
		},
		{
			name:   "JSON without events",
			body:   []byte(`{"event":{"type":"page_view","location":{"url":"https://docs.example.com/guides/install"}}}`),
			reason: "beacon_invalid",
		},
		{
			name:   "body over 64 KiB",
			body:   beaconBody(t, beaconView{url: fixtureURL, space: fixtureSpaceID, page: fixturePageID, padding: 70 << 10}),
			reason: "beacon_too_large",
		},
		{
			name:   "timestamp 10 minutes old",
			body:   beaconBody(t, beaconView{timestamp: time.Now().Add(-10 * time.Minute), url: fixtureURL, space: fixtureSpaceID}),
			reason: "beacon_stale",
		},
		{
			name:   "page on another host",
			body:   beaconBody(t, beaconView{url: "https://evil.example/forged", space: fixtureSpaceID}),
			reason: "beacon_foreign",
		},
		{
			name:   "timestamp 2 minutes ahead",
			body:   beaconBody(t, beaconView{timestamp: time.Now().Add(2 * time.Minute), url: fixtureURL, space: fixtureSpaceID}),
			reason: "beacon_stale",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.reason == "beacon_too_large" && len(tc.body) <= 64<<10 {
				t.Fatalf("the large beacon body is %d bytes, expected more than 64 KiB", len(tc.body))
			}
			req := beaconRequest(beaconTarget, tc.body, "Cookie", "ajs_anonymous_id=7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")

			var resp response
			var received []receivedBeacon
			o := s.run(t, 0, func() { resp, received = sendBeacon(t, req) })

			expectNoEvents(t, o)
			expectSkips(t, o, map[string]float64{tc.reason: 1})
			expectPageViews(t, o, 0)
			expectUpstreamResponse(t, resp)
			expectForwarded(t, req, "/~gitbook/__evt", received)
		})
	}
}

// TestBeaconOverflow checks that one beacon yields at most 20 events, and
// that the page views over that are counted.
func TestBeaconOverflow(t *testing.T) {
	s := startSite(t, insightsOptions)
	views := make([]beaconView, 21)
	for i := range views {
		views[i] = beaconView{url: fmt.Sprintf("%s?view=%d", fixtureURL, i), space: fixtureSpaceID}
	}
	req := beaconRequest(beaconTarget, beaconBody(t, views...), "Cookie", "ajs_anonymous_id=7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")

	o := s.run(t, 20, func() { sendBeacon(t, req) })

	if len(o.events) != 20 {
		t.Errorf("got %d events from a beacon with 21 page views, want 20", len(o.events))
	}
	expectSkips(t, o, map[string]float64{"beacon_overflow": 1})
	expectPageViews(t, o, 20)
}

// TestBeaconRequestSkipped covers beacons from readers that are not
// tracked: each page view is counted under the reason, and a reader
// without a cookie gets none.
func TestBeaconRequestSkipped(t *testing.T) {
	s := startSite(t, insightsOptions)

	tests := []struct {
		name   string
		pairs  []string
		reason string
	}{
		{name: "Global Privacy Control", pairs: []string{"Sec-GPC", "1"}, reason: "gpc"},
		{name: "Googlebot", pairs: []string{"User-Agent", googlebotUA}, reason: "bot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := beaconBody(t,
				beaconView{url: fixtureURL, space: fixtureSpaceID, page: fixturePageID},
				beaconView{url: fixtureSecondURL, space: fixtureSpaceID, page: fixtureSecondPageID},
			)
			req := beaconRequest(beaconTarget, body, tc.pairs...)

			var resp response
			var received []receivedBeacon
			o := s.run(t, 0, func() { resp, received = sendBeacon(t, req) })

			expectNoEvents(t, o)
			expectSkips(t, o, map[string]float64{tc.reason: 2})
			expectPageViews(t, o, 0)
			expectNoAnonymousIDCookie(t, resp)
			expectUpstreamResponse(t, resp)
			expectForwarded(t, req, "/~gitbook/__evt", received)
		})
	}
}

// TestInsightsPageLoad checks that with gitbook_insights an HTML page load
// gives a new reader the cookie but no event, because the page's own
// beacon reports the view.
func TestInsightsPageLoad(t *testing.T) {
	s := startSite(t, insightsOptions)

	t.Run("new reader", func(t *testing.T) {
		var resp response
		o := s.run(t, 0, func() { resp = send(t, pageRequest(fixturePath)) })

		expectStatus(t, resp, http.StatusOK)
		id := onlyAnonymousIDCookie(t, resp)
		if _, err := uuid.Parse(id); err != nil {
			t.Errorf("new ajs_anonymous_id %q is not a UUID: %v", id, err)
		}
		expectNoEvents(t, o)
		expectPageViews(t, o, 0)
		expectSkips(t, o, nil)
	})

	t.Run("known reader", func(t *testing.T) {
		var resp response
		o := s.run(t, 0, func() {
			resp = send(t, pageRequest(fixturePath, "Cookie", "ajs_anonymous_id=7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"))
		})

		expectStatus(t, resp, http.StatusOK)
		expectNoAnonymousIDCookie(t, resp)
		expectNoEvents(t, o)
		expectPageViews(t, o, 0)
	})
}
