package caddymodule

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const unitID = "6f1c5e0a-3b7d-4c2e-9a8f-0d1e2f3a4b5c"

// unitRequest returns a request with an empty Caddy vars map in its
// context, as Caddy's server prepares every request.
func unitRequest(method, target string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx)
}

// unitTrusted marks r as coming from a peer that trusted_proxies covers,
// or not.
func unitTrusted(r *http.Request, trusted bool) {
	caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, trusted)
}

// unitCookieSetter returns a cookie setter with the default lifetime and
// format that logs into an observer.
func unitCookieSetter(domain string) (*cookieSetter, *observer.ObservedLogs) {
	return unitCookieSetterWith(domain, defaultCookieMaxAge, false)
}

// unitCookieSetterWith returns a cookie setter that logs into an observer.
func unitCookieSetterWith(domain string, maxAge time.Duration, classic bool) (*cookieSetter, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return newCookieSetter(domain, maxAge, classic, zap.New(core)), logs
}

func TestDecodeID(t *testing.T) {
	long128 := strings.Repeat("a", 128)
	long129 := strings.Repeat("a", 129)

	tests := []struct {
		name   string
		value  string
		wantID string
		wantOK bool
	}{
		{"analytics-next raw uuid", unitID, unitID, true},
		{"classic url-encoded json", "%22" + unitID + "%22", unitID, true},
		{"plain quoted", `"` + unitID + `"`, unitID, true},
		{"json escaped quote", `"ab\"cd"`, `ab"cd`, true},
		{"json escaped unicode", `"caf\u00e9"`, "café", true},
		{"json escaped backslash", `"a\\b"`, `a\b`, true},
		{"url-encoded json escape", "%22a%5Cu0041%22", "aA", true},
		{"json bad escape", `"a\qb"`, "", false},
		{"json escaped control", `"a\u0007b"`, "", false},
		{"json escaped null", `"\u0000"`, "", false},
		{"null", "null", "", false},
		{"undefined", "undefined", "", false},
		{"quoted null", `"null"`, "", false},
		{"classic undefined", "%22undefined%22", "", false},
		{"empty", "", "", false},
		{"empty quotes", `""`, "", false},
		{"encoded spaces", "%20%20", "", false},
		{"quoted spaces", `"  "`, "", false},
		{"classic spaces", "%22%20%22", "", false},
		{"classic empty", "%22%22", "", false},
		{"only spaces", "   ", "", false},
		{"128 bytes", long128, long128, true},
		{"129 bytes", long129, "", false},
		{"classic 128 bytes", "%22" + long128 + "%22", long128, true},
		{"classic 129 bytes", "%22" + long129 + "%22", "", false},
		{"raw newline", "ab\ncd", "", false},
		{"raw nul", "ab\x00cd", "", false},
		{"raw delete", "ab\x7fcd", "", false},
		{"raw tab inside", "ab\tcd", "", false},
		{"encoded newline", "ab%0Acd", "", false},
		{"encoded carriage return", "%22ab%0D%22", "", false},
		{"encoded nul", "%00", "", false},
		{"c1 control", "ab\u0085cd", "", false},
		{"encoded c1 control", "ab%C2%85cd", "", false},
		{"raw invalid utf-8", "ab\xffcd", "", false},
		{"encoded invalid utf-8", "ab%FFcd", "", false},
		{"truncated utf-8", "ab%C3", "", false},
		{"non-ascii utf-8", "léa-日本-✓", "léa-日本-✓", true},
		{"encoded non-ascii utf-8", "%C3%A9t%C3%A9", "été", true},
		{"malformed percent", "ab%zzcd", "", false},
		{"trailing percent", "abcd%", "", false},
		{"short percent", "abcd%4", "", false},
		{"spaces around", "  " + unitID + "  ", unitID, true},
		{"tabs around", "\t" + unitID + "\t", unitID, true},
		{"spaces around classic", " %22" + unitID + "%22 ", unitID, true},
		{"plus stays plus", "a+b", "a+b", true},
		{"single quote char", "'abc'", "'abc'", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := decodeID(tt.value)
			if ok != tt.wantOK {
				t.Errorf("decodeID(%q) ok = %v, want %v", tt.value, ok, tt.wantOK)
			}
			if id != tt.wantID {
				t.Errorf("decodeID(%q) id = %q, want %q", tt.value, id, tt.wantID)
			}
		})
	}
}

