package caddymodule

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/net/publicsuffix"
)

// Cookie names and formats used by Segment's browser libraries.
const (
	anonymousIDCookie = "ajs_anonymous_id"
	userIDCookie      = "ajs_user_id"

	// maxIDLength is the longest id accepted from a cookie, in bytes.
	maxIDLength = 128

	cookieFormatRaw     = "raw"
	cookieFormatClassic = "classic"
	cookieDomainHost    = "host"

	// maxDomainWarnings bounds the set of hosts already warned about, so
	// that hostile Host headers cannot grow it without limit.
	maxDomainWarnings = 1024

	// domainCacheSize bounds the number of hosts whose Domain attribute
	// is cached.
	domainCacheSize = 4096

	// maxDomainNameLength is the longest domain name, in bytes.
	maxDomainNameLength = 253
)

// visitor is the reader's Segment identity.
type visitor struct {
	anonymousID string
	userID      string
}

// readVisitor takes the reader's ids from the request's Cookie lines in
// one pass: for each name, the first cookie whose value is usable.
func readVisitor(cookies []string) visitor {
	var v visitor
	for _, line := range cookies {
		for line != "" {
			var name, value string
			var ok bool
			name, value, line, ok = nextCookie(line)
			switch {
			case !ok:
			case name == anonymousIDCookie && v.anonymousID == "":
				v.anonymousID, _ = decodeID(value)
			case name == userIDCookie && v.userID == "":
				v.userID, _ = decodeID(value)
			}
		}
	}
	return v
}

// hasCookie reports whether the Cookie lines contain a cookie with that
// name and exactly that value.
func hasCookie(cookies []string, name, value string) bool {
	for _, line := range cookies {
		for line != "" {
			var got, gotValue string
			var ok bool
			got, gotValue, line, ok = nextCookie(line)
			if ok && got == name && strings.TrimSpace(gotValue) == value {
				return true
			}
		}
	}
	return false
}

// nextCookie splits the first name=value pair off a Cookie header line and
// returns the rest of the line. ok is false for a pair without "=".
func nextCookie(line string) (name, value, rest string, ok bool) {
	pair, rest, _ := strings.Cut(line, ";")
	name, value, ok = strings.Cut(strings.TrimSpace(pair), "=")
	return name, value, rest, ok
}

// decodeID turns a cookie value as written by any Segment library into the
// bare id: analytics-next's raw value, classic analytics.js's URL-encoded
// JSON string (%22<id>%22), or a plain quoted "<id>". A value that is empty
// or only spaces after decoding, longer than maxIDLength bytes, not UTF-8,
// or that holds control characters is not usable.
func decodeID(value string) (string, bool) {
	value = strings.TrimSpace(value)
	if strings.IndexByte(value, '%') >= 0 {
		unescaped, err := url.PathUnescape(value)
		if err != nil {
			return "", false
		}
		value = unescaped
	}

	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		if strings.IndexByte(value, '\\') >= 0 {
			var s string
			if json.Unmarshal([]byte(value), &s) != nil {
				return "", false
			}
			value = s
		} else {
			value = value[1 : len(value)-1]
		}
	}

	if strings.TrimSpace(value) == "" || len(value) > maxIDLength || value == "null" || value == "undefined" {
		return "", false
	}
	if !utf8.ValidString(value) {
		return "", false
	}
	for _, r := range value {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", false
		}
	}
	return value, true
}

// upstreamID returns the id in an ajs_anonymous_id cookie that the response
// already sets, and whether the response sets that cookie at all.
func upstreamID(header http.Header) (id string, set bool) {
	for _, line := range header["Set-Cookie"] {
		pair, _, _ := strings.Cut(line, ";")
		key, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || key != anonymousIDCookie {
			continue
		}
		id, _ = decodeID(value)
		return id, true
	}
	return "", false
}

// newAnonymousID returns a new id in Segment's format, a UUID v4.
func newAnonymousID() string {
	return newUUID().String()
}

// newUUID returns a random UUID v4. Its random bytes come from a buffer
// that crypto/rand fills for many ids at once, which costs less than a
// read per id.
func newUUID() uuid.UUID {
	buffer := randomPool.Get().(*randomBuffer)
	if buffer.used+len(uuid.UUID{}) > len(buffer.bytes) {
		rand.Read(buffer.bytes[:]) // crypto/rand.Read never returns an error
		buffer.used = 0
	}
	var id uuid.UUID
	buffer.used += copy(id[:], buffer.bytes[buffer.used:])
	randomPool.Put(buffer)

	id[6] = id[6]&0x0f | 0x40 // version 4
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	return id
}

