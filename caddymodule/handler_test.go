package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// unitWriteKey is a write key that no error or log line may contain.
const unitWriteKey = "wk_SECRET_123"

// unitProperties returns n properties with distinct names.
func unitProperties(n int) map[string]string {
	props := make(map[string]string, n)
	for i := range n {
		props[fmt.Sprintf("p%02d", i)] = "v"
	}
	return props
}

// unitConfigError runs setDefaults and check on h, as Provision does.
func unitConfigError(h *Handler) error {
	if err := h.setDefaults(); err != nil {
		return err
	}
	return h.check()
}

func TestCheckConfig(t *testing.T) {
	tests := []struct {
		name    string
		handler Handler
		env     map[string]string
		wantErr []string // substrings of the error; nil when the config is valid
	}{
		{name: "minimal", handler: Handler{WriteKey: unitWriteKey}},
		{name: "missing write key", handler: Handler{}, wantErr: []string{"write_key", "dry_run"}},
		{name: "dry run needs no write key", handler: Handler{DryRun: true}},
		{name: "write key from env", handler: Handler{WriteKey: "{env.UNIT_SEGMENT_WRITE_KEY}"}, env: map[string]string{"UNIT_SEGMENT_WRITE_KEY": unitWriteKey}},
		{name: "empty env placeholder", handler: Handler{WriteKey: "{env.UNIT_SEGMENT_EMPTY_KEY}"}, env: map[string]string{"UNIT_SEGMENT_EMPTY_KEY": ""}, wantErr: []string{"write_key", "{env.UNIT_SEGMENT_EMPTY_KEY}"}},
		{name: "unknown placeholder", handler: Handler{WriteKey: "{unit.no_such_placeholder}"}, wantErr: []string{"write_key", "{unit.no_such_placeholder}"}},
		{name: "region us", handler: Handler{WriteKey: unitWriteKey, Region: "us"}},
		{name: "region eu", handler: Handler{WriteKey: unitWriteKey, Region: "eu"}},
		{name: "unknown region", handler: Handler{WriteKey: unitWriteKey, Region: "asia"}, wantErr: []string{"region", `"asia"`}},
		{name: "uppercase region", handler: Handler{WriteKey: unitWriteKey, Region: "EU"}, wantErr: []string{"region", `"EU"`}},
		{name: "region and endpoint", handler: Handler{WriteKey: unitWriteKey, Region: "eu", Endpoint: "http://127.0.0.1:9"}, wantErr: []string{"region", "endpoint", `"eu"`, `"http://127.0.0.1:9"`}},
		{name: "loopback endpoint", handler: Handler{WriteKey: unitWriteKey, Endpoint: "http://127.0.0.1:9/segment/"}},
		{name: "ftp endpoint", handler: Handler{WriteKey: unitWriteKey, Endpoint: "ftp://x"}, wantErr: []string{"endpoint", `"ftp://x"`}},
		{name: "endpoint not a url", handler: Handler{WriteKey: unitWriteKey, Endpoint: "not a url"}, wantErr: []string{"endpoint", `"not a url"`}},
		{name: "endpoint without host", handler: Handler{WriteKey: unitWriteKey, Endpoint: "http://"}, wantErr: []string{"endpoint", `"http:`}},
		{name: "endpoint with user", handler: Handler{WriteKey: unitWriteKey, Endpoint: "https://" + unitWriteKey + "@127.0.0.1:9"}, wantErr: []string{"endpoint", "127.0.0.1:9", "credentials"}},
		{name: "endpoint with password", handler: Handler{WriteKey: unitWriteKey, Endpoint: "https://user:" + unitWriteKey + "@127.0.0.1:9"}, wantErr: []string{"endpoint", "127.0.0.1:9", "credentials"}},
		{name: "endpoint with query", handler: Handler{WriteKey: unitWriteKey, Endpoint: "http://127.0.0.1:9/?writeKey=" + unitWriteKey}, wantErr: []string{"endpoint", "127.0.0.1:9", "query"}},
		{name: "region and endpoint with key", handler: Handler{WriteKey: unitWriteKey, Region: "us", Endpoint: "https://" + unitWriteKey + ":@127.0.0.1:9/?key=" + unitWriteKey}, wantErr: []string{"region", "endpoint", "127.0.0.1:9"}},
		{name: "unparsable endpoint with key", handler: Handler{WriteKey: unitWriteKey, Endpoint: "https://" + unitWriteKey + ":@127.0.0.1:9/%zz"}, wantErr: []string{"endpoint", "not shown"}},
		{name: "endpoint ending in v1 batch", handler: Handler{WriteKey: unitWriteKey, Endpoint: "http://127.0.0.1:9/v1/batch"}, wantErr: []string{"endpoint", `"http://127.0.0.1:9/v1/batch"`, "base URL"}},
		{name: "endpoint from env", handler: Handler{WriteKey: unitWriteKey, Endpoint: "{env.UNIT_SEGMENT_ENDPOINT}"}, env: map[string]string{"UNIT_SEGMENT_ENDPOINT": "http://127.0.0.1:9"}},
		{name: "endpoint placeholder unresolved", handler: Handler{WriteKey: unitWriteKey, Endpoint: "{unit.no_such_endpoint}"}, wantErr: []string{"endpoint", "{unit.no_such_endpoint}"}},
		{name: "flush interval 1ns", handler: Handler{WriteKey: unitWriteKey, FlushInterval: 1}, wantErr: []string{"flush_interval", "1ns", "10ms"}},
		{name: "flush interval 10ms", handler: Handler{WriteKey: unitWriteKey, FlushInterval: caddy.Duration(10 * time.Millisecond)}},
		{name: "cookie max age 500ms", handler: Handler{WriteKey: unitWriteKey, CookieMaxAge: caddy.Duration(500 * time.Millisecond)}, wantErr: []string{"cookie_max_age", "500ms", "365d"}},
		{name: "cookie max age in JSON seconds", handler: Handler{WriteKey: unitWriteKey, CookieMaxAge: 31536000}, wantErr: []string{"cookie_max_age", "31.536ms", "nanoseconds"}},
		{name: "batch size 1", handler: Handler{WriteKey: unitWriteKey, BatchSize: 1}},
		{name: "batch size 2500", handler: Handler{WriteKey: unitWriteKey, BatchSize: 2500}},
		{name: "batch size 2501", handler: Handler{WriteKey: unitWriteKey, BatchSize: 2501}, wantErr: []string{"batch_size", "2501"}},
		{name: "negative batch size", handler: Handler{WriteKey: unitWriteKey, BatchSize: -1}, wantErr: []string{"batch_size", "-1"}},
		{name: "negative queue size", handler: Handler{WriteKey: unitWriteKey, QueueSize: -1}, wantErr: []string{"queue_size", "-1"}},
		{name: "negative flush interval", handler: Handler{WriteKey: unitWriteKey, FlushInterval: caddy.Duration(-time.Second)}, wantErr: []string{"flush_interval", "-1s"}},
		{name: "negative cookie max age", handler: Handler{WriteKey: unitWriteKey, CookieMaxAge: caddy.Duration(-time.Hour)}, wantErr: []string{"cookie_max_age", "-1h0m0s"}},
		{name: "negative shutdown timeout", handler: Handler{WriteKey: unitWriteKey, ShutdownTimeout: caddy.Duration(-5 * time.Second)}, wantErr: []string{"shutdown_timeout", "-5s"}},
		{name: "cookie domain co.uk", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "co.uk"}, wantErr: []string{"cookie_domain", `"co.uk"`, "public suffix"}},
		{name: "cookie domain com", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "com"}, wantErr: []string{"cookie_domain", `"com"`, "public suffix"}},
		{name: "cookie domain dotted uppercase suffix", handler: Handler{WriteKey: unitWriteKey, CookieDomain: ".CO.UK"}, wantErr: []string{"cookie_domain", `"co.uk"`}},
		{name: "cookie domain private suffix", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "github.io"}, wantErr: []string{"cookie_domain", `"github.io"`}},
		{name: "cookie domain example.co.uk", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "example.co.uk"}},
		{name: "cookie domain with dot", handler: Handler{WriteKey: unitWriteKey, CookieDomain: ".Example.com"}},
		{name: "cookie domain host", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "host"}},
		{name: "cookie domain with space", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "exa mple.com"}, wantErr: []string{"cookie_domain", `"exa mple.com"`}},
		{name: "cookie domain with port", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "example.com:443"}, wantErr: []string{"cookie_domain", `"example.com:443"`}},
		{name: "cookie domain with semicolon", handler: Handler{WriteKey: unitWriteKey, CookieDomain: "example.com;secure"}, wantErr: []string{"cookie_domain", `"example.com;secure"`}},
		{name: "cookie format classic", handler: Handler{WriteKey: unitWriteKey, CookieFormat: "classic"}},
		{name: "unknown cookie format", handler: Handler{WriteKey: unitWriteKey, CookieFormat: "json"}, wantErr: []string{"cookie_format", `"json"`}},
		{name: "call page", handler: Handler{WriteKey: unitWriteKey, Call: "page"}},
		{name: "unknown call", handler: Handler{WriteKey: unitWriteKey, Call: "identify"}, wantErr: []string{"call", `"identify"`}},
		{name: "ip anonymize", handler: Handler{WriteKey: unitWriteKey, IP: "anonymize"}},
		{name: "ip omit", handler: Handler{WriteKey: unitWriteKey, IP: "omit"}},
		{name: "unknown ip", handler: Handler{WriteKey: unitWriteKey, IP: "hash"}, wantErr: []string{"ip", `"hash"`}},
		{name: "32 properties", handler: Handler{WriteKey: unitWriteKey, Properties: unitProperties(32)}},
		{name: "33 properties", handler: Handler{WriteKey: unitWriteKey, Properties: unitProperties(33)}, wantErr: []string{"property", "33", "32"}},
		{name: "very long property name", handler: Handler{WriteKey: unitWriteKey, Properties: map[string]string{strings.Repeat("n", 4096): "v"}}, wantErr: []string{"property"}},
		{name: "empty property name", handler: Handler{WriteKey: unitWriteKey, Properties: map[string]string{"": "v"}}, wantErr: []string{"property"}},
		{name: "consent cookie", handler: Handler{WriteKey: unitWriteKey, ConsentCookies: []ConsentCookie{{Name: "__gitbook_cookie_granted", Value: "yes"}}}},
		{name: "consent cookie without value", handler: Handler{WriteKey: unitWriteKey, ConsentCookies: []ConsentCookie{{Name: "granted"}}}, wantErr: []string{"consent_cookie", `"granted"`}},
		{name: "consent cookie without name", handler: Handler{WriteKey: unitWriteKey, ConsentCookies: []ConsentCookie{{Value: "yes"}}}, wantErr: []string{"consent_cookie", `"yes"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, value := range tt.env {
				t.Setenv(name, value)
			}
			h := tt.handler
			err := unitConfigError(&h)

			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("config rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("config accepted, want an error containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), unitWriteKey) {
				t.Errorf("error %q contains the write key", err)
			}
		})
	}
}

func TestSetDefaults(t *testing.T) {
	h := Handler{WriteKey: unitWriteKey}
	if err := unitConfigError(&h); err != nil {
		t.Fatalf("config rejected: %v", err)
	}

	checks := []struct {
		name string
		got  any
		want any
	}{
		{"event", h.Event, "[GitBook] space_view"},
		{"cookie_max_age", h.CookieMaxAge, caddy.Duration(365 * 24 * time.Hour)},
		{"cookie_format", h.CookieFormat, "raw"},
		{"call", h.Call, "track"},
		{"batch_size", h.BatchSize, 250},
		{"flush_interval", h.FlushInterval, caddy.Duration(5 * time.Second)},
		{"queue_size", h.QueueSize, 10000},
		{"shutdown_timeout", h.ShutdownTimeout, caddy.Duration(5 * time.Second)},
		{"ip", h.IP, "full"},
		{"sender write key", h.config.writeKey, unitWriteKey},
		{"sender endpoint", h.config.endpoint, "https://api.segment.io"},
		{"sender batch size", h.config.batchSize, 250},
		{"sender flush interval", h.config.flushInterval, 5 * time.Second},
		{"sender queue size", h.config.queueSize, 10000},
		{"sender shutdown timeout", h.config.shutdownTimeout, 5 * time.Second},
		{"sender dry run", h.config.dryRun, false},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestSetDefaultsResolves(t *testing.T) {
	t.Setenv("UNIT_SEGMENT_WRITE_KEY", unitWriteKey)

	tests := []struct {
		name         string
		handler      Handler
		wantEndpoint string
		wantWriteKey string
		wantDomain   string
	}{
		{"env write key", Handler{WriteKey: "{env.UNIT_SEGMENT_WRITE_KEY}"}, "https://api.segment.io", unitWriteKey, ""},
		{"eu region", Handler{WriteKey: unitWriteKey, Region: "eu"}, "https://events.eu1.segmentapis.com", unitWriteKey, ""},
		{"endpoint trailing slashes", Handler{WriteKey: unitWriteKey, Endpoint: "http://127.0.0.1:9/segment//"}, "http://127.0.0.1:9/segment", unitWriteKey, ""},
		{"cookie domain normalized", Handler{WriteKey: unitWriteKey, CookieDomain: ".Example.COM"}, "https://api.segment.io", unitWriteKey, "example.com"},
		{"cookie domain trailing dot", Handler{WriteKey: unitWriteKey, CookieDomain: "Example.com."}, "https://api.segment.io", unitWriteKey, "example.com"},
		{"batch size zero means default", Handler{WriteKey: unitWriteKey, BatchSize: 0}, "https://api.segment.io", unitWriteKey, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.handler
			if err := unitConfigError(&h); err != nil {
				t.Fatalf("config rejected: %v", err)
			}
			if h.config.endpoint != tt.wantEndpoint {
				t.Errorf("endpoint = %q, want %q", h.config.endpoint, tt.wantEndpoint)
			}
			if h.config.writeKey != tt.wantWriteKey {
				t.Errorf("resolved write key differs from the expected one")
			}
			if h.CookieDomain != tt.wantDomain {
				t.Errorf("cookie domain = %q, want %q", h.CookieDomain, tt.wantDomain)
			}
			if h.WriteKey != tt.handler.WriteKey {
				t.Errorf("WriteKey field changed; the resolved key must stay out of the config that Caddy may print")
			}
		})
	}
}

func TestHandlerJSONFieldNames(t *testing.T) {
	input := `{
		"write_key": "{env.SEGMENT_WRITE_KEY}",
		"endpoint": "http://127.0.0.1:9",
		"event": "Docs Viewed",
		"space_id": "space_123",
		"properties": {"site": "docs"},
		"cookie_domain": "example.com",
		"cookie_max_age": "30d",
		"cookie_format": "classic",
		"call": "page",
		"batch_size": 100,
		"flush_interval": "2s",
		"queue_size": 500,
		"shutdown_timeout": "3s",
		"dry_run": true,
		"gitbook_insights": true,
		"track_bots": true,
		"consent_cookies": [{"name": "__gitbook_cookie_granted", "value": "yes"}],
		"ignore_gpc": true,
		"ip": "omit"
	}`
	var h Handler
	decoder := json.NewDecoder(strings.NewReader(input))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&h); err != nil {
		t.Fatalf("decoding the JSON config: %v", err)
	}

	want := Handler{
		WriteKey: "{env.SEGMENT_WRITE_KEY}", Endpoint: "http://127.0.0.1:9", Event: "Docs Viewed",
		SpaceID: "space_123", Properties: map[string]string{"site": "docs"}, CookieDomain: "example.com",
		CookieMaxAge: caddy.Duration(30 * 24 * time.Hour), CookieFormat: "classic", Call: "page",
		BatchSize: 100, FlushInterval: caddy.Duration(2 * time.Second), QueueSize: 500,
		ShutdownTimeout: caddy.Duration(3 * time.Second), DryRun: true, GitBookInsights: true,
		TrackBots: true, ConsentCookies: []ConsentCookie{{Name: "__gitbook_cookie_granted", Value: "yes"}},
		IgnoreGPC: true, IP: "omit",
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("decoded config = %+v, want %+v", h, want)
	}
}

// unitServer is a loopback server that runs a handler in front of a next
// handler, with a queue in place of the sender. It reports each request on
// served once ServeHTTP has returned.
type unitServer struct {
	*httptest.Server
	handler *Handler
	queue   chan *event
	served  chan error
	logs    *observer.ObservedLogs
}

// unitProvision prepares a handler from config as Provision does, with a
// logger into an observer and without a sender.
func unitProvision(t *testing.T, config Handler) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)

	h := config
	h.logger = logger
	if err := h.prepare(); err != nil {
		t.Fatalf("config rejected: %v", err)
	}
	return &h, logs
}

func newUnitServer(t *testing.T, config Handler, next caddyhttp.HandlerFunc) *unitServer {
	t.Helper()
	h, logs := unitProvision(t, config)
	queue := make(chan *event, 16)
	h.sender = &sender{logger: h.logger, queue: queue, config: h.config}

	s := &unitServer{handler: h, queue: queue, served: make(chan error, 16), logs: logs}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vars := map[string]any{caddyhttp.ClientIPVarKey: "127.0.0.1"}
		ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars)
		err := h.ServeHTTP(w, r.WithContext(ctx), next)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
		}
		s.served <- err
	}))
	t.Cleanup(s.Close)
	return s
}

// do sends a request and waits until the handler has finished with it.
func (s *unitServer) do(t *testing.T, method, path string, header http.Header) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, nil)
	if err != nil {
		t.Fatalf("building the request: %v", err)
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", unitChromeUA)
	}
	res, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()

	select {
	case serveErr := <-s.served:
		return res, serveErr
	case <-time.After(10 * time.Second):
		t.Fatalf("%s %s: the handler did not finish", method, path)
		return nil, nil
	}
}

// events returns the events queued so far.
func (s *unitServer) events() []*event {
	var events []*event
	for {
		select {
		case msg := <-s.queue:
			events = append(events, msg)
		default:
			return events
		}
	}
}

func unitServeHTML(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := io.WriteString(w, "<!DOCTYPE html><html><head><title>Intro</title></head><body>Hi</body></html>")
	return err
}

func TestServeHTTP(t *testing.T) {
	serveCSS := func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/css")
		_, err := io.WriteString(w, "body{}")
		return err
	}

	tests := []struct {
		name       string
		config     Handler
		next       caddyhttp.HandlerFunc
		method     string
		header     http.Header
		wantCookie bool
		wantEvent  bool
	}{
		{name: "new reader html", next: unitServeHTML, method: http.MethodGet, wantCookie: true, wantEvent: true},
		{name: "returning reader html", next: unitServeHTML, method: http.MethodGet, header: http.Header{"Cookie": {"ajs_anonymous_id=" + unitID}}, wantEvent: true},
		{name: "stylesheet", next: serveCSS, method: http.MethodGet},
		{name: "head", next: unitServeHTML, method: http.MethodHead},
		{name: "post", next: unitServeHTML, method: http.MethodPost},
		{name: "prefetch", next: unitServeHTML, method: http.MethodGet, header: http.Header{"Sec-Purpose": {"prefetch"}}},
		{name: "bot", next: unitServeHTML, method: http.MethodGet, header: http.Header{"User-Agent": {unitGooglebotUA}}},
		{name: "gpc", next: unitServeHTML, method: http.MethodGet, header: http.Header{"Sec-Gpc": {"1"}}},
		{name: "consent missing", config: Handler{ConsentCookies: []ConsentCookie{{Name: "granted", Value: "yes"}}}, next: unitServeHTML, method: http.MethodGet},
		{name: "consent given", config: Handler{ConsentCookies: []ConsentCookie{{Name: "granted", Value: "yes"}}}, next: unitServeHTML, method: http.MethodGet, header: http.Header{"Cookie": {"granted=yes"}}, wantCookie: true, wantEvent: true},
		{name: "gitbook insights html", config: Handler{GitBookInsights: true}, next: unitServeHTML, method: http.MethodGet, wantCookie: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			config := tt.config
			config.WriteKey = unitWriteKey
			s := newUnitServer(t, config, tt.next)

			res, err := s.do(t, tt.method, "/guide/intro?x=1", tt.header)
			if err != nil {
				t.Fatalf("ServeHTTP returned %v", err)
			}
			if res.StatusCode != http.StatusOK {
				t.Errorf("status = %d, want 200", res.StatusCode)
			}

			cookies := res.Header.Values("Set-Cookie")
			if tt.wantCookie && len(cookies) != 1 {
				t.Fatalf("got %d Set-Cookie headers, want 1: %q", len(cookies), cookies)
			}
			if !tt.wantCookie && len(cookies) != 0 {
				t.Errorf("got Set-Cookie %q, want none", cookies)
			}

			events := s.events()
			if !tt.wantEvent {
				if len(events) != 0 {
					t.Errorf("got %d events, want none", len(events))
				}
				return
			}
			if len(events) != 1 {
				t.Fatalf("got %d events, want 1", len(events))
			}
			track := unitTrack(t, events[0])
			wantID := unitID
			if tt.wantCookie {
				cookie, err := http.ParseSetCookie(cookies[0])
				if err != nil {
					t.Fatalf("Set-Cookie %q does not parse: %v", cookies[0], err)
				}
				wantID = cookie.Value
			}
			if track.AnonymousId != wantID {
				t.Errorf("anonymousId = %q, want %q", track.AnonymousId, wantID)
			}
			if want := s.URL + "/guide/intro?x=1"; track.Context.Page.URL != want {
				t.Errorf("page url = %q, want %q", track.Context.Page.URL, want)
			}
			if track.Context.IP.String() != "127.0.0.1" {
				t.Errorf("ip = %v, want 127.0.0.1", track.Context.IP)
			}
		})
	}
}

func TestServeHTTPNextError(t *testing.T) {
	failure := errors.New("upstream failed")
	s := newUnitServer(t, Handler{WriteKey: unitWriteKey}, func(w http.ResponseWriter, r *http.Request) error {
		return failure
	})

	_, err := s.do(t, http.MethodGet, "/", nil)
	if !errors.Is(err, failure) {
		t.Errorf("ServeHTTP returned %v, want the next handler's error", err)
	}
	if events := s.events(); len(events) != 0 {
		t.Errorf("got %d events after an error, want none", len(events))
	}
}

func TestServeHTTPLogsNoWriteKey(t *testing.T) {
	s := newUnitServer(t, Handler{WriteKey: unitWriteKey, CookieDomain: "example.com"}, unitServeHTML)
	for range 3 {
		if _, err := s.do(t, http.MethodGet, "/", http.Header{"Host": {"docs.other.org"}}); err != nil {
			t.Fatalf("ServeHTTP returned %v", err)
		}
	}

	if s.logs.Len() != 1 {
		t.Errorf("%d log lines, want one warning that cookie_domain does not cover docs.other.org", s.logs.Len())
	}
	for _, entry := range s.logs.All() {
		line := entry.Message + fmt.Sprint(entry.ContextMap())
		if strings.Contains(line, unitWriteKey) {
			t.Errorf("log line contains the write key: %s", line)
		}
	}
}
