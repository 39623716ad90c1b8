// Package caddymodule is a Caddy HTTP handler that turns each reader page
// view into a Segment event, sent in the background, with the reader's
// Segment anonymous id.
package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/publicsuffix"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults and limits of the handler's configuration.
const (
	defaultEndpoint        = "https://api.segment.io"
	euEndpoint             = "https://events.eu1.segmentapis.com"
	defaultEvent           = "[GitBook] space_view"
	defaultCookieMaxAge    = 365 * 24 * time.Hour
	defaultBatchSize       = 250
	maxBatchSize           = 2500
	defaultFlushInterval   = 5 * time.Second
	defaultQueueSize       = 10000
	defaultShutdownTimeout = 5 * time.Second
	maxProperties          = 32
	minFlushInterval       = 10 * time.Millisecond
	maxPropertyNameBytes   = 64
)

// Handler sends a Segment event for each page view it serves: a GET whose
// final response is an HTML page, from a reader that is not a bot, not a
// prefetch, and that allowed tracking. It reads the reader's Segment
// anonymous id from the `ajs_anonymous_id` cookie, or sets that cookie on
// the page when it is missing, so that the reader keeps one identity across
// every site that uses Segment on the same registrable domain. Events are
// queued in memory and posted in batches by a background goroutine, so a
// page never waits for Segment.
type Handler struct {
	// The write key of the Segment source that receives the events.
	// Required unless `dry_run` is set. Placeholders such as
	// `{env.SEGMENT_WRITE_KEY}` are resolved once, when the config loads.
	WriteKey string `json:"write_key,omitempty"`

	// The base URL of the Segment HTTP Tracking API; events are posted to
	// `<endpoint>/v1/batch`. Default: `https://api.segment.io`. Cannot be
	// combined with `region`.
	Endpoint string `json:"endpoint,omitempty"`

	// The region of the Segment workspace: `us` (default) or `eu`, which
	// posts to `https://events.eu1.segmentapis.com`. Events sent to the wrong
	// region are accepted by Segment and then lost.
	Region string `json:"region,omitempty"`

	// The name of the track event. Default: `[GitBook] space_view`, the name
	// GitBook's hosted Segment integration uses.
	Event string `json:"event,omitempty"`

	// Sent as `properties.spaceId`. Placeholders are resolved per request.
	SpaceID string `json:"space_id,omitempty"`

	// Extra event properties, name to value. Placeholders in values are
	// resolved per request. At most 32 properties.
	Properties map[string]string `json:"properties,omitempty"`

	// The `Domain` of the `ajs_anonymous_id` cookie set for new readers.
	// Default: the registrable domain of the request's host (for
	// `docs.example.com` that is `example.com`), which is the domain
	// Segment's browser library picks, so both share one cookie. `host`
	// sets a host-only cookie. A domain that does not cover the request's
	// host gives a host-only cookie for that request.
	CookieDomain string `json:"cookie_domain,omitempty"`

	// The lifetime of the `ajs_anonymous_id` cookie, at least 1s.
	// Default: 365 days.
	CookieMaxAge caddy.Duration `json:"cookie_max_age,omitempty"`

	// The form of the id in a new `ajs_anonymous_id` cookie: `raw`
	// (default), as analytics-next writes it, or `classic`, the URL-encoded
	// JSON string (`%22<id>%22`) that the classic analytics.js library
	// requires. Both forms are read whatever this is set to.
	CookieFormat string `json:"cookie_format,omitempty"`

	// The Segment call sent per page view: `track` (default, the event
	// GitBook sends) or `page`, a page call named after the page title.
	Call string `json:"call,omitempty"`

	// The maximum number of events in one request to Segment, from 1 to
	// 2500. Default: 250.
	BatchSize int `json:"batch_size,omitempty"`

	// The maximum time an event waits before its batch is sent, at least
	// 10ms. Default: 5s.
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`

	// The number of events held in memory while they wait for the sender.
	// While Segment is slow or down, analytics-go holds at most four
	// batches more (at least 1,000 events, at most this number). When the
	// queue is full, new events are dropped and counted, and the request
	// carries on. Default: 10000.
	QueueSize int `json:"queue_size,omitempty"`

	// How long a shutdown or a reload that changes the delivery settings
	// waits for queued events to be delivered. After a recent failed
	// attempt, batches waiting for a retry get up to three quarters of it
	// before the rest is sent. Events still undelivered after it are
	// dropped and counted. Default: 5s.
	ShutdownTimeout caddy.Duration `json:"shutdown_timeout,omitempty"`

	// Logs each event through Caddy's logger instead of sending it. No
	// write key is needed.
	DryRun bool `json:"dry_run,omitempty"`

	// Counts page views from GitBook's own page-view beacon (`POST
	// .../~gitbook/__evt`) instead of from HTML responses, for a GitBook
	// site behind `reverse_proxy`. GitBook changes pages on the client
	// without a request that the proxy could count, but its beacon reports
	// every page view. HTML responses still get the cookie.
	GitBookInsights bool `json:"gitbook_insights,omitempty"`

	// Counts page views by crawlers and requests without a User-Agent too.
	// By default they are skipped.
	TrackBots bool `json:"track_bots,omitempty"`

	// When set, a request is tracked, and a new reader given a cookie, only
	// if it carries one of these cookies with its value. For GitBook's
	// cookie banner that is `__gitbook_cookie_granted` = `yes`.
	ConsentCookies []ConsentCookie `json:"consent_cookies,omitempty"`

	// Tracks requests that carry the Global Privacy Control signal
	// (`Sec-GPC: 1`) too. By default they are neither tracked nor given a
	// cookie.
	IgnoreGPC bool `json:"ignore_gpc,omitempty"`

	// The value of the event's `context.ip`. `full` (default) is the client
	// IP as Caddy determines it, honouring `trusted_proxies`. `anonymize`
	// zeroes the last octet of an IPv4 address and the last 80 bits of an
	// IPv6 address. `omit` sends no IP.
	IP string `json:"ip,omitempty"`

	logger *zap.Logger
	sender *sender
	// inflight counts the requests that may still enqueue an event. Caddy
	// cleans up the old config of a reload without waiting for its
	// requests, so Cleanup waits for them before it releases the sender.
	inflight *atomic.Int64
	config   senderConfig
	builder  eventBuilder
	cookie   *cookieSetter
	titles   *titleCache
}

