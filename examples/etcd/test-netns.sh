#!/usr/bin/env bash
# The lab with etcd instead of Serf, run for real in Linux network
# namespaces: the s6 services of this folder and of examples/lab.
# Needs root, haproxy, etcd, etcdctl, s6, node and a built hacfg.
#
#   sudo bash examples/etcd/test-netns.sh [path/to/hacfg]
#
# Topology, on one bridge: three etcd members (services/etcd), one balancer
# (the lab's haproxy service, and services/watch: a `hacfg sync --source
# etcd`, then `etcdctl watch --prefix … -- hacfg etcd` from the next
# revision), web app namespaces (the lab's Node app, and services/register:
# the key under a lease, kept alive), and a client that sends requests
# through the balancer. Addresses 10.214.0.0/24 exist only inside these
# namespaces. Prints `N passed, M failed`; exits non-zero on any failure;
# removes every namespace, process and file it made.
here=$(cd "$(dirname "$0")" && pwd)
lab=$(cd "$here/../lab" && pwd)
root=$(cd "$here/../.." && pwd)
net=10.214.0 tools="haproxy etcd etcdctl node curl"
# shellcheck source=../lab/netns.sh
. "$lab/netns.sh" "${1:-$root/target/debug/hacfg}"

ttl=5                                   # the backends' lease TTL, seconds
prefix=/hacfg/nodes/
endpoints="$net.21:2379,$net.22:2379,$net.23:2379"
cluster="e1=http://$net.21:2380,e2=http://$net.22:2380,e3=http://$net.23:2380"

start_member() {  # start_member I: etcd member eI at .2I
  local h="e$1" ip="$net.2$1"
  services "$h" "$here/services/etcd"
  start_services "$h" ETCD_NAME="$h" ETCD_DATA_DIR="$work/$h/data" \
    ETCD_LISTEN_CLIENT_URLS="http://$ip:2379" ETCD_ADVERTISE_CLIENT_URLS="http://$ip:2379" \
    ETCD_LISTEN_PEER_URLS="http://$ip:2380" ETCD_INITIAL_ADVERTISE_PEER_URLS="http://$ip:2380" \
    ETCD_INITIAL_CLUSTER="$cluster" ETCD_INITIAL_CLUSTER_STATE=new ETCD_INITIAL_CLUSTER_TOKEN="$tag" \
    ETCD_HEARTBEAT_INTERVAL=250 ETCD_ELECTION_TIMEOUT=2500
}
# (A loaded 2-core machine misses etcd's default 100 ms heartbeats: an
# election then cancels the watches. These are etcd's advice for a slow
# network; leases of 5 s stay above the 3.75 s they allow at least.)
for i in 1 2 3; do add_host "e$i" "2$i"; start_member "$i"; done
add_host ha 1
add_host client 100

# etcdctl ARGS...: from the client's namespace, to every member.
ctl() {
  ip netns exec "$tag-client" env ETCDCTL_API=3 etcdctl --endpoints="$endpoints" \
    --dial-timeout=2s --command-timeout=3s "$@"
}
writable() { ctl put /lab/ready "$SECONDS" >/dev/null 2>&1; }
check "three etcd members elect a leader and take writes" wait_for 60 writable

ha_env=(
  HACFG_NODES_DIR="$work/ha/nodes" HACFG_OUTPUT="$work/ha/etc/haproxy.cfg"
  HACFG_RELOAD=true HACFG_MASTER_SOCKET="$work/ha/master.sock"
  HACFG_LOG_FILE="$work/ha/hacfg.log" HACFG_ETCD_PREFIX="$prefix" HACFG_ETCD_TIMEOUT=2
  HACFG_VARS="stats_socket=$work/ha/admin.sock,state_file=$work/ha/state,server_options=inter 500ms"
  ETCDCTL_API=3 ETCDCTL_ENDPOINTS="$endpoints"
)
start_balancer() {
  services ha "$lab/ha/services/haproxy" "$here/services/watch"
  start_services ha "${ha_env[@]}"
}
start_balancer

# Namespaces share the host name: each backend is given its name and address.
start_webapp() {  # start_webapp NAME OCTET
  add_host "$1" "$2"
  services "$1" "$lab/webapp/services/app" "$here/services/register"
  start_services "$1" APP_DIR="$lab/webapp/app" APP_NAME="$1" APP_PORT=3000 \
    ETCDCTL_ENDPOINTS="$endpoints" HACFG_ETCD_PREFIX="$prefix" \
    REGISTER_NAME="$1" REGISTER_ADDRESS="$net.$2" REGISTER_TTL="$ttl"
}
for i in 1 2 3; do start_webapp "w$i" $((10 + i)); done

