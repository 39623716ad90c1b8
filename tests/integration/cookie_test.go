package integration

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// trustLoopback makes Caddy trust proxy headers from 127.0.0.1, where the
// test client connects from.
const trustLoopback = `	servers {
		trusted_proxies static 127.0.0.1/32
	}`

// trustOtherNetwork trusts only 10.0.0.0/8, so the test client's proxy
// headers are untrusted. Nothing is ever sent to that range.
const trustOtherNetwork = `	servers {
		trusted_proxies static 10.0.0.0/8
	}`

// cookieWant is what a new reader's ajs_anonymous_id cookie must carry.
type cookieWant struct {
	maxAge time.Duration
	domain string // "" for a host-only cookie
	secure bool
}

// checkNewReaderCookie asserts every attribute of the cookie set for a new
// reader, which must be readable by Segment's browser library.
func checkNewReaderCookie(t *testing.T, c cookie, want cookieWant, requested time.Time) {
	t.Helper()
	id, err := uuid.Parse(c.value)
	switch {
	case err != nil:
		t.Errorf("cookie value %q is not a UUID: %v", c.value, err)
	case id.Version() != 4 || id.Variant() != uuid.RFC4122:
		t.Errorf("cookie value %q is UUID version %d variant %s, expected a version 4 RFC 4122 UUID", c.value, id.Version(), id.Variant())
	case id.String() != c.value:
		t.Errorf("cookie value %q is not the raw lower-case UUID form %q", c.value, id.String())
	}

	if got, ok := c.attrs["path"]; !ok || got != "/" {
		t.Errorf("cookie Path = %q (present %t), expected /", got, ok)
	}
	wantMaxAge := strconv.FormatInt(int64(want.maxAge/time.Second), 10)
	if got := c.attrs["max-age"]; got != wantMaxAge {
		t.Errorf("cookie Max-Age = %q, expected %s", got, wantMaxAge)
	}
	expires, err := http.ParseTime(c.attrs["expires"])
	if err != nil {
		t.Errorf("cookie Expires %q is not an HTTP date: %v", c.attrs["expires"], err)
	} else if wantExpires := requested.Add(want.maxAge); expires.Before(wantExpires.Add(-time.Minute)) || expires.After(wantExpires.Add(time.Minute)) {
		t.Errorf("cookie Expires = %s, expected about %s (request time plus Max-Age)", expires, wantExpires.UTC())
	}
	if got := c.attrs["samesite"]; got != "Lax" {
		t.Errorf("cookie SameSite = %q, expected Lax", got)
	}
	if c.has("httponly") {
		t.Error("cookie has HttpOnly, which hides it from Segment's browser library")
	}
	if c.has("secure") != want.secure {
		t.Errorf("cookie Secure present = %t, expected %t", c.has("secure"), want.secure)
	}
	got, ok := c.attrs["domain"]
	switch {
	case want.domain == "" && ok:
		t.Errorf("cookie has Domain=%s, expected a host-only cookie", got)
	case want.domain != "" && got != want.domain:
		t.Errorf("cookie Domain = %q, expected %q", got, want.domain)
	}
}

// cookieCase is a request from a new reader and the cookie it must get.
type cookieCase struct {
	name   string
	host   string
	header http.Header
	want   cookieWant
}

// runCookieCases sends each case as a new reader's page view and checks
// the cookie and that the event uses its value.
func runCookieCases(t *testing.T, cases []cookieCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			requested := time.Now()
			resp := send(t, request{target: "/guide.html", host: tc.host, header: tc.header})
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d, expected 200", resp.status)
			}
			c := onlyAnonymousIDCookie(t, resp.header)
			checkNewReaderCookie(t, c, tc.want, requested)

			event := waitEvent(t)
			if got := event.String("anonymousId"); got != c.value {
				t.Errorf("event anonymousId = %q, expected the new cookie's value %q", got, c.value)
			}
		})
	}
}

