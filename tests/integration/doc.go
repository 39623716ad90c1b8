// Package integration tests the segment handler inside a real Caddy, started
// in the test process through caddytest, with a Segment-compatible recorder
// on loopback as the event endpoint. The package holds only tests.
//
// Caddy listens on fixed loopback ports (admin 2999, HTTP 9080), so its
// tests run one at a time and never in parallel with another package that
// uses the same ports.
package integration