func TestCookieID(t *testing.T) {
	tests := []struct {
		name    string
		cookies []string
		want    string
	}{
		{"no cookie header", nil, ""},
		{"only cookie", []string{"ajs_anonymous_id=" + unitID}, unitID},
		{"among others", []string{"a=1; ajs_anonymous_id=%22" + unitID + "%22; b=2"}, unitID},
		{"without spaces", []string{"a=1;ajs_anonymous_id=" + unitID + ";b=2"}, unitID},
		{"other names only", []string{"xajs_anonymous_id=x; ajs_anonymous_id_2=y; AJS_ANONYMOUS_ID=z"}, ""},
		{"first of two usable", []string{"ajs_anonymous_id=first; ajs_anonymous_id=second"}, "first"},
		{"first unusable", []string{"ajs_anonymous_id=null; ajs_anonymous_id=%22%22; ajs_anonymous_id=third"}, "third"},
		{"second header", []string{"a=1", "ajs_anonymous_id=" + unitID}, unitID},
		{"first header unusable", []string{"ajs_anonymous_id=undefined", "ajs_anonymous_id=" + unitID}, unitID},
		{"first header wins", []string{"ajs_anonymous_id=one", "ajs_anonymous_id=two"}, "one"},
		{"none usable", []string{"ajs_anonymous_id=%zz", "ajs_anonymous_id=a%0Ab"}, ""},
		{"value with equals", []string{"ajs_anonymous_id=a=b"}, "a=b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{"Cookie": tt.cookies}
			if got := readVisitor(header["Cookie"]).anonymousID; got != tt.want {
				t.Errorf("readVisitor(%q).anonymousID = %q, want %q", tt.cookies, got, tt.want)
			}
		})
	}
}

func TestReadVisitor(t *testing.T) {
	tests := []struct {
		name          string
		cookies       []string
		wantAnonymous string
		wantUser      string
	}{
		{"none", nil, "", ""},
		{"anonymous only", []string{"ajs_anonymous_id=" + unitID}, unitID, ""},
		{"both raw", []string{"ajs_anonymous_id=" + unitID + "; ajs_user_id=user-42"}, unitID, "user-42"},
		{"classic user id", []string{"ajs_user_id=%22user-42%22; ajs_anonymous_id=%22" + unitID + "%22"}, unitID, "user-42"},
		{"null user id", []string{"ajs_anonymous_id=" + unitID + "; ajs_user_id=null"}, unitID, ""},
		{"user id in second header", []string{"ajs_user_id=%22%22", "ajs_user_id=user-7"}, "", "user-7"},
		{"user id too long", []string{"ajs_user_id=" + strings.Repeat("u", 129)}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := readVisitor(tt.cookies)
			if v.anonymousID != tt.wantAnonymous {
				t.Errorf("anonymousID = %q, want %q", v.anonymousID, tt.wantAnonymous)
			}
			if v.userID != tt.wantUser {
				t.Errorf("userID = %q, want %q", v.userID, tt.wantUser)
			}
		})
	}
}

func TestCookieIDHostileHeaders(t *testing.T) {
	huge := strings.Repeat("junk=value; ", 1<<16)
	tests := []struct {
		name    string
		cookies []string
		want    string
	}{
		{"no equals sign", []string{"ajs_anonymous_id"}, ""},
		{"only semicolons", []string{";;;"}, ""},
		{"only equals signs", []string{"===;=;=="}, ""},
		{"empty name", []string{"=ajs_anonymous_id"}, ""},
		{"empty header", []string{""}, ""},
		{"lone separators around", []string{";; ajs_anonymous_id=" + unitID + " ;;"}, unitID},
		{"very long header", []string{huge}, ""},
		{"very long header then id", []string{huge + "ajs_anonymous_id=" + unitID}, unitID},
		{"very long value", []string{"ajs_anonymous_id=" + strings.Repeat("%22", 1<<16)}, ""},
		{"binary bytes", []string{"\x00\xff;\x01=\x02; ajs_anonymous_id=\xfe"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{"Cookie": tt.cookies}
			if got := readVisitor(header["Cookie"]).anonymousID; got != tt.want {
				t.Errorf("readVisitor(...).anonymousID = %q, want %q", got, tt.want)
			}
			if got := hasCookie(header["Cookie"], anonymousIDCookie, unitID); got != (tt.want == unitID) {
				t.Errorf("hasCookie = %v, want %v", got, tt.want == unitID)
			}
		})
	}
}

