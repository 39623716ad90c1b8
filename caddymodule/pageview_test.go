package caddymodule

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/time/rate"
)

const (
	unitChromeUA    = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	unitFirefoxUA   = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
	unitGooglebotUA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	unitBingbotUA   = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
)

func TestMayBePageView(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		upgrade string
		want    bool
	}{
		{"get", http.MethodGet, "", true},
		{"head", http.MethodHead, "", false},
		{"post", http.MethodPost, "", false},
		{"options", http.MethodOptions, "", false},
		{"get with websocket upgrade", http.MethodGet, "websocket", false},
		{"get with h2c upgrade", http.MethodGet, "h2c", true},
		{"get with websocket in a list", http.MethodGet, "h2c, WebSocket", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := unitRequest(tt.method, "/")
			if tt.upgrade != "" {
				r.Header.Set("Connection", "Upgrade")
				r.Header.Set("Upgrade", tt.upgrade)
			}
			if got := mayBePageView(r); got != tt.want {
				t.Errorf("mayBePageView(%s, Upgrade %q) = %v, want %v", tt.method, tt.upgrade, got, tt.want)
			}
		})
	}
}

func TestIsPageResponse(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		accept      string
		fetchDest   string
		want        bool
	}{
		{"200 html", 200, "text/html", "", "", true},
		{"200 html with charset", 200, "text/html; charset=utf-8", "", "", true},
		{"200 uppercase html", 200, "TEXT/HTML", "", "", true},
		{"200 html with spaces", 200, " text/html ;charset=utf-8", "", "", true},
		{"200 xhtml", 200, "application/xhtml+xml", "", "", true},
		{"200 css", 200, "text/css", "text/html", "document", false},
		{"200 json", 200, "application/json", "", "", false},
		{"200 png", 200, "image/png", "", "", false},
		{"200 react server component", 200, "text/x-component", "*/*", "", false},
		{"200 no content type", 200, "", "text/html", "document", false},
		{"200 html prefix only", 200, "text/htmlx", "", "", false},
		{"304 accept html", 304, "", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", "", true},
		{"304 accept uppercase html", 304, "", "TEXT/HTML", "", true},
		{"304 fetch dest document", 304, "", "*/*", "document", true},
		{"304 image request", 304, "", "image/avif,image/webp,*/*;q=0.8", "image", false},
		{"304 no request hints", 304, "", "", "", false},
		{"404 html", 404, "text/html", "text/html", "document", false},
		{"500 html", 500, "text/html", "text/html", "document", false},
		{"206 html", 206, "text/html", "text/html", "document", false},
		{"301 html", 301, "text/html", "text/html", "document", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := unitRequest(http.MethodGet, "/")
			if tt.accept != "" {
				r.Header.Set("Accept", tt.accept)
			}
			if tt.fetchDest != "" {
				r.Header.Set("Sec-Fetch-Dest", tt.fetchDest)
			}
			header := http.Header{}
			if tt.contentType != "" {
				header.Set("Content-Type", tt.contentType)
			}
			if got := isPageResponse(r, tt.status, header); got != tt.want {
				t.Errorf("isPageResponse(%d, %q) = %v, want %v", tt.status, tt.contentType, got, tt.want)
			}
		})
	}
}

