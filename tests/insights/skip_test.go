package insights

import (
	"net/http"
	"net/url"
	"testing"
)

// stateTree is a Next-Router-State-Tree header: the URL-encoded JSON of the
// router's internal route tree, in the shape of a GitBook site.
var stateTree = url.QueryEscape(`["",{"children":["sites",{"children":["static",{"children":[["mode","url","d"],{"children":[["siteURL","docs.example.com","d"],{"children":["__PAGE__",{},null,null]},null,null]},null,null]},null,null]},null,null]},null,null,true]`)

// defaultOptions is a config with every setting at its default.
var defaultOptions = siteOptions{}

// skipCase is a page request that must produce no event and no cookie.
type skipCase struct {
	name   string
	target string
	pairs  []string // header name and value pairs
	reason string   // the skip reason counted
}

// checkSkipped sends each request of cases and checks that it produced no
// event, set no cookie and counted its reason.
func checkSkipped(t *testing.T, s *site, cases []skipCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				target = "/docs/guides/install"
			}
			var resp response
			o := s.run(t, 0, func() { resp = send(t, pageRequest(target, tc.pairs...)) })

			expectStatus(t, resp, http.StatusOK)
			expectNoEvents(t, o)
			expectNoAnonymousIDCookie(t, resp)
			expectPageViews(t, o, 0)
			expectSkips(t, o, map[string]float64{tc.reason: 1})
		})
	}
}

// expectTracked sends a page request and checks that it produced one event
// and gave the new reader a cookie, whose value the event carries.
func expectTracked(t *testing.T, s *site, req request) {
	t.Helper()
	var resp response
	o := s.run(t, 1, func() { resp = send(t, req) })

	expectStatus(t, resp, http.StatusOK)
	id := onlyAnonymousIDCookie(t, resp)
	event := onlyEvent(t, o)
	expectField(t, event, "anonymousId", id)
	expectPageViews(t, o, 1)
	expectSkips(t, o, nil)
}

func TestNextRSC(t *testing.T) {
	s := startSite(t, defaultOptions)

	t.Run("component responses", func(t *testing.T) {
		tests := []struct {
			name  string
			pairs []string
		}{
			{
				name:  "full prefetch",
				pairs: []string{"RSC", "1", "Next-Router-State-Tree", stateTree},
			},
			{
				name:  "navigation",
				pairs: []string{"RSC", "1", "Next-Router-State-Tree", stateTree, "Next-Url", "/docs/guides"},
			},
			{
				name:  "route-tree prefetch",
				pairs: []string{"RSC", "1", "Next-Router-Prefetch", "1", "Next-Router-Segment-Prefetch", "/_tree"},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				pairs := append([]string{"Accept", "*/*", "Sec-Fetch-Dest", "empty", "Sec-Fetch-Mode", "cors"}, tc.pairs...)
				var resp response
				o := s.run(t, 0, func() {
					resp = send(t, pageRequest("/docs/guides/install?_rsc=1x2y3", pairs...))
				})

				expectStatus(t, resp, http.StatusOK)
				if got := resp.header.Get("Content-Type"); got != "text/x-component" {
					t.Fatalf("upstream responded with Content-Type %q, expected text/x-component", got)
				}
				if string(resp.body) != rscPayload {
					t.Errorf("RSC response body = %q, expected the upstream's %q", resp.body, rscPayload)
				}
				expectNoEvents(t, o)
				expectNoAnonymousIDCookie(t, resp)
				expectPageViews(t, o, 0)
			})
		}
	})

	// A whole HTML page sent in response to an RSC request is still not a
	// page view, because the browser requested a component payload.
	checkSkipped(t, s, []skipCase{
		{
			name:   "HTML answer to full prefetch",
			target: htmlForRSCPrefix + "guides/install?_rsc=1x2y3",
			pairs:  []string{"RSC", "1", "Next-Router-State-Tree", stateTree},
			reason: "rsc",
		},
		{
			name:   "HTML answer to route-tree prefetch",
			target: htmlForRSCPrefix + "guides/install?_rsc=4z5w6",
			pairs:  []string{"RSC", "1", "Next-Router-Prefetch", "1", "Next-Router-Segment-Prefetch", "/_tree"},
			reason: "rsc",
		},
	})
}