func TestNewReaderCookie(t *testing.T) {
	root := writeSite(t)
	startCaddy(t, caddyfile(trustLoopback, "\troot * "+root+"\n\t"+segmentBlock()+"\n\tfile_server"))

	year := 365 * 24 * time.Hour
	runCookieCases(t, []cookieCase{
		{name: "localhost", host: "localhost:9080", want: cookieWant{maxAge: year}},
		{name: "localhost without port", host: "localhost", want: cookieWant{maxAge: year}},
		{name: "IPv4 address", host: "127.0.0.1:9080", want: cookieWant{maxAge: year}},
		{name: "subdomain", host: "docs.example.com", want: cookieWant{maxAge: year, domain: "example.com"}},
		{name: "subdomain with port", host: "docs.example.com:9080", want: cookieWant{maxAge: year, domain: "example.com"}},
		{name: "upper-case host", host: "Docs.Example.COM", want: cookieWant{maxAge: year, domain: "example.com"}},
		{name: "registrable domain itself", host: "example.com", want: cookieWant{maxAge: year, domain: "example.com"}},
		{name: "two-label public suffix", host: "docs.example.co.uk", want: cookieWant{maxAge: year, domain: "example.co.uk"}},
		{
			name:   "trusted X-Forwarded-Proto https",
			host:   "localhost:9080",
			header: http.Header{"X-Forwarded-Proto": {"https"}},
			want:   cookieWant{maxAge: year, secure: true},
		},
		{
			name:   "trusted X-Forwarded-Host",
			host:   "127.0.0.1:9080",
			header: http.Header{"X-Forwarded-Host": {"docs.example.org"}, "X-Forwarded-Proto": {"https"}},
			want:   cookieWant{maxAge: year, domain: "example.org", secure: true},
		},
	})

	t.Run("assets get no cookie", func(t *testing.T) {
		for _, target := range []string{"/style.css", "/app.js", "/logo.png", "/data.json"} {
			resp := send(t, request{target: target, host: "docs.example.com"})
			if resp.status != http.StatusOK {
				t.Errorf("GET %s: status = %d, expected 200", target, resp.status)
			}
			if cookies := resp.header.Values("Set-Cookie"); len(cookies) != 0 {
				t.Errorf("GET %s sets cookies %q, expected none on an asset", target, cookies)
			}
		}
	})
}

func TestCookieMaxAgeSetting(t *testing.T) {
	root := writeSite(t)
	startCaddy(t, caddyfile("", "\troot * "+root+"\n\t"+segmentBlock("cookie_max_age 30d")+"\n\tfile_server"))

	runCookieCases(t, []cookieCase{
		{name: "30 days", host: "docs.example.com", want: cookieWant{maxAge: 30 * 24 * time.Hour, domain: "example.com"}},
	})
}

func TestUntrustedProxyHeaders(t *testing.T) {
	root := writeSite(t)
	startCaddy(t, caddyfile(trustOtherNetwork, "\troot * "+root+"\n\t"+segmentBlock()+"\n\tfile_server"))

	year := 365 * 24 * time.Hour
	runCookieCases(t, []cookieCase{
		{
			name:   "X-Forwarded-Proto https",
			host:   "localhost:9080",
			header: http.Header{"X-Forwarded-Proto": {"https"}},
			want:   cookieWant{maxAge: year},
		},
		{
			name:   "X-Forwarded-Host",
			host:   "127.0.0.1:9080",
			header: http.Header{"X-Forwarded-Host": {"docs.example.org"}},
			want:   cookieWant{maxAge: year},
		},
	})

	t.Run("page URL ignores the headers", func(t *testing.T) {
		rec.Reset()
		send(t, request{target: "/guide.html", host: "localhost:9080", header: http.Header{
			"X-Forwarded-Proto": {"https"},
			"X-Forwarded-Host":  {"docs.example.org"},
		}})
		event := waitEvent(t)
		if got, want := event.String("context.page.url"), "http://localhost:9080/guide.html"; got != want {
			t.Errorf("context.page.url = %q, expected %q from the connection, not the untrusted proxy headers", got, want)
		}
	})
}

