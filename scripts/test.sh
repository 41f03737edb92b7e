#!/usr/bin/env bash
# Runs every check and test of Tidings, installing what they need on a fresh Debian
# machine with Rust (rustup): formatting, lints, unit/integration/doc tests, docs, packaging
# (`cargo package` of every crate, built from its archive), the Debian package (built with
# cargo-deb, installed, run and purged: scripts/test-deb.sh), and the browser tests
# (installs Chromium, Node.js and the npm packages where missing).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Make every shell this script starts find cargo even when PATH lacks it.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

step "toolchain components"
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

step "system tools the tests run (curl, kill, nginx)"
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The nginx test runs Debian's nginx in front of a hub (and fails without it under CI).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
{ [ -x /bin/kill ] || [ -x /usr/bin/kill ]; } || missing+=(procps)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "redis-server for the cluster tests"
# The cluster tests start their own redis-server on a free port and fail, never skip,
# without it.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-server >/dev/null
fi
# Debian's package starts a system Redis on 6379; the tests use their own.

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit, integration and doc tests)"
cargo test --workspace

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "cargo package: every crate packages and builds from its own files"
# Packs each crate as crates.io would and builds it from the unpacked archive (workspace
# dependencies come from a local registry of the archives just made), so a file a crate
# reads from outside its folder, or leaves out of its package, fails here. Per crate
# (`-p tidings-hub`) it cannot work before tidings-wire is on crates.io; `--workspace` can.
# Cargo unpacks the archives of that local registry under $CARGO_HOME/registry/src/-HASH/
# (the hash is the registry's path) and reuses what an earlier run unpacked there for the
# same version: remove our crates from there first, or it builds last run's sources.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/tidings-*-[0-9]*
cargo package --workspace --allow-dirty --quiet

step "Debian package: cargo deb, dpkg -i, the installed hub answers /healthz, purge"
scripts/test-deb.sh

step "browser end-to-end tests (Playwright, Debian's Chromium, a real tidings serve)"
web/e2e/run.sh
