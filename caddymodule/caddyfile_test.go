package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/gzip"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/zstd"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
)

// unitParse parses a segment directive with UnmarshalCaddyfile.
func unitParse(input string) (Handler, error) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return h, err
}

func TestUnmarshalCaddyfileEverySetting(t *testing.T) {
	h, err := unitParse(`segment {
		write_key        wk_SECRET_123
		endpoint         http://127.0.0.1:9/
		region           eu
		event            "Docs Viewed"
		space_id         space_123
		property         section "{http.request.uri.path.0}"
		property         site docs
		cookie_domain    example.com
		cookie_max_age   30d
		cookie_format    classic
		call             page
		batch_size       100
		flush_interval   2s
		queue_size       500
		shutdown_timeout 3s
		dry_run
		gitbook_insights
		track_bots
		consent_cookie   __gitbook_cookie_granted yes
		consent_cookie   other_consent 1
		ignore_gpc
		ip               anonymize
	}`)
	if err != nil {
		t.Fatalf("UnmarshalCaddyfile: %v", err)
	}

	checks := []struct {
		field string
		got   any
		want  any
	}{
		{"WriteKey", h.WriteKey, "wk_SECRET_123"},
		{"Endpoint", h.Endpoint, "http://127.0.0.1:9/"},
		{"Region", h.Region, "eu"},
		{"Event", h.Event, "Docs Viewed"},
		{"SpaceID", h.SpaceID, "space_123"},
		{"Properties", h.Properties, map[string]string{"section": "{http.request.uri.path.0}", "site": "docs"}},
		{"CookieDomain", h.CookieDomain, "example.com"},
		{"CookieMaxAge", h.CookieMaxAge, caddy.Duration(30 * 24 * time.Hour)},
		{"CookieFormat", h.CookieFormat, "classic"},
		{"Call", h.Call, "page"},
		{"BatchSize", h.BatchSize, 100},
		{"FlushInterval", h.FlushInterval, caddy.Duration(2 * time.Second)},
		{"QueueSize", h.QueueSize, 500},
		{"ShutdownTimeout", h.ShutdownTimeout, caddy.Duration(3 * time.Second)},
		{"DryRun", h.DryRun, true},
		{"GitBookInsights", h.GitBookInsights, true},
		{"TrackBots", h.TrackBots, true},
		{"ConsentCookies", h.ConsentCookies, []ConsentCookie{{"__gitbook_cookie_granted", "yes"}, {"other_consent", "1"}}},
		{"IgnoreGPC", h.IgnoreGPC, true},
		{"IP", h.IP, "anonymize"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.field, c.got, c.want)
		}
	}
}