func TestReturningReader(t *testing.T) {
	root := writeSite(t)
	startCaddy(t, caddyfile("", "\troot * "+root+"\n\t"+segmentBlock()+"\n\tfile_server"))

	t.Run("second visit keeps the id", func(t *testing.T) {
		rec.Reset()
		first := get(t, "/guide.html", nil)
		c := onlyAnonymousIDCookie(t, first.header)
		firstEvent := waitEvent(t)

		rec.Reset()
		second := get(t, "/", http.Header{"Cookie": {"ajs_anonymous_id=" + c.value}})
		if cookies := second.header.Values("Set-Cookie"); len(cookies) != 0 {
			t.Errorf("a returning reader got Set-Cookie %q, expected none", cookies)
		}
		secondEvent := waitEvent(t)
		if a, b := firstEvent.String("anonymousId"), secondEvent.String("anonymousId"); a != c.value || b != c.value {
			t.Errorf("anonymousId of the two visits = %q and %q, expected the cookie's %q both times", a, b, c.value)
		}
	})

	const id = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
	known := []struct {
		name       string
		cookie     string
		wantID     string // id when empty
		wantUserID string
	}{
		{name: "raw id", cookie: "ajs_anonymous_id=" + id},
		{name: "classic URL-encoded JSON id", cookie: "ajs_anonymous_id=%22" + id + "%22"},
		{name: "quoted id", cookie: `ajs_anonymous_id="` + id + `"`},
		{name: "id among other cookies", cookie: "theme=dark; ajs_anonymous_id=" + id + "; lang=de"},
		{name: "non-UUID id", cookie: "ajs_anonymous_id=legacy-id-42", wantID: "legacy-id-42"},
		{name: "user id", cookie: "ajs_anonymous_id=" + id + "; ajs_user_id=user-42", wantUserID: "user-42"},
		{name: "classic user id", cookie: "ajs_anonymous_id=" + id + "; ajs_user_id=%22user-42%22", wantUserID: "user-42"},
		{name: "malformed user id", cookie: "ajs_anonymous_id=" + id + "; ajs_user_id=%01", wantUserID: ""},
	}
	for _, tc := range known {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			resp := get(t, "/guide.html", http.Header{"Cookie": {tc.cookie}})
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d, expected 200", resp.status)
			}
			if cookies := resp.header.Values("Set-Cookie"); len(cookies) != 0 {
				t.Errorf("a returning reader got Set-Cookie %q, expected none", cookies)
			}

			wantID := tc.wantID
			if wantID == "" {
				wantID = id
			}
			event := waitEvent(t)
			if got := event.String("anonymousId"); got != wantID {
				t.Errorf("anonymousId = %q, expected %q", got, wantID)
			}
			if got := event.String("userId"); got != tc.wantUserID {
				t.Errorf("userId = %q, expected %q", got, tc.wantUserID)
			}
		})
	}

	malformed := []struct {
		name       string
		cookie     string
		wantUserID string
	}{
		{name: "user id without anonymous id", cookie: "ajs_user_id=user-42", wantUserID: "user-42"},
		{name: "encoded control character", cookie: "ajs_anonymous_id=%01abc"},
		{name: "encoded DEL", cookie: "ajs_anonymous_id=abc%7F"},
		{name: "encoded C1 control", cookie: "ajs_anonymous_id=abc%C2%85"},
		{name: "JSON escape of a control character", cookie: `ajs_anonymous_id=%22abc%5Cu0001%22`},
		{name: "oversize value", cookie: "ajs_anonymous_id=" + strings.Repeat("a", 4000)},
		{name: "invalid percent escape", cookie: "ajs_anonymous_id=%ZZ"},
		{name: "encoded invalid UTF-8", cookie: "ajs_anonymous_id=%FF%FE"},
		{name: "raw invalid UTF-8", cookie: "ajs_anonymous_id=\xff\xfe"},
		{name: "empty value", cookie: "ajs_anonymous_id="},
		{name: "empty quoted value", cookie: `ajs_anonymous_id=""`},
		{name: "empty classic value", cookie: "ajs_anonymous_id=%22%22"},
		{name: "null", cookie: "ajs_anonymous_id=null"},
		{name: "undefined", cookie: "ajs_anonymous_id=%22undefined%22"},
		{name: "name without value", cookie: "ajs_anonymous_id; theme=dark"},
		{name: "separators only", cookie: ";;; = ;ajs_anonymous_id;="},
	}
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			requested := time.Now()
			resp := get(t, "/guide.html", http.Header{"Cookie": {tc.cookie}})
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d, expected 200", resp.status)
			}
			c := onlyAnonymousIDCookie(t, resp.header)
			checkNewReaderCookie(t, c, cookieWant{maxAge: 365 * 24 * time.Hour}, requested)

			event := waitEvent(t)
			if got := event.String("anonymousId"); got != c.value {
				t.Errorf("anonymousId = %q, expected the new cookie's value %q", got, c.value)
			}
			if got := event.String("userId"); got != tc.wantUserID {
				t.Errorf("userId = %q, expected %q", got, tc.wantUserID)
			}
		})
	}
}
