package integration

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// unsetEnvVar names an environment variable that must not be set while the
// tests run, so that a write_key placeholder for it resolves to "".
const unsetEnvVar = "CADDY_SEGMENT_INTEGRATION_UNSET_WRITE_KEY"

func TestConfigErrors(t *testing.T) {
	root := writeSite(t)
	startCaddy(t, caddyfile("", "\troot * "+root+"\n\t"+segmentBlock()+"\n\tfile_server"))
	if _, set := os.LookupEnv(unsetEnvVar); set {
		t.Fatalf("unset the environment variable %s before running these tests, because a case relies on it being absent", unsetEnvVar)
	}

	// secretKey must never appear in an error message.
	const secretKey = "secret-write-key-7f3a9c"
	endpoint := "endpoint " + rec.URL()
	keyLine := "write_key " + secretKey

	cases := []struct {
		name string
		// lines are the segment block's subdirectives.
		lines []string
		// parseError is set when the Caddyfile adapter must reject the
		// config. Otherwise either the adapter or the handler's Provision
		// may reject it.
		parseError bool
		wantParts  []string
	}{
		{name: "missing write_key", lines: []string{endpoint}, wantParts: []string{"write_key is missing"}},
		{name: "write_key from an unset variable", lines: []string{"write_key {env." + unsetEnvVar + "}", endpoint}, wantParts: []string{"write_key"}},
		{name: "region with endpoint", lines: []string{keyLine, "region eu", endpoint}, wantParts: []string{"region", "endpoint", "set only one"}},
		{name: "unknown region", lines: []string{keyLine, "region mars", endpoint}, wantParts: []string{"region", "mars"}},
		{name: "cookie_domain public suffix", lines: []string{keyLine, endpoint, "cookie_domain co.uk"}, wantParts: []string{"cookie_domain", "co.uk", "public suffix"}},
		{name: "cookie_domain with a path", lines: []string{keyLine, endpoint, "cookie_domain example.com/docs"}, wantParts: []string{"cookie_domain", "example.com/docs"}},
		{name: "batch_size over the maximum", lines: []string{keyLine, endpoint, "batch_size 3000"}, wantParts: []string{"batch_size", "3000", "2500"}},
		{name: "negative batch_size", lines: []string{keyLine, endpoint, "batch_size -1"}, wantParts: []string{"batch_size", "-1"}},
		{name: "batch_size not a number", lines: []string{keyLine, endpoint, "batch_size many"}, parseError: true, wantParts: []string{"batch_size", "many"}},
		{name: "flush_interval not a duration", lines: []string{keyLine, endpoint, "flush_interval soon"}, parseError: true, wantParts: []string{"flush_interval", "soon"}},
		{name: "negative flush_interval", lines: []string{keyLine, endpoint, "flush_interval -1s"}, wantParts: []string{"flush_interval"}},
		{name: "negative cookie_max_age", lines: []string{keyLine, endpoint, "cookie_max_age -1h"}, wantParts: []string{"cookie_max_age"}},
		{name: "unknown cookie_format", lines: []string{keyLine, endpoint, "cookie_format json"}, wantParts: []string{"cookie_format", "json"}},
		{name: "unknown call", lines: []string{keyLine, endpoint, "call identify"}, wantParts: []string{"call", "identify"}},
		{name: "unknown ip mode", lines: []string{keyLine, endpoint, "ip hashed"}, wantParts: []string{"ip", "hashed"}},
		{name: "queue_size zero or less", lines: []string{keyLine, endpoint, "queue_size -5"}, wantParts: []string{"queue_size"}},
		{name: "endpoint not http", lines: []string{keyLine, "endpoint ftp://127.0.0.1/segment"}, wantParts: []string{"endpoint", "ftp://127.0.0.1/segment"}},
		{name: "endpoint with credentials", lines: []string{keyLine, "endpoint http://user:pass@127.0.0.1:1"}, wantParts: []string{"endpoint", "credentials"}},
		{name: "write_key with two values", lines: []string{"write_key " + secretKey + " extra", endpoint}, parseError: true, wantParts: []string{"write_key", "exactly one value"}},
		{name: "unknown subdirective", lines: []string{keyLine, endpoint, "colour blue"}, parseError: true, wantParts: []string{"unknown subdirective", "colour"}},
		{name: "duplicate property", lines: []string{keyLine, endpoint, "property a 1", "property a 2"}, parseError: true, wantParts: []string{"property", "twice"}},
		{name: "incomplete consent_cookie", lines: []string{keyLine, endpoint, "consent_cookie granted"}, parseError: true, wantParts: []string{"consent_cookie", "two values"}},
	}

	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("the caddyfile config adapter is not registered")
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			block := "segment {\n\t\t" + strings.Join(tc.lines, "\n\t\t") + "\n\t}"
			config := caddyfile("", "\t"+block+"\n\trespond \"ok\"")

			_, _, adaptErr := adapter.Adapt([]byte(config), nil)
			if tc.parseError && adaptErr == nil {
				t.Errorf("the Caddyfile adapter accepted the config, expected it to reject it")
			}

			loadErr := loadCaddyfile(t, config)
			if loadErr == nil {
				t.Fatal("Caddy loaded the config, expected an error")
			}
			for _, err := range []error{adaptErr, loadErr} {
				if err == nil {
					continue
				}
				message := err.Error()
				for _, part := range tc.wantParts {
					if !strings.Contains(message, part) {
						t.Errorf("error %q does not contain %q", message, part)
					}
				}
				if strings.Contains(message, secretKey) {
					t.Errorf("error %q contains the write key", message)
				}
			}
		})
	}

	t.Run("previous config keeps running", func(t *testing.T) {
		if resp := get(t, "/guide.html", nil); resp.status != http.StatusOK {
			t.Errorf("status = %d, expected 200 from the config loaded before the rejected ones", resp.status)
		}
		if _, err := rec.WaitEvents(1, eventTimeout); err != nil {
			t.Errorf("waiting for the page view event of the running config: %v", err)
		}
	})
}
