package caddymodule

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/segmentio/analytics-go/v3"
)

// unitBuilder fills in the defaults of h and returns its event builder.
func unitBuilder(t *testing.T, h *Handler) eventBuilder {
	t.Helper()
	if err := h.setDefaults(); err != nil {
		t.Fatalf("setDefaults: %v", err)
	}
	return newEventBuilder(h)
}

// unitPageRequest returns a GET request for target on docs.example.com
// from a browser at clientIP, with a Caddy replacer in its context.
func unitPageRequest(target, clientIP string) (*http.Request, *caddy.Replacer) {
	r := unitRequest(http.MethodGet, target)
	r.Host = "docs.example.com"
	r.Header.Set("User-Agent", unitChromeUA)
	if clientIP != "" {
		caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, clientIP)
	}
	repl := caddy.NewReplacer()
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)), repl
}

// unitHeaders reads the page headers of r.
func unitHeaders(r *http.Request) *pageHeaders {
	headers := readPageHeaders(r.Header)
	return &headers
}

// unitTrack builds the call of e and returns it as a track call, or fails
// the test.
func unitTrack(t *testing.T, e *event) analytics.Track {
	t.Helper()
	msg := e.message()
	track, ok := msg.(*analytics.Track)
	if !ok {
		t.Fatalf("message is a %T, want *analytics.Track", msg)
	}
	return *track
}

func TestFromPageTrackShape(t *testing.T) {
	b := unitBuilder(t, &Handler{
		SpaceID:    "space_123",
		Properties: map[string]string{"section": "{unit.section}", "site": "docs"},
	})
	r, repl := unitPageRequest("/guide/intro?utm_source=news&utm_medium=email&utm_campaign=launch&utm_term=docs&utm_content=link&x=1", "203.0.113.7")
	repl.Set("unit.section", "guides")
	r.Header.Set("Referer", "https://www.example.com/blog/")
	r.Header.Set("Accept-Language", "fr-CH, fr;q=0.9, en;q=0.8")
	arrived := time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC)

	track := unitTrack(t, b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID, userID: "user-42"}, pageTitle{text: "Intro | Guides | Docs"}, arrived))

	checks := []struct {
		name string
		got  any
		want any
	}{
		{"event", track.Event, defaultEvent},
		{"anonymousId", track.AnonymousId, unitID},
		{"userId", track.UserId, "user-42"},
		{"timestamp", track.Timestamp, arrived},
		{"context.library.name", track.Context.Library.Name, libraryName},
		{"context.page.url", track.Context.Page.URL, "http://docs.example.com/guide/intro?utm_source=news&utm_medium=email&utm_campaign=launch&utm_term=docs&utm_content=link&x=1"},
		{"context.page.path", track.Context.Page.Path, "/guide/intro"},
		{"context.page.search", track.Context.Page.Search, "?utm_source=news&utm_medium=email&utm_campaign=launch&utm_term=docs&utm_content=link&x=1"},
		{"context.page.referrer", track.Context.Page.Referrer, "https://www.example.com/blog/"},
		{"context.page.title", track.Context.Page.Title, "Intro | Guides | Docs"},
		{"context.ip", track.Context.IP.String(), "203.0.113.7"},
		{"context.userAgent", track.Context.UserAgent, unitChromeUA},
		{"context.locale", track.Context.Locale, "fr-CH"},
		{"context.campaign.source", track.Context.Campaign.Source, "news"},
		{"context.campaign.medium", track.Context.Campaign.Medium, "email"},
		{"context.campaign.name", track.Context.Campaign.Name, "launch"},
		{"context.campaign.term", track.Context.Campaign.Term, "docs"},
		{"context.campaign.content", track.Context.Campaign.Content, "link"},
		{"properties.spaceId", track.Properties["spaceId"], "space_123"},
		{"properties.section", track.Properties["section"], "guides"},
		{"properties.site", track.Properties["site"], "docs"},
		{"property count", len(track.Properties), 3},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if track.Context.Library.Version == "" {
		t.Errorf("context.library.version is empty, want the module version or devel")
	}
	if track.MessageId != "" {
		t.Errorf("messageId = %q, want it left for analytics-go to fill in", track.MessageId)
	}
}

