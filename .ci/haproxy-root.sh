#!/usr/bin/env bash
# .ci/haproxy-root.sh SUITE: an HAProxy from Debian SUITE for the test matrix.
# Prints (as its only stdout line) a folder holding an executable `haproxy`:
# put it first on PATH and the tests and hacfg run that HAProxy.
#
#   bookworm      HAProxy 2.6  where the host is bookworm: the host's own
#                 package, nothing to build (the folder is /usr/sbin)
#   trixie        HAProxy 3.0  a root built with debootstrap
#   experimental  HAProxy 3.4  a sid root plus experimental's haproxy
#
# Any other Debian suite works like trixie. A root lives in
# $CI_ROOTS_DIR/SUITE (default /var/cache/hacfg-roots/SUITE):
#   root/          the debootstrapped system
#   bin/haproxy    the wrapper: `chroot root /usr/sbin/haproxy "$@"`
#   stamp          what was built; a root is reused while its stamp matches
#                  this recipe and is younger than CI_ROOTS_MAX_AGE_DAYS
#                  (default 7, so experimental's new uploads arrive; 0 means
#                  never expire)
# A machine that keeps /var/cache reuses it (a second or so); anywhere else
# it is rebuilt (about half a minute). Builds are atomic (a new folder,
# renamed into place) and serialised per suite with flock on SUITE.lock.
#
# The wrapper needs /tmp, /proc and /dev bind-mounted at the same places in
# the root (the tests' temp dirs, sockets and pid files are under /tmp);
# .ci/matrix.sh mounts them for its run and unmounts them when it ends. The
# wrapper refuses to run without them. Needs root (debootstrap, chroot).
set -euo pipefail

# Bumped whenever the way a root is built changes: older roots are rebuilt.
RECIPE=1

die() {
  echo "haproxy-root: $*" >&2
  exit 1
}
log() { echo "haproxy-root: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 SUITE   (bookworm, trixie, experimental, …)"
suite=$1
case $suite in
  *[!a-z0-9-]* | "") die "not a Debian suite name: '$suite'" ;;
esac
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and chroot)"

# The host's own release: its package, when installed, is the answer.
# shellcheck source=/dev/null
host_codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$suite" = "$host_codename" ]; then
  if [ -x /usr/sbin/haproxy ] &&
    [ "$(dpkg-query -W -f '${Status}' haproxy 2>/dev/null || true)" = "install ok installed" ]; then
    log "$suite is the host's release: its haproxy package, nothing to build"
    echo /usr/sbin
    exit 0
  fi
  log "$suite is the host's release but its haproxy package is not installed: building a root"
fi

# The Debian mirror the host's apt uses (deb822 or one-line sources).
host_mirror() {
  local f sources=()
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
    [ -f "$f" ] && sources+=("$f")
  done
  [ ${#sources[@]} -gt 0 ] || return 0
  awk '($1 == "URIs:" || $1 == "deb") && !found {
         for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; found = 1; break }
       }' "${sources[@]}"
}
mirror=${CI_DEBIAN_MIRROR:-$(host_mirror)}
if [ -z "$mirror" ]; then
  echo "haproxy-root: no Debian mirror in this machine's apt sources; set CI_DEBIAN_MIRROR" >&2
  exit 1
fi

# Whether anything is mounted at or below a folder.
mounts_under() {
  local targets
  targets=$(findmnt -rn -o TARGET)
  awk -v d="$1" '$0 == d || index($0, d "/") == 1 { found = 1 } END { exit !found }' <<<"$targets"
}

cache=${CI_ROOTS_DIR:-/var/cache/hacfg-roots}
max_age_days=${CI_ROOTS_MAX_AGE_DAYS:-7}
dir=$cache/$suite
key="recipe=$RECIPE suite=$suite mirror=$mirror"
mkdir -p "$cache"

exec {lock}>"$cache/$suite.lock"
flock "$lock"

# Reuse: the stamp matches, it is young enough, and the haproxy in the root runs.
if [ -f "$dir/stamp" ] && [ "$(sed -n 1p "$dir/stamp")" = "$key" ]; then
  if [ "$max_age_days" -gt 0 ] && [ -n "$(find "$dir/stamp" -mtime +"$((max_age_days - 1))")" ]; then
    log "the $suite root is older than $max_age_days days: rebuilding"
  elif chroot "$dir/root" /usr/sbin/haproxy -v >/dev/null 2>&1; then
    log "reusing the $suite root in $dir ($(sed -n 2p "$dir/stamp"))"
    echo "$dir/bin"
    exit 0
  else
    log "the haproxy in the $suite root does not run: rebuilding"
  fi