func FuzzDecodeID(f *testing.F) {
	for _, seed := range []string{
		unitID, "%22" + unitID + "%22", `"` + unitID + `"`, `"a\u0000b"`, `"\ud800"`,
		"null", "%22%22", "%zz", "%0A", "\xff", "é", strings.Repeat("a", 129), `"\"`, `"`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		id, ok := decodeID(value)
		if !ok {
			if id != "" {
				t.Errorf("decodeID(%q) rejected the value but returned id %q", value, id)
			}
			return
		}
		if len(id) < 1 || len(id) > maxIDLength {
			t.Errorf("decodeID(%q) returned %d bytes, want 1 to %d", value, len(id), maxIDLength)
		}
		if !utf8.ValidString(id) {
			t.Errorf("decodeID(%q) returned invalid UTF-8 %q", value, id)
		}
		if strings.IndexFunc(id, unicode.IsControl) >= 0 {
			t.Errorf("decodeID(%q) returned control characters in %q", value, id)
		}
	})
}

func TestDomainForRegistrableDomain(t *testing.T) {
	tests := []struct {
		name string
		host string
		want string
	}{
		{"subdomain", "docs.example.com", "example.com"},
		{"registrable domain itself", "example.com", "example.com"},
		{"deep subdomain under co.uk", "a.b.example.co.uk", "example.co.uk"},
		{"private suffix", "user.github.io", "user.github.io"},
		{"public suffix itself", "co.uk", ""},
		{"private suffix itself", "github.io", ""},
		{"localhost", "localhost", ""},
		{"subdomain of localhost", "docs.localhost", "docs.localhost"},
		{"ipv4", "192.0.2.10", ""},
		{"ipv6", "2001:db8::1", ""},
		{"ipv6 loopback", "::1", ""},
		{"ipv4-mapped ipv6", "::ffff:192.0.2.10", ""},
		{"single label", "intranet", ""},
		{"uppercase", "DOCS.Example.COM", "example.com"},
		{"trailing dot is host-only", "docs.example.com.", ""},
		{"empty", "", ""},
		{"semicolon", "evil.com;", ""},
		{"attribute injection", "evil.com; Domain=other.com", ""},
		{"space inside", "docs example.com", ""},
		{"leading space", " docs.example.com", ""},
		{"unicode", "dôcs.example.com", ""},
		{"empty label", "docs..example.com", ""},
		{"leading dot", ".example.com", ""},
		{"hyphen at label start", "-docs.example.com", ""},
		{"label over 63 bytes", strings.Repeat("a", 64) + ".example.com", ""},
		{"name over 253 bytes", strings.Repeat("abcdefghi.", 26) + "example.com", ""},
		{"with port", "docs.example.com:8443", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, logs := unitCookieSetter("")
			if got := c.domainFor(tt.host); got != tt.want {
				t.Errorf("domainFor(%q) = %q, want %q", tt.host, got, tt.want)
			}
			if logs.Len() != 0 {
				t.Errorf("domainFor(%q) logged %d lines, want none without a configured domain", tt.host, logs.Len())
			}
		})
	}
}

