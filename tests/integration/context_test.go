package integration

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddy-segment/caddy-segment/tests/recorder"
)

// field is the expected string at a dotted path of an event. An empty want
// also matches an absent field.
type field struct {
	path string
	want string
}

// checkFields asserts each field of event, one assertion per field.
func checkFields(t *testing.T, event recorder.Event, fields []field) {
	t.Helper()
	for _, f := range fields {
		if got := event.String(f.path); got != f.want {
			t.Errorf("%s = %q, expected %q", f.path, got, f.want)
		}
	}
}

// checkTimestamp asserts that the event's timestamp lies within the time
// the request took, with one second of slack on either side.
func checkTimestamp(t *testing.T, event recorder.Event, before, after time.Time) {
	t.Helper()
	raw := event.String("timestamp")
	stamp, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		t.Errorf("timestamp %q is not RFC 3339: %v", raw, err)
		return
	}
	if stamp.Before(before.Add(-time.Second)) || stamp.After(after.Add(time.Second)) {
		t.Errorf("timestamp = %s, expected the request time, between %s and %s", stamp, before.UTC(), after.UTC())
	}
}

func TestClientIP(t *testing.T) {
	root := writeSite(t, "anon", "omit")
	site := "\troot * " + root + `
	handle /anon/* {
		` + segmentBlock("ip anonymize") + `
		file_server
	}
	handle /omit/* {
		` + segmentBlock("ip omit") + `
		file_server
	}
	handle {
		` + segmentBlock() + `
		file_server
	}`

	type ipCase struct {
		name          string
		forwardedFor  string
		wantFull      string
		wantAnonymize string
	}
	configs := []struct {
		name   string
		global string
		cases  []ipCase
	}{
		{
			name:   "no trusted proxies",
			global: "",
			cases: []ipCase{
				{name: "IPv4 X-Forwarded-For ignored", forwardedFor: "203.0.113.9", wantFull: "127.0.0.1", wantAnonymize: "127.0.0.0"},
			},
		},
		{
			name: "loopback trusted",
			global: `	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}`,
			cases: []ipCase{
				{name: "IPv4 X-Forwarded-For", forwardedFor: "203.0.113.9", wantFull: "203.0.113.9", wantAnonymize: "203.0.113.0"},
				{name: "IPv6 X-Forwarded-For", forwardedFor: "2001:db8:1:2:3:4:5:6", wantFull: "2001:db8:1:2:3:4:5:6", wantAnonymize: "2001:db8:1::"},
			},
		},
	}

	for _, config := range configs {
		t.Run(config.name, func(t *testing.T) {
			startCaddy(t, caddyfile(config.global, site))
			for _, tc := range config.cases {
				t.Run(tc.name, func(t *testing.T) {
					header := http.Header{"X-Forwarded-For": {tc.forwardedFor}}
					modes := []struct {
						mode   string
						target string
						want   string
					}{
						{mode: "full", target: "/guide.html", want: tc.wantFull},
						{mode: "anonymize", target: "/anon/", want: tc.wantAnonymize},
					}
					for _, m := range modes {
						rec.Reset()
						get(t, m.target, header)
						event := waitEvent(t)
						if got := event.String("context.ip"); got != m.want {
							t.Errorf("ip %s: context.ip = %q, expected %q", m.mode, got, m.want)
						}
					}

					rec.Reset()
					get(t, "/omit/", header)
					event := waitEvent(t)
					if ip, present := event.Lookup("context.ip"); present {
						t.Errorf("ip omit: context.ip = %v, expected no ip", ip)
					}
				})
			}
		})
	}
}

func TestPageContext(t *testing.T) {
	root := writeSite(t, "custom")
	site := "\troot * " + root + `
	handle /custom/* {
		` + segmentBlock(`event "Docs Viewed"`) + `
		file_server
	}
	handle {
		` + segmentBlock("space_id space-123", "property host {http.request.host}", "property section docs") + `
		file_server
	}`
	startCaddy(t, caddyfile(trustLoopback, site))

	t.Run("full request", func(t *testing.T) {
		rec.Reset()
		before := time.Now()
		resp := send(t, request{
			target: "/guide.html?q=go&utm_source=news&utm_campaign=launch",
			host:   "localhost:9080",
			header: http.Header{
				"Referer":         {"https://search.example.net/?q=docs"},
				"Accept-Language": {"de-CH,de;q=0.9,en;q=0.8"},
			},
		})
		after := time.Now()
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, expected 200", resp.status)
		}

		event := waitEvent(t)
		checkFields(t, event, []field{
			{"type", "track"},
			{"event", "[GitBook] space_view"},
			{"context.page.url", "http://localhost:9080/guide.html?q=go&utm_source=news&utm_campaign=launch"},
			{"context.page.path", "/guide.html"},
			{"context.page.search", "?q=go&utm_source=news&utm_campaign=launch"},
			{"context.page.referrer", "https://search.example.net/?q=docs"},
			{"context.campaign.source", "news"},
			{"context.campaign.name", "launch"},
			{"context.locale", "de-CH"},
			{"context.userAgent", browserUA},
			{"context.library.name", "caddy-segment"},
			{"properties.spaceId", "space-123"},
			{"properties.host", "localhost"},
			{"properties.section", "docs"},
		})
		checkTimestamp(t, event, before, after)
		checkTitle(t, event, "Guide")
	})

	t.Run("request without query or optional headers", func(t *testing.T) {
		rec.Reset()
		send(t, request{target: "/guide.html", host: "docs.example.com"})
		event := waitEvent(t)
		checkFields(t, event, []field{
			{"context.page.url", "http://docs.example.com/guide.html"},
			{"context.page.path", "/guide.html"},
			{"context.page.search", ""},
			{"context.page.referrer", ""},
			{"context.locale", ""},
			{"properties.host", "docs.example.com"},
		})
	})

	t.Run("trusted forwarded host and scheme", func(t *testing.T) {
		rec.Reset()
		send(t, request{target: "/guide.html?a=1", host: "127.0.0.1:9080", header: http.Header{
			"X-Forwarded-Host":  {"docs.example.org"},
			"X-Forwarded-Proto": {"https"},
		}})
		event := waitEvent(t)
		checkFields(t, event, []field{
			{"context.page.url", "https://docs.example.org/guide.html?a=1"},
			{"context.page.path", "/guide.html"},
			{"context.page.search", "?a=1"},
		})
	})

	t.Run("custom event name", func(t *testing.T) {
		rec.Reset()
		get(t, "/custom/", nil)
		event := waitEvent(t)
		checkFields(t, event, []field{
			{"type", "track"},
			{"event", "Docs Viewed"},
			{"context.page.path", "/custom/"},
		})
		if props, present := event.Lookup("properties"); present {
			t.Errorf("properties = %v, expected none without space_id or property", props)
		}
	})
}
