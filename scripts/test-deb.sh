#!/usr/bin/env bash
# Builds the Debian package of `tidings` (cargo-deb, installed where missing), installs it
# on this machine with `dpkg -i`, starts the installed /usr/bin/tidings with the packaged
# configuration as the `tidings` user (systemd need not be PID 1: the hub is started as
# the unit would start it), checks that it answers /healthz and takes a publish into
# /var/lib/tidings, stops it, installs the package again as an upgrade (the generated key
# and a changed configuration stay), and purges it, leaving the machine as it was.
# Called by scripts/test.sh; needs root or sudo. Usage: scripts/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
fail() { printf 'test-deb: %s\n' "$*" >&2; exit 1; }

if dpkg-query -W -f='${Status}' tidings 2>/dev/null | grep -q 'ok installed'; then
  fail "a tidings package is installed on this machine already; this test would replace and purge it"
fi
user_existed=no
getent passwd tidings >/dev/null && user_existed=yes

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
missing=()
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || missing+=(adduser)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The only release build of the test command: no debug info (cargo-deb strips the binary
# anyway) and quick compression keep it as cheap as a release build gets.
deb=$(cargo deb -p tidings --locked --override-debug none --fast | tail -n 1)
[ -f "$deb" ] || fail "cargo deb printed no package path (got: $deb)"
echo "test-deb: built $deb"

log=$(mktemp -d)
hub_pid=
cleanup() {
  if [ -n "$hub_pid" ] && kill -0 "$hub_pid" 2>/dev/null; then
    "${sudo[@]}" kill "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
  fi
  "${sudo[@]}" dpkg --purge tidings >/dev/null 2>&1 || true
  if [ "$user_existed" = no ] && getent passwd tidings >/dev/null; then
    "${sudo[@]}" userdel tidings 2>/dev/null || true
    getent group tidings >/dev/null && "${sudo[@]}" groupdel tidings 2>/dev/null || true
  fi
  rm -rf "$log"
}
trap cleanup EXIT

"${sudo[@]}" dpkg -i "$deb" >/dev/null

# What the package put where.
[ -x /usr/bin/tidings ] || fail "/usr/bin/tidings is missing"
unit=$(dpkg -L tidings | grep '/systemd/system/tidings.service$') || fail "no systemd unit"
for option in 'User=tidings' 'ProtectSystem=strict' 'ProtectHome=yes' 'NoNewPrivileges=yes' \
  'PrivateTmp=yes' 'StateDirectory=tidings' 'CapabilityBoundingSet=$' \
  'RestrictAddressFamilies=' 'SystemCallFilter=@system-service' 'LimitNOFILE='; do
  grep -q "^$option" "$unit" || fail "$unit lacks $option"
done
# systemd-analyze only warns (exit 0) on an unknown or misspelt key: read what it says.
if command -v systemd-analyze >/dev/null 2>&1; then
  complaints=$(systemd-analyze verify "$unit" 2>&1 | grep 'tidings\.service' || true)
  [ -z "$complaints" ] || fail "systemd-analyze verify $unit: $complaints"
fi
dpkg-query -W -f='${Conffiles}\n' tidings | grep -q '/etc/tidings/tidings.toml' ||
  fail "/etc/tidings/tidings.toml is not a conffile"
cmp -s /usr/share/doc/tidings/examples/nginx.conf docs/nginx/tidings.conf ||
  fail "/usr/share/doc/tidings/examples/nginx.conf is not docs/nginx/tidings.conf"
getent passwd tidings >/dev/null || fail "no tidings user"
[ "$(stat -c '%U:%G %a' /etc/tidings/jwt.key)" = "root:tidings 640" ] ||
  fail "/etc/tidings/jwt.key is $(stat -c '%U:%G %a' /etc/tidings/jwt.key), not root:tidings 640"
[ "$(stat -c '%U:%G %a' /var/lib/tidings)" = "tidings:tidings 750" ] ||
  fail "/var/lib/tidings is $(stat -c '%U:%G %a' /var/lib/tidings)"
if "${sudo[@]}" setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/tidings/jwt.key \
  >/dev/null 2>&1; then
  fail "another user can read /etc/tidings/jwt.key"
fi
key_sum=$("${sudo[@]}" sha256sum /etc/tidings/jwt.key)
/usr/bin/tidings serve --config /etc/tidings/tidings.toml --check >/dev/null ||
  fail "the packaged configuration does not check"

# The hub as the unit runs it (its user, its configuration, its working directory), on a
# free port instead of the configured one; no TIDINGS_* variable of ours leaks in.
(cd /var/lib/tidings && exec "${sudo[@]}" env -i PATH=/usr/bin:/bin RUST_LOG=info \
  setpriv --reuid=tidings --regid=tidings --init-groups \
  /usr/bin/tidings serve --config /etc/tidings/tidings.toml --addr 127.0.0.1:0 \
  >"$log/out" 2>"$log/err") &
hub_pid=$!
url=
for _ in $(seq 300); do
  url=$(sed -n 's/^tidings: hub listening on //p' "$log/out")
  [ -n "$url" ] && break
  kill -0 "$hub_pid" 2>/dev/null || fail "the installed hub exited: $(cat "$log/err")"
  sleep 0.1
done
[ -n "$url" ] || fail "the installed hub did not start within 30 s: $(cat "$log/err")"
base=${url%/.well-known/mercure}
curl -fsS --max-time 10 -o /dev/null "$base/healthz" || fail "/healthz did not answer 200"
token=$("${sudo[@]}" /usr/bin/tidings token --jwt-key /etc/tidings/jwt.key --publish '*')
curl -fsS --max-time 10 -o /dev/null -H "Authorization: Bearer $token" \
  -d topic=/deb-test -d data=installed "$url" || fail "a publish to the installed hub failed"
[ "$(stat -c %U /var/lib/tidings/tidings.db)" = tidings ] ||
  fail "the history is not /var/lib/tidings/tidings.db of the tidings user"
"${sudo[@]}" kill -TERM "$hub_pid"
status=0
wait "$hub_pid" || status=$?
hub_pid=
[ "$status" -eq 0 ] || fail "the installed hub exited $status on SIGTERM: $(cat "$log/err")"
echo "test-deb: the installed hub ran as tidings with the packaged configuration and answered /healthz"

# An upgrade (the same package again) keeps the key and the operator's configuration.
echo '# changed by the operator' | "${sudo[@]}" tee -a /etc/tidings/tidings.toml >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$deb" >/dev/null
[ "$("${sudo[@]}" sha256sum /etc/tidings/jwt.key)" = "$key_sum" ] || fail "the upgrade changed the key"
grep -q '^# changed by the operator$' /etc/tidings/tidings.toml ||
  fail "the upgrade replaced the changed configuration"

"${sudo[@]}" dpkg --purge tidings >/dev/null
for path in /usr/bin/tidings /etc/tidings /var/lib/tidings "$unit"; do
  [ ! -e "$path" ] || fail "$path is left after purge"
done
echo "test-deb: installed, ran, upgraded and purged $deb"
