#!/usr/bin/env bash
# The lab, run in Docker: this folder's Dockerfiles built into images, one
# balancer and three web app containers started from them, and the lab's
# scenario played against them. Needs root; pulls no image.
#
#   sudo bash examples/lab/test-docker.sh [path/to/hacfg]
#
# - Docker: the running daemon, or else Debian's dockerd (docker.io,
#   installed if missing), started here with the vfs storage driver and no
#   bridge or iptables, and stopped at the end.
# - Base images, built here when the daemon has none: debian:bookworm-slim
#   from a debootstrap (minbase) tarball kept in $HACFG_DOCKER_CACHE
#   (default /var/cache/hacfg-docker, rebuilt when missing), and a stand-in
#   for node:20-bookworm-slim: that Debian image plus Debian's nodejs.
# - The lab's images: webapp/Dockerfile as it is; ha/Dockerfile with the
#   given hacfg (default target/debug/hacfg) through --build-arg HACFG_BIN,
#   so no Rust image is needed.
# - Every container uses the host's network, on loopback addresses only
#   (127.42.0.0/24) and ports found free: the balancer on .1, web app N on
#   .1N. Requests go to those addresses only.
#
# Scenario: a lone balancer with an empty pool says so once, with no failed
# sync; three web apps join and each one answers through HAProxy; `docker
# stop` of one (s6 takes Serf down with SIGINT: a leave) removes it;
# `docker kill -s KILL` of another (member-failed) removes it; a new one
# joins and serves. Prints `N passed, M failed` last; exits non-zero on any
# failure; removes every container and image it made (it makes no network).
# The containers' output of the last run stays in the cache folder
# (last-ha.log, last-w1.log, …, last-serf.log), and so does dockerd's log.
set -uo pipefail
lab=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$lab/../.." && pwd)
hacfg=${1:-$root/target/debug/hacfg}
[ "$(id -u)" = 0 ] || { echo "test-docker.sh: needs root (dockerd, debootstrap)" >&2; exit 1; }
[ -x "$hacfg" ] || { echo "test-docker.sh: no hacfg at $hacfg (cargo build)" >&2; exit 1; }
hacfg=$(realpath "$hacfg")
for tool in curl ss flock timeout; do
  command -v "$tool" >/dev/null || { echo "test-docker.sh: missing $tool" >&2; exit 1; }
done

cache=${HACFG_DOCKER_CACHE:-/var/cache/hacfg-docker}
mkdir -p "$cache"
# One run at a time: runs share the base images' names.
exec {lock}>"$cache/lock"
flock -w 1800 "$lock" || { echo "test-docker.sh: another run holds $cache/lock" >&2; exit 1; }
rm -f "$cache"/last-*.log

# Everything this run makes is named after it and labelled.
run=hacfg-lab-$$
label=org.hacfg.test-docker
net=127.42.0
work=$(mktemp -d)
started=$SECONDS
passed=0 failed=0
containers=() images=() dockerd_pid="" images_before="" ha_build="" docker_ready=false
export DOCKER_BUILDKIT=0 # the classic builder: the one every daemon has

say() { echo "test-docker: $*"; }
elapsed() { echo "$((SECONDS - $1))s"; }

wait_for() {  # wait_for SECONDS COMMAND...
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.5; done
}

alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
gone() { ! alive "$1"; }

stop_dockerd() {
  [ -n "$dockerd_pid" ] || return 0
  local containerd
  containerd=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null)
  kill -TERM "$dockerd_pid" 2>/dev/null
  if ! wait_for 30 gone "$dockerd_pid"; then
    say "dockerd did not stop in 30 s: killing it"
    kill -KILL "$dockerd_pid" 2>/dev/null
    wait_for 10 gone "$dockerd_pid"
  fi
  # The containerd it started normally stops with it.
  if [ -n "$containerd" ] && alive "$containerd" &&
    [ "$(cat "/proc/$containerd/comm" 2>/dev/null)" = containerd ]; then
    kill -TERM "$containerd" 2>/dev/null
    wait_for 10 gone "$containerd" || kill -KILL "$containerd" 2>/dev/null
  fi
  dockerd_pid=""
}

# Removes the untagged images that were not there when the run started
# (removing one removes its untagged parents too).
remove_new_untagged() {
  local img
  [ "$docker_ready" = true ] || return 0
  for img in $(timeout 60 docker images -q --no-trunc --filter dangling=true 2>/dev/null); do
    grep -qxF "$img" <<<"$images_before" || timeout 120 docker rmi "$img" >/dev/null 2>&1
  done
}

