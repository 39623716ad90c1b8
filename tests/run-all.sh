#!/usr/bin/env bash
# Runs the project's checks: go vet, then every test with the race detector.
# Extra arguments are passed to go test before the package pattern, for
# example -v or -run TestFullPageNavigation. The browser test skips when
# /usr/bin/chromium is missing, unless CADDY_SEGMENT_REQUIRE_BROWSER=1.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

go vet ./...
go test -race -count=1 "$@" ./...