func TestDomainForConfiguredDomain(t *testing.T) {
	c, logs := unitCookieSetter("example.com")

	steps := []struct {
		name     string
		host     string
		want     string
		wantLogs int // log lines so far
	}{
		{"covered subdomain", "docs.example.com", "example.com", 0},
		{"the domain itself", "example.com", "example.com", 0},
		{"uppercase covered", "Docs.EXAMPLE.com", "example.com", 0},
		{"uncovered host", "docs.other.org", "", 1},
		{"same uncovered host again", "docs.other.org", "", 1},
		{"same uncovered host with trailing dot", "docs.other.org.", "", 1},
		{"suffix without dot", "notexample.com", "", 2},
		{"ip literal", "192.0.2.10", "", 2},
		{"localhost", "localhost", "", 2},
	}
	for _, step := range steps {
		if got := c.domainFor(step.host); got != step.want {
			t.Errorf("%s: domainFor(%q) = %q, want %q", step.name, step.host, got, step.want)
		}
		if logs.Len() != step.wantLogs {
			t.Errorf("%s: %d log lines, want %d", step.name, logs.Len(), step.wantLogs)
		}
	}

	for _, entry := range logs.All() {
		fields := entry.ContextMap()
		if fields["cookie_domain"] != "example.com" {
			t.Errorf("log line %q has cookie_domain %v, want example.com", entry.Message, fields["cookie_domain"])
		}
		if entry.Level != zapcore.WarnLevel {
			t.Errorf("log line %q has level %v, want warn", entry.Message, entry.Level)
		}
	}
	hosts := logs.FilterField(zap.String("host", "docs.other.org")).Len()
	if hosts != 1 {
		t.Errorf("%d log lines name host docs.other.org, want 1", hosts)
	}
}

func TestDomainForWarningsBounded(t *testing.T) {
	c, logs := unitCookieSetter("example.com")
	for i := range maxDomainWarnings + 100 {
		c.domainFor(fmt.Sprintf("host%d.other.org", i))
	}

	perHost := logs.FilterFieldKey("host").Len()
	if perHost != maxDomainWarnings {
		t.Errorf("%d per-host log lines, want %d", perHost, maxDomainWarnings)
	}
	summary := logs.FilterFieldKey("hosts").Len()
	if summary != 1 {
		t.Errorf("%d summary log lines, want 1", summary)
	}
}