cleanup() {
  local i c
  trap - EXIT INT TERM
  if [ -n "$ha_build" ] && alive "$ha_build"; then
    kill -TERM "$ha_build" 2>/dev/null
    wait "$ha_build" 2>/dev/null
  fi
  # The last run's logs stay: the balancer's output and its handler's log.
  for c in "${containers[@]}"; do
    timeout 30 docker logs "$c" >"$cache/last-${c#"$run-"}.log" 2>&1
  done
  [ "${#containers[@]}" = 0 ] ||
    timeout 30 docker cp "$ha:/var/log/serf.log" "$cache/last-serf.log" >/dev/null 2>&1
  for c in "${containers[@]}"; do timeout 60 docker rm -f "$c" >/dev/null 2>&1; done
  # Newest first: an image goes before the one it was built on. Untagged
  # images that were not there before are a build stage's (the balancer's
  # build stage is no parent of its image) or a failed build's.
  for ((i = ${#images[@]} - 1; i >= 0; i--)); do
    [ "${images[i]}" = debian:bookworm-slim ] && remove_new_untagged
    timeout 120 docker rmi -f "${images[i]}" >/dev/null 2>&1
  done
  remove_new_untagged
  stop_dockerd
  for c in $(findmnt -rn -o TARGET 2>/dev/null | grep "^$work/" | sort -r); do umount -l "$c"; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
  echo
  say "timings: Debian image $t_base, other images $t_images, scenario $t_scenario, total $(elapsed "$started")"
  echo "$passed passed, $failed failed"
}
t_base="-" t_images="-" t_scenario="-"

fatal() {  # fatal STEP [LOG]: a step the rest depends on failed
  failed=$((failed + 1))
  echo "FAILED: $1"
  [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 30 "$2"
  summary
  exit 1
}

check() {  # check NAME COMMAND...: one scenario step
  if "${@:2}"; then passed=$((passed + 1)); echo "ok: $1"
  else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

# --- The Docker daemon ------------------------------------------------------
docker_up() { timeout 10 docker info >/dev/null 2>&1; }
if ! docker_up; then
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    say "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    { timeout 300 apt-get update -qq &&
      timeout 600 apt-get install -y -qq --no-install-recommends docker.io; } >"$work/apt.log" 2>&1 ||
      fatal "apt-get install docker.io" "$work/apt.log"
  fi
fi
if ! docker_up; then
  say "starting dockerd (log: $cache/dockerd.log)"
  # A session of its own: a ^C reaches this script, which still needs the
  # daemon to clean up.
  setsid dockerd --storage-driver=vfs --bridge=none --iptables=false >"$cache/dockerd.log" 2>&1 &
  dockerd_pid=$!
  wait_for 60 docker_up || fatal "dockerd did not answer in 60 s" "$cache/dockerd.log"
fi
images_before=$(timeout 60 docker images -aq --no-trunc) && docker_ready=true

# Leftovers of a run that was killed (one run at a time: not a live one).
# Its base images are reused, and removed at the end.
for c in $(timeout 60 docker ps -aq --filter "label=$label"); do
  timeout 60 docker rm -f "$c" >/dev/null 2>&1
done
for img in $(timeout 60 docker images -q --filter "label=$label"); do
  [[ "$(timeout 30 docker image inspect -f '{{ json .Config.Labels }}' "$img")" == *'"base"'* ]] ||
    timeout 120 docker rmi -f "$img" >/dev/null 2>&1
done

# --- Base images ------------------------------------------------------------
has_image() { timeout 30 docker image inspect "$1" >/dev/null 2>&1; }
# Made by this script (a killed run's, here again): removed at the end.
ours() {
  local labels
  labels=$(timeout 30 docker image inspect -f '{{ json .Config.Labels }}' "$1" 2>/dev/null) &&
    [[ "$labels" == *"\"$label\""* ]]
}

# The Debian mirror the host's apt uses (deb822 or one-line sources).
host_uri() {  # host_uri REGEX: the first source URI that matches
  local f sources=()
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
    [ -f "$f" ] && sources+=("$f")
  done
  [ ${#sources[@]} -gt 0 ] || return 0
  awk -v re="$1" '($1 == "URIs:" || $1 == "deb") && !found {
      for (i = 2; i <= NF; i++) if ($i ~ re) { print $i; found = 1; break }
    }' "${sources[@]}"
}
# The mirrors come from this machine's apt sources alone (or the environment):
# no registry host is written here.
mirror=${DEBIAN_MIRROR:-$(host_uri '^https?://.*/debian/?$')}
security=${DEBIAN_SECURITY_MIRROR:-$(host_uri '^https?://.*/debian-security/?$')}
if [ -z "$mirror" ] || [ -z "$security" ]; then
  echo "test-docker: no Debian (and security) mirror in this machine's apt sources; set" \
    "DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR" >&2
  exit 1
fi

# debian:bookworm-slim's stand-in: a minbase bookworm, slimmed as the real
# one is (no docs, man pages or translations), apt lists removed.
RECIPE=1
tarball=$cache/bookworm-minbase.tar
key="recipe=$RECIPE suite=bookworm mirror=$mirror security=$security"
build_tarball() {
  local r=$work/rootfs
  say "debootstrap --variant=minbase bookworm from $mirror (cached in $tarball)"
  timeout 900 debootstrap --variant=minbase bookworm "$r" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    return 1
  rm -f "$r/etc/apt/sources.list"
  cat >"$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$r/usr/share/man/"* "$r/usr/share/info/"* "$r/usr/share/locale/"* "$r/usr/share/lintian/"*
  # Nothing installed in a container starts a service.
  printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod 755 "$r/usr/sbin/policy-rc.d"
  chroot "$r" apt-get clean
  rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin "$r/var/log/"*.log
  tar -C "$r" -c . >"$tarball.new" || return 1
  mv "$tarball.new" "$tarball" && echo "$key" >"$tarball.key"
  rm -rf --one-file-system "$r"
}

t0=$SECONDS
if has_image debian:bookworm-slim && ! ours debian:bookworm-slim; then
  say "using the daemon's debian:bookworm-slim"
else
  images+=(debian:bookworm-slim)
  if [ ! -s "$tarball" ] || [ "$(cat "$tarball.key" 2>/dev/null)" != "$key" ]; then
    command -v debootstrap >/dev/null ||
      timeout 600 apt-get install -y -qq --no-install-recommends debootstrap >"$work/apt.log" 2>&1 ||
      fatal "apt-get install debootstrap" "$work/apt.log"
    build_tarball || fatal "debootstrap bookworm" "$work/debootstrap.log"
  else
    say "reusing $tarball"
  fi
  timeout 300 docker import --change 'CMD ["bash"]' --change "LABEL $label=base" \
    - debian:bookworm-slim <"$tarball" >"$work/import.log" 2>&1 ||
    fatal "docker import debian:bookworm-slim" "$work/import.log"
fi
t_base=$(elapsed "$t0")

# --- The images -------------------------------------------------------------
# The balancer's image needs only the Debian one: it builds while the web
# app's base and then the web app's image do. Its context: what its
# Dockerfile copies, and the binary.
t0=$SECONDS
ctx=$work/ctx
mkdir -p "$ctx/examples/lab/ha"
cp -r "$root/Cargo.toml" "$root/Cargo.lock" "$root/src" "$root/templates" "$ctx/"
cp -r "$lab/ha/services" "$ctx/examples/lab/ha/"
cp "$hacfg" "$ctx/hacfg"
ha_image=$run-ha:test web_image=$run-webapp:test
images+=("$ha_image")
say "building the balancer's image (hacfg from $hacfg)"
timeout 900 docker build --network host --force-rm --label "$label=$run" -t "$ha_image" \
  --build-arg HACFG_BIN=hacfg -f "$lab/ha/Dockerfile" "$ctx" >"$work/build-ha.log" 2>&1 &
ha_build=$!
if has_image node:20-bookworm-slim && ! ours node:20-bookworm-slim; then
  say "using the daemon's node:20-bookworm-slim"
else
  say "building a stand-in for node:20-bookworm-slim (Debian's nodejs)"
  images+=(node:20-bookworm-slim)
  timeout 900 docker build --network host --force-rm --label "$label=base" \
    -t node:20-bookworm-slim - >"$work/build-node.log" 2>&1 <<'EOF' ||
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
CMD ["node"]
EOF
    fatal "docker build node:20-bookworm-slim" "$work/build-node.log"
fi
images+=("$web_image")
say "building the web app's image"
# Its context is the repository, as in docker-compose.yml.
timeout 900 docker build --network host --force-rm --label "$label=$run" -t "$web_image" \
  -f "$lab/webapp/Dockerfile" "$root" >"$work/build-webapp.log" 2>&1 ||
  fatal "docker build webapp" "$work/build-webapp.log"
context=$(grep -o 'Sending build context to Docker daemon *[0-9.]*[kMG]*B' "$work/build-webapp.log")
say "web app image built (${context:-build context size not reported})"
wait "$ha_build" || fatal "docker build ha" "$work/build-ha.log"
ha_build=""
t_images=$(elapsed "$t0")

# --- The scenario -------------------------------------------------------------
t0=$SECONDS
chosen=" "
free_port() {  # free_port VAR...: ports nothing listens or talks on, not chosen before
  local used p i var
  used=$(ss -Htanu | awk '{ n = split($5, a, ":"); print a[n] }')
  for var in "$@"; do
    for ((i = 0; i < 200; i++)); do
      p=$((10000 + RANDOM % 22000))   # below the ephemeral range
      [[ "$chosen" == *" $p "* ]] || grep -qxF "$p" <<<"$used" || break
    done
    [ "$i" -lt 200 ] || return 1
    chosen="$chosen$p "
    printf -v "$var" %s "$p"
  done
}
front="" stats="" ha_serf="" ha_rpc=""
free_port front stats ha_serf ha_rpc || fatal "no free port"
ha=$run-ha

start() {  # start NAME IMAGE DOCKER-ARGS...
  local name=$1 image=$2; shift 2
  containers+=("$name")
  timeout 120 docker run -d --name "$name" --label "$label=$run" --network host "$@" "$image" \
    >"$work/run-$name.log" 2>&1 || { cat "$work/run-$name.log"; return 1; }
}
start_webapp() {  # start_webapp wN: web app N on 127.42.0.1N
  local n=${1#w} app serf rpc
  free_port app serf rpc || return 1
  start "$run-$1" "$web_image" --hostname "$1" -e APP_PORT="$app" -e APP_HOST="$net.1$n" \
    -e SERF_NODE="$1" -e SERF_BIND="$net.1$n:$serf" -e SERF_RPC_ADDR="$net.1$n:$rpc" \
    -e SERF_JOIN="$net.1:$ha_serf"
}

ha_logs() { timeout 20 docker logs "$ha" 2>&1; }
ha_file() { timeout 20 docker exec "$ha" cat "$1" 2>/dev/null; }
get() { curl -s -m 2 "http://$net.1:$front/" 2>/dev/null; }
answering() {  # answering NAMES...: all of them answer within 40 requests
  local seen="" i n
  for ((i = 0; i < 40; i++)); do seen="$seen $(get)"; done
  for n in "$@"; do [[ "$seen" == *"hello from $n"* ]] || return 1; done
}
not_answering() {
  local i
  for ((i = 0; i < 20; i++)); do [[ "$(get)" != *"hello from $1"* ]] || return 1; done
}
in_pool() {
  local cfg
  cfg=$(ha_file /usr/local/etc/haproxy/haproxy.cfg) && grep -q "^    server $1 " <<<"$cfg"
}
out_of_pool() {
  local cfg
  cfg=$(ha_file /usr/local/etc/haproxy/haproxy.cfg) && [ -n "$cfg" ] && ! grep -q "^    server $1 " <<<"$cfg"
}
event_for() {  # event_for EVENT NAME: the handler's log has EVENT acting on NAME
  local log
  log=$(ha_file /var/log/serf.log) && grep -q "$1: .*\`$2\`" <<<"$log"
}
stats_page() { [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$net.1:$stats/")" = 200 ]; }
alone_lines() {
  local log
  log=$(ha_logs) && grep -c 'hacfg-sync: info: the Serf agent sees no other member' <<<"$log"
}
said_alone() { [ "$(alone_lines)" -ge 1 ]; }
said_alone_once() { [ "$(alone_lines)" = 1 ]; }
no_failed_sync() {
  local log
  log=$(ha_logs) && ! grep -q 'sync failed' <<<"$log"
}

check "the balancer starts" start "$ha" "$ha_image" --hostname ha \
  -e SERF_BIND="$net.1:$ha_serf" -e SERF_RPC_ADDR="$net.1:$ha_rpc" -e HACFG_SYNC_INTERVAL=2 \
  -e HACFG_VARS="frontend_bind=$net.1:$front,stats_bind=$net.1:$stats,server_options=inter 500ms"
check "HAProxy serves its stats page" wait_for 30 stats_page
check "a lone balancer with an empty pool says so" wait_for 30 said_alone
sleep 5 # two more sync intervals
check "... once, and logs no failed sync" eval 'said_alone_once && no_failed_sync'

for w in w1 w2 w3; do start_webapp "$w" || echo "   (could not start $w)"; done
check "three web apps join and each answers through HAProxy" wait_for 60 answering w1 w2 w3

timeout 60 docker stop -t 20 "$run-w1" >/dev/null 2>&1
check "docker stop: a Serf leave" wait_for 30 event_for member-leave w1
check "... removes w1 from the pool" wait_for 30 out_of_pool w1
check "... and w1 gets no more requests" not_answering w1

timeout 60 docker kill -s KILL "$run-w2" >/dev/null 2>&1
check "docker kill -s KILL: Serf declares w2 failed" wait_for 60 event_for member-failed w2
check "... and it leaves the pool" wait_for 30 out_of_pool w2

start_webapp w4 || echo "   (could not start w4)"
check "a new web app joins and serves, beside w3" wait_for 60 answering w3 w4
check "the balancer logged no failed sync" no_failed_sync
t_scenario=$(elapsed "$t0")

if [ "$failed" != 0 ]; then
  echo "--- the balancer's log (last 40 lines)"
  ha_logs | tail -n 40
  echo "--- /var/log/serf.log"
  ha_file /var/log/serf.log | tail -n 40
fi
summary
[ "$failed" = 0 ]
