#!/usr/bin/env bash
# One add through HAProxy's runtime API against one add with check + reload,
# against a live master-worker HAProxy, at N servers.
#
#   bash bench/runtime.sh                      # N = 1,000 10,000 100,000
#   bash bench/runtime.sh --sizes "1000"       # chosen sizes
#   bash bench/runtime.sh --smoke              # N = 10, one run each (CI)
#
# Every address is on the loopback (127.x.y.z), and the benchmark's template
# is the built-in one without `check` on server lines and with
# `balance leastconn` (roundrobin takes at most 4,095 active servers): a
# health check every 2 s on 100,000 servers would measure the checks. The
# time to the first answer from a new server is measured apart, with checks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

sizes="1000 10000 100000"
runs=5
smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; sizes="10"; runs=1 ;;
    --sizes) sizes="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    *) echo "usage: bench/runtime.sh [--smoke] [--sizes \"N ...\"] [--runs R]" >&2; exit 2 ;;
  esac
  shift
done
haproxy_bin=$(command -v haproxy || true)
if [ -z "$haproxy_bin" ] || ! command -v socat >/dev/null; then
  echo "bench/runtime.sh needs haproxy and socat (apt-get install haproxy socat)" >&2
  exit 1
fi

cargo build --release --quiet
hacfg="$root/target/release/hacfg"
work="${BENCH_DIR:-${TMPDIR:-/tmp}/hacfg-bench-runtime}"
rm -rf "$work"; mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

sed -e 's/ check weight / weight /' -e 's/balance roundrobin/balance leastconn/' \
  templates/haproxy.cfg.j2 > "$work/bench.j2"

# median_ms RUNS PREPARE COMMAND: the median wall time in ms (3 decimals).
median_ms() {
  local n=$1 prep=$2 cmd=$3 i s e
  for ((i = 0; i < n; i++)); do
    eval "$prep" >/dev/null 2>&1
    s=$EPOCHREALTIME; eval "$cmd" >/dev/null 2>&1; e=$EPOCHREALTIME
    echo $((${e/./} - ${s/./}))
  done | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] / 1000 }'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)); }

# start_haproxy DIR: a master-worker HAProxy on DIR's config; waits for it.
start_haproxy() {
  local d=$1 i
  setsid "$haproxy_bin" -W -S "$d/master.sock" -f "$d/haproxy.cfg" >/dev/null 2>&1 &
  pids+=($!)
  for ((i = 0; i < 600; i++)); do
    echo "show proc" | socat -t 5 stdio "unix-connect:$d/master.sock" 2>/dev/null | grep -q worker && return 0
    sleep 0.1
  done
  echo "haproxy did not start on $d" >&2; exit 1
}

reloads() { echo "show proc" | socat -t 5 stdio "unix-connect:$1/master.sock" | awk '$2 == "master" { print $3 }'; }

echo "hacfg runtime benchmark: $(nproc) cores, $(uname -sr), $("$haproxy_bin" -v | sed -n 1p | cut -d' ' -f1-3), runs=$runs (median), $(date -u +%Y-%m-%d)"
echo
echo "| N | runtime add (ms) | check + reload add (ms) | reload/runtime | render --stdout (ms) | show servers state (ms) | reloads during runtime adds |"
echo "|---|---|---|---|---|---|---|"
for n in $sizes; do
  d="$work/n$n"; nodes="$d/nodes"; mkdir -p "$nodes"
  awk -v n="$n" -v dir="$nodes" 'BEGIN { for (i = 0; i < n; i++) {
    name = sprintf("web-%06d", i); f = dir "/" name
    printf "%s 127.%d.%d.%d:8080\n", name, int(i / 65536) % 256 + 1, int(i / 256) % 256, i % 256 > f
    close(f) } }'
  # A steady state: files flushed and older than the index's racy window.
  sync; sleep 2.1
  vars="--var frontend_bind=127.0.0.1:$(free_port) --var stats_bind=127.0.0.1:$(free_port) --var stats_socket=$d/admin.sock --var state_file=$d/state"
  h="$hacfg --quiet --nodes-dir $nodes --output $d/haproxy.cfg --template $work/bench.j2 $vars"
  $h --no-check render
  $h --no-check --force render   # the index now vouches for every file
  start_haproxy "$d"
  r=$runs; [ "$n" -ge 100000 ] && [ "$runs" -gt 3 ] && r=3
  rt="$h --reload --master-socket $d/master.sock"
  before=$(reloads "$d")
  runtime=$(median_ms "$r" "$rt remove bench-new" "$rt add bench-new 127.255.0.1:8080")
  after=$(reloads "$d")
  reload=$(median_ms "$r" "$rt --apply reload remove bench-new" "$rt --apply reload add bench-new 127.255.0.1:8080")
  $rt --apply reload remove bench-new >/dev/null 2>&1
  render=$(median_ms "$r" ":" "$h render --stdout")
  state=$(median_ms "$r" ":" "echo '@1 show servers state' | socat -t 30 stdio unix-connect:$d/master.sock")
  ratio=$(awk -v a="$reload" -v b="$runtime" 'BEGIN { printf "%.1f×", a / b }')
  echo "| $n | $runtime | $reload | $ratio | $render | $state | $((after - before)) |"
  kill -- "-${pids[-1]}" 2>/dev/null || true
  rm -rf "$d"
done

# From `hacfg add` starting to the first answer of the new server through
# HAProxy: the built-in template (with `check`), one real HTTP backend.
if [ "$smoke" = 0 ]; then
  echo
  echo "| health-check interval | hacfg add returns (ms) | first answer from the new server (ms) |"
  echo "|---|---|---|"
  for inter in "2s (HAProxy's default)" "200ms"; do
    d="$work/first"; rm -rf "$d"; mkdir -p "$d/nodes"
    port=$(free_port); front=$(free_port)
    printf '#!/bin/sh\nprintf "HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nnew"\n' > "$work/reply.sh"
    setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "EXEC:sh $work/reply.sh" 2>/dev/null &
    pids+=($!)
    opts=""; [ "$inter" = "200ms" ] && opts="--var server_options=inter 200ms"
    h="$hacfg --quiet --nodes-dir $d/nodes --output $d/haproxy.cfg --var frontend_bind=127.0.0.1:$front --var stats_bind=127.0.0.1:$(free_port) --var stats_socket=$d/admin.sock --var state_file=$d/state"
    $h ${opts:+--var "server_options=inter 200ms"} render
    start_haproxy "$d"
    s=$EPOCHREALTIME
    ($h ${opts:+--var "server_options=inter 200ms"} --reload --master-socket "$d/master.sock" \
      add new "127.0.0.1:$port"; echo "$EPOCHREALTIME" > "$d/returned") &
    addpid=$!
    first=""
    for ((i = 0; i < 2000; i++)); do
      if body=$(exec 3<>"/dev/tcp/127.0.0.1/$front" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3) \
         && [[ "$body" == *new ]]; then
        first=$EPOCHREALTIME; break
      fi
      sleep 0.005
    done
    wait "$addpid"; e=$(cat "$d/returned")
    ms() { awk -v a="${1/./}" -v b="${2/./}" 'BEGIN { printf "%.0f", (a - b) / 1000 }'; }
    echo "| $inter | $(ms "$e" "$s") | ${first:+$(ms "$first" "$s")} |"
    kill -- "-${pids[-1]}" "-${pids[-2]}" 2>/dev/null || true
  done
fi
echo
echo "bench/runtime: done"
