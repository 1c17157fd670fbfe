#!/usr/bin/env bash
# The lab, run for real: Linux network namespaces instead of Docker, and
# the files in this folder themselves (their s6 run scripts, their
# environment). Needs root, haproxy, serf, s6, node and a built hacfg.
#
#   sudo bash examples/lab/test-netns.sh [path/to/hacfg]
#
# Topology: a bridge in a namespace of its own, one balancer namespace (the
# `ha` image's services under s6-svscan: HAProxy in master-worker mode, the
# Serf agent with `hacfg serf`, the periodic `hacfg sync`), web app
# namespaces (the `webapp` image's services: the Node app and its Serf
# agent), and a client namespace that sends requests through the balancer.
# Addresses 10.213.0.0/24 exist only inside these namespaces; nothing in the
# root namespace routes to them. Prints `N passed, M failed`; exits non-zero
# on any failure; removes every namespace, process and file it made.
set -uo pipefail
lab=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$lab/../.." && pwd)
hacfg=${1:-$root/target/debug/hacfg}
[ "$(id -u)" = 0 ] || { echo "test-netns.sh: needs root (ip netns)" >&2; exit 1; }
for tool in haproxy serf s6-svscan s6-svc node ip; do
  command -v "$tool" >/dev/null || { echo "test-netns.sh: missing $tool" >&2; exit 1; }
done
[ -x "$hacfg" ] || { echo "test-netns.sh: no hacfg at $hacfg (cargo build)" >&2; exit 1; }
# The services find it through PATH, from other folders: an absolute path.
hacfg=$(realpath "$hacfg")

tag="hl$$"                          # namespace and link names of this run
net=10.213.0
work=$(mktemp -d)
mkdir -p "$work/bin"; ln -s "$hacfg" "$work/bin/hacfg"
passed=0 failed=0
hosts=()