func TestUnmarshalCaddyfileEmpty(t *testing.T) {
	for _, input := range []string{"segment", "segment {\n}"} {
		h, err := unitParse(input)
		if err != nil {
			t.Errorf("UnmarshalCaddyfile(%q): %v", input, err)
		}
		if !reflect.DeepEqual(h, Handler{}) {
			t.Errorf("UnmarshalCaddyfile(%q) set fields: %+v", input, h)
		}
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // substrings of the error message
	}{
		{"unknown subdirective", "segment {\n bogus 1\n}", []string{`"bogus"`, "unknown subdirective"}},
		{"missing value", "segment {\n event\n}", []string{"event", "got 0"}},
		{"extra values", "segment {\n event one two\n}", []string{"event", `"one"`, `"two"`, "got 2"}},
		{"missing property value", "segment {\n property section\n}", []string{"property", `"section"`, "got 1"}},
		{"extra property values", "segment {\n property a b c\n}", []string{"property", `"a"`, `"c"`}},
		{"missing consent value", "segment {\n consent_cookie granted\n}", []string{"consent_cookie", `"granted"`}},
		{"flag with a value", "segment {\n dry_run yes\n}", []string{"dry_run", `"yes"`}},
		{"track_bots with a value", "segment {\n track_bots true\n}", []string{"track_bots", `"true"`}},
		{"non-numeric batch_size", "segment {\n batch_size many\n}", []string{"batch_size", `"many"`}},
		{"zero batch_size", "segment {\n batch_size 0\n}", []string{"batch_size", `"0"`}},
		{"negative queue_size", "segment {\n queue_size -5\n}", []string{"queue_size", `"-5"`}},
		{"unparsable duration", "segment {\n cookie_max_age \"5 parsecs\"\n}", []string{"cookie_max_age", `"5 parsecs"`}},
		{"duration as two values", "segment {\n flush_interval 5 parsecs\n}", []string{"flush_interval", `"5"`, `"parsecs"`}},
		{"zero duration", "segment {\n shutdown_timeout 0s\n}", []string{"shutdown_timeout", `"0s"`}},
		{"duplicate property", "segment {\n property a 1\n property a 2\n}", []string{"property", `"a"`, "twice"}},
		{"args on the directive line", "segment foo {\n}", []string{"segment", `"foo"`}},
		{"line number", "segment {\n dry_run\n\n bogus\n}", []string{"Testfile:4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := unitParse(tt.input)
			if err == nil {
				t.Fatalf("UnmarshalCaddyfile(%q) succeeded, want an error", tt.input)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestUnmarshalCaddyfileHidesWriteKey(t *testing.T) {
	for _, input := range []string{
		"segment {\n write_key wk_SECRET_123 extra\n}",
		"segment {\n write_key wk_SECRET_123 wk_SECRET_123\n}",
	} {
		_, err := unitParse(input)
		if err == nil {
			t.Fatalf("UnmarshalCaddyfile(%q) succeeded, want an error", input)
		}
		if !strings.Contains(err.Error(), "write_key") {
			t.Errorf("error %q does not name write_key", err)
		}
		if strings.Contains(err.Error(), "wk_SECRET_123") {
			t.Errorf("error %q contains the write key", err)
		}
	}
}

// TestCaddyfileAdapt runs the registered directive through Caddy's
// Caddyfile adapter and checks where the handler lands in the route.
func TestCaddyfileAdapt(t *testing.T) {
	input := `{
	admin off
}
:9080 {
	file_server
	segment {
		dry_run
		consent_cookie __gitbook_cookie_granted yes
	}
	encode
}
`
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	if err != nil {
		t.Fatalf("Adapt: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("Adapt warnings: %v", warnings)
	}
	config := string(adapted)

	encode := strings.Index(config, `"handler":"encode"`)
	segment := strings.Index(config, `"handler":"segment"`)
	fileServer := strings.Index(config, `"handler":"file_server"`)
	if segment < 0 {
		t.Fatalf("adapted config has no segment handler: %s", config)
	}
	if encode < 0 || encode > segment {
		t.Errorf("segment is not ordered after encode: %s", config)
	}
	if fileServer < 0 || fileServer < segment {
		t.Errorf("segment is not ordered before file_server: %s", config)
	}

	var parsed struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &parsed); err != nil {
		t.Fatalf("adapted config does not parse: %v", err)
	}
	var h Handler
	found := false
	for _, server := range parsed.Apps.HTTP.Servers {
		for _, route := range server.Routes {
			for _, raw := range route.Handle {
				if strings.Contains(string(raw), `"handler":"segment"`) {
					found = json.Unmarshal(raw, &h) == nil
				}
			}
		}
	}
	if !found {
		t.Fatalf("segment handler not found in the routes: %s", config)
	}
	if !h.DryRun {
		t.Errorf("adapted handler has dry_run unset: %s", config)
	}
	if want := []ConsentCookie{{"__gitbook_cookie_granted", "yes"}}; !reflect.DeepEqual(h.ConsentCookies, want) {
		t.Errorf("adapted consent cookies = %+v, want %+v", h.ConsentCookies, want)
	}
}