func TestFromPageProperties(t *testing.T) {
	t.Run("placeholders resolved per request", func(t *testing.T) {
		b := unitBuilder(t, &Handler{SpaceID: "{unit.space}", Properties: map[string]string{"lang": "{unit.lang}", "missing": "{unit.missing}"}})
		if b.isStatic {
			t.Errorf("isStatic = true for properties with placeholders")
		}
		first, firstRepl := unitPageRequest("/a", "")
		firstRepl.Set("unit.space", "space_a")
		firstRepl.Set("unit.lang", "en")
		second, secondRepl := unitPageRequest("/b", "")
		secondRepl.Set("unit.space", "space_b")
		secondRepl.Set("unit.lang", "de")

		firstTrack := unitTrack(t, b.fromPage(first, unitHeaders(first), originOf(first), visitor{anonymousID: unitID}, pageTitle{}, time.Now()))
		secondTrack := unitTrack(t, b.fromPage(second, unitHeaders(second), originOf(second), visitor{anonymousID: unitID}, pageTitle{}, time.Now()))

		if firstTrack.Properties["spaceId"] != "space_a" {
			t.Errorf("first spaceId = %v, want space_a", firstTrack.Properties["spaceId"])
		}
		if secondTrack.Properties["spaceId"] != "space_b" {
			t.Errorf("second spaceId = %v, want space_b", secondTrack.Properties["spaceId"])
		}
		if firstTrack.Properties["lang"] != "en" {
			t.Errorf("first lang = %v, want en", firstTrack.Properties["lang"])
		}
		if secondTrack.Properties["lang"] != "de" {
			t.Errorf("second lang = %v, want de", secondTrack.Properties["lang"])
		}
		if firstTrack.Properties["missing"] != "" {
			t.Errorf("unknown placeholder resolved to %v, want an empty string", firstTrack.Properties["missing"])
		}
	})

	t.Run("static properties shared", func(t *testing.T) {
		b := unitBuilder(t, &Handler{SpaceID: "space_123", Properties: map[string]string{"site": "docs"}})
		if !b.isStatic {
			t.Errorf("isStatic = false for properties without placeholders")
		}
		first, _ := unitPageRequest("/a", "")
		second, _ := unitPageRequest("/b", "")
		firstTrack := unitTrack(t, b.fromPage(first, unitHeaders(first), originOf(first), visitor{anonymousID: unitID}, pageTitle{}, time.Now()))
		secondTrack := unitTrack(t, b.fromPage(second, unitHeaders(second), originOf(second), visitor{anonymousID: unitID}, pageTitle{}, time.Now()))

		if reflect.ValueOf(firstTrack.Properties).UnsafePointer() != reflect.ValueOf(secondTrack.Properties).UnsafePointer() {
			t.Errorf("static properties are built per event, want firstTrack shared map")
		}
		if firstTrack.Properties["site"] != "docs" {
			t.Errorf("site = %v, want docs", firstTrack.Properties["site"])
		}
	})

	t.Run("no properties", func(t *testing.T) {
		b := unitBuilder(t, &Handler{})
		r, _ := unitPageRequest("/a", "")
		track := unitTrack(t, b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID}, pageTitle{}, time.Now()))
		if track.Properties != nil {
			t.Errorf("properties = %v, want none", track.Properties)
		}
	})
}

func TestPropertiesBudget(t *testing.T) {
	props := make(map[string]string, maxProperties)
	for i := range maxProperties {
		props[fmt.Sprintf("p%02d", i)] = strings.Repeat("a", 1000)
	}

	for attempt := range 5 {
		b := unitBuilder(t, &Handler{SpaceID: "space_123", Properties: props})
		got := b.static

		if got["spaceId"] != "space_123" {
			t.Errorf("attempt %d: spaceId = %v, want space_123", attempt, got["spaceId"])
		}
		if n := len(got["p00"].(string)); n != 1000 {
			t.Errorf("attempt %d: p00 has %d bytes, want all 1000", attempt, n)
		}
		if n := len(got["p07"].(string)); n != 1000 {
			t.Errorf("attempt %d: p07 has %d bytes, want all 1000", attempt, n)
		}
		if n := len(got["p08"].(string)); n != maxPropertiesBytes-len("space_123")-8*1000 {
			t.Errorf("attempt %d: p08 has %d bytes, want the %d left in the budget", attempt, n, maxPropertiesBytes-len("space_123")-8*1000)
		}
		if got["p31"] != "" {
			t.Errorf("attempt %d: p31 = %q, want empty once the budget is spent", attempt, got["p31"])
		}
	}
}

