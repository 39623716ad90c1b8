// Package insights tests the segment handler inside a real Caddy, started in
// the test process through caddytest. Caddy proxies to a loopback upstream
// that imitates a GitBook site, with HTML pages in every content coding,
// Next.js React Server Component responses and GitBook's insights beacon.
// Events go to a Segment-compatible recorder on loopback. The package
// contains only tests.
//
// Caddy listens on fixed loopback ports (admin 4999, HTTP 9280, HTTPS 9643),
// so these tests run one at a time.
package insights