// ConsentCookie is a cookie whose value grants consent to tracking.
type ConsentCookie struct {
	// The cookie name.
	Name string `json:"name"`
	// The value that grants consent.
	Value string `json:"value"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.segment",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision checks the configuration, fills in defaults and takes a sender
// for its delivery settings, shared with other configs that use the same
// settings so that a reload loses or repeats no queued event.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	registerMetrics(ctx.GetMetricsRegistry(), h.logger)

	if err := h.prepare(); err != nil {
		return err
	}

	s, err := acquireSender(h.config)
	if err != nil {
		return err
	}
	h.sender = s
	return nil
}

// prepare checks the configuration and builds the state that requests
// use, everything but the sender. h.logger must be set.
func (h *Handler) prepare() error {
	if err := h.setDefaults(); err != nil {
		return err
	}
	if err := h.check(); err != nil {
		return err
	}

	h.inflight = new(atomic.Int64)
	h.builder = newEventBuilder(h)
	h.titles = newTitleCache()
	h.cookie = newCookieSetter(h.CookieDomain, time.Duration(h.CookieMaxAge), h.CookieFormat == cookieFormatClassic, h.logger)
	return nil
}

// setDefaults fills in each unset field and resolves the write key and the
// endpoint.
func (h *Handler) setDefaults() error {
	repl := caddy.NewReplacer()
	writeKey, err := repl.ReplaceOrErr(h.WriteKey, true, true)
	if err != nil {
		return fmt.Errorf("write_key: a placeholder in it could not be resolved: %v; set the environment variable it names, or give the key itself", err)
	}

	endpoint, err := repl.ReplaceOrErr(h.Endpoint, true, true)
	if err != nil {
		return fmt.Errorf("endpoint: a placeholder in it could not be resolved: %v; set the environment variable it names, or give the URL itself", err)
	}
	switch {
	case endpoint != "":
	case h.Region == "eu":
		endpoint = euEndpoint
	default:
		endpoint = defaultEndpoint
	}

	if h.Event == "" {
		h.Event = defaultEvent
	}
	if h.CookieMaxAge == 0 {
		h.CookieMaxAge = caddy.Duration(defaultCookieMaxAge)
	}
	if h.CookieFormat == "" {
		h.CookieFormat = cookieFormatRaw
	}
	if h.Call == "" {
		h.Call = callTrack
	}
	if h.BatchSize == 0 {
		h.BatchSize = defaultBatchSize
	}
	if h.FlushInterval == 0 {
		h.FlushInterval = caddy.Duration(defaultFlushInterval)
	}
	if h.QueueSize == 0 {
		h.QueueSize = defaultQueueSize
	}
	if h.ShutdownTimeout == 0 {
		h.ShutdownTimeout = caddy.Duration(defaultShutdownTimeout)
	}
	if h.IP == "" {
		h.IP = ipFull
	}
	h.CookieDomain = strings.Trim(strings.ToLower(h.CookieDomain), ".")

	h.config = senderConfig{
		writeKey:        writeKey,
		endpoint:        strings.TrimRight(endpoint, "/"),
		batchSize:       h.BatchSize,
		flushInterval:   time.Duration(h.FlushInterval),
		queueSize:       h.QueueSize,
		shutdownTimeout: time.Duration(h.ShutdownTimeout),
		dryRun:          h.DryRun,
	}
	return nil
}

// check rejects every invalid setting with an error that names the
// setting, its value and the fix. The write key is never part of an error.
func (h *Handler) check() error {
	if h.config.writeKey == "" && !h.DryRun {
		return fmt.Errorf("write_key is missing: set it to the write key of your Segment source (for example {env.SEGMENT_WRITE_KEY}), or set dry_run to log events instead of sending them")
	}
	if h.Region != "" && h.Region != "us" && h.Region != "eu" {
		return fmt.Errorf("region %q is unknown: use us or eu", h.Region)
	}
	if h.Region != "" && h.Endpoint != "" {
		return fmt.Errorf("region %q and endpoint %q are both set: set only one, since region chooses the endpoint", h.Region, shownEndpoint(h.Endpoint))
	}
	if err := checkEndpoint(h.config.endpoint); err != nil {
		return err
	}

	if h.BatchSize < 1 || h.BatchSize > maxBatchSize {
		return fmt.Errorf("batch_size %d is out of range: use a number from 1 to %d, the most events Segment accepts in one request", h.BatchSize, maxBatchSize)
	}
	if h.FlushInterval < caddy.Duration(minFlushInterval) {
		return fmt.Errorf("flush_interval %s is shorter than %s: use a duration such as 5s (in JSON, a number is nanoseconds)", time.Duration(h.FlushInterval), minFlushInterval)
	}
	if h.CookieMaxAge < caddy.Duration(time.Second) {
		return fmt.Errorf("cookie_max_age %s is shorter than a second, which makes browsers drop the cookie at once: use a duration such as 365d (in JSON, a number is nanoseconds)", time.Duration(h.CookieMaxAge))
	}
	if h.QueueSize < 1 {
		return fmt.Errorf("queue_size %d is out of range: use a positive number of events such as %d", h.QueueSize, defaultQueueSize)
	}
	if h.ShutdownTimeout < 0 {
		return fmt.Errorf("shutdown_timeout %s is negative: use a positive duration such as 5s", time.Duration(h.ShutdownTimeout))
	}

	if err := checkCookieDomain(h.CookieDomain); err != nil {
		return err
	}
	if h.CookieFormat != cookieFormatRaw && h.CookieFormat != cookieFormatClassic {
		return fmt.Errorf("cookie_format %q is unknown: use raw or classic", h.CookieFormat)
	}
	if h.Call != callTrack && h.Call != callPage {
		return fmt.Errorf("call %q is unknown: use track or page", h.Call)
	}
	if h.IP != ipFull && h.IP != ipAnonymize && h.IP != ipOmit {
		return fmt.Errorf("ip %q is unknown: use full, anonymize or omit", h.IP)
	}

	if len(h.Properties) > maxProperties {
		return fmt.Errorf("property is given %d times: use at most %d properties", len(h.Properties), maxProperties)
	}
	for name := range h.Properties {
		if name == "" || len(name) > maxPropertyNameBytes {
			return fmt.Errorf("property name %q is empty or longer than %d bytes: give each property a short name", name, maxPropertyNameBytes)
		}
	}
	for _, c := range h.ConsentCookies {
		if c.Name == "" || c.Value == "" {
			return fmt.Errorf("consent_cookie %q %q is incomplete: give a cookie name and the value that grants consent", c.Name, c.Value)
		}
	}
	return nil
}

// checkEndpoint accepts an absolute http or https URL with a host, and
// without the /v1/batch path that analytics-go appends.
func checkEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q is not an http or https URL: use the base URL of the Segment API, such as %s", shownEndpoint(endpoint), defaultEndpoint)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("endpoint %q has credentials, a query or a fragment (not shown here): use only the scheme, host and optional path; the write key goes in write_key", shownEndpoint(endpoint))
	}
	if strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v1/batch") {
		return fmt.Errorf("endpoint %q ends in /v1/batch, which is added to it: use the base URL, such as %s", shownEndpoint(endpoint), defaultEndpoint)
	}
	return nil
}

// shownEndpoint returns an endpoint as it may appear in an error: without
// credentials, query or fragment, which may hold the write key.
func shownEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		if strings.ContainsAny(endpoint, "@?#") {
			return "(not shown, since it may hold credentials)"
		}
		return endpoint
	}
	if u.User == nil && u.RawQuery == "" && u.Fragment == "" && !strings.Contains(endpoint, "#") {
		return endpoint
	}
	shown := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return shown.String()
}

// checkCookieDomain rejects a domain that a browser would refuse in a
// cookie's Domain attribute because it is a public suffix.
func checkCookieDomain(domain string) error {
	if domain == "" || domain == cookieDomainHost {
		return nil
	}
	if strings.ContainsAny(domain, " ;,/:") {
		return fmt.Errorf("cookie_domain %q is not a domain name: give a domain such as example.com, or host for a host-only cookie", domain)
	}
	if suffix, _ := publicsuffix.PublicSuffix(domain); suffix == domain {
		return fmt.Errorf("cookie_domain %q is a public suffix, which browsers refuse in a cookie: use your registrable domain (such as example.%s), or host for a host-only cookie", domain, domain)
	}
	return nil
}

// ServeHTTP passes the request on and, when the response turns out to be a
// page view, queues its event. Queueing never blocks, so the request never
// waits for Segment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.GitBookInsights && isBeacon(r) {
		h.inflight.Add(1)
		defer h.inflight.Add(-1)
		return h.serveBeacon(w, r, next)
	}
	if !mayBePageView(r) {
		return next.ServeHTTP(w, r)
	}
	h.inflight.Add(1)
	defer h.inflight.Add(-1)

	rec := newPageViewRecorder(h, w, r)
	defer rec.release()

	if err := next.ServeHTTP(rec, r); err != nil {
		return err
	}
	if !rec.pageView || h.GitBookInsights {
		return nil
	}

	pageViews.Inc()
	h.sender.enqueue(h.builder.fromPage(r, &rec.headers, rec.origin, rec.visitor, rec.Title(), rec.at))
	return nil
}

// preparePageView is called at WriteHeader of an HTML response. It
// returns false when the request is not one to track. Otherwise it records
// in rec when the page view happened, where the request came from and who
// the reader is, giving a new reader an id and its cookie.
func (h *Handler) preparePageView(rec *pageViewRecorder, header http.Header) bool {
	r := rec.request
	rec.headers = readPageHeaders(r.Header)
	if reason := h.skipReason(&rec.headers); reason != "" {
		countSkip(reason)
		return false
	}

	// The clock is read only here, so that assets never pay for it.
	rec.at = time.Now()
	rec.origin = originOf(r)
	rec.visitor = readVisitor(rec.headers.cookies)
	if rec.visitor.anonymousID != "" {
		return true
	}

	// An upstream that sets the cookie itself wins, so the reader gets one
	// id and not two.
	if id, set := upstreamID(header); set {
		rec.visitor.anonymousID = id
		if id == "" {
			rec.visitor.anonymousID = newAnonymousID()
		}
		return true
	}

	rec.visitor.anonymousID = h.cookie.setNewID(header, rec.origin, rec.at)
	return true
}

// Cleanup releases the sender. The last config that uses a sender stops
// it, which delivers what is queued within shutdown_timeout. Caddy calls
// Cleanup once, possibly while requests of this config still run, so the
// sender field stays set: an event enqueued after the sender stopped is
// counted as dropped at shutdown.
func (h *Handler) Cleanup() error {
	if h.sender == nil {
		return nil
	}

	// When this is the last config using the sender, running page views
	// get up to shutdown_timeout to enqueue their events before it stops.
	// A reload that keeps the delivery settings keeps the sender, and
	// needs no wait. NOTE: a request read by the old server but not yet
	// in this handler is not counted, and its event can still be dropped.
	if refs, _ := senders.References(h.config); refs <= 1 {
		deadline := time.Now().Add(time.Duration(h.ShutdownTimeout))
		for h.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return releaseSender(h.config)
}

// Interface guards
var (
	_ caddy.Module                = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
