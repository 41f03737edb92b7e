#!/usr/bin/env bash
# Browser end-to-end tests: Playwright driving Debian's Chromium against real
# `tidings serve` processes (started by the tests on free ports of 127.0.0.1).
#
#   web/e2e/run.sh                       # install what is missing, build, run every test
#   web/e2e/run.sh tests/digits.spec.js  # arguments go to `playwright test`
#   UPDATE_DOC_IMAGES=1 web/e2e/run.sh   # also copy the screenshots the README shows to docs/img/
#
# Installs Chromium and Node.js (apt) and the npm packages (npm ci) when missing; never downloads
# a browser. Respects CARGO_TARGET_DIR; TIDINGS_BIN overrides the binary to test.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$CHROMIUM" ]]; then
  echo "e2e: installing chromium (apt)" >&2
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "e2e: installing Node.js and npm (apt)" >&2
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi

cd "$here"
if [[ ! -d node_modules/@playwright/test ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "e2e: installing npm packages (npm ci)" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

if [[ -z "${TIDINGS_BIN:-}" ]]; then
  echo "e2e: building tidings (debug)" >&2
  (cd "$repo" && cargo build --quiet -p tidings)
  export TIDINGS_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/tidings"
fi

rm -rf "$here/screenshots"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npx --no-install playwright test "$@"

if [[ "${UPDATE_DOC_IMAGES:-}" == 1 ]]; then
  mkdir -p "$repo/docs/img"
  cp "$here/screenshots/ping.png" "$here/screenshots/console.png" "$repo/docs/img/"
  echo "e2e: updated docs/img/ping.png and docs/img/console.png" >&2
fi
