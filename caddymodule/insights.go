package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/segmentio/analytics-go/v3"
)

// GitBook's insights beacon is a POST to a path ending in /~gitbook/__evt
// with a JSON body {"events":[...]}. Every event carries a type, a
// timestamp from Date.toISOString(), a session object (with the referrer)
// and a location object (with the page URL and the space and page ids).
// GitBook's own endpoint for it (packages/gitbook/src/lib/tracking.ts in
// GitbookIO/gitbook) checks no schema. This parser is lenient too, and skips
// what it cannot read instead of rejecting the whole body.

// Limits on the strings taken from a beacon. A longer URL or referrer is
// truncated, and a longer id is dropped, because a truncated id names a
// different space or page.
const (
	beaconMaxURLBytes = 2048
	beaconMaxIDBytes  = 256
)

// Time window for page views. GitBook's endpoint drops events 5 minutes old
// or older, but keeps those ahead of now. This plugin also drops events more
// than 1 minute ahead, which allows for a reader's clock that runs a little
// fast.
const (
	beaconMaxAge   = 5 * time.Minute
	beaconMaxAhead = time.Minute
)

// beaconInvalidTimestamp is the timestamp of a page view whose timestamp is
// present but not an RFC 3339 string, or is the zero time. It is one
// nanosecond after the zero time, so it does not count as absent, and
// filterBeaconPageViews always skips it as stale.
var beaconInvalidTimestamp = time.Time{}.Add(time.Nanosecond)

// Errors of parseBeacon. They never quote the body, which carries the
// reader's cookies.
var (
	errBeaconNotObject = errors.New("invalid insights beacon: the body is not a JSON object")
	errBeaconNoEvents  = errors.New(`invalid insights beacon: the body has no "events" array`)
)

// beaconPageView is one page_view event of GitBook's insights beacon, reduced to the fields the plugin sends.
type beaconPageView struct {
	Timestamp time.Time // the event's own timestamp; zero when absent
	URL       string    // location.url
	SpaceID   string    // location.space
	PageID    string    // location.page ("" when null)
	Referrer  string    // session.referrer ("" when null)
}

// parseBeacon decodes a beacon body and returns its page_view events; other event types are ignored.
// An error means the body is not a beacon (not JSON, no events array, ...).
//
// An event that is not an object is skipped. A field that is missing, null
// or not a string is treated as absent, except the timestamp (see
// beaconTimestamp). Objects are decoded into maps instead of structs because
// encoding/json matches struct fields case-insensitively and would let
// "Type" fill a field tagged "type". Map keys match exactly, as property
// access does in JavaScript, and with duplicate keys the last one wins, as
// with JSON.parse.
//
// The number of page views is not capped here; trackBeacon caps it.
func parseBeacon(body []byte) ([]beaconPageView, error) {
	var beacon map[string]json.RawMessage
	if err := json.Unmarshal(body, &beacon); err != nil {
		return nil, beaconDecodeError(err)
	}
	if beacon == nil {
		// The body is the JSON literal null.
		return nil, errBeaconNotObject
	}

	var events []json.RawMessage
	if !beaconIsKind(beacon["events"], '[') {
		return nil, errBeaconNoEvents
	}
	if err := json.Unmarshal(beacon["events"], &events); err != nil {
		return nil, errBeaconNoEvents
	}

	var views []beaconPageView
	for _, event := range events {
		if view, ok := beaconReadPageView(event); ok {
			views = append(views, view)
		}
	}
	return views, nil
}

// beaconDecodeError converts an error of json.Unmarshal into one that keeps
// only the byte offset. The errors of encoding/json can quote the input,
// such as the offending character of a syntax error.
func beaconDecodeError(err error) error {
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return fmt.Errorf("invalid insights beacon: the body is not valid JSON (syntax error at byte %d)", syntaxErr.Offset)
	}
	return errBeaconNotObject
}

// filterBeaconPageViews splits page views into those to send and a count of those skipped because
// the timestamp is 5 minutes old or more, or more than 1 minute ahead of now. A zero timestamp counts as now
// (and is then set to now in the returned slice, so the event carries a timestamp).
// The input slice is not modified.
func filterBeaconPageViews(views []beaconPageView, now time.Time) (kept []beaconPageView, stale int) {
	for _, view := range views {
		if view.Timestamp.IsZero() {
			view.Timestamp = now
			kept = append(kept, view)
			continue
		}

		// time.Time.Sub saturates at the limits of time.Duration, so
		// timestamps centuries away, including beaconInvalidTimestamp,
		// fall outside the window instead of overflowing.
		if now.Sub(view.Timestamp) >= beaconMaxAge || view.Timestamp.Sub(now) > beaconMaxAhead {
			stale++
			continue
		}
		kept = append(kept, view)
	}
	return kept, stale
}