// randomBuffer contains random bytes for 64 ids. The pool gives a buffer to
// one goroutine at a time, so no two ids share bytes.
type randomBuffer struct {
	bytes [64 * 16]byte
	used  int
}

var randomPool = sync.Pool{New: func() any {
	return &randomBuffer{used: len(randomBuffer{}.bytes)}
}}

// uuidText returns the canonical text of id, as id.String returns it,
// without allocating.
func uuidText(id uuid.UUID) [uuidTextLength]byte {
	var text [uuidTextLength]byte
	hex.Encode(text[0:8], id[0:4])
	text[8] = '-'
	hex.Encode(text[9:13], id[4:6])
	text[13] = '-'
	hex.Encode(text[14:18], id[6:8])
	text[18] = '-'
	hex.Encode(text[19:23], id[8:10])
	text[23] = '-'
	hex.Encode(text[24:], id[10:])
	return text
}

// uuidTextLength is the length of a UUID's canonical text.
const uuidTextLength = 36

// cookieSetter writes the ajs_anonymous_id cookie for new readers.
type cookieSetter struct {
	domain   string // configured domain, cookieDomainHost, or "" for the registrable domain
	maxAge   time.Duration
	classic  bool
	logger   *zap.Logger
	warnings *sync.Map // hosts already warned about
	warned   atomic.Int64
	domains  *boundedCache[string] // host → Domain attribute, "" for none

	// maxAgeText is the cookie's Max-Age attribute, with its leading "; ".
	maxAgeText string

	lastExpiry atomic.Pointer[expiry]
}

// newCookieSetter returns a cookie setter for the cookie_domain domain, a
// lifetime of maxAge and, with classic, analytics.js's quoted format.
func newCookieSetter(domain string, maxAge time.Duration, classic bool, logger *zap.Logger) *cookieSetter {
	return &cookieSetter{
		domain:     domain,
		maxAge:     maxAge,
		classic:    classic,
		logger:     logger,
		warnings:   &sync.Map{},
		domains:    newBoundedCache[string](domainCacheSize),
		maxAgeText: "; Max-Age=" + strconv.FormatInt(int64(maxAge/time.Second), 10),
	}
}

// setNewID gives a new reader a new id: it adds the Set-Cookie header
// that stores the id, at time now, and returns the id. The id is a part of
// the header's value, which saves an allocation.
func (c *cookieSetter) setNewID(header http.Header, o origin, now time.Time) string {
	cookie, start := c.cookie(o, newUUID(), now)
	if lines := header["Set-Cookie"]; len(lines) > 0 {
		header["Set-Cookie"] = append(lines, cookie)
	} else {
		header["Set-Cookie"] = []string{cookie}
	}
	return cookie[start : start+uuidTextLength]
}

// cookie returns the Set-Cookie value that stores id for the reader, set
// at time now, and where the id starts in it. The cookie is readable by
// scripts on purpose: Segment's browser library must read it to use the
// same id.
func (c *cookieSetter) cookie(o origin, id uuid.UUID, now time.Time) (string, int) {
	quote := ""
	if c.classic {
		quote = "%22"
	}
	domain := c.domainFor(o.hostname())
	expires := c.expires(now)

	// One allocation, of at least the cookie's size: the builder's buffer
	// becomes the string.
	var b strings.Builder
	b.Grow(len(anonymousIDCookie+"=") + 2*len(quote) + uuidTextLength +
		len("; Path=/; Domain=") + len(domain) + len(c.maxAgeText) +
		len("; Expires=") + len(expires) + len("; SameSite=Lax; Secure"))

	b.WriteString(anonymousIDCookie + "=")
	b.WriteString(quote)
	start := b.Len()
	text := uuidText(id)
	b.Write(text[:])
	b.WriteString(quote)
	b.WriteString("; Path=/")
	if domain != "" {
		b.WriteString("; Domain=")
		b.WriteString(domain)
	}
	b.WriteString(c.maxAgeText)
	b.WriteString("; Expires=")
	b.WriteString(expires)
	b.WriteString("; SameSite=Lax")
	if o.scheme == "https" {
		b.WriteString("; Secure")
	}
	return b.String(), start
}

// expiry is the Expires attribute of the cookies set within one second.
type expiry struct {
	second int64 // Unix time of the cookie's expiry
	text   string
}

// expires returns the Expires attribute of a cookie set at time now. The
// text changes once a second, so the last one is kept for the cookies set
// within the same second.
func (c *cookieSetter) expires(now time.Time) string {
	at := now.Add(c.maxAge)
	if last := c.lastExpiry.Load(); last != nil && last.second == at.Unix() {
		return last.text
	}
	e := &expiry{second: at.Unix(), text: at.UTC().Format(http.TimeFormat)}
	c.lastExpiry.Store(e)
	return e.text
}