# Stops everything in a namespace: s6-svscan brings its services down and
# exits, reaping them; whatever is left after 5 s is killed. (s6 starts each
# service in a session of its own, so a process-group kill would miss them.)
kill_all() {
  local i
  [ -d "$work/$1/s6" ] && ip netns exec "$tag-$1" s6-svscanctl -t "$work/$1/s6" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    [ -z "$(ip netns pids "$tag-$1" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  ip netns pids "$tag-$1" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
}

# A run that failed keeps its logs (each host's s6.log, the balancer's
# init.log and serf.log) and says where they are; a good run removes all.
cleanup() {
  local status=$?
  for h in "${hosts[@]}"; do
    kill_all "$h"
    ip netns del "$tag-$h" 2>/dev/null
  done
  ip netns del "$tag-br" 2>/dev/null
  if [ "$status" = 0 ] && [ "$failed" = 0 ]; then
    rm -rf "$work"
  else
    echo "test-netns.sh: failed; the logs are kept:" >&2
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

# The bridge, in a namespace of its own.
ip netns add "$tag-br"
ip -n "$tag-br" link add br0 type bridge
ip -n "$tag-br" link set br0 up

add_host() {  # add_host NAME LAST_OCTET: a namespace on the bridge
  local h=$1 ns="$tag-$1"
  hosts+=("$h")
  ip netns add "$ns"
  ip link add "$tag-$h" netns "$ns" type veth peer name "v-$h" netns "$tag-br"
  ip -n "$tag-br" link set "v-$h" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$tag-$h" name eth0
  ip -n "$ns" addr add "$net.$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  mkdir -p "$work/$h"
}

start_services() {  # start_services NAME IMAGE ENV...: s6-svscan on the image's services
  local h=$1 image=$2; shift 2
  rm -rf "$work/$h/s6"; cp -r "$lab/$image/services" "$work/$h/s6"
  ip netns exec "$tag-$h" env -i PATH="$work/bin:$PATH" HOME="$work/$h" "$@" \
    setsid s6-svscan "$work/$h/s6" >"$work/$h/s6.log" 2>&1 &
  echo $! > "$work/$h/svscan.pid"
  disown
}

ha_env=(
  HACFG_NODES_DIR="$work/ha/nodes" HACFG_OUTPUT="$work/ha/etc/haproxy.cfg"
  HACFG_RELOAD=true HACFG_MASTER_SOCKET="$work/ha/master.sock"
  HACFG_LOG_FILE="$work/ha/serf.log" HACFG_SERF_ROLE=backend HACFG_ON_FAILED=verify
  HACFG_VARS="stats_socket=$work/ha/admin.sock,state_file=$work/ha/state,server_options=inter 500ms"
  HACFG_SYNC_INTERVAL=2 SERF_BIND="$net.1:7946" SERF_RPC_ADDR=127.0.0.1:7373
  SERF_NODE=ha SERF_PROFILE=lan SERF_JOIN="$net.13"
)
add_host ha 1
add_host client 100
# The ha image runs `hacfg init` when it is built.
env "${ha_env[@]}" HACFG_RELOAD=false "$hacfg" init 2>"$work/ha/init.log" \
  || { cat "$work/ha/init.log"; exit 1; }

# Namespaces share the host name and /etc/hosts, so the Serf node name is
# set here (in Docker the default, host name plus address, is unique).
start_webapp() {  # start_webapp NAME OCTET
  add_host "$1" "$2"
  start_services "$1" webapp APP_DIR="$lab/webapp/app" APP_NAME="$1" APP_PORT=3000 \
    SERF_NODE="$1" SERF_BIND="$net.$2:7946" SERF_RPC_ADDR=127.0.0.1:7373 SERF_JOIN="$net.1"
}
start_services ha ha "${ha_env[@]}"
for i in 1 2 3; do start_webapp "w$i" $((10 + i)); done

get() { ip netns exec "$tag-client" curl -s -m 2 "http://$net.1/" 2>/dev/null; }
servers() { grep -c '^    server ' "$work/ha/etc/haproxy.cfg" 2>/dev/null || echo 0; }
answering() {  # answering NAMES...: all of them answer within 40 requests
  local seen="" i
  for ((i = 0; i < 40; i++)); do seen="$seen $(get)"; done
  for n in "$@"; do [[ "$seen" == *"hello from $n"* ]] || return 1; done
}
not_answering() { local i; for ((i = 0; i < 20; i++)); do [[ "$(get)" != *"hello from $1"* ]] || return 1; done; }

check "all three webapps serve" wait_for 60 answering w1 w2 w3

# A graceful stop of w1's agent (s6-svc -d: SIGINT, a Serf leave) removes it
# from the pool under continuous traffic, with no failed request.
load() {  # requests until $work/stop exists; counts failures
  local bad=0 n=0
  while [ ! -e "$work/stop" ] && [ "$n" -lt 2000 ]; do
    [[ "$(get)" == hello* ]] || bad=$((bad + 1)); n=$((n + 1))
  done
  echo "$n $bad" > "$work/load"
}
rm -f "$work/stop"; load & loader=$!
ip netns exec "$tag-w1" s6-svc -d "$work/w1/s6/serf"
in_pool() { grep -q "^    server $1 " "$work/ha/etc/haproxy.cfg"; }
out_of_pool() { ! in_pool "$1"; }
check "a graceful leave removes w1" wait_for 30 out_of_pool w1
ip netns exec "$tag-w1" s6-svc -d "$work/w1/s6/app"
sleep 2; touch "$work/stop"; wait "$loader"
read -r total bad < "$work/load"
echo "   $total requests during the leave, $bad failed"
check "no failed request during the leave" [ "$bad" = 0 ]
check "w1 gets no more requests" not_answering w1

# kill -9 of w2's agent: Serf declares it failed, but its web app still
# answers, and the balancer runs with HACFG_ON_FAILED=verify: HAProxy's
# checks see it UP, so it stays and serves. (s6 would restart the agent at
# once, and it would rejoin before it is declared failed: `-O` lets the
# service run this once more only.)
ip netns exec "$tag-w2" s6-svc -O "$work/w2/s6/serf"
for p in $(ip netns pids "$tag-w2"); do
  if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = serf ]; then kill -KILL "$p"; break; fi
done
stayed() { grep -q "node \`w2\` stays" "$work/ha/serf.log" 2>/dev/null; }
check "a failed agent whose app serves stays (--on-failed verify)" wait_for 60 stayed
check "... and still serves" answering w2
# Then w2's host goes down: once HAProxy's checks see it DOWN, it goes.
kill_all w2
check "... and goes once HAProxy sees its app down" wait_for 60 out_of_pool w2

# A new webapp joins and serves.
start_webapp w4 14
check "a new webapp joins and serves" wait_for 60 answering w4

# Restarting the balancer's services with a lost folder: sync restores it.
kill_all ha
sleep 1
rm -f "$work/ha/nodes"/* "$work/ha/master.sock"
start_services ha ha "${ha_env[@]}"
# init will not shrink the last config to the emptied folder: HAProxy
# starts on that config at once instead of waiting for sync.
last_config() { grep -q "starting on the last config" "$work/ha/s6.log" 2>/dev/null; }
check "after a restart, HAProxy starts on the last config" wait_for 30 last_config
restored() { [ -e "$work/ha/nodes/w3" ] && [ -e "$work/ha/nodes/w4" ]; }
check "after a restart, sync restores the pool" wait_for 90 restored
check "the restored pool serves" wait_for 60 answering w3 w4

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
