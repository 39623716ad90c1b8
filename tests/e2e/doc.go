// Package e2e drives Debian's headless Chromium through the sample docs site
// in sample/site, served by the caddy binary of cmd/caddy with the segment
// handler, and checks the events that reach a loopback Segment recorder.
//
// The tests are skipped when /usr/bin/chromium is missing, unless the
// environment variable CADDY_SEGMENT_REQUIRE_BROWSER is 1, which makes them
// fail instead. Run them with -v to see the build time of the binary and the
// number of events each test counted.
package e2e