func TestPropertiesBudgetCountsEscapes(t *testing.T) {
	props := make(map[string]string, maxProperties)
	for i := range maxProperties {
		props[fmt.Sprintf("p%02d", i)] = strings.Repeat("<", 2048)
	}
	b := unitBuilder(t, &Handler{Properties: props})

	total := 0
	for name, value := range b.static {
		encoded, err := json.Marshal(value)
		if err != nil {
			t.Fatalf("property %s does not marshal: %v", name, err)
		}
		total += len(encoded) - 2
	}
	if total > maxPropertiesBytes {
		t.Errorf("property values take %d JSON bytes, want at most %d", total, maxPropertiesBytes)
	}
}

func TestFromPageOriginalRequest(t *testing.T) {
	tests := []struct {
		name       string
		original   http.Request
		wantURL    string
		wantPath   string
		wantSearch string
	}{
		{
			name:       "rewritten request",
			original:   http.Request{Method: http.MethodGet, RequestURI: "/guide/?a=1", URL: &url.URL{Path: "/guide/", RawQuery: "a=1"}},
			wantURL:    "http://docs.example.com/guide/?a=1",
			wantPath:   "/guide/",
			wantSearch: "?a=1",
		},
		{
			name:       "absolute-form request uri",
			original:   http.Request{Method: http.MethodGet, RequestURI: "http://docs.example.com/guide/?a=1", URL: &url.URL{Scheme: "http", Host: "docs.example.com", Path: "/guide/", RawQuery: "a=1"}},
			wantURL:    "http://docs.example.com/guide/?a=1",
			wantPath:   "/guide/",
			wantSearch: "?a=1",
		},
		{
			name:       "escaped path",
			original:   http.Request{Method: http.MethodGet, RequestURI: "/a%20b/%C3%A9", URL: &url.URL{Path: "/a b/é", RawPath: "/a%20b/%C3%A9"}},
			wantURL:    "http://docs.example.com/a%20b/%C3%A9",
			wantPath:   "/a%20b/%C3%A9",
			wantSearch: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unitBuilder(t, &Handler{})
			r, _ := unitPageRequest("/index.html?rewritten=1", "")
			r = r.WithContext(context.WithValue(r.Context(), caddyhttp.OriginalRequestCtxKey, tt.original))

			page := unitTrack(t, b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID}, pageTitle{}, time.Now())).Context.Page
			if page.URL != tt.wantURL {
				t.Errorf("url = %q, want %q", page.URL, tt.wantURL)
			}
			if page.Path != tt.wantPath {
				t.Errorf("path = %q, want %q", page.Path, tt.wantPath)
			}
			if page.Search != tt.wantSearch {
				t.Errorf("search = %q, want %q", page.Search, tt.wantSearch)
			}
		})
	}
}

func TestFromPageSchemeAndHost(t *testing.T) {
	tests := []struct {
		name      string
		tls       bool
		trusted   bool
		proto     string
		forwarded string
		wantURL   string
	}{
		{name: "plain http", wantURL: "http://internal:8080/guide/"},
		{name: "tls", tls: true, wantURL: "https://internal:8080/guide/"},
		{name: "trusted proxy", trusted: true, proto: "https", forwarded: "docs.example.com", wantURL: "https://docs.example.com/guide/"},
		{name: "trusted proxy lists", trusted: true, proto: "https, http", forwarded: "docs.example.com, proxy.internal", wantURL: "https://docs.example.com/guide/"},
		{name: "untrusted proxy", proto: "https", forwarded: "evil.example.net", wantURL: "http://internal:8080/guide/"},
		{name: "trusted proxy without headers", trusted: true, wantURL: "http://internal:8080/guide/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unitBuilder(t, &Handler{})
			r, _ := unitPageRequest("/guide/", "")
			r.Host = "internal:8080"
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

			page := unitTrack(t, b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID}, pageTitle{}, time.Now())).Context.Page
			if page.URL != tt.wantURL {
				t.Errorf("url = %q, want %q", page.URL, tt.wantURL)
			}
		})
	}
}