// domainFor returns the Domain attribute for a cookie set on host, as
// findDomain gives it. Results are cached per host.
func (c *cookieSetter) domainFor(host string) string {
	// A longer host is not a domain name, and is not cached, so the cache
	// holds at most domainCacheSize short keys.
	if c.domain == cookieDomainHost || len(host) > maxDomainNameLength {
		return ""
	}
	if domain, ok := c.domains.get(host); ok {
		return domain
	}
	domain := c.findDomain(host)
	c.domains.put(host, domain)
	return domain
}

// findDomain returns the Domain attribute for a cookie set on host, or ""
// for a host-only cookie: for IP literals, single-label hosts such as
// localhost, names a browser would not accept, and hosts that the
// configured domain does not cover.
func (c *cookieSetter) findDomain(host string) string {
	// A host with a trailing dot is fully qualified, and browsers refuse a
	// Domain without that dot for it.
	host = strings.ToLower(host)
	if !isDomainName(host) {
		return ""
	}

	if c.domain != "" {
		if host == c.domain || strings.HasSuffix(host, "."+c.domain) {
			return c.domain
		}
		c.warnUncovered(host)
		return ""
	}

	domain, err := publicsuffix.EffectiveTLDPlusOne(host)
	if err != nil {
		return ""
	}
	return domain
}

// warnUncovered logs once per host that the configured cookie domain does
// not cover it, so the cookie there is host-only.
func (c *cookieSetter) warnUncovered(host string) {
	if c.warned.Load() >= maxDomainWarnings {
		return
	}
	if _, seen := c.warnings.LoadOrStore(host, struct{}{}); seen {
		return
	}
	if c.warned.Add(1) == maxDomainWarnings {
		c.logger.Warn("cookie_domain does not cover many request hosts; no further hosts will be logged",
			zap.String("cookie_domain", c.domain), zap.Int("hosts", maxDomainWarnings))
	}
	c.logger.Warn("cookie_domain does not cover the request host, so the reader gets a host-only ajs_anonymous_id cookie",
		zap.String("cookie_domain", c.domain), zap.String("host", host))
}

// isDomainName reports whether host is a name with at least two labels made
// of letters, digits and hyphens, which is what a cookie Domain may hold.
// IP addresses and single-label names such as localhost are not.
func isDomainName(host string) bool {
	if host == "" || len(host) > maxDomainNameLength || strings.IndexByte(host, '.') < 0 {
		return false
	}

	numeric := true // whether the last label has only digits, as in an IPv4 address
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		numeric = true
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return false
			}
			numeric = numeric && ch >= '0' && ch <= '9'
		}
	}
	// No top-level domain is numeric, so this is an IPv4 address.
	return !numeric
}

// origin is the scheme and the host that the reader used, which a trusted
// proxy reports in X-Forwarded-Proto and X-Forwarded-Host, and the client
// IP that Caddy determined, honouring trusted_proxies.
type origin struct {
	scheme   string
	host     string // as sent, with any port
	clientIP string
}

// originOf reads the origin of r, with one lookup of Caddy's variables.
func originOf(r *http.Request) origin {
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	trusted, _ := vars[caddyhttp.TrustedProxyVarKey].(bool)
	clientIP, _ := vars[caddyhttp.ClientIPVarKey].(string)

	o := origin{scheme: "http", host: r.Host, clientIP: clientIP}
	if r.TLS != nil {
		o.scheme = "https"
	}
	if !trusted {
		return o
	}
	if forwarded := firstValue(headerValue(r.Header, "X-Forwarded-Host")); forwarded != "" {
		o.host = forwarded
	}
	if r.TLS == nil {
		// Any other value leaves the scheme of the connection.
		if strings.EqualFold(firstValue(headerValue(r.Header, "X-Forwarded-Proto")), "https") {
			o.scheme = "https"
		}
	}
	return o
}

// hostname returns the origin's host without its port, and an IPv6
// literal without its brackets.
func (o origin) hostname() string {
	return stripPort(o.host)
}

// stripPort removes the port from a host of a Host header, and the
// brackets from an IPv6 literal.
func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if end := strings.IndexByte(host, ']'); end > 0 {
			return host[1:end]
		}
		return host[1:]
	}
	// More than one colon without brackets is a bare IPv6 address.
	if i := strings.IndexByte(host, ':'); i >= 0 && strings.LastIndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}

// firstValue returns the first element of a comma-separated header value.
func firstValue(value string) string {
	first, _, _ := strings.Cut(value, ",")
	return strings.TrimSpace(first)
}
