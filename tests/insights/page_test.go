package insights

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestTitle(t *testing.T) {
	s := startSite(t, defaultOptions)

	readFile := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(staticRoot, name))
		if err != nil {
			t.Fatalf("reading testdata failed: %v", err)
		}
		return data
	}

	tests := []struct {
		name         string
		target       string
		wantTitle    string // "" when the event must have no title
		wantBody     []byte
		wantEncoding string
	}{
		{
			name:      "file_server",
			target:    "/static/ampersand.html",
			wantTitle: titledPageTitle,
			wantBody:  readFile("ampersand.html"),
		},
		{
			name:     "file_server without title",
			target:   "/static/untitled.html",
			wantBody: readFile("untitled.html"),
		},
		{
			name:      "proxy identity",
			target:    titledPath + "identity",
			wantTitle: titledPageTitle,
			wantBody:  gitbook.pages[titledPath+"identity"].body(),
		},
		{
			name:         "proxy gzip",
			target:       titledPath + "gzip",
			wantTitle:    titledPageTitle,
			wantBody:     gitbook.pages[titledPath+"gzip"].body(),
			wantEncoding: "gzip",
		},
		{
			name:         "proxy br",
			target:       titledPath + "br",
			wantTitle:    titledPageTitle,
			wantBody:     gitbook.pages[titledPath+"br"].body(),
			wantEncoding: "br",
		},
		{
			name:         "proxy zstd",
			target:       titledPath + "zstd",
			wantTitle:    titledPageTitle,
			wantBody:     gitbook.pages[titledPath+"zstd"].body(),
			wantEncoding: "zstd",
		},
		{
			name:      "proxy flushed chunks",
			target:    chunkedPath + "identity",
			wantTitle: chunkedPageTitle,
			wantBody:  gitbook.pages[chunkedPath+"identity"].body(),
		},
		{
			name:         "proxy flushed gzip chunks",
			target:       chunkedPath + "gzip",
			wantTitle:    chunkedPageTitle,
			wantBody:     gitbook.pages[chunkedPath+"gzip"].body(),
			wantEncoding: "gzip",
		},
		{
			name:     "proxy without title",
			target:   untitledPath,
			wantBody: gitbook.pages[untitledPath].body(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp response
			o := s.run(t, 1, func() { resp = send(t, pageRequest(tc.target)) })

			expectStatus(t, resp, http.StatusOK)
			if !bytes.Equal(resp.body, tc.wantBody) {
				t.Errorf("client received a body of %d bytes that differs from the %d bytes the origin sent", len(resp.body), len(tc.wantBody))
			}
			if got := resp.header.Get("Content-Encoding"); got != tc.wantEncoding {
				t.Errorf("Content-Encoding = %q, expected %q", got, tc.wantEncoding)
			}

			event := onlyEvent(t, o)
			expectField(t, event, "context.page.path", tc.target)
			if tc.wantTitle == "" {
				expectAbsent(t, event, "context.page.title")
			} else {
				expectField(t, event, "context.page.title", tc.wantTitle)
			}
			expectPageViews(t, o, 1)
			expectSkips(t, o, nil)
		})
	}
}

func TestCampaign(t *testing.T) {
	s := startSite(t, defaultOptions)
	const query = "?utm_source=news&utm_medium=email&utm_campaign=launch&utm_term=t&utm_content=c"

	o := s.run(t, 1, func() { send(t, pageRequest("/docs/guides/install"+query)) })

	event := onlyEvent(t, o)
	expectField(t, event, "context.campaign.source", "news")
	expectField(t, event, "context.campaign.medium", "email")
	expectField(t, event, "context.campaign.name", "launch")
	expectField(t, event, "context.campaign.term", "t")
	expectField(t, event, "context.campaign.content", "c")
	expectField(t, event, "context.page.path", "/docs/guides/install")
	expectField(t, event, "context.page.search", query)
	expectField(t, event, "context.page.url", siteURL+"/docs/guides/install"+query)
	expectPageViews(t, o, 1)
}

func TestPageCall(t *testing.T) {
	s := startSite(t, siteOptions{segment: []string{"call page"}})
	target := titledPath + "identity"

	o := s.run(t, 1, func() { send(t, pageRequest(target)) })

	event := onlyEvent(t, o)
	expectField(t, event, "type", "page")
	expectField(t, event, "name", titledPageTitle)
	expectAbsent(t, event, "event")
	expectField(t, event, "properties.url", siteURL+target)
	expectField(t, event, "properties.path", target)
	expectField(t, event, "properties.title", titledPageTitle)
	expectField(t, event, "context.page.title", titledPageTitle)
	expectPageViews(t, o, 1)
}

func TestClassicCookie(t *testing.T) {
	s := startSite(t, siteOptions{segment: []string{"cookie_format classic"}})

	var resp response
	first := s.run(t, 1, func() { resp = send(t, pageRequest("/docs/guides/install")) })

	value := onlyAnonymousIDCookie(t, resp)
	id, found := strings.CutPrefix(value, "%22")
	id, foundSuffix := strings.CutSuffix(id, "%22")
	if !found || !foundSuffix {
		t.Fatalf("new ajs_anonymous_id = %q, expected the classic form %%22<uuid>%%22", value)
	}
	if _, err := uuid.Parse(id); err != nil {
		t.Errorf("id %q inside the classic cookie is not a UUID: %v", id, err)
	}
	expectField(t, onlyEvent(t, first), "anonymousId", id)
	expectPageViews(t, first, 1)

	second := s.run(t, 1, func() {
		resp = send(t, pageRequest("/docs/guides/configure", "Cookie", "ajs_anonymous_id="+value))
	})

	expectNoAnonymousIDCookie(t, resp)
	expectField(t, onlyEvent(t, second), "anonymousId", id)
	expectPageViews(t, second, 1)
}

func TestAnonymizedIP(t *testing.T) {
	s := startSite(t, siteOptions{
		segment: []string{"ip anonymize"},
		global:  []string{"servers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}"},
	})

	// The forwarded addresses are data in a header: nothing connects to
	// them.
	tests := []struct {
		name      string
		forwarded string // X-Forwarded-For, or "" for none
		want      string
	}{
		{name: "IPv4", forwarded: "203.0.113.77", want: "203.0.113.0"},
		{name: "IPv6", forwarded: "2001:db8::1234:5678", want: "2001:db8::"},
		{name: "peer address", want: "127.0.0.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := pageRequest("/docs/guides/install")
			if tc.forwarded != "" {
				req.header.Set("X-Forwarded-For", tc.forwarded)
			}
			o := s.run(t, 1, func() { send(t, req) })

			expectField(t, onlyEvent(t, o), "context.ip", tc.want)
			expectPageViews(t, o, 1)
		})
	}
}
