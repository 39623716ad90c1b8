package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/segmentio/analytics-go/v3"
)

// maxBeaconBytes is the largest beacon body that is read; GitBook's client
// sends at most 64 KiB. A larger body is passed on without being read.
const maxBeaconBytes = 64 << 10

// Reasons a beacon, or a page view in it, is not tracked.
const (
	skipBeaconInvalid  = "beacon_invalid"
	skipBeaconTooLarge = "beacon_too_large"
	skipBeaconStale    = "beacon_stale"
)

// isBeacon reports whether r is GitBook's insights beacon: a POST to a path
// that ends in /~gitbook/__evt.
func isBeacon(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/~gitbook/__evt")
}

// serveBeacon turns each page_view event of a beacon into an event of
// ours, then passes the request on. The upstream receives exactly the
// bytes the browser sent, and its answer reaches the browser unchanged.
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
	if len(views) == 0 {
		return
	}

	if reason := h.skipReason(r); reason != "" {
		for range views {
			countSkip(reason)
		}
		return
	}

	// A reader without a cookie gets one on the beacon's response, so the
	// page views of one reader share an id.
	v := readVisitor(r.Header)
	if v.anonymousID == "" {
		v.anonymousID = newAnonymousID()
		h.cookie.setCookie(header, r, v.anonymousID)
	}

	siteID := cutField(r.URL.Query().Get("s"), maxCampaignBytes, "property")
	for _, view := range views {
		pageViews.Inc()
		h.sender.enqueue(h.builder.fromBeacon(r, v, view, siteID))
	}
}

// fromBeacon builds the event of a page view that GitBook's beacon
// reported. The page is the one in the beacon, not the beacon's own URL.
func (b *eventBuilder) fromBeacon(r *http.Request, v visitor, view beaconPageView, siteID string) analytics.Message {
	page := pageFacts{url: view.URL, referrer: view.Referrer}
	if u, err := url.Parse(view.URL); err == nil {
		page.path = u.EscapedPath()
		if u.RawQuery != "" {
			page.search = "?" + u.RawQuery
			page.campaign = campaignOf(u.RawQuery)
		}
	}

	props := b.properties(r)
	if props == nil {
		props = make(analytics.Properties, 3)
	}
	if view.SpaceID != "" {
		props["spaceId"] = view.SpaceID
	}
	if view.PageID != "" {
		props["pageId"] = view.PageID
	}
	if siteID != "" {
		props["siteId"] = siteID
	}
	return b.message(r, v, page, props, view.Timestamp)
}

// prefixedBody replays the bytes already read from a request body, then
// the rest of it, and closes the original.
type prefixedBody struct {
	io.Reader
	io.Closer
}
