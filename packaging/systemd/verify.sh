#!/usr/bin/env bash
# Checks the .deb's systemd units with `systemd-analyze verify`, with no
# systemd running: the package is unpacked into a temp root beside the
# host's own units (haproxy.service among them), the haproxy.service drop-in
# is put where an admin puts it, and the programs the units start are
# copied from the host, so a missing binary is a real failure. Any line of
# output (an unknown key, a typo in a section) fails too: systemd only warns.
#
#   bash packaging/systemd/verify.sh target/debian/hacfg_0.1.0-1_amd64.deb
set -euo pipefail
deb=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
mkdir -p "$root/lib/systemd/system" "$root/etc/systemd/system/haproxy.service.d"
cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
[ -f "$root/lib/systemd/system/haproxy.service" ] || {
  echo "verify: no haproxy.service on this machine (apt-get install haproxy)" >&2
  exit 1
}
install -m 644 "$root/usr/share/doc/hacfg/examples/haproxy.service.d/hacfg.conf" \
  "$root/etc/systemd/system/haproxy.service.d/hacfg.conf"
for bin in /usr/bin/serf /usr/sbin/haproxy /usr/bin/install /bin/kill /bin/sh; do
  mkdir -p "$root$(dirname "$bin")"
  [ -e "$root$bin" ] || cp "$(readlink -f "$bin")" "$root$bin"
done
units=(hacfg-sync.service hacfg-sync.timer hacfg-serf.service haproxy.service)
out=$(cd "$root" && systemd-analyze verify --man=no --root="$root" "${units[@]}" 2>&1) || {
  printf '%s\n' "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  echo "verify: systemd-analyze warned about the units above" >&2
  exit 1
fi
echo "verify: ${units[*]} (with the hacfg drop-in): ok"