func TestFromPageSearchAndCampaign(t *testing.T) {
	tests := []struct {
		name         string
		target       string
		wantPath     string
		wantSearch   string
		wantCampaign analytics.CampaignInfo
	}{
		{name: "no query", target: "/guide", wantPath: "/guide"},
		{name: "bare question mark", target: "/guide?", wantPath: "/guide"},
		{name: "query", target: "/guide?a=1&b=2", wantPath: "/guide", wantSearch: "?a=1&b=2"},
		{
			name: "every utm parameter", target: "/?utm_source=s&utm_medium=m&utm_campaign=c&utm_term=t&utm_content=x",
			wantPath: "/", wantSearch: "?utm_source=s&utm_medium=m&utm_campaign=c&utm_term=t&utm_content=x",
			wantCampaign: analytics.CampaignInfo{Source: "s", Medium: "m", Name: "c", Term: "t", Content: "x"},
		},
		{
			name: "encoded utm value", target: "/?utm_campaign=spring%20launch",
			wantPath: "/", wantSearch: "?utm_campaign=spring%20launch",
			wantCampaign: analytics.CampaignInfo{Name: "spring launch"},
		},
		{
			name: "malformed utm value", target: "/?utm_source=%zz&utm_medium=email",
			wantPath: "/", wantSearch: "?utm_source=%zz&utm_medium=email",
			wantCampaign: analytics.CampaignInfo{Medium: "email"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unitBuilder(t, &Handler{})
			r, _ := unitPageRequest("/", "")
			r.RequestURI = tt.target

			ctx := unitTrack(t, b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID}, pageTitle{}, time.Now())).Context
			if ctx.Page.Path != tt.wantPath {
				t.Errorf("path = %q, want %q", ctx.Page.Path, tt.wantPath)
			}
			if ctx.Page.Search != tt.wantSearch {
				t.Errorf("search = %q, want %q", ctx.Page.Search, tt.wantSearch)
			}
			if ctx.Campaign != tt.wantCampaign {
				t.Errorf("campaign = %+v, want %+v", ctx.Campaign, tt.wantCampaign)
			}
		})
	}
}

func TestFromPagePageCall(t *testing.T) {
	b := unitBuilder(t, &Handler{Call: callPage, SpaceID: "space_123"})
	r, _ := unitPageRequest("/guide/intro?x=1", "203.0.113.7")
	r.Header.Set("Referer", "https://www.example.com/")
	arrived := time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC)

	msg := b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID, userID: "user-42"}, pageTitle{text: "Intro | Docs"}, arrived).message()
	pagePointer, ok := msg.(*analytics.Page)
	if !ok {
		t.Fatalf("message is a %T, want *analytics.Page", msg)
	}
	page := *pagePointer

	checks := []struct {
		name string
		got  any
		want any
	}{
		{"name", page.Name, "Intro | Docs"},
		{"anonymousId", page.AnonymousId, unitID},
		{"userId", page.UserId, "user-42"},
		{"timestamp", page.Timestamp, arrived},
		{"context.page.url", page.Context.Page.URL, "http://docs.example.com/guide/intro?x=1"},
		{"context.library.name", page.Context.Library.Name, libraryName},
		{"properties.url", page.Properties["url"], "http://docs.example.com/guide/intro?x=1"},
		{"properties.path", page.Properties["path"], "/guide/intro"},
		{"properties.search", page.Properties["search"], "?x=1"},
		{"properties.referrer", page.Properties["referrer"], "https://www.example.com/"},
		{"properties.title", page.Properties["title"], "Intro | Docs"},
		{"properties.spaceId", page.Properties["spaceId"], "space_123"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		clientIP string
		want     string // "" for no IP
	}{
		{"full ipv4", ipFull, "203.0.113.7", "203.0.113.7"},
		{"full ipv6", ipFull, "2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234:5678:9abc:def0:1234:5678"},
		{"full ipv4-mapped ipv6", ipFull, "::ffff:203.0.113.7", "203.0.113.7"},
		{"full ipv6 with zone", ipFull, "fe80::1%eth0", "fe80::1"},
		{"anonymize ipv4", ipAnonymize, "203.0.113.7", "203.0.113.0"},
		{"anonymize ipv6", ipAnonymize, "2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"},
		{"anonymize ipv4-mapped ipv6", ipAnonymize, "::ffff:203.0.113.7", "203.0.113.0"},
		{"omit ipv4", ipOmit, "203.0.113.7", ""},
		{"omit ipv6", ipOmit, "2001:db8::1", ""},
		{"garbage", ipFull, "not-an-ip", ""},
		{"garbage anonymized", ipAnonymize, "999.1.1.1", ""},
		{"address with port", ipFull, "203.0.113.7:443", ""},
		{"no client ip", ipFull, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unitBuilder(t, &Handler{IP: tt.mode})
			r, _ := unitPageRequest("/", tt.clientIP)
			ip := unitTrack(t, b.fromPage(r, unitHeaders(r), originOf(r), visitor{anonymousID: unitID}, pageTitle{}, time.Now())).Context.IP

			if tt.want == "" {
				if ip != nil {
					t.Errorf("ip = %v, want none", ip)
				}
				return
			}
			if ip.String() != tt.want {
				t.Errorf("ip = %v, want %s", ip, tt.want)
			}
		})
	}
}

