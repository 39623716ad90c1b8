// Package delivery tests event delivery through a whole Caddy: the metrics
// that the admin endpoint serves, config reloads under load, and shutdown
// against an endpoint that never responds. Its tests start Caddy in-process
// with the admin API on localhost:3999 and the site on port 9180, and a
// recorder (package recorder) in place of Segment.
package delivery