logged() { grep -q "$1" "$work/ha/hacfg.log" 2>/dev/null; }

check "all three webapps register and serve" wait_for 60 answering w1 w2 w3

# A graceful stop of w1's registration (its lease revoked: etcd deletes the
# key at once) drains and removes it under continuous traffic, with no
# failed request; only then does its app stop.
leave_under_load w1 register "a stopped registration (lease revoked)"

# w2's host loses power: no stop, no revoke. Its lease is no longer renewed,
# etcd deletes the key once the TTL passes, and the watch removes w2.
kill_hard w2
check "w2 still in the pool right after its host died" in_pool w2
check "w2's lease expires (TTL ${ttl}s) and w2 is removed" wait_for $((ttl + 20)) out_of_pool w2
check "... by the watch's DELETE event" logged "etcd: removed node \`w2\`"

# The etcd leader dies: two members keep the quorum, and a new backend's
# registration and the watch go on through them.
leader() {  # the member (e1..e3) that is the leader now
  local url
  url=$(ctl endpoint status -w simple 2>/dev/null | awk -F', ' '$5 == "true" { print $1 }')
  [[ "$url" =~ $net\.2([123]): ]] && echo "e${BASH_REMATCH[1]}"
}
dead=""
known_leader() { dead=$(leader); [ -n "$dead" ]; }  # asked again during an election
check "the etcd leader is known" wait_for 20 known_leader
[ -n "$dead" ] && kill_hard "$dead"
start_webapp w4 14
check "with the leader dead, a new webapp registers and serves" wait_for 60 answering w4 w3
# A restart of a registration is no leave: its lease is not revoked, the
# new run puts the key again under a new lease, and w4 stays.
ip netns exec "$tag-w4" s6-svc -r "$work/w4/s6/register"
sleep 3
check "a restarted registration (s6-svc -r) keeps w4 in the pool" in_pool w4
not_logged() { ! logged "$1"; }
check "... and w4 was never removed" not_logged "removed node \`w4\`"

# The watch misses events while it is down: w3 leaves meanwhile. Started
# again, its sync makes the folder equal to the prefix, and it watches from
# the revision the folder records.
ip netns exec "$tag-ha" s6-svc -wd -T 5000 -d "$work/ha/s6/watch"
ip netns exec "$tag-w3" s6-svc -d "$work/w3/s6/register"
gone() { [ -z "$(ctl get "${prefix}w3" --print-value-only 2>/dev/null)" ]; }
wait_for 20 gone
check "w3 is still in the pool while the watch is down" in_pool w3
ip netns exec "$tag-ha" s6-svc -u "$work/ha/s6/watch"
check "the restarted watch's sync removes w3" wait_for 30 out_of_pool w3
ip netns exec "$tag-w3" s6-svc -u "$work/w3/s6/register"
check "... and its watch, resumed, adds w3 again" wait_for 30 answering w3 w4

# The balancer restarts with its nodes folder emptied: HAProxy starts on
# the last config at once (init will not shrink it), and the watch's sync,
# once HAProxy's master socket answers, restores the pool from etcd.
kill_all ha
rm -f "$work/ha/nodes"/* "$work/ha/master.sock"
start_balancer
last_config() { grep -q "starting on the last config" "$work/ha/s6.log" 2>/dev/null; }
check "after a restart, HAProxy starts on the last config" wait_for 30 last_config
restored() { [ -e "$work/ha/nodes/w3" ] && [ -e "$work/ha/nodes/w4" ]; }
check "after a restart, sync restores the pool from etcd" wait_for 60 restored
check "the restored pool serves" wait_for 60 answering w3 w4

# A second member dies: no quorum. Nothing is removed (no leader, no lease
# expires, and a sync that reads nothing changes nothing), the pool serves,
# and `hacfg sync --source etcd` fails within its deadline.
for i in 1 2 3; do
  [ "e$i" = "$dead" ] || { kill_hard "e$i"; break; }
done
before=$(ls "$work/ha/nodes")
start=$SECONDS
ip netns exec "$tag-ha" env "${ha_env[@]}" "$hacfg" sync --source etcd >"$work/ha/sync.log" 2>&1
status=$?
took=$((SECONDS - start))
echo "   sync without quorum: exit $status after ${took}s: $(tail -n 1 "$work/ha/sync.log")"
check "without quorum, sync fails" [ "$status" != 0 ]
check "... within its deadline (2 x 2 s + 5 s)" [ "$took" -le 10 ]
check "... and changes nothing" [ "$(ls "$work/ha/nodes")" = "$before" ]
sleep $((ttl + 2))
check "without quorum, the pool keeps serving after a TTL" answering w3 w4

finish