func TestDomainForHostSetting(t *testing.T) {
	c, logs := unitCookieSetter(cookieDomainHost)
	for _, host := range []string{"docs.example.com", "example.com", "localhost", "192.0.2.10"} {
		if got := c.domainFor(host); got != "" {
			t.Errorf("domainFor(%q) = %q with cookie_domain host, want host-only", host, got)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("%d log lines with cookie_domain host, want none", logs.Len())
	}
}

func TestOriginHostname(t *testing.T) {
	tests := []struct {
		name      string
		host      string
		forwarded string
		trusted   bool
		want      string
	}{
		{"plain", "docs.example.com", "", false, "docs.example.com"},
		{"with port", "docs.example.com:8443", "", false, "docs.example.com"},
		{"ipv4 with port", "192.0.2.10:8080", "", false, "192.0.2.10"},
		{"ipv6 with brackets and port", "[2001:db8::1]:8443", "", false, "2001:db8::1"},
		{"ipv6 with brackets", "[2001:db8::1]", "", false, "2001:db8::1"},
		{"ipv6 bare", "2001:db8::1", "", false, "2001:db8::1"},
		{"trusted forwarded host", "10.0.0.2:8080", "docs.example.com", true, "docs.example.com"},
		{"trusted forwarded host list", "10.0.0.2:8080", "docs.example.com:443, proxy.internal", true, "docs.example.com"},
		{"untrusted forwarded host", "docs.example.com", "evil.example.net", false, "docs.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := unitRequest(http.MethodGet, "/")
			r.Host = tt.host
			if tt.forwarded != "" {
				r.Header.Set("X-Forwarded-Host", tt.forwarded)
			}
			unitTrusted(r, tt.trusted)
			if got := originOf(r).hostname(); got != tt.want {
				t.Errorf("hostname = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOriginSchemeAndClientIP(t *testing.T) {
	tests := []struct {
		name       string
		tls        bool
		trusted    bool
		proto      string
		clientIP   any
		wantScheme string
		wantIP     string
	}{
		{name: "plain", clientIP: "203.0.113.7", wantScheme: "http", wantIP: "203.0.113.7"},
		{name: "tls", tls: true, wantScheme: "https"},
		{name: "tls wins over a trusted http", tls: true, trusted: true, proto: "http", wantScheme: "https"},
		{name: "trusted https", trusted: true, proto: " HTTPS , http", wantScheme: "https"},
		{name: "trusted other value", trusted: true, proto: "wss", wantScheme: "http"},
		{name: "untrusted https", proto: "https", wantScheme: "http"},
		{name: "client ip of another type", clientIP: 42, wantScheme: "http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := unitRequest(http.MethodGet, "/")
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			unitTrusted(r, tt.trusted)
			if tt.clientIP != nil {
				caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, tt.clientIP)
			}
			o := originOf(r)
			if o.scheme != tt.wantScheme {
				t.Errorf("scheme = %q, want %q", o.scheme, tt.wantScheme)
			}
			if o.clientIP != tt.wantIP {
				t.Errorf("clientIP = %q, want %q", o.clientIP, tt.wantIP)
			}
		})
	}

	// A request without Caddy's variables, as a handler outside Caddy's
	// server would see it, has no client IP and no trusted proxy.
	r := httptest.NewRequest(http.MethodGet, "http://docs.example.com/", nil)
	r.Header.Set("X-Forwarded-Proto", "https")
	if o := originOf(r); o.scheme != "http" || o.clientIP != "" || o.host != "docs.example.com" {
		t.Errorf("origin without variables = %+v, want http, docs.example.com and no client IP", o)
	}
}

func TestSetCookie(t *testing.T) {
	tests := []struct {
		name       string
		host       string
		tls        bool
		trusted    bool
		proto      string
		forwarded  string
		classic    bool
		maxAge     time.Duration
		wantDomain string
		wantSecure bool
		wantValue  string
	}{
		{name: "plain http subdomain", host: "docs.example.com", wantDomain: "example.com", wantValue: unitID},
		{name: "host with port", host: "docs.example.com:8443", wantDomain: "example.com", wantValue: unitID},
		{name: "tls", host: "docs.example.com", tls: true, wantDomain: "example.com", wantSecure: true, wantValue: unitID},
		{name: "trusted proxy https", host: "10.0.0.2", trusted: true, proto: "https", forwarded: "docs.example.com", wantDomain: "example.com", wantSecure: true, wantValue: unitID},
		{name: "trusted proxy https list", host: "docs.example.com", trusted: true, proto: "HTTPS, http", wantDomain: "example.com", wantSecure: true, wantValue: unitID},
		{name: "trusted proxy http", host: "docs.example.com", trusted: true, proto: "http", wantDomain: "example.com", wantValue: unitID},
		{name: "untrusted proxy https", host: "docs.example.com", proto: "https", forwarded: "docs.other.org", wantDomain: "example.com", wantValue: unitID},
		{name: "localhost", host: "localhost:9080", wantValue: unitID},
		{name: "docs.localhost", host: "docs.localhost:9080", wantDomain: "docs.localhost", wantValue: unitID},
		{name: "ipv4", host: "192.0.2.10", wantValue: unitID},
		{name: "ipv6 with port", host: "[2001:db8::1]:8443", wantValue: unitID},
		{name: "classic format", host: "docs.example.com", classic: true, wantDomain: "example.com", wantValue: "%22" + unitID + "%22"},
		{name: "short max age", host: "docs.example.com", maxAge: time.Hour, wantDomain: "example.com", wantValue: unitID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxAge := defaultCookieMaxAge
			if tt.maxAge != 0 {
				maxAge = tt.maxAge
			}
			c, _ := unitCookieSetterWith("", maxAge, tt.classic)
			r := unitRequest(http.MethodGet, "/guide/")
			r.Host = tt.host
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			if tt.forwarded != "" {
				r.Header.Set("X-Forwarded-Host", tt.forwarded)
			}
			unitTrusted(r, tt.trusted)

			header := http.Header{}
			before := time.Now()
			id := c.setNewID(header, originOf(r), before)
			if parsed, err := uuid.Parse(id); err != nil || parsed.Version() != 4 || parsed.String() != id {
				t.Errorf("setNewID returned %q, want a UUID v4 in canonical form", id)
			}
			wantValue := strings.ReplaceAll(tt.wantValue, unitID, id)

			lines := header["Set-Cookie"]
			if len(lines) != 1 {
				t.Fatalf("got %d Set-Cookie headers, want 1: %q", len(lines), lines)
			}
			line := lines[0]
			cookie, err := http.ParseSetCookie(line)
			if err != nil {
				t.Fatalf("Set-Cookie %q does not parse: %v", line, err)
			}

			if cookie.Name != anonymousIDCookie {
				t.Errorf("cookie name = %q, want %q", cookie.Name, anonymousIDCookie)
			}
			if !strings.HasPrefix(line, anonymousIDCookie+"="+wantValue+";") {
				t.Errorf("Set-Cookie %q does not start with the value %q", line, wantValue)
			}
			if cookie.Path != "/" {
				t.Errorf("Path = %q, want /", cookie.Path)
			}
			if cookie.Domain != tt.wantDomain {
				t.Errorf("Domain = %q, want %q", cookie.Domain, tt.wantDomain)
			}
			if tt.wantDomain == "" && strings.Contains(line, "Domain=") {
				t.Errorf("Set-Cookie %q has a Domain attribute, want a host-only cookie", line)
			}
			wantMaxAge := int(c.maxAge / time.Second)
			if cookie.MaxAge != wantMaxAge {
				t.Errorf("Max-Age = %d, want %d", cookie.MaxAge, wantMaxAge)
			}
			expires, err := http.ParseTime(cookie.RawExpires)
			if err != nil {
				t.Errorf("Expires %q does not parse: %v", cookie.RawExpires, err)
			}
			wantExpires := before.Add(c.maxAge)
			if diff := expires.Sub(wantExpires).Abs(); diff > time.Minute {
				t.Errorf("Expires = %v, want about %v (now + max age)", expires, wantExpires)
			}
			if cookie.SameSite != http.SameSiteLaxMode {
				t.Errorf("SameSite = %v, want Lax", cookie.SameSite)
			}
			if cookie.Secure != tt.wantSecure {
				t.Errorf("Secure = %v, want %v", cookie.Secure, tt.wantSecure)
			}
			if cookie.HttpOnly || strings.Contains(strings.ToLower(line), "httponly") {
				t.Errorf("Set-Cookie %q is HttpOnly, which hides it from Segment's browser library", line)
			}
		})
	}
}

func TestSetNewIDDiffers(t *testing.T) {
	c, _ := unitCookieSetter("")
	r := unitRequest(http.MethodGet, "/guide/")
	r.Host = "docs.example.com"
	header := http.Header{}
	now := time.Now()
	first, second := c.setNewID(header, originOf(r), now), c.setNewID(header, originOf(r), now)
	if first == second {
		t.Errorf("two calls returned the same id %q", first)
	}
	lines := header["Set-Cookie"]
	if len(lines) != 2 || !strings.Contains(lines[0], first) || !strings.Contains(lines[1], second) {
		t.Errorf("Set-Cookie = %q, want one cookie with %q and one with %q", lines, first, second)
	}
}

func TestCookieExpires(t *testing.T) {
	c, _ := unitCookieSetterWith("", 24*time.Hour, false)
	base := time.Date(2026, 12, 4, 10, 30, 15, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		now  time.Time
		want string
	}{
		{"first", base, "Sat, 05 Dec 2026 09:30:15 GMT"},
		{"same second", base.Add(999 * time.Millisecond), "Sat, 05 Dec 2026 09:30:15 GMT"},
		{"next second", base.Add(time.Second), "Sat, 05 Dec 2026 09:30:16 GMT"},
		{"back to an earlier second", base, "Sat, 05 Dec 2026 09:30:15 GMT"},
		{"next day", base.Add(24 * time.Hour), "Sun, 06 Dec 2026 09:30:15 GMT"},
	}
	for _, tt := range tests {
		if got := c.expires(tt.now); got != tt.want {
			t.Errorf("%s: expires(%v) = %q, want %q", tt.name, tt.now, got, tt.want)
		}
	}
}

func TestDomainForCached(t *testing.T) {
	c, _ := unitCookieSetter("")
	for range 2 {
		if got := c.domainFor("docs.cache-test.example.co.uk"); got != "example.co.uk" {
			t.Errorf("domainFor = %q, want example.co.uk", got)
		}
		if got := c.domainFor("co.uk"); got != "" {
			t.Errorf("domainFor(co.uk) = %q, want \"\" for a public suffix", got)
		}
	}
	if got, ok := c.domains.get("docs.cache-test.example.co.uk"); !ok || got != "example.co.uk" {
		t.Errorf("cached domain = %q, %v; want example.co.uk, true", got, ok)
	}
}

func TestUpstreamID(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		wantID  string
		wantSet bool
	}{
		{"no set-cookie", nil, "", false},
		{"other cookies", []string{"session=abc; Path=/", "ajs_anonymous_id_x=1"}, "", false},
		{"raw id", []string{"ajs_anonymous_id=" + unitID + "; Path=/; Max-Age=100"}, unitID, true},
		{"classic id", []string{"ajs_anonymous_id=%22" + unitID + "%22; Path=/"}, unitID, true},
		{"after other cookies", []string{"session=abc", "ajs_anonymous_id=" + unitID}, unitID, true},
		{"deletion", []string{"ajs_anonymous_id=; Max-Age=0"}, "", true},
		{"unusable value", []string{"ajs_anonymous_id=null; Path=/"}, "", true},
		{"no attributes", []string{"ajs_anonymous_id=" + unitID}, unitID, true},
		{"no equals sign", []string{"ajs_anonymous_id"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, set := upstreamID(http.Header{"Set-Cookie": tt.lines})
			if id != tt.wantID {
				t.Errorf("upstreamID id = %q, want %q", id, tt.wantID)
			}
			if set != tt.wantSet {
				t.Errorf("upstreamID set = %v, want %v", set, tt.wantSet)
			}
		})
	}
}

func TestNewAnonymousID(t *testing.T) {
	first, second := newAnonymousID(), newAnonymousID()

	parsed, err := uuid.Parse(first)
	if err != nil {
		t.Fatalf("newAnonymousID() = %q, not a UUID: %v", first, err)
	}
	if parsed.Version() != 4 {
		t.Errorf("newAnonymousID() is UUID version %d, want 4", parsed.Version())
	}
	if parsed.String() != first {
		t.Errorf("newAnonymousID() = %q, want the canonical form %q", first, parsed.String())
	}
	if first == second {
		t.Errorf("two calls returned the same id %q", first)
	}
	if id, ok := decodeID(first); !ok || id != first {
		t.Errorf("decodeID(newAnonymousID()) = %q, %v; want the id back", id, ok)
	}
}

func TestNewUUIDUniqueAcrossGoroutines(t *testing.T) {
	const workers, perWorker = 8, 2000
	ids := make(chan uuid.UUID, workers*perWorker)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				ids <- newUUID()
			}
		})
	}
	wg.Wait()
	close(ids)

	seen := make(map[uuid.UUID]bool, workers*perWorker)
	for id := range ids {
		if id.Version() != 4 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("id %s is version %d, variant %v; want version 4, RFC 4122", id, id.Version(), id.Variant())
		}
		if seen[id] {
			t.Fatalf("id %s was generated twice", id)
		}
		seen[id] = true
	}
}

func TestDomainForLongHostNotCached(t *testing.T) {
	c, _ := unitCookieSetter("")
	long := strings.Repeat("a", 300) + ".example.com"
	if got := c.domainFor(long); got != "" {
		t.Errorf("domainFor(%d-byte host) = %q, want host-only", len(long), got)
	}
	if _, cached := c.domains.get(long); cached {
		t.Errorf("a %d-byte host was cached", len(long))
	}
}

func TestCookieOneAllocation(t *testing.T) {
	c, _ := unitCookieSetterWith("", defaultCookieMaxAge, true)
	r := unitRequest(http.MethodGet, "/guide/")
	r.Host = "docs." + strings.Repeat("d", 63) + ".example.com"
	r.TLS = &tls.ConnectionState{}
	o := originOf(r)
	now := time.Now()
	id := newUUID()

	cookie, _ := c.cookie(o, id, now)
	for _, attribute := range []string{"%22", "; Domain=", "; Secure"} {
		if !strings.Contains(cookie, attribute) {
			t.Fatalf("cookie %q has no %q, want the longest form", cookie, attribute)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { c.cookie(o, id, now) }); allocs != 1 {
		t.Errorf("cookie allocates %v times in its longest form, want 1", allocs)
	}
}
