#!/usr/bin/env bash
# Builds Caddy with xcaddy from the Caddy version and plugins in xcaddy.json,
# then checks that the binary lists every Caddy module the manifest names.
#
# Usage: tests/xcaddy/build.sh [OUTPUT]
#
# OUTPUT is the path of the built binary. Without it, the binary goes to a
# temporary directory that is removed on exit. Needs xcaddy on PATH (.ci/run
# installs the xcaddy_version of xcaddy.json), python3 and the go command.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
manifest="$repo_root/xcaddy.json"

if ! command -v xcaddy >/dev/null 2>&1; then
  echo "build.sh: xcaddy not found on PATH: install it with 'go install github.com/caddyserver/xcaddy/cmd/xcaddy@<xcaddy_version of xcaddy.json>' and add \$(go env GOPATH)/bin to PATH" >&2
  exit 1
fi

if [[ $# -ge 1 ]]; then
  output=$1
else
  workdir=$(mktemp -d)
  trap 'rm -rf -- "$workdir"' EXIT
  output=$workdir/caddy
fi

# python3 turns the manifest into tab-separated "kind value" lines, with
# replacement paths made absolute relative to the manifest's directory.
manifest_lines=$(python3 - "$manifest" <<'PYTHON'
import json
import os
import sys

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
base = os.path.dirname(os.path.abspath(path))


def emit(kind, value):
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        sys.exit(f"{path}: {kind} {value!r} must be a non-empty string without whitespace")
    print(f"{kind}\t{value}")


emit("xcaddy_version", manifest["xcaddy_version"])
emit("caddy_version", manifest["caddy_version"])
plugins = manifest["plugins"]
if not plugins:
    sys.exit(f"{path}: plugins is empty: list at least one plugin")
for plugin in plugins:
    emit("with", plugin["package"])
    replace = plugin.get("replace", "")
    if replace:
        emit("module_replaced", plugin["module"])
        emit("replace", plugin["module"] + "=" + os.path.normpath(os.path.join(base, replace)))
    for module_id in plugin.get("caddy_modules", []):
        emit("caddy_module", module_id)
PYTHON
)

xcaddy_version=""
caddy_version=""
build_args=()
replaced_modules=()
caddy_modules=()
while IFS=$'\t' read -r kind value; do
  case $kind in
    xcaddy_version) xcaddy_version=$value ;;
    caddy_version) caddy_version=$value ;;
    with) build_args+=(--with "$value") ;;
    replace) build_args+=(--replace "$value") ;;
    module_replaced) replaced_modules+=("$value") ;;
    caddy_module) caddy_modules+=("$value") ;;
  esac
done <<<"$manifest_lines"

installed_xcaddy=$(xcaddy version | cut -d' ' -f1)
if [[ $installed_xcaddy != "$xcaddy_version" ]]; then
  echo "build.sh: warning: xcaddy on PATH is $installed_xcaddy, but xcaddy.json pins $xcaddy_version" >&2
fi

# A replaced module is not published. A module proxy that responds with 403
# to an unknown module path makes the go command fail before it applies the
# replacement. GOPRIVATE skips the proxy for these paths and GOVCS forbids
# fetching them from version control, so the go command uses the replacement.
private=""
vcs=""
for module in ${replaced_modules[@]+"${replaced_modules[@]}"}; do
  private+="${private:+,}$module"
  vcs+="${vcs:+,}$module:off"
done
if [[ -n $private ]]; then
  export GOPRIVATE="$private${GOPRIVATE:+,$GOPRIVATE}"
  export GOVCS="$vcs${GOVCS:+,$GOVCS}"
fi

echo "build.sh: xcaddy build $caddy_version ${build_args[*]} --output $output"
start=$SECONDS
xcaddy build "$caddy_version" "${build_args[@]}" --output "$output"
echo "build.sh: built $output in $((SECONDS - start))s"

listed_modules=$("$output" list-modules)
missing=0
for module_id in ${caddy_modules[@]+"${caddy_modules[@]}"}; do
  if grep -qx -- "$module_id" <<<"$listed_modules"; then
    echo "build.sh: $output lists Caddy module $module_id"
  else
    echo "build.sh: $output does not list Caddy module $module_id: check the plugin's package in xcaddy.json" >&2
    missing=1
  fi
done
exit "$missing"