// beaconReadPageView returns the page view in one element of the events
// array, and false when the element is not an object or not a page_view.
func beaconReadPageView(raw json.RawMessage) (beaconPageView, bool) {
	event := beaconObject(raw)
	if event == nil {
		return beaconPageView{}, false
	}
	if eventType, _ := beaconString(event["type"]); eventType != "page_view" {
		return beaconPageView{}, false
	}

	location := beaconObject(event["location"])
	session := beaconObject(event["session"])
	return beaconPageView{
		Timestamp: beaconTimestamp(event["timestamp"]),
		URL:       beaconURL(location["url"]),
		SpaceID:   beaconID(location["space"]),
		PageID:    beaconID(location["page"]),
		Referrer:  beaconURL(session["referrer"]),
	}, true
}

// beaconTimestamp returns the zero time for a timestamp that is absent, null
// or empty, the parsed time for an RFC 3339 string, and
// beaconInvalidTimestamp for anything else, so that filterBeaconPageViews
// counts such an event as stale. Treating an unreadable timestamp as absent
// would count the event as sent now and let any client bypass the time
// window. GitBook's endpoint also drops an event whose timestamp new Date()
// cannot parse, and, like its truthiness check, takes "" as absent.
// NOTE: GitBook's endpoint reads a number as Unix milliseconds, and this
// parser rejects it. GitBook's browser client always sends a string.
func beaconTimestamp(raw json.RawMessage) time.Time {
	if len(raw) == 0 || beaconIsKind(raw, 'n') {
		return time.Time{}
	}
	text, ok := beaconString(raw)
	if !ok {
		return beaconInvalidTimestamp
	}
	if text == "" {
		return time.Time{}
	}

	timestamp, err := time.Parse(time.RFC3339Nano, text)
	if err != nil || timestamp.IsZero() {
		// 0001-01-01T00:00:00Z parses to the zero time, which would
		// otherwise count as absent and so as now.
		return beaconInvalidTimestamp
	}
	return timestamp
}

// beaconURL returns a URL or referrer truncated to beaconMaxURLBytes, or ""
// when it is not a string or contains a control character. Browsers
// serialize URLs with control characters percent-encoded, so a raw one
// means the value did not come from location.href or document.referrer.
func beaconURL(raw json.RawMessage) string {
	text, ok := beaconString(raw)
	if !ok || beaconHasControl(text) {
		return ""
	}
	if len(text) <= beaconMaxURLBytes {
		return text
	}

	end := beaconMaxURLBytes
	for end > 0 && !utf8.RuneStart(text[end]) {
		end--
	}
	// The clone lets the long decoded string be garbage collected.
	return strings.Clone(text[:end])
}

// beaconID returns a space or page id, or "" when it is not a string, is
// longer than beaconMaxIDBytes or contains a control character.
func beaconID(raw json.RawMessage) string {
	text, ok := beaconString(raw)
	if !ok || len(text) > beaconMaxIDBytes || beaconHasControl(text) {
		return ""
	}
	return text
}

// beaconObject decodes a JSON object, and returns nil for any other value,
// including an absent one.
func beaconObject(raw json.RawMessage) map[string]json.RawMessage {
	if !beaconIsKind(raw, '{') {
		return nil
	}
	var object map[string]json.RawMessage
	if err := json.Unmarshal(raw, &object); err != nil {
		return nil
	}
	return object
}

// beaconString decodes a JSON string, and reports false for any other
// value, including an absent one. The decoded string is a copy that shares
// no memory with raw.
func beaconString(raw json.RawMessage) (string, bool) {
	if !beaconIsKind(raw, '"') {
		return "", false
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return "", false
	}
	return text, true
}

// beaconIsKind reports whether a JSON value starts with the given byte:
// '{' for an object, '[' for an array, '"' for a string, 'n' for null.
// Values taken from a decoded json.RawMessage have no leading whitespace.
func beaconIsKind(raw json.RawMessage, first byte) bool {
	return len(raw) > 0 && raw[0] == first
}

// beaconHasControl reports whether text contains a Unicode control
// character (C0, DEL or C1).
func beaconHasControl(text string) bool {
	return strings.ContainsFunc(text, unicode.IsControl)
}

// maxBeaconBytes is the largest beacon body that is read; GitBook's client
// sends at most 64 KiB. A larger body is passed on without being read.
const maxBeaconBytes = 64 << 10