func TestBots(t *testing.T) {
	s := startSite(t, defaultOptions)

	checkSkipped(t, s, []skipCase{
		{name: "Googlebot", pairs: []string{"User-Agent", googlebotUA}, reason: "bot"},
		{name: "bingbot", pairs: []string{"User-Agent", bingbotUA}, reason: "bot"},
		{name: "no User-Agent", pairs: []string{"User-Agent", ""}, reason: "bot"},
	})

	t.Run("Chrome", func(t *testing.T) {
		expectTracked(t, s, pageRequest("/docs/guides/install"))
	})
}

func TestTrackBots(t *testing.T) {
	s := startSite(t, siteOptions{segment: []string{"track_bots"}})

	tests := []struct {
		name      string
		userAgent string
	}{
		{name: "Googlebot", userAgent: googlebotUA},
		{name: "bingbot", userAgent: bingbotUA},
		{name: "no User-Agent", userAgent: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectTracked(t, s, pageRequest("/docs/guides/install", "User-Agent", tc.userAgent))
		})
	}
}

func TestConsent(t *testing.T) {
	s := startSite(t, siteOptions{
		segment: []string{
			"consent_cookie __gitbook_cookie_granted yes",
			"consent_cookie analytics_consent granted",
		},
		sentinelHeader: http.Header{"Cookie": {"__gitbook_cookie_granted=yes"}},
	})

	checkSkipped(t, s, []skipCase{
		{name: "no consent cookie", reason: "consent"},
		{name: "consent refused", pairs: []string{"Cookie", "__gitbook_cookie_granted=no"}, reason: "consent"},
		{name: "other value of alternative", pairs: []string{"Cookie", "analytics_consent=denied"}, reason: "consent"},
	})

	granted := []struct {
		name   string
		cookie string
	}{
		{name: "GitBook banner accepted", cookie: "__gitbook_cookie_granted=yes"},
		{name: "alternative cookie", cookie: "_ga=GA1.1.1843207765.1755768600; analytics_consent=granted"},
		{name: "refused and alternative granted", cookie: "__gitbook_cookie_granted=no; analytics_consent=granted"},
	}
	for _, tc := range granted {
		t.Run(tc.name, func(t *testing.T) {
			expectTracked(t, s, pageRequest("/docs/guides/install", "Cookie", tc.cookie))
		})
	}
}

func TestGPC(t *testing.T) {
	s := startSite(t, defaultOptions)
	checkSkipped(t, s, []skipCase{
		{name: "Sec-GPC", pairs: []string{"Sec-GPC", "1"}, reason: "gpc"},
	})
}

func TestIgnoreGPC(t *testing.T) {
	s := startSite(t, siteOptions{segment: []string{"ignore_gpc"}})
	expectTracked(t, s, pageRequest("/docs/guides/install", "Sec-GPC", "1"))
}

func TestPrefetch(t *testing.T) {
	s := startSite(t, defaultOptions)
	checkSkipped(t, s, []skipCase{
		{name: "Sec-Purpose prefetch", pairs: []string{"Sec-Purpose", "prefetch"}, reason: "prefetch"},
		{name: "Sec-Purpose prerender", pairs: []string{"Sec-Purpose", "prefetch;prerender"}, reason: "prefetch"},
		{name: "Purpose prefetch", pairs: []string{"Purpose", "prefetch"}, reason: "prefetch"},
		{name: "X-Moz prefetch", pairs: []string{"X-Moz", "prefetch"}, reason: "prefetch"},
	})
}
