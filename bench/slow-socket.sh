#!/usr/bin/env bash
# Membership handlers while HAProxy's `show stat` is slow and a drain is pending.
#
#   bash bench/slow-socket.sh                      # N = 1,000, show stat slowed to 2 s, 5 runs
#   bash bench/slow-socket.sh --size 1000 --delay 2 --runs 5 --hacfg /path/to/hacfg
#   bash bench/slow-socket.sh --smoke              # N = 10, 0.5 s, one run (~40 s)
#   bash bench/slow-socket.sh --every --delay 4 --runs 1   # every answer 4 s late, no drain pending
#
# A master-worker HAProxy runs N servers (the built-in template: `check`, `inter 2s`; N dead
# ones on 127.x.y.z, DOWN). hacfg talks to it through a socket of this script's own in front of
# the master socket (a small Python relay) that delays every answer to `show stat` by --delay
# seconds, as an HAProxy busy with 10,000s of servers or a loaded machine would. A server with a
# long request in flight is removed first, so its drain stays pending and a detached worker
# polls `show stat` throughout. Then, each run: `hacfg serf` member-join of web-a, a pause
# (web-a's first check runs, so the worker has work due), member-leave of web-a, a pause.
# Reported: each handler's wall clock. Before the run budget and the worker's read-then-act,
# a handler could wait for the worker's `show stat` under the folder lock as well as its own.
#
# --every delays every answer, not only `show stat`, and leaves out the pending drain: with the
# default --socket-timeout (5 s) and --delay 4, each exchange of a run comes just in time.
# --hacfg PATH measures that binary instead of building this tree (to compare two builds).
# --smoke exits 0 only if every handler exited 0 and the pending drain was there throughout.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD

n=1000; delay=2; runs=5; smoke=0; hacfg=""; every=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; n=10; delay=0.5; runs=1 ;;
    --size) n="$2"; shift ;;
    --delay) delay="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    --hacfg) hacfg="$2"; shift ;;
    --every) every=1 ;;
    *) echo "usage: bench/slow-socket.sh [--smoke] [--size N] [--delay SECS] [--runs R] [--hacfg PATH]" >&2; exit 2 ;;
  esac
  shift
done
for tool in haproxy socat curl python3; do
  command -v "$tool" >/dev/null || {
    echo "bench/slow-socket.sh needs haproxy, socat, curl and python3" >&2
    exit 1
  }
