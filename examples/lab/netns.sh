# The labs' shared harness, sourced by examples/lab/test-netns.sh and
# examples/etcd/test-netns.sh: hosts as Linux network namespaces on one
# bridge (itself in a namespace of its own), each running s6-svscan on a
# set of s6 service folders. The caller sets `net` (the first three octets,
# a /24 that exists only inside these namespaces) and `tools` (the commands
# it needs), then sources this with the hacfg binary's path in $1.
#
# Gives: $tag (namespace and link names of this run), $work (a temporary
# folder, one sub-folder per host; its bin/ holds hacfg, first in PATH),
# $hacfg (absolute), add_host, services, start_services, kill_all,
# kill_hard, pid_of, check, wait_for, and a trap that removes every
# namespace, process and file made (a failed run keeps its logs and says
# where). `finish` prints the count. Both labs have a balancer `ha` at .1
# (its config in $work/ha/etc/haproxy.cfg) and a `client` host: get,
# answering, not_answering, in_pool, out_of_pool and leave_under_load send
# requests and read the config.
set -uo pipefail
me=$(basename "$0")
[ "$(id -u)" = 0 ] || { echo "$me: needs root (ip netns)" >&2; exit 1; }
for tool in ${tools:-} s6-svscan s6-svc ip; do
  command -v "$tool" >/dev/null || { echo "$me: missing $tool" >&2; exit 1; }
done
[ -x "$1" ] || { echo "$me: no hacfg at $1 (cargo build)" >&2; exit 1; }
# The services find it through PATH, from other folders: an absolute path.
hacfg=$(realpath "$1")

tag="hl$$"
work=$(mktemp -d)
mkdir -p "$work/bin"; ln -s "$hacfg" "$work/bin/hacfg"
passed=0 failed=0
hosts=()

# kill_all HOST: stops everything in a namespace. s6-svscan brings its
# services down and exits, reaping them; whatever is left after 5 s is
# killed. (s6 starts each service in a session of its own, so a
# process-group kill would miss them.)
kill_all() {
  local i
  [ -d "$work/$1/s6" ] && ip netns exec "$tag-$1" s6-svscanctl -t "$work/$1/s6" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    [ -z "$(ip netns pids "$tag-$1" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  ip netns pids "$tag-$1" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
}

# kill_hard HOST: every process in a namespace, SIGKILL, at once: a host
# that loses power. Its s6 services get no stop, and run no finish.
kill_hard() {
  local i
  for ((i = 0; i < 50; i++)); do
    no_process "$1" && return 0
    ip netns pids "$tag-$1" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    sleep 0.1
  done
  return 1
}
no_process() { [ -z "$(ip netns pids "$tag-$1" 2>/dev/null)" ]; }

# pid_of HOST COMM: the first process named COMM in HOST's namespace.
pid_of() {
  local p
  for p in $(ip netns pids "$tag-$1" 2>/dev/null); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && { echo "$p"; return 0; }
  done
  return 1
}

# Hosts go down in the reverse order of their start: clients and web apps
# before what they depend on (an etcd member, the balancer).
cleanup() {
  local status=$? i h
  for ((i = ${#hosts[@]} - 1; i >= 0; i--)); do
    h=${hosts[i]}
    kill_all "$h"
    ip netns del "$tag-$h" 2>/dev/null
  done
  ip netns del "$tag-br" 2>/dev/null
  if [ "$status" = 0 ] && [ "$failed" = 0 ]; then
    rm -rf "$work"
  else
    echo "$me: failed; the logs are kept:" >&2
    find "$work" -name '*.log' -type f >&2
  fi
}
trap cleanup EXIT

check() {  # check NAME COMMAND...: one scenario step
  if "${@:2}"; then passed=$((passed + 1)); echo "ok: $1"
  else failed=$((failed + 1)); echo "FAILED: $1"; fi
}

wait_for() {  # wait_for SECONDS COMMAND...
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.5; done
}

finish() {  # the count, and the script's status
  echo
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}

# The bridge, in a namespace of its own.
ip netns add "$tag-br"
ip -n "$tag-br" link add br0 type bridge
ip -n "$tag-br" link set br0 up

add_host() {  # add_host NAME LAST_OCTET: a namespace on the bridge
  local h=$1 ns="$tag-$1"
  hosts+=("$h")
  ip netns add "$ns"
  # Each end is made in its namespace, so its name is unique there alone.
  ip link add eth0 netns "$ns" type veth peer name "v-$h" netns "$tag-br" &&
    ip -n "$tag-br" link set "v-$h" master br0 up &&
    ip -n "$ns" link set lo up &&
    ip -n "$ns" addr add "$net.$2/24" dev eth0 &&
    ip -n "$ns" link set eth0 up || { echo "$me: unable to set up host $h" >&2; exit 1; }
  mkdir -p "$work/$h"
}

services() {  # services HOST SERVICE_DIR...: the s6 services HOST runs
  local h=$1; shift
  rm -rf "$work/$h/s6"; mkdir -p "$work/$h/s6"
  cp -rL "$@" "$work/$h/s6/"
}

start_services() {  # start_services HOST ENV...: s6-svscan on HOST's services
  local h=$1; shift
  ip netns exec "$tag-$h" env -i PATH="$work/bin:$PATH" HOME="$work/$h" "$@" \
    setsid s6-svscan "$work/$h/s6" >"$work/$h/s6.log" 2>&1 &
  echo $! > "$work/$h/svscan.pid"
  disown
}

# Traffic through the balancer, from the client. Web apps answer
# `hello from NAME`.
get() { ip netns exec "$tag-client" curl -s -m 2 "http://$net.1/" 2>/dev/null; }
answering() {  # answering NAMES...: all of them answer within 40 requests
  local seen="" i
  for ((i = 0; i < 40; i++)); do seen="$seen $(get)"; done
  for n in "$@"; do [[ "$seen" == *"hello from $n"* ]] || return 1; done
}
not_answering() { local i; for ((i = 0; i < 20; i++)); do [[ "$(get)" != *"hello from $1"* ]] || return 1; done; }
load() {  # requests until $work/stop exists; writes "total failed" to $work/load
  local bad=0 n=0
  while [ ! -e "$work/stop" ] && [ "$n" -lt 2000 ]; do
    [[ "$(get)" == hello* ]] || bad=$((bad + 1)); n=$((n + 1))
  done
  echo "$n $bad" > "$work/load"
}
in_pool() { grep -q "^    server $1 " "$work/ha/etc/haproxy.cfg" 2>/dev/null; }
out_of_pool() { ! in_pool "$1"; }

# leave_under_load HOST SERVICE WHAT: stops HOST's SERVICE (what makes it
# leave: its Serf agent, its registration) under continuous traffic. HOST
# must leave the pool, and only then does its app stop: no request fails.
leave_under_load() {
  local loader total bad
  rm -f "$work/stop"; load & loader=$!
  ip netns exec "$tag-$1" s6-svc -d "$work/$1/s6/$2"
  check "$3 removes $1" wait_for 30 out_of_pool "$1"
  ip netns exec "$tag-$1" s6-svc -d "$work/$1/s6/app"
  sleep 2; touch "$work/stop"; wait "$loader"
  read -r total bad < "$work/load"
  echo "   $total requests during the leave, $bad failed"
  check "no failed request during the leave" [ "$bad" = 0 ]
  check "$1 gets no more requests" not_answering "$1"
}
