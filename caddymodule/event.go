package caddymodule

import (
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/segmentio/analytics-go/v3"
)

// Values of the call and ip settings.
const (
	callTrack = "track"
	callPage  = "page"

	ipFull      = "full"
	ipAnonymize = "anonymize"
	ipOmit      = "omit"
)

// Field limits, in bytes of JSON-encoded text. With every field at its
// limit and 32 properties of 1 KB sharing an 8 KB budget, an event stays
// well below Segment's limit of 32 KB per event.
const (
	maxURLBytes        = 2048
	maxPathBytes       = 1024
	maxSearchBytes     = 1024
	maxReferrerBytes   = 2048
	maxTitleBytes      = 1024
	maxUserAgentBytes  = 1024
	maxLocaleBytes     = 64
	maxCampaignBytes   = 256
	maxPropertyBytes   = 1024
	maxPropertiesBytes = 8192
)

// libraryName is sent as context.library.name.
const libraryName = "caddy-segment"

// modulePath is this plugin's Go module path, used to find its version in
// the build information of the binary it is built into.
const modulePath = "github.com/caddy-segment/caddy-segment"

// unversioned is the version Go records for a module required only
// through a local replacement, as in an xcaddy build with --replace.
const unversioned = "v0.0.0-00010101000000-000000000000"

// library is sent as context.library: this plugin's name and the version of
// its module in the running binary ("devel" for a local build).
var library = sync.OnceValue(func() analytics.LibraryInfo {
	version := "devel"
	if info, ok := debug.ReadBuildInfo(); ok {
		modules := append([]*debug.Module{&info.Main}, info.Deps...)
		for _, m := range modules {
			if m == nil || m.Path != modulePath {
				continue
			}
			if m.Replace != nil && m.Replace.Version != "" {
				version = m.Replace.Version
			} else if m.Version != "" && m.Version != "(devel)" && m.Version != unversioned {
				version = m.Version
			}
		}
	}
	return analytics.LibraryInfo{Name: libraryName, Version: version}
})

// eventBuilder turns the facts of a request into a Segment message. It is
// built once per config; the request path only fills in the facts.
type eventBuilder struct {
	event    string
	call     string
	ipMode   string
	library  analytics.LibraryInfo
	spaceID  property
	extra    []property
	static   analytics.Properties // shared by every event when no value has placeholders
	isStatic bool
}

// property is a configured event property whose value may hold
// placeholders.
type property struct {
	name         string
	value        string
	placeholders bool
}

func newEventBuilder(h *Handler) eventBuilder {
	b := eventBuilder{
		event:   cutField(h.Event, maxTitleBytes, "event"),
		call:    h.Call,
		ipMode:  h.IP,
		library: library(),
		spaceID: newProperty("spaceId", h.SpaceID),
	}
	// Sorted, so that the properties cut when the budget runs out are the
	// same on every load of the config.
	for _, name := range slices.Sorted(maps.Keys(h.Properties)) {
		b.extra = append(b.extra, newProperty(name, h.Properties[name]))
	}

	b.isStatic = b.call == callTrack && !b.spaceID.placeholders
	for _, p := range b.extra {
		b.isStatic = b.isStatic && !p.placeholders
	}
	if b.isStatic {
		b.static = b.properties(nil)
	}
	return b
}

func newProperty(name, value string) property {
	return property{name: name, value: value, placeholders: strings.ContainsRune(value, '{')}
}

// pageFacts is the part of an event that describes the page viewed, as
// read. The URL, the path, the search and the campaign come from them
// when the call is built.
type pageFacts struct {
	url        string // given for a beacon's page; otherwise scheme://host followed by requestURI
	scheme     string
	host       string
	requestURI string // path and query, as in the request line
	referrer   string
	title      string
	titleCut   bool // the title scanner cut the title
}

// event is a page view as the request path records it: the facts as read
// from the request and the response, and the builder of the config that
// served it. The sender's goroutine turns it into an analytics-go call with
// message, so the reader's request does not pay for the call's context,
// the field limits or the parsing of the client IP.
type event struct {
	builder        *eventBuilder
	visitor        visitor
	page           pageFacts
	props          analytics.Properties
	userAgent      string
	acceptLanguage string
	clientIP       string // as Caddy determined it; "" with ip omit
	at             time.Time
}