func TestIsPageResponseNotModifiedPaths(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/guide/intro", true},
		{"/guide/intro/", true},
		{"/guide/intro.html", true},
		{"/guide/INTRO.HTM", true},
		{"/page.xhtml", true},
		{"/style.css", false},
		{"/data.json", false},
		{"/manual.pdf", false},
		{"/images/logo.svg", false},
		{"/v1.2/guide", true},
		{"/.well-known/x", true},
		{"/archive.tar.gz", false},
	}
	for _, tt := range tests {
		r := unitRequest(http.MethodGet, tt.path)
		r.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
		r.Header.Set("Sec-Fetch-Dest", "document")
		if got := isPageResponse(r, http.StatusNotModified, http.Header{}); got != tt.want {
			t.Errorf("isPageResponse(304 for %s) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestSkipReason(t *testing.T) {
	granted := []ConsentCookie{{Name: "__gitbook_cookie_granted", Value: "yes"}}
	several := []ConsentCookie{{Name: "cookie_a", Value: "1"}, {Name: "__gitbook_cookie_granted", Value: "yes"}}

	tests := []struct {
		name    string
		handler Handler
		header  map[string]string
		want    string
	}{
		{"chrome page view", Handler{}, nil, ""},
		{"firefox page view", Handler{}, map[string]string{"User-Agent": unitFirefoxUA}, ""},
		{"sec-purpose prefetch", Handler{}, map[string]string{"Sec-Purpose": "prefetch"}, skipPrefetch},
		{"sec-purpose prerender", Handler{}, map[string]string{"Sec-Purpose": "prefetch;prerender"}, skipPrefetch},
		{"sec-purpose anonymous prefetch", Handler{}, map[string]string{"Sec-Purpose": "prefetch; anonymous-client-ip"}, skipPrefetch},
		{"purpose prefetch", Handler{}, map[string]string{"Purpose": "prefetch"}, skipPrefetch},
		{"purpose uppercase", Handler{}, map[string]string{"Purpose": "Prefetch"}, skipPrefetch},
		{"x-moz prefetch", Handler{}, map[string]string{"X-Moz": "prefetch"}, skipPrefetch},
		{"sec-fetch-dest document alone", Handler{}, map[string]string{"Sec-Fetch-Dest": "document"}, ""},
		{"react server component", Handler{}, map[string]string{"RSC": "1"}, skipRSC},
		{"rsc cache buster only", Handler{}, nil, ""},
		{"gpc", Handler{}, map[string]string{"Sec-GPC": "1"}, skipGPC},
		{"gpc ignored", Handler{IgnoreGPC: true}, map[string]string{"Sec-GPC": "1"}, ""},
		{"gpc other value", Handler{}, map[string]string{"Sec-GPC": "0"}, ""},
		{"consent present", Handler{ConsentCookies: granted}, map[string]string{"Cookie": "a=1; __gitbook_cookie_granted=yes"}, ""},
		{"consent absent", Handler{ConsentCookies: granted}, map[string]string{"Cookie": "a=1"}, skipConsent},
		{"consent no cookie header", Handler{ConsentCookies: granted}, nil, skipConsent},
		{"consent wrong value", Handler{ConsentCookies: granted}, map[string]string{"Cookie": "__gitbook_cookie_granted=no"}, skipConsent},
		{"consent value prefix", Handler{ConsentCookies: granted}, map[string]string{"Cookie": "__gitbook_cookie_granted=yesno"}, skipConsent},
		{"consent second of several", Handler{ConsentCookies: several}, map[string]string{"Cookie": "__gitbook_cookie_granted=yes"}, ""},
		{"consent first of several", Handler{ConsentCookies: several}, map[string]string{"Cookie": "cookie_a=1"}, ""},
		{"consent none of several", Handler{ConsentCookies: several}, map[string]string{"Cookie": "cookie_a=2; __gitbook_cookie_granted=no"}, skipConsent},
		{"no consent configured", Handler{}, map[string]string{"Cookie": "__gitbook_cookie_granted=no"}, ""},
		{"googlebot", Handler{}, map[string]string{"User-Agent": unitGooglebotUA}, skipBot},
		{"bingbot", Handler{}, map[string]string{"User-Agent": unitBingbotUA}, skipBot},
		{"curl", Handler{}, map[string]string{"User-Agent": "curl/8.5.0"}, skipBot},
		{"empty user agent", Handler{}, map[string]string{"User-Agent": ""}, skipBot},
		{"blank user agent", Handler{}, map[string]string{"User-Agent": "   "}, skipBot},
		{"googlebot tracked", Handler{TrackBots: true}, map[string]string{"User-Agent": unitGooglebotUA}, ""},
		{"empty user agent tracked", Handler{TrackBots: true}, map[string]string{"User-Agent": ""}, ""},
		{"prefetch before gpc", Handler{}, map[string]string{"Sec-Purpose": "prefetch", "Sec-GPC": "1"}, skipPrefetch},
		{"gpc before consent", Handler{ConsentCookies: granted}, map[string]string{"Sec-GPC": "1"}, skipGPC},
		{"consent before bot", Handler{ConsentCookies: granted}, map[string]string{"User-Agent": unitGooglebotUA}, skipConsent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := unitRequest(http.MethodGet, "/guide/?_rsc=abc")
			r.Header.Set("User-Agent", unitChromeUA)
			for name, value := range tt.header {
				r.Header.Set(name, value)
			}
			if got := tt.handler.skipReason(unitHeaders(r)); got != tt.want {
				t.Errorf("skipReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIsBotLongUserAgent(t *testing.T) {
	long := unitGooglebotUA + " " + strings.Repeat("x", 64<<10)
	longBrowser := unitChromeUA + " " + strings.Repeat("x", 64<<10)

	if bot, _ := isBot(long); !bot {
		t.Errorf("isBot(Googlebot + 64 KB) = false, want true")
	}
	if bot, _ := isBot(longBrowser); bot {
		t.Errorf("isBot(Chrome + 64 KB) = true, want false")
	}
	if _, cached := botVerdicts.get(long); cached {
		t.Errorf("a User-Agent of %d bytes was cached whole, want only its first %d bytes as the key", len(long), maxBotCheckBytes)
	}
	if _, cached := botVerdicts.get(long[:maxBotCheckBytes]); !cached {
		t.Errorf("the first %d bytes of a long User-Agent are not cached", maxBotCheckBytes)
	}
}

func TestIsBotCachedVerdict(t *testing.T) {
	for range 3 {
		if bot, _ := isBot(unitGooglebotUA); !bot {
			t.Errorf("isBot(Googlebot) = false, want true")
		}
		if bot, _ := isBot(unitChromeUA); bot {
			t.Errorf("isBot(Chrome) = true, want false")
		}
	}
	if verdict, ok := botVerdicts.get(unitGooglebotUA); !ok || verdict != true {
		t.Errorf("cached verdict for Googlebot = %v, %v; want true, true", verdict, ok)
	}
}

func TestReadPageHeaders(t *testing.T) {
	header := http.Header{
		"Sec-Purpose":     {"prefetch;prerender", "second"},
		"Purpose":         {"prefetch"},
		"X-Moz":           {"prefetch"},
		"Rsc":             {"1"},
		"Sec-Gpc":         {"1"},
		"User-Agent":      {unitChromeUA},
		"Accept-Language": {"de-CH,de;q=0.9"},
		"Referer":         {"https://www.example.com/"},
		"Cookie":          {"a=1", "ajs_anonymous_id=" + unitID},
		"Accept":          {"text/html"},
		"Dnt":             {},
	}
	got := readPageHeaders(header)
	want := pageHeaders{
		secPurpose:     "prefetch;prerender",
		purpose:        "prefetch",
		xMoz:           "prefetch",
		rsc:            "1",
		secGPC:         "1",
		userAgent:      unitChromeUA,
		acceptLanguage: "de-CH,de;q=0.9",
		referer:        "https://www.example.com/",
		cookies:        []string{"a=1", "ajs_anonymous_id=" + unitID},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readPageHeaders = %+v, want %+v", got, want)
	}
	if empty := readPageHeaders(http.Header{"User-Agent": {}}); !reflect.DeepEqual(empty, pageHeaders{}) {
		t.Errorf("readPageHeaders of an empty value list = %+v, want nothing", empty)
	}
}

func TestIsBotCheckLimit(t *testing.T) {
	saved := botChecks
	t.Cleanup(func() { botChecks = saved })
	// One check, then none: the budget of a flood of new User-Agents.
	botChecks = rate.NewLimiter(0, 1)

	// Unique User-Agents, so that no verdict is cached from an earlier run.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	first := "Googlebot/2.1 (+http://www.google.com/bot.html) limit-test-1-" + run
	if bot, checked := isBot(first); !bot || !checked {
		t.Errorf("isBot(first new Googlebot) = %v, %v; want true, true", bot, checked)
	}
	second := "Googlebot/2.1 (+http://www.google.com/bot.html) limit-test-2-" + run
	if bot, checked := isBot(second); bot || checked {
		t.Errorf("isBot(Googlebot beyond the budget) = %v, %v; want false, false: a reader, unchecked", bot, checked)
	}
	if _, cached := botVerdicts.get(second); cached {
		t.Error("a User-Agent beyond the budget got a cached verdict, want it checked later")
	}
	if bot, checked := isBot(first); !bot || !checked {
		t.Errorf("isBot(cached Googlebot) = %v, %v; want true, true from the cache", bot, checked)
	}
	if bot, checked := isBot(""); !bot || !checked {
		t.Errorf("isBot(\"\") = %v, %v; want true, true without a check", bot, checked)
	}

	// The handler counts such a page view and warns once.
	botCheckLog.next.Store(0)
	core, logs := observer.New(zapcore.WarnLevel)
	h := &Handler{logger: zap.New(core)}
	for range 3 {
		headers := pageHeaders{userAgent: "Googlebot/2.1 limit-test-" + run + strings.Repeat("x", len(logs.All())+3)}
		if reason := h.skipReason(&headers); reason != "" {
			t.Errorf("skipReason beyond the budget = %q, want a page view", reason)
		}
	}
	if n := logs.FilterMessageSnippet("faster than the bot check allows").Len(); n != 1 {
		t.Errorf("%d warnings about the bot check's budget, want 1", n)
	}
}