func TestLocaleOf(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   string
	}{
		{"first of several", "fr-CH, fr;q=0.9, en;q=0.8", "fr-CH"},
		{"single", "en", "en"},
		{"with quality", "en-US;q=0.8", "en-US"},
		{"spaces", "  de-DE , en", "de-DE"},
		{"wildcard", "*", ""},
		{"empty", "", ""},
		{"garbage", "garbage!!", ""},
		{"markup", "<script>", ""},
		{"too long", strings.Repeat("a", maxLocaleBytes+1), ""},
		{"longest", strings.Repeat("a", maxLocaleBytes), strings.Repeat("a", maxLocaleBytes)},
		{"empty first tag", ", en", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := localeOf(tt.header); got != tt.want {
				t.Errorf("localeOf(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestCutField(t *testing.T) {
	tests := []struct {
		name  string
		input string
		limit int
		want  string
	}{
		{"fits", "hello", 5, "hello"},
		{"empty", "", 10, ""},
		{"long ascii", strings.Repeat("a", 3000), 2048, strings.Repeat("a", 2048)},
		{"angle brackets", strings.Repeat("<", 1000), 1024, strings.Repeat("<", 170)},
		{"ampersands", strings.Repeat("&", 10), 13, "&&"},
		{"quotes", strings.Repeat(`"`, 10), 7, `"""`},
		{"backslashes", strings.Repeat(`\`, 10), 4, `\\`},
		{"control characters", "\x01\x02\x03", 13, "\x01\x02"},
		{"line separator", "\u2028\u2028", 11, "\u2028"},
		{"two-byte rune at cut", "a" + strings.Repeat("é", 10), 4, "aé"},
		{"three-byte rune at cut", "日本語", 7, "日本"},
		{"four-byte rune at cut", "😀😀", 7, "😀"},
		{"invalid utf-8 replaced", "ab\xffcd", 100, "ab\uFFFDcd"},
		{"invalid utf-8 at cut", "ab\xff\xfecd", 4, "ab"},
		{"invalid utf-8 before cut", "a\xffbcdef", 6, "a\uFFFDbc"},
		{"zero limit", "abc", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cutField(tt.input, tt.limit, "unit")
			if got != tt.want {
				t.Errorf("cutField(%q, %d) = %q, want %q", tt.input, tt.limit, got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("cutField(%q, %d) = %q, not valid UTF-8", tt.input, tt.limit, got)
			}
			encoded, err := json.Marshal(got)
			if err != nil {
				t.Fatalf("json.Marshal(%q): %v", got, err)
			}
			if len(encoded)-2 > tt.limit {
				t.Errorf("cutField(%q, %d) encodes to %d JSON bytes, over the limit", tt.input, tt.limit, len(encoded)-2)
			}
		})
	}
}

func TestJSONSizeMatchesEncoder(t *testing.T) {
	runes := []rune{'é', '日', '😀', '\u2028', '\u2029', '\u007f', '\u0085', '\uFFFD'}
	for r := rune(0); r < utf8.RuneSelf; r++ {
		runes = append(runes, r)
	}
	for _, r := range runes {
		encoded, err := json.Marshal(string(r))
		if err != nil {
			t.Fatalf("json.Marshal(%q): %v", r, err)
		}
		actual := len(encoded) - 2
		size := jsonSize(r)
		if size < actual {
			t.Errorf("jsonSize(%q) = %d, but encoding/json writes %d bytes", r, size, actual)
		}
		// encoding/json in Go 1.26 escapes \b and \f in 2 bytes, and
		// jsonSize counts 6 for them, which overestimates safely.
		if r != '\b' && r != '\f' && size != actual {
			t.Errorf("jsonSize(%q) = %d, want the %d bytes encoding/json writes", r, size, actual)
		}
	}
}

func TestNewEventBuilderCutsEventName(t *testing.T) {
	b := unitBuilder(t, &Handler{Event: strings.Repeat("e", 5000)})
	if len(b.event) != maxTitleBytes {
		t.Errorf("event name has %d bytes, want it cut to %d", len(b.event), maxTitleBytes)
	}
}

// TestWorstCaseEventSize fills every field to its limit with content that
// grows most when JSON-encoded, and checks that the event stays below the
// 32,000 bytes that analytics-go accepts per message.
func TestWorstCaseEventSize(t *testing.T) {
	const segmentMaxMessageBytes = 32000
	hostile := strings.Repeat("<\u2028\x01\"\\\xffé&>", 600)

	for _, call := range []string{callTrack, callPage} {
		t.Run(call, func(t *testing.T) {
			props := make(map[string]string, maxProperties)
			for i := range maxProperties {
				// Configured names are at most maxPropertyNameBytes long.
				name := fmt.Sprintf("%s_%02d", strings.Repeat("n", 61), i)
				if i%2 == 0 {
					props[name] = strings.Repeat("<", 2048)
				} else {
					props[name] = "{unit.hostile}"
				}
			}
			b := unitBuilder(t, &Handler{
				Call:       call,
				Event:      hostile,
				SpaceID:    strings.Repeat("<", 2048),
				Properties: props,
			})

			r, repl := unitPageRequest("/", "2001:db8:1234:5678:9abc:def0:1234:5678")
			repl.Set("unit.hostile", hostile)
			query := url.Values{
				"utm_source": {hostile}, "utm_medium": {hostile}, "utm_campaign": {hostile},
				"utm_term": {hostile}, "utm_content": {hostile}, "x": {hostile},
			}
			r.RequestURI = "/" + strings.Repeat("<", 4000) + "?" + query.Encode()
			r.Host = strings.Repeat("<", 3000)
			r.Header.Set("Referer", hostile)
			r.Header.Set("User-Agent", hostile)
			r.Header.Set("Accept-Language", strings.Repeat("a", 5000))
			v := visitor{anonymousID: strings.Repeat("<", maxIDLength), userID: strings.Repeat("&", maxIDLength)}

			msg := b.fromPage(r, unitHeaders(r), originOf(r), v, pageTitle{text: hostile}, time.Now()).message()
			// analytics-go fills in type and messageId before it measures.
			switch m := msg.(type) {
			case *analytics.Track:
				m.Type, m.MessageId = "track", unitID
			case *analytics.Page:
				m.Type, m.MessageId = "page", unitID
			default:
				t.Fatalf("message is a %T, want *analytics.Track or *analytics.Page", msg)
			}
			encoded, err := json.Marshal(msg)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			t.Logf("worst-case %s event: %d bytes", call, len(encoded))
			if len(encoded) >= segmentMaxMessageBytes {
				t.Errorf("worst-case %s event encodes to %d bytes, want under %d", call, len(encoded), segmentMaxMessageBytes)
			}
		})
	}
}
