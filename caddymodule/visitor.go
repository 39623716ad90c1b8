package caddymodule

import (
	"crypto/rand"
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
)

// visitor is the reader's Segment identity.
type visitor struct {
	anonymousID string
	userID      string
}

// readVisitor takes the reader's ids from the request's cookies in one
// pass: for each name, the first cookie whose value is usable.
func readVisitor(header http.Header) visitor {
	var v visitor
	for _, line := range header["Cookie"] {
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

// hasCookie reports whether the request carries a cookie with that name and
// exactly that value.
func hasCookie(header http.Header, name, value string) bool {
	for _, line := range header["Cookie"] {
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
// after decoding, longer than maxIDLength bytes, not UTF-8, or that holds
// control characters is not usable.
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

	if value == "" || len(value) > maxIDLength || value == "null" || value == "undefined" {
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

// newAnonymousID returns a new id in Segment's format, a UUID v4. It reads
// crypto/rand into a local array, which saves the allocation that
// uuid.NewRandom makes by reading through an io.Reader.
func newAnonymousID() string {
	var id uuid.UUID
	rand.Read(id[:])          // crypto/rand.Read never returns an error
	id[6] = id[6]&0x0f | 0x40 // version 4
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	return id.String()
}

// cookieSetter writes the ajs_anonymous_id cookie for new readers.
type cookieSetter struct {
	domain   string // configured domain, cookieDomainHost, or "" for the registrable domain
	maxAge   time.Duration
	classic  bool
	logger   *zap.Logger
	warnings *sync.Map // hosts already warned about
	warned   atomic.Int64
}

// setCookie adds the Set-Cookie header that stores id for the reader. The
// cookie is readable by scripts on purpose: Segment's browser library must
// read it to use the same id.
func (c *cookieSetter) setCookie(header http.Header, r *http.Request, id string) {
	b := make([]byte, 0, 192)
	b = append(b, anonymousIDCookie+"="...)
	if c.classic {
		b = append(b, "%22"...)
		b = append(b, id...)
		b = append(b, "%22"...)
	} else {
		b = append(b, id...)
	}
	b = append(b, "; Path=/"...)
	if domain := c.domainFor(requestHost(r)); domain != "" {
		b = append(b, "; Domain="...)
		b = append(b, domain...)
	}
	b = append(b, "; Max-Age="...)
	b = strconv.AppendInt(b, int64(c.maxAge/time.Second), 10)
	b = append(b, "; Expires="...)
	b = time.Now().Add(c.maxAge).UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "; SameSite=Lax"...)
	if isHTTPS(r) {
		b = append(b, "; Secure"...)
	}
	header["Set-Cookie"] = append(header["Set-Cookie"], string(b))
}

// domainFor returns the Domain attribute for a cookie set on host, or ""
// for a host-only cookie: for IP literals, single-label hosts such as
// localhost, names a browser would not accept, and hosts that the
// configured domain does not cover.
func (c *cookieSetter) domainFor(host string) string {
	if c.domain == cookieDomainHost {
		return ""
	}
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
	if host == "" || len(host) > 253 || strings.IndexByte(host, '.') < 0 {
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

// requestHost returns the host the reader asked for, without port: the
// X-Forwarded-Host of a trusted proxy, else the request's Host.
func requestHost(r *http.Request) string {
	host := r.Host
	if isTrustedProxy(r) {
		if forwarded := firstValue(headerValue(r.Header, "X-Forwarded-Host")); forwarded != "" {
			host = forwarded
		}
	}
	return stripPort(host)
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

// requestScheme returns the scheme of the reader's connection: https when
// Caddy terminated TLS, or when a trusted proxy reports it in
// X-Forwarded-Proto.
func requestScheme(r *http.Request) string {
	return schemeFor(r, isTrustedProxy(r))
}

// schemeFor is requestScheme for a request whose trusted-proxy verdict is
// already known.
func schemeFor(r *http.Request, trusted bool) string {
	if r.TLS != nil {
		return "https"
	}
	if trusted {
		switch strings.ToLower(firstValue(headerValue(r.Header, "X-Forwarded-Proto"))) {
		case "https":
			return "https"
		case "http":
			return "http"
		}
	}
	return "http"
}

func isHTTPS(r *http.Request) bool {
	return requestScheme(r) == "https"
}

// isTrustedProxy reports whether Caddy's trusted_proxies setting covers
// the peer that sent the request.
func isTrustedProxy(r *http.Request) bool {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted
}

// firstValue returns the first element of a comma-separated header value.
func firstValue(value string) string {
	first, _, _ := strings.Cut(value, ",")
	return strings.TrimSpace(first)
}