done
if [ -z "$hacfg" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
  cargo build --release --quiet
  hacfg="$CARGO_TARGET_DIR/release/hacfg"
fi
hacfg=$(realpath "$hacfg")
work=$(mktemp -d "${TMPDIR:-/tmp}/hacfg-bench-slow.XXXXXX")
d="$work"; nodes="$d/nodes"; sock="$d/master.sock"; slow="$d/slow.sock"; mkdir -p "$nodes"
# How long the request in flight lasts: longer than all the runs.
busy_s=$(( runs * 15 + 30 ))

pids=(); bgpids=()
cleanup() {
  set +e
  local p
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null; done
  for p in "${bgpids[@]}"; do kill "$p" 2>/dev/null; done
  for p in /proc/[0-9]*; do
    grep -qa -- "--nodes-dir" "$p/cmdline" 2>/dev/null && grep -qa "settle" "$p/cmdline" 2>/dev/null \
      && grep -qa -- "$nodes" "$p/cmdline" 2>/dev/null && kill "${p#/proc/}" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
stats() {
  [ $# -gt 0 ] || { echo "-"; return; }
  printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
    m = a[int((NR + 1) / 2)] / 1000; lo = a[1] / 1000; hi = a[NR] / 1000
    if (NR == 1) printf "%.0f", m; else printf "%.0f (%.0f-%.0f)", m, lo, hi }'
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cli() { timeout 30 socat -t 10 stdio "unix-connect:$sock" <<<"$1"; }

# The relay: the whole command (hacfg half-closes after it), `show stat` held --delay seconds,
# then HAProxy's answer back. Exits with this script.
cat > "$work/relay.py" <<'EOF'
import os, socket, sys, threading, time
listen, upstream, delay, every = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
parent = os.getppid()
def serve(c):
    try:
        data = b""
        while True:
            b = c.recv(65536)
            if not b: break
            data += b
        if every or b"show stat" in data:
            time.sleep(delay)
        u = socket.socket(socket.AF_UNIX); u.connect(upstream); u.sendall(data); u.shutdown(socket.SHUT_WR)
        while True:
            b = u.recv(65536)
            if not b: break
            c.sendall(b)
        u.close()
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket(socket.AF_UNIX); s.bind(listen); s.listen(64)
def watchdog():
    while os.getppid() == parent: time.sleep(1)
    os._exit(0)
threading.Thread(target=watchdog, daemon=True).start()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
# The backends: the body is the name; /slow answers after BUSY seconds.
cat > "$work/backend.py" <<'EOF'
import http.server, os, sys, threading, time
name, portfile, busy = sys.argv[1], sys.argv[2], float(sys.argv[3])
parent = os.getppid()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/slow"): time.sleep(busy)
        body = name.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
open(portfile + ".tmp", "w").write(str(s.server_address[1])); os.rename(portfile + ".tmp", portfile)
def watchdog():
    while os.getppid() == parent: time.sleep(1)
    os._exit(0)
threading.Thread(target=watchdog, daemon=True).start()
s.serve_forever()
EOF
start_backend() {
  python3 "$work/backend.py" "$1" "$work/$1.port" "$busy_s" >/dev/null 2>&1 &
  bgpids+=($!)
  local i
  for ((i = 0; i < 200; i++)); do
    [ -s "$work/$1.port" ] && { port=$(<"$work/$1.port"); return 0; }
    sleep 0.05
  done
  echo "backend $1 did not start" >&2; exit 1
}
start_backend web-a; port_a=$port
start_backend web-b; port_b=$port

failures=()
fail() { failures+=("$*"); echo "FAIL: $*" >&2; }

awk -v n="$n" -v dir="$nodes" 'BEGIN { for (i = 0; i < n; i++) {
  name = sprintf("web-%06d", i); f = dir "/" name
  printf "%s 127.%d.%d.%d:8080\n", name, int(i / 65536) % 256 + 1, int(i / 256) % 256, i % 256 > f
  close(f) } }'
sync; sleep 2.1
front=$(free_port)
vars=(--var "frontend_bind=127.0.0.1:$front" --var "stats_bind=127.0.0.1:$(free_port)"
      --var "stats_socket=$d/admin.sock" --var "state_file=$d/state")
h=("$hacfg" --quiet --nodes-dir "$nodes" --output "$d/haproxy.cfg" "${vars[@]}")
"${h[@]}" --no-check render
"${h[@]}" --no-check --force render
rt=("${h[@]}" --reload --master-socket "$slow" --log-file "$d/hacfg.log" --drain-timeout 600)

setsid haproxy -W -S "$sock" -f "$d/haproxy.cfg" >"$d/haproxy.log" 2>&1 &
pids+=($!)
end=$(($(now_us) + 60000000)); up=0
while [ "$(now_us)" -lt "$end" ]; do
  cli "show proc" 2>/dev/null | grep -q worker && { up=1; break; }
  sleep 0.1
done
[ "$up" = 1 ] || { echo "haproxy did not start" >&2; exit 1; }
python3 "$work/relay.py" "$slow" "$sock" "$delay" "$every" >/dev/null 2>&1 &
bgpids+=($!)
for ((i = 0; i < 100; i++)); do [ -S "$slow" ] && break; sleep 0.05; done
# Every dead server DOWN (HAProxy starts them UP).
while [ "$(now_us)" -lt "$end" ]; do
  cli "@1 show stat" > "$d/stat.out" 2>/dev/null && grep -q '^nodes,' "$d/stat.out" \
    && awk -F, '$1 == "nodes" && $2 != "BACKEND" && $18 !~ /^DOWN/ { up++ } END { exit up > 0 }' "$d/stat.out" \
    && break
  sleep 0.2
done

# The pending drain: web-b added, a long request in flight to it, then removed.
if [ "$every" = 0 ]; then
  "${rt[@]}" add web-b "127.0.0.1:$port_b" 2>>"$d/hacfg.err" || fail "add web-b exited $?"
  end=$(($(now_us) + 30000000))
  until [ "$(curl -s -m 2 "http://127.0.0.1:$front/" 2>/dev/null)" = web-b ]; do
    [ "$(now_us)" -lt "$end" ] || { fail "web-b never answered"; break; }
    sleep 0.1
  done
  curl -s -o /dev/null -m $((busy_s + 5)) "http://127.0.0.1:$front/slow" >/dev/null 2>&1 &
  bgpids+=($!)
  sleep 0.5
  "${rt[@]}" remove web-b 2>>"$d/hacfg.err" || fail "remove web-b exited $?"
  grep -q web-b "$nodes/.hacfg.pending" 2>/dev/null || fail "web-b's drain is not pending"
fi
j=(); l=()
line=$'web-a\t127.0.0.1\tbackend\trole=backend,port='"$port_a"
timed() {
  local -n into=$1; shift
  local t0 t1 rc=0
  t0=$(now_us)
  SERF_EVENT=$1 "${rt[@]}" serf <<<"$line" >/dev/null 2>>"$d/hacfg.err" || rc=$?
  t1=$(now_us)
  into+=($((t1 - t0)))
  [ "$rc" = 0 ] || fail "$1: hacfg exited $rc: $(tail -n 2 "$d/hacfg.err" | tr '\n' ' ')"
}
for ((run = 1; run <= runs; run++)); do
  timed j member-join
  sleep 3     # web-a's first check runs: the worker has work due
  timed l member-leave
  sleep 1
done
[ "$every" = 1 ] || grep -q web-b "$nodes/.hacfg.pending" 2>/dev/null \
  || fail "web-b's drain was not pending throughout"

echo "hacfg slow-socket benchmark: $(nproc) cores, $(uname -sr), $(haproxy -v | sed -n 1p | cut -d' ' -f1-3), N=$n, $([ "$every" = 1 ] && echo "every answer" || echo "show stat") +${delay}s, runs=$runs, $(date -u +%Y-%m-%d)"
echo "binary: $hacfg"
echo
slowed=$([ "$every" = 1 ] && echo "every answer" || echo "show stat, a drain pending")
echo "| N | slowed | delay | handler | wall time, ms: median (range) |"
echo "|---|---|---|---|---|"
echo "| $n | $slowed | ${delay} s | \`serf\` member-join (web-a) | $(stats "${j[@]}") |"
echo "| $n | $slowed | ${delay} s | \`serf\` member-leave (web-a) | $(stats "${l[@]}") |"
echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "bench/slow-socket: ${#failures[@]} failure(s):"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
echo "bench/slow-socket: done"