// fromPage records the event of an HTML page view.
func (b *eventBuilder) fromPage(r *http.Request, headers *pageHeaders, o origin, v visitor, title pageTitle, at time.Time) *event {
	e := b.newEvent(headers, o, v, at)
	e.page = pageFacts{
		scheme:     o.scheme,
		host:       o.host,
		requestURI: originalRequestURI(r),
		referrer:   headers.referer,
		title:      title.text,
		titleCut:   title.cut,
	}
	if b.isStatic {
		e.props = b.static
	} else {
		e.props = b.properties(r)
	}
	return e
}

// newEvent records the facts that every event takes from the request.
func (b *eventBuilder) newEvent(headers *pageHeaders, o origin, v visitor, at time.Time) *event {
	e := eventPool.Get().(*event)
	*e = event{
		builder:        b,
		visitor:        v,
		userAgent:      headers.userAgent,
		acceptLanguage: headers.acceptLanguage,
		at:             at,
	}
	if b.ipMode != ipOmit {
		e.clientIP = o.clientIP
	}
	return e
}

// eventPool recycles events: the sender releases each one once it has
// built its call.
var eventPool = sync.Pool{New: func() any { return new(event) }}

// release hands e back to the pool. e must not be used afterwards.
func (e *event) release() {
	*e = event{}
	eventPool.Put(e)
}

// originalRequestURI returns the path and query the reader asked for:
// those of the original request, before any rewrite.
func originalRequestURI(r *http.Request) string {
	requestURI, u := r.RequestURI, r.URL
	if original, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		requestURI, u = original.RequestURI, original.URL
	}
	if !strings.HasPrefix(requestURI, "/") && u != nil {
		requestURI = u.RequestURI()
	}
	return requestURI
}

// campaignOf reads the utm_ parameters of a query string into a campaign.
func campaignOf(query string) analytics.CampaignInfo {
	if !strings.Contains(query, "utm_") {
		return analytics.CampaignInfo{}
	}
	values, _ := url.ParseQuery(query)
	return analytics.CampaignInfo{
		Name:    values.Get("utm_campaign"),
		Source:  values.Get("utm_source"),
		Medium:  values.Get("utm_medium"),
		Term:    values.Get("utm_term"),
		Content: values.Get("utm_content"),
	}
}

// properties returns the configured properties, with placeholders
// resolved against r when r is not nil.
func (b *eventBuilder) properties(r *http.Request) analytics.Properties {
	if b.spaceID.value == "" && len(b.extra) == 0 {
		return nil
	}

	var repl *caddy.Replacer
	if r != nil {
		repl, _ = r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	}

	props := make(analytics.Properties, len(b.extra)+1)
	budget := maxPropertiesBytes
	for _, p := range append([]property{b.spaceID}, b.extra...) {
		if p.value == "" {
			continue
		}
		value := p.value
		if p.placeholders && repl != nil {
			value = repl.ReplaceAll(value, "")
		}
		value = cutField(value, min(maxPropertyBytes, budget), "property")
		budget -= jsonLength(value)
		props[p.name] = value
	}
	return props
}

// trackMessage and pageMessage put a call and its context in one
// allocation. The call's Context points into the same struct, and the
// sender hands analytics-go a pointer to the call, which it dereferences.
type trackMessage struct {
	track   analytics.Track
	context analytics.Context
}

type pageMessage struct {
	page    analytics.Page
	context analytics.Context
}

// message assembles the event's track or page call, with every field cut
// to its limit. It returns a *analytics.Track or a *analytics.Page.
func (e *event) message() analytics.Message {
	b, page := e.builder, &e.page
	pageURL := page.url
	if pageURL == "" {
		pageURL = page.scheme + "://" + page.host + page.requestURI
	}
	path, query, _ := strings.Cut(page.requestURI, "?")
	var search string
	var campaign analytics.CampaignInfo
	if query != "" {
		search = "?" + query
		campaign = campaignOf(query)
	}

	title := cutField(page.title, maxTitleBytes, "title")
	if page.titleCut && len(title) == len(page.title) {
		// The scanner cut it, and cutField did not count a cut of its own.
		countTruncation("title")
	}
	ctx := analytics.Context{
		Library: b.library,
		Page: analytics.PageInfo{
			URL:      cutField(pageURL, maxURLBytes, "url"),
			Path:     cutField(path, maxPathBytes, "path"),
			Search:   cutField(search, maxSearchBytes, "search"),
			Referrer: cutField(page.referrer, maxReferrerBytes, "referrer"),
			Title:    title,
		},
		Campaign: analytics.CampaignInfo{
			Name:    cutField(campaign.Name, maxCampaignBytes, "campaign"),
			Source:  cutField(campaign.Source, maxCampaignBytes, "campaign"),
			Medium:  cutField(campaign.Medium, maxCampaignBytes, "campaign"),
			Term:    cutField(campaign.Term, maxCampaignBytes, "campaign"),
			Content: cutField(campaign.Content, maxCampaignBytes, "campaign"),
		},
		IP:        b.clientIP(e.clientIP),
		UserAgent: cutField(e.userAgent, maxUserAgentBytes, "user_agent"),
		Locale:    localeOf(e.acceptLanguage),
	}

	if b.call == callPage {
		m := &pageMessage{context: ctx}
		m.page = analytics.Page{
			AnonymousId: e.visitor.anonymousID,
			UserId:      e.visitor.userID,
			Name:        ctx.Page.Title,
			Timestamp:   e.at,
			Context:     &m.context,
			Properties:  pageProperties(ctx.Page, e.props),
		}
		return &m.page
	}
	m := &trackMessage{context: ctx}
	m.track = analytics.Track{
		AnonymousId: e.visitor.anonymousID,
		UserId:      e.visitor.userID,
		Event:       b.event,
		Timestamp:   e.at,
		Context:     &m.context,
		Properties:  e.props,
	}
	return &m.track
}

