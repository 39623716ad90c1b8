package caddymodule

import (
	"net/http"
	"strings"

	"github.com/x-way/crawlerdetect"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
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
// accepts HTML. A 304 carries no Content-Type, and a browser that opens
// any file in a tab accepts HTML, so a 304 counts only for a path without
// a file extension or with an HTML one. Otherwise assets are recognised
// by Content-Type, not by extension.
//
// NOTE: a 304 for a page whose last path segment has a dot, such as
// /docs/v1.2, is not counted.
func isPageResponse(r *http.Request, status int, header http.Header) bool {
	switch status {
	case http.StatusOK:
		return isHTML(headerValue(header, "Content-Type"))
	case http.StatusNotModified:
		return asksForHTML(r) && hasPageExtension(r.URL.Path)
	}
	return false
}

// hasPageExtension reports whether the last segment of path has no file
// extension, or one that HTML pages have.
func hasPageExtension(path string) bool {
	name := path[strings.LastIndexByte(path, '/')+1:]
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return true
	}
	switch strings.ToLower(name[dot+1:]) {
	case "html", "htm", "xhtml", "shtml":
		return true
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

// pageHeaders holds the request headers that the page-view rules and the
// event read, each looked up once.
type pageHeaders struct {
	secPurpose     string
	purpose        string
	xMoz           string
	rsc            string
	secGPC         string
	userAgent      string
	acceptLanguage string
	referer        string
	cookies        []string // every Cookie line
}

// readPageHeaders takes the first value of each header but Cookie, whose
// lines it takes all.
func readPageHeaders(header http.Header) pageHeaders {
	return pageHeaders{
		secPurpose:     headerValue(header, "Sec-Purpose"),
		purpose:        headerValue(header, "Purpose"),
		xMoz:           headerValue(header, "X-Moz"),
		rsc:            headerValue(header, "Rsc"),
		secGPC:         headerValue(header, "Sec-Gpc"),
		userAgent:      headerValue(header, "User-Agent"),
		acceptLanguage: headerValue(header, "Accept-Language"),
		referer:        headerValue(header, "Referer"),
		cookies:        header["Cookie"],
	}
}

// skipReason returns why the request behind an HTML response is not a page
// view to track, or "" when it is one. A skipped request gets no event and
// no cookie.
func (h *Handler) skipReason(headers *pageHeaders) string {
	if headers.isPrefetch() {
		return skipPrefetch
	}
	// Next.js app-router navigations and full prefetches carry the same
	// headers, so a React Server Component request never counts.
	if headers.rsc == "1" {
		return skipRSC
	}
	if !h.IgnoreGPC && strings.TrimSpace(headers.secGPC) == "1" {
		return skipGPC
	}
	if len(h.ConsentCookies) > 0 && !h.hasConsent(headers.cookies) {
		return skipConsent
	}
	if !h.TrackBots {
		bot, checked := isBot(headers.userAgent)
		if !checked {
			h.warnBotCheckLimit()
		}
		if bot {
			return skipBot
		}
	}
	return ""
}

// isPrefetch reports whether the browser fetches the page ahead of a
// possible visit: Sec-Purpose (Chromium, also for prerender), the legacy
// Purpose header, or Firefox's X-Moz.
func (h *pageHeaders) isPrefetch() bool {
	return hasPrefixFold(h.secPurpose, "prefetch") ||
		hasPrefixFold(h.purpose, "prefetch") ||
		strings.EqualFold(strings.TrimSpace(h.xMoz), "prefetch")
}

// botCheckLog limits the warnings that the bot check's budget is spent.
var botCheckLog logLimiter

// warnBotCheckLimit logs that new User-Agents arrive faster than they may
// be checked. botCheckLog lets one line through per logInterval.
func (h *Handler) warnBotCheckLimit() {
	if ok, suppressed := botCheckLog.allow(); ok {
		h.logger.Warn("new User-Agents arrive faster than the bot check allows; page views with unchecked User-Agents count as readers",
			zap.Int("checks_per_second", botChecksPerSecond),
			zap.Int64("suppressed_logs", suppressed))
	}
}

// hasConsent reports whether the Cookie lines hold one of the consent
// cookies with its value.
func (h *Handler) hasConsent(cookies []string) bool {
	for _, c := range h.ConsentCookies {
		if hasCookie(cookies, c.Name, c.Value) {
			return true
		}
	}
	return false
}

// botCacheSize bounds the number of cached User-Agent verdicts.
const botCacheSize = 4096

// maxBotCheckBytes bounds the part of a User-Agent that is checked and
// cached. crawlerdetect's time grows with its input (tens of milliseconds
// for 8 KB), and real User-Agents are far shorter, so the cache holds at
// most 2 MB of text.
//
// NOTE: a crawler that puts its name only after the first 512 bytes of its
// User-Agent is not recognised.
const maxBotCheckBytes = 512

// botVerdicts caches whether a User-Agent belongs to a bot.
var botVerdicts = newBoundedCache[bool](botCacheSize)

// botChecks bounds the rate of crawlerdetect's checks, which take 0.1 to
// 1 ms of CPU time each: a client that sends a new User-Agent with every
// request would otherwise make every one of its requests pay for one.
// Browsers add a few User-Agents a day, so the budget is spent only under
// such a flood.
var botChecks = rate.NewLimiter(botChecksPerSecond, 2*botChecksPerSecond)

// botChecksPerSecond is the rate of crawlerdetect checks allowed for all
// handlers of the process together.
const botChecksPerSecond = 100

// isBot reports whether a User-Agent is missing or belongs to a crawler.
// crawlerdetect runs many regular expressions, so verdicts are cached, and
// new User-Agents are checked at most botChecksPerSecond times a second.
// Beyond that rate a new User-Agent counts as a reader, without a cached
// verdict, and checked is false. A client can always pass for a reader by
// sending a browser's User-Agent, so this lets no client do more than it
// already can.
func isBot(userAgent string) (bot, checked bool) {
	if strings.TrimSpace(userAgent) == "" {
		return true, true
	}
	if len(userAgent) > maxBotCheckBytes {
		userAgent = userAgent[:maxBotCheckBytes]
	}
	if verdict, ok := botVerdicts.get(userAgent); ok {
		return verdict, true
	}
	if !botChecks.Allow() {
		return false, false
	}

	verdict := crawlerdetect.IsCrawler(userAgent)
	botVerdicts.put(userAgent, verdict)
	return verdict, true
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