fi

# Build into a new folder; a failed or interrupted build leaves the old one.
command -v debootstrap >/dev/null || {
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
new=$cache/$suite.new
# A mount left in a half-built root by a killed build would make rm -rf
# descend into the host's /proc or /dev: refuse instead.
if [ -e "$new" ]; then
  if mounts_under "$new"; then
    die "mounts remain under $new (a killed build?): unmount them, then rerun"
  fi
  rm -rf --one-file-system "$new"
fi
mkdir -p "$new"
started=$SECONDS

base=$suite
[ "$suite" = experimental ] && base=sid
log "debootstrap $base from $mirror into $new/root"
# --include=haproxy for a plain suite; experimental's comes after, from apt.
include=(--include=haproxy)
[ "$suite" = experimental ] && include=()
if ! debootstrap --variant=minbase "${include[@]}" "$base" "$new/root" "$mirror" >"$new/debootstrap.log" 2>&1; then
  cat "$new/debootstrap.log" >&2
  die "debootstrap $base failed (log above)"
fi

# Nothing installed into the root may start a service on this machine.
printf '#!/bin/sh\nexit 101\n' >"$new/root/usr/sbin/policy-rc.d"
chmod 755 "$new/root/usr/sbin/policy-rc.d"

if [ "$suite" = experimental ]; then
  echo "deb $mirror experimental main" >"$new/root/etc/apt/sources.list.d/experimental.list"
  # Experimental's Release file may be past its Valid-Until date.
  apt_in_root=(chroot "$new/root" env DEBIAN_FRONTEND=noninteractive
    apt-get -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0)
  log "apt-get install -t experimental haproxy"
  if ! { "${apt_in_root[@]}" update -qq &&
    "${apt_in_root[@]}" install -y -qq --no-install-recommends -t experimental haproxy; } \
    >"$new/apt.log" 2>&1; then
    cat "$new/apt.log" >&2
    die "installing haproxy from experimental failed (log above)"
  fi
fi
chroot "$new/root" apt-get clean
rm -rf "$new/root/var/lib/apt/lists/"*

# shellcheck disable=SC2016 # dpkg-query's own ${Version}
version=$(chroot "$new/root" dpkg-query -W -f '${Version}' haproxy) ||
  die "no haproxy package in the $suite root"
chroot "$new/root" /usr/sbin/haproxy -v >/dev/null || die "the haproxy in the $suite root does not run"

# The wrapper names the root's final path. /tmp and /proc must be the host's
# (temp dirs, sockets, pid files; hacfg reads /proc/PID of the master), and
# the caller's folder is kept when it exists in the root, for relative paths.
mkdir -p "$new/bin"
cat >"$new/bin/haproxy" <<EOF
#!/bin/sh
# HAProxy $version from the Debian $suite root built by .ci/haproxy-root.sh.
root='$dir/root'
[ "\$root/tmp" -ef /tmp ] && [ "\$root/proc" -ef /proc ] && [ "\$root/dev" -ef /dev ] || {
  echo "haproxy ($suite root): /tmp, /proc and /dev are not bind-mounted into \$root (.ci/matrix.sh mounts them)" >&2
  exit 127
}
exec chroot "\$root" /bin/sh -c 'cd "\$0" 2>/dev/null || cd /; exec /usr/sbin/haproxy "\$@"' "\$PWD" "\$@"
EOF
chmod 755 "$new/bin/haproxy"
printf '%s\n%s\n' "$key" "haproxy $version, built $(date -u +%FT%TZ) in $((SECONDS - started))s" >"$new/stamp"

# Swap in the new root (no mounts can be in the old one: matrix.sh holds the
# same lock while its mounts exist).
if [ -e "$dir" ]; then
  if mounts_under "$dir"; then
    die "mounts remain under $dir: unmount them, then rerun"
  fi
  mv "$dir" "$cache/$suite.old"
  rm -rf --one-file-system "$cache/$suite.old"
fi
mv "$new" "$dir"
log "built the $suite root in $((SECONDS - started))s: haproxy $version"
echo "$dir/bin"
