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
lab=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$lab/../.." && pwd)
net=10.213.0 tools="haproxy serf node curl"
# shellcheck source=netns.sh
. "$lab/netns.sh" "${1:-$root/target/debug/hacfg}"

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
  services "$1" "$lab/webapp/services/"*
  start_services "$1" APP_DIR="$lab/webapp/app" APP_NAME="$1" APP_PORT=3000 \
    SERF_NODE="$1" SERF_BIND="$net.$2:7946" SERF_RPC_ADDR=127.0.0.1:7373 SERF_JOIN="$net.1"
}
services ha "$lab/ha/services/"*
start_services ha "${ha_env[@]}"
for i in 1 2 3; do start_webapp "w$i" $((10 + i)); done

check "all three webapps serve" wait_for 60 answering w1 w2 w3

# A graceful stop of w1's agent (s6-svc -d: SIGINT, a Serf leave) removes it
# from the pool under continuous traffic, with no failed request.
leave_under_load w1 serf "a graceful leave"

# kill -9 of w2's agent: Serf declares it failed, but its web app still
# answers, and the balancer runs with HACFG_ON_FAILED=verify: HAProxy's
# checks see it UP, so it stays and serves. (s6 would restart the agent at
# once, and it would rejoin before it is declared failed: `-O` lets the
# service run this once more only.)
ip netns exec "$tag-w2" s6-svc -O "$work/w2/s6/serf"
kill -KILL "$(pid_of w2 serf)"
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
services ha "$lab/ha/services/"*
start_services ha "${ha_env[@]}"
# init will not shrink the last config to the emptied folder: HAProxy
# starts on that config at once instead of waiting for sync.
last_config() { grep -q "starting on the last config" "$work/ha/s6.log" 2>/dev/null; }
check "after a restart, HAProxy starts on the last config" wait_for 30 last_config
restored() { [ -e "$work/ha/nodes/w3" ] && [ -e "$work/ha/nodes/w4" ]; }
check "after a restart, sync restores the pool" wait_for 90 restored
check "the restored pool serves" wait_for 60 answering w3 w4

finish