// maxBeaconPageViews caps the page views taken from one beacon. GitBook's
// client sends its queued events after 1.5 seconds without a new one, on
// leaving the page and at least once a minute, so a real beacon carries a
// few page views. The cap stops one forged request from turning into many
// events.
const maxBeaconPageViews = 20

// Reasons a beacon, or a page view in it, is not tracked.
const (
	skipBeaconInvalid  = "beacon_invalid"
	skipBeaconTooLarge = "beacon_too_large"
	skipBeaconStale    = "beacon_stale"
	skipBeaconOverflow = "beacon_overflow"
	skipBeaconForeign  = "beacon_foreign"
)

// isBeacon reports whether r is GitBook's insights beacon: a POST to a path
// that ends in /~gitbook/__evt.
func isBeacon(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/~gitbook/__evt")
}

// serveBeacon turns each page_view event of a beacon into an event of
// ours, then passes the request on. The upstream receives exactly the
// bytes the browser sent, and its response reaches the browser unchanged.
// The body carries every readable cookie of the reader, so it is never
// logged.
func (h *Handler) serveBeacon(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBeaconBytes+1))
	r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(body), r.Body), Closer: r.Body}

	switch {
	case err != nil:
		countSkip(skipBeaconInvalid)
	case len(body) > maxBeaconBytes:
		countSkip(skipBeaconTooLarge)
	default:
		h.trackBeacon(w.Header(), r, body)
	}
	return next.ServeHTTP(w, r)
}

// trackBeacon queues the page views of a beacon body.
func (h *Handler) trackBeacon(header http.Header, r *http.Request, body []byte) {
	views, err := parseBeacon(body)
	if err != nil {
		countSkip(skipBeaconInvalid)
		return
	}
	views, stale := filterBeaconPageViews(views, time.Now())
	for range stale {
		countSkip(skipBeaconStale)
	}
	o := originOf(r)
	views = keepOwnPages(views, o.hostname())
	if len(views) > maxBeaconPageViews {
		for range views[maxBeaconPageViews:] {
			countSkip(skipBeaconOverflow)
		}
		views = views[:maxBeaconPageViews]
	}
	if len(views) == 0 {
		return
	}

	headers := readPageHeaders(r.Header)
	if reason := h.skipReason(&headers); reason != "" {
		for range views {
			countSkip(reason)
		}
		return
	}

	// A reader without a cookie gets one on the beacon's response, so the
	// page views of one reader share an id.
	v := readVisitor(headers.cookies)
	if v.anonymousID == "" {
		v.anonymousID = h.cookie.setNewID(header, o, time.Now())
	}

	siteID := cutField(r.URL.Query().Get("s"), maxCampaignBytes, "property")
	for _, view := range views {
		pageViews.Inc()
		h.sender.enqueue(h.builder.fromBeacon(r, &headers, o, v, view, siteID))
	}
}

// keepOwnPages drops, and counts, the page views whose URL is not on the
// host the beacon was sent to. GitBook's client reports the page it shows,
// on the host it posts to, so another host means a forged beacon.
func keepOwnPages(views []beaconPageView, host string) []beaconPageView {
	kept := views[:0]
	for _, view := range views {
		u, err := url.Parse(view.URL)
		if err != nil || !strings.EqualFold(u.Hostname(), host) {
			countSkip(skipBeaconForeign)
			continue
		}
		kept = append(kept, view)
	}
	return kept
}

// fromBeacon records the event of a page view that GitBook's beacon
// reported. The page is the one in the beacon, not the beacon's own URL.
func (b *eventBuilder) fromBeacon(r *http.Request, headers *pageHeaders, o origin, v visitor, view beaconPageView, siteID string) *event {
	e := b.newEvent(headers, o, v, view.Timestamp)
	e.page = pageFacts{url: view.URL, referrer: view.Referrer}
	if u, err := url.Parse(view.URL); err == nil {
		e.page.requestURI = u.EscapedPath()
		if u.RawQuery != "" {
			e.page.requestURI += "?" + u.RawQuery
		}
	}

	e.props = b.properties(r)
	if e.props == nil {
		e.props = make(analytics.Properties, 3)
	}
	if view.SpaceID != "" {
		e.props["spaceId"] = view.SpaceID
	}
	if view.PageID != "" {
		e.props["pageId"] = view.PageID
	}
	if siteID != "" {
		e.props["siteId"] = siteID
	}
	return e
}

// prefixedBody replays the bytes already read from a request body, then
// the rest of it, and closes the original.
type prefixedBody struct {
	io.Reader
	io.Closer
}
