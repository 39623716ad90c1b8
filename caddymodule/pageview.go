package caddymodule

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/x-way/crawlerdetect"
)

// Reasons why an HTML response is not counted as a page view. They are the
// values of the reason label of caddy_segment_requests_skipped_total.
const (
	skipPrefetch = "prefetch"
	skipRSC      = "rsc"
	skipGPC      = "gpc"
	skipConsent  = "consent"
	skipBot      = "bot"
)

// mayBePageView reports whether a request can turn out to be a page view,
// judged before the response: a GET that does not open a WebSocket.
// Everything else passes through untouched. Other Upgrade offers, such as
// h2c from curl --http2, are ignored by Caddy and get a normal page.
func mayBePageView(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, upgrade := range r.Header["Upgrade"] {
		if containsFold(upgrade, "websocket") {
			return false
		}
	}
	return true
}

// isPageResponse reports whether a final response is a page: 200 with an
// HTML Content-Type, or 304 (a revisit of a cached page) to a request that
// asked for HTML. Assets are recognised by Content-Type, not by extension.
func isPageResponse(r *http.Request, status int, header http.Header) bool {
	switch status {
	case http.StatusOK:
		return isHTML(headerValue(header, "Content-Type"))
	case http.StatusNotModified:
		return asksForHTML(r)
	}
	return false
}

// isHTML reports whether a Content-Type is text/html or
// application/xhtml+xml, whatever its parameters.
func isHTML(contentType string) bool {
	mediaType, _, _ := strings.Cut(contentType, ";")
	mediaType = strings.TrimSpace(mediaType)
	return strings.EqualFold(mediaType, "text/html") || strings.EqualFold(mediaType, "application/xhtml+xml")
}

// asksForHTML reports whether the request wants a document: an Accept
// header that lists text/html, or Sec-Fetch-Dest: document.
func asksForHTML(r *http.Request) bool {
	if strings.EqualFold(headerValue(r.Header, "Sec-Fetch-Dest"), "document") {
		return true
	}
	for _, accept := range r.Header["Accept"] {
		if containsFold(accept, "text/html") {
			return true
		}
	}
	return false
}

// skipReason returns why the request behind an HTML response is not a page
// view to track, or "" when it is one. A skipped request gets no event and
// no cookie.
func (h *Handler) skipReason(r *http.Request) string {
	if isPrefetch(r.Header) {
		return skipPrefetch
	}
	// Next.js app-router navigations and full prefetches carry the same
	// headers, so a React Server Component request never counts.
	if headerValue(r.Header, "Rsc") == "1" {
		return skipRSC
	}
	if !h.IgnoreGPC && strings.TrimSpace(headerValue(r.Header, "Sec-Gpc")) == "1" {
		return skipGPC
	}
	if len(h.ConsentCookies) > 0 && !h.hasConsent(r.Header) {
		return skipConsent
	}
	if !h.TrackBots && isBot(headerValue(r.Header, "User-Agent")) {
		return skipBot
	}
	return ""
}

// isPrefetch reports whether the browser fetches the page ahead of a
// possible visit: Sec-Purpose (Chromium, also for prerender), the legacy
// Purpose header, or Firefox's X-Moz.
func isPrefetch(header http.Header) bool {
	return hasPrefixFold(headerValue(header, "Sec-Purpose"), "prefetch") ||
		hasPrefixFold(headerValue(header, "Purpose"), "prefetch") ||
		strings.EqualFold(strings.TrimSpace(headerValue(header, "X-Moz")), "prefetch")
}

func (h *Handler) hasConsent(header http.Header) bool {
	for _, c := range h.ConsentCookies {
		if hasCookie(header, c.Name, c.Value) {
			return true
		}
	}
	return false
}

// botCacheSize bounds the number of cached User-Agent verdicts. The cache
// is emptied when it fills.
const botCacheSize = 4096

// maxBotCheckBytes bounds the part of a User-Agent that is checked and
// cached. crawlerdetect's time grows with its input (tens of milliseconds
// for 8 KB), and real User-Agents are far shorter, so the cache holds at
// most 2 MB of text.
//
// NOTE: a crawler that puts its name only after the first 512 bytes of its
// User-Agent is not recognised.
const maxBotCheckBytes = 512

var (
	botCache      sync.Map // User-Agent → bool
	botCacheCount atomic.Int64
)

// isBot reports whether a User-Agent is missing or belongs to a crawler.
// crawlerdetect runs many regular expressions, so verdicts are cached.
func isBot(userAgent string) bool {
	if strings.TrimSpace(userAgent) == "" {
		return true
	}
	if len(userAgent) > maxBotCheckBytes {
		userAgent = userAgent[:maxBotCheckBytes]
	}
	if verdict, ok := botCache.Load(userAgent); ok {
		return verdict.(bool)
	}

	verdict := crawlerdetect.IsCrawler(userAgent)
	if botCacheCount.Add(1) > botCacheSize {
		botCache.Clear()
		botCacheCount.Store(1)
	}
	botCache.Store(userAgent, verdict)
	return verdict
}

// headerValue returns the first value of a header whose name is given in
// canonical form, without the canonicalisation that http.Header.Get does
// on every call.
func headerValue(header http.Header, canonicalKey string) string {
	if values := header[canonicalKey]; len(values) > 0 {
		return values[0]
	}
	return ""
}

func hasPrefixFold(s, prefix string) bool {
	s = strings.TrimSpace(s)
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func containsFold(s, substr string) bool {
	for i := 0; i+len(substr) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(substr)], substr) {
			return true
		}
	}
	return false
}