// pageProperties adds the page facts to a page call's properties, where
// Segment's destinations look for them.
func pageProperties(page analytics.PageInfo, props analytics.Properties) analytics.Properties {
	merged := make(analytics.Properties, len(props)+5)
	for name, value := range props {
		merged[name] = value
	}
	merged["url"] = page.URL
	merged["path"] = page.Path
	merged["search"] = page.Search
	merged["referrer"] = page.Referrer
	merged["title"] = page.Title
	return merged
}

// clientIP parses the reader's IP as Caddy determined it, honouring
// trusted_proxies, and applies the configured anonymisation. It returns
// nil for omit and for an address that does not parse.
func (b *eventBuilder) clientIP(address string) net.IP {
	if b.ipMode == ipOmit {
		return nil
	}
	ip, err := netip.ParseAddr(address)
	if err != nil {
		return nil
	}
	ip = ip.Unmap().WithZone("")
	if b.ipMode == ipAnonymize {
		ip = anonymizeIP(ip)
	}
	return net.IP(ip.AsSlice())
}

// anonymizeIP zeroes the last octet of an IPv4 address and the last 80
// bits of an IPv6 address.
func anonymizeIP(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		b := ip.As4()
		b[3] = 0
		return netip.AddrFrom4(b)
	}
	b := ip.As16()
	clear(b[6:])
	return netip.AddrFrom16(b)
}

// localeOf returns the first language tag of an Accept-Language header, or
// "" when it has none that looks like a tag.
func localeOf(acceptLanguage string) string {
	tag, _, _ := strings.Cut(acceptLanguage, ",")
	tag, _, _ = strings.Cut(tag, ";")
	tag = strings.TrimSpace(tag)
	if tag == "" || tag == "*" || len(tag) > maxLocaleBytes {
		return ""
	}
	for i := 0; i < len(tag); i++ {
		ch := tag[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return ""
		}
	}
	return tag
}

// cutField shortens s so that its JSON encoding takes at most limit bytes,
// cutting at a character boundary, and counts the cut under field. Invalid
// UTF-8 is replaced, since JSON encoders would replace it anyway.
func cutField(s string, limit int, field string) string {
	// No byte takes more than maxJSONBytesPerByte bytes in JSON, so most
	// fields need only the quick UTF-8 check.
	if len(s)*maxJSONBytesPerByte <= limit && utf8.ValidString(s) {
		return s
	}

	size := 0
	for i, r := range s {
		n := jsonSize(r)
		if r == utf8.RuneError {
			if _, width := utf8.DecodeRuneInString(s[i:]); width == 1 {
				return cutField(strings.ToValidUTF8(s, "\uFFFD"), limit, field)
			}
		}
		if size+n > limit {
			countTruncation(field)
			return s[:i]
		}
		size += n
	}
	return s
}

// jsonLength returns how many bytes Go's encoding/json writes for the
// valid UTF-8 string s, without the quotes.
func jsonLength(s string) int {
	n := 0
	for _, r := range s {
		n += jsonSize(r)
	}
	return n
}

// maxJSONBytesPerByte is the most bytes encoding/json writes for one byte
// of a string: a control character or an invalid byte becomes a six-byte
// \u escape.
const maxJSONBytesPerByte = 6

// jsonSize returns how many bytes Go's encoding/json writes for r inside a
// string: HTML-sensitive and control characters become \u escapes.
func jsonSize(r rune) int {
	switch {
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	case r < utf8.RuneSelf:
		return 1
	default:
		return utf8.RuneLen(r)
	}
}
