#!/usr/bin/env bash
# A membership handler against a live master-worker HAProxy, health checks on.
#
#   bash bench/handler.sh                        # N = 1,000 10,000; 7 runs each
#   bash bench/handler.sh --sizes "1000" --runs 3
#   bash bench/handler.sh --smoke                # N = 10, one run (CI, ~30 s)
#
# hacfg's handlers (`hacfg serf`, `hacfg add`/`remove` with --reload and a
# master socket) only tell HAProxy and return; a detached `hacfg settle
# --worker` sets a new server ready after its first health check and deletes
# a drained one once idle. This measures, at N servers (the built-in
# template, unchanged: `check` on every server line, HAProxy's default
# `inter 2s`, `balance roundrobin`):
#   - handler time: wall clock of the whole `hacfg serf` process for
#     member-join, member-leave (idle, and busy: a 3 s request in flight to
#     that server), member-failed, of `hacfg add`, and of `hacfg etcd` for
#     a PUT and a DELETE (run as `etcdctl watch` runs it: the event in
#     ETCD_WATCH_* variables, Go-quoted; no etcd needed);
#   - from the join (handler start) to the first request the new server
#     answers through HAProxy's frontend (curl, polled);
#   - from the leave (handler start) to the server's deletion
#     (`show servers state` on the master socket, polled with socat);
#   - from the handler's start to its worker's exit.
# All addresses are on the loopback: N servers at 127.x.y.z with nothing
# listening (their checks fail, they are DOWN), plus two tiny Python HTTP
# backends on 127.0.0.1 for the servers whose traffic is measured. Every
# server the benchmark measures is the only one UP while it is measured, so
# every request through the frontend goes to it.
#
# --smoke exits 0 only if every handler exited 0 within its deadline, every
# new server answered, every removed one was deleted, and every worker exited
# with nothing left pending.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD

sizes="1000 10000"
runs=7
smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; sizes="10"; runs=1 ;;
    --sizes) sizes="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    *) echo "usage: bench/handler.sh [--smoke] [--sizes \"N ...\"] [--runs R]" >&2; exit 2 ;;
  esac
  shift
done
command_line="bash bench/handler.sh"
[ "$smoke" = 1 ] && command_line+=" --smoke" || command_line+=" --sizes \"$sizes\" --runs $runs"
for tool in haproxy socat curl python3; do
  command -v "$tool" >/dev/null || {
    echo "bench/handler.sh needs haproxy, socat, curl and python3 (apt-get install haproxy socat curl python3)" >&2
    exit 1
  }
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --quiet
hacfg=$(realpath "$CARGO_TARGET_DIR/release/hacfg")
work=$(mktemp -d "${TMPDIR:-/tmp}/hacfg-bench-handler.XXXXXX")

# Deadlines (seconds). The first answer takes about one `inter` (2 s), a
# busy server's deletion about 3 s (its request in flight).
ANSWER_S=15; GONE_S=15; WORKER_S=20; START_S=60
[ "$smoke" = 0 ] || { ANSWER_S=8; GONE_S=8; WORKER_S=10; START_S=20; }

pids=()      # process groups: HAProxy (setsid)
bgpids=()    # plain children: backends, in-flight curls
cleanup() {
  set +e
  local p
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null; done
  for p in "${bgpids[@]}"; do kill "$p" 2>/dev/null; done
  # Workers run in a session of their own: found by their nodes folder.
  for p in $(workers "$work/"); do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# workers PREFIX: the pids of `hacfg settle --worker` on a nodes folder under PREFIX.
workers() {
  local p args c
  for p in /proc/[0-9]*; do
    args=()
    { mapfile -d '' -t args < "$p/cmdline"; } 2>/dev/null || continue
    [ "${#args[@]}" -gt 0 ] || continue
    c=" ${args[*]} "
    [[ "${args[0]}" == "$hacfg" && "$c" == *" settle --worker "* && "$c" == *" --nodes-dir $1"* ]] \
      && echo "${p#/proc/}"
  done
  return 0
}

commas() { local s=$1 r=""; while [ ${#s} -gt 3 ]; do r=",${s: -3}$r"; s=${s:0:${#s}-3}; done; echo "$s$r"; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# stats US...: "median (min-max)" in ms of microsecond samples; "-" for none.
stats() {
  [ $# -gt 0 ] || { echo "-"; return; }
  printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
    m = a[int((NR + 1) / 2)] / 1000; lo = a[1] / 1000; hi = a[NR] / 1000
    f = (hi < 100) ? "%.1f" : "%.0f"
    if (NR == 1) printf f, m; else printf f " (" f "-" f ")", m, lo, hi }'
}
median_ms() { [ $# -gt 0 ] || { echo "-"; return; }; printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { printf "%.0f", a[int((NR + 1) / 2)] / 1000 }'; }

# The backends: HTTP/1.0, the body is the server's name; /slow answers
# after 3 s. Each exits by itself when this script is gone.
cat > "$work/backend.py" <<'EOF'
import http.server, os, sys, threading, time
name, portfile = sys.argv[1], sys.argv[2]
parent = os.getppid()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a): pass
    def reply(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self): self.reply()
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(3)
        self.reply()
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
os.rename(portfile + ".tmp", portfile)
def watchdog():
    start = time.time()
    while os.getppid() == parent and time.time() - start < 7200:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watchdog, daemon=True).start()
s.serve_forever()
EOF
# start_backend NAME: starts it (not in a subshell: it watches its parent)
# and sets $port to its port.
start_backend() {
  python3 "$work/backend.py" "$1" "$work/$1.port" >/dev/null 2>&1 &
  bgpids+=($!)
  local i
  for ((i = 0; i < 200; i++)); do
    [ -s "$work/$1.port" ] && { port=$(<"$work/$1.port"); return 0; }
    sleep 0.05
  done
  echo "backend $1 did not start" >&2; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_backend web-a; port_a=$port   # joins through `hacfg serf`; later fails
start_backend web-b; port_b=$port   # added with `hacfg add`; leaves busy

n=-; run=-
failures=()
fail() { failures+=("N=$n run $run: $*"); echo "FAIL: N=$n run $run: $*" >&2; }

cli() { timeout 30 socat -t 10 stdio "unix-connect:$sock" <<<"$1"; }

# until_gone NAME T0: polls `show servers state` until NAME is gone; prints
# the time (us) from T0 and the number of polls that still saw it, or
# nothing at the deadline.
until_gone() {
  local name=$1 t0=$2 end=$(($(now_us) + GONE_S * 1000000)) t seen=0
  while [ "$(now_us)" -lt "$end" ]; do
    t=$(now_us)
    if cli "@1 show servers state nodes" > "$d/state.out" 2>/dev/null \
       && grep -q '^1$' "$d/state.out"; then
      awk -v s="$name" '$4 == s { found = 1 } END { exit !found }' "$d/state.out" \
        || { echo "$((t - t0)) $seen"; return 0; }
      seen=$((seen + 1))
    fi
    sleep 0.05
  done
}

# until_answer NAME T0: polls the frontend with curl until NAME answers;
# prints the time (us) from T0, or nothing at the deadline.
until_answer() {
  local name=$1 t0=$2 end=$(($(now_us) + ANSWER_S * 1000000)) body t
  while [ "$(now_us)" -lt "$end" ]; do
    body=$(curl -s -m 2 "http://127.0.0.1:$front/" 2>/dev/null || true)
    t=$(now_us)
    [ "$body" = "$name" ] && { echo $((t - t0)); return 0; }
    sleep 0.02
  done
}

# until_settled T0: waits until no worker runs on the folder and nothing is
# pending; prints the time (us) from T0, or nothing at the deadline.
until_settled() {
  local t0=$1 end=$(($(now_us) + WORKER_S * 1000000)) t
  while [ "$(now_us)" -lt "$end" ]; do
    t=$(now_us)
    if [ -z "$(workers "$nodes")" ] && [ ! -e "$nodes/.hacfg.pending" ]; then
      echo $((t - t0)); return 0
    fi
    sleep 0.05
  done
}

# handler VAR -- COMMAND...: runs one handler, stdin from $line; appends
# its wall time (us) to the array VAR and sets t0 to its start.
handler() {
  local -n into=$1; shift 2
  local rc=0 t1
  t0=$(now_us)
  "$@" <<<"$line" >/dev/null 2>>"$d/hacfg.err" || rc=$?
  t1=$(now_us)
  into+=($((t1 - t0)))
  [ "$rc" = 0 ] || fail "$label: hacfg exited $rc: $(tail -n 3 "$d/hacfg.err" | tr '\n' ' ')"
}

# record VAR VALUE WHAT: appends VALUE's first word to the array VAR, or
# records a failure.
record() {
  local -n into=$1
  if [ -n "$2" ]; then into+=("${2%% *}"); else fail "$3: deadline passed"; fi
}

# gone VAR NAME T0 WHAT: until_gone, recorded in VAR; counts in $by_handler
# the runs where the handler itself had deleted the server (the first poll,
# right after it returned, found it gone).
gone() {
  local r
  r=$(until_gone "$2" "$3")
  record "$1" "$r" "$4"
  [ "${r#* }" = 0 ] && by_handler=$((by_handler + 1))
  last_gone=${r%% *}
  return 0
}

# cost COMMAND: the median wall time (ms) of 3 answers to COMMAND.
cost() {
  local i s e t=()
  for i in 1 2 3; do
    s=$(now_us); cli "$1" > /dev/null 2>&1 || true; e=$(now_us); t+=($((e - s)))
  done
  median_ms "${t[@]}"
}

# scur NAME: the sessions on server NAME now (show stat), or 0.
scur() {
  cli "@1 show stat" > "$d/stat.out" 2>/dev/null || { echo 0; return; }
  awk -F, -v s="$1" '$1 == "nodes" && $2 == s { print $5; found = 1 } END { if (!found) print 0 }' "$d/stat.out"
}

echo "hacfg handler benchmark: $(nproc) cores, $(uname -sr), $(haproxy -v | sed -n 1p | cut -d' ' -f1-3), built-in template (check, inter 2s), runs=$runs, $(date -u +%Y-%m-%d)"
echo "command: $command_line"
echo
table=()
for n in $sizes; do
  d="$work/n$n"; nodes="$d/nodes"; sock="$d/master.sock"; mkdir -p "$nodes"
  run=0
  awk -v n="$n" -v dir="$nodes" 'BEGIN { for (i = 0; i < n; i++) {
    name = sprintf("web-%06d", i); f = dir "/" name
    printf "%s 127.%d.%d.%d:8080\n", name, int(i / 65536) % 256 + 1, int(i / 256) % 256, i % 256 > f
    close(f) } }'
  sync; sleep 2.1   # a steady state: node files older than the index's window
  front=$(free_port)
  vars=(--var "frontend_bind=127.0.0.1:$front" --var "stats_bind=127.0.0.1:$(free_port)"
        --var "stats_socket=$d/admin.sock" --var "state_file=$d/state")
  h=("$hacfg" --quiet --nodes-dir "$nodes" --output "$d/haproxy.cfg" "${vars[@]}")
  "${h[@]}" --no-check render
  "${h[@]}" --no-check --force render
  rt=("${h[@]}" --reload --master-socket "$sock")

  setsid haproxy -W -S "$sock" -f "$d/haproxy.cfg" >"$d/haproxy.log" 2>&1 &
  pids+=($!)
  end=$(($(now_us) + START_S * 1000000)); up=0
  while [ "$(now_us)" -lt "$end" ]; do
    cli "show proc" > "$d/proc.out" 2>/dev/null && grep -q worker "$d/proc.out" && { up=1; break; }
    sleep 0.1
  done
  [ "$up" = 1 ] || { fail "haproxy did not start"; break; }
  # Every dead server DOWN by its first check (HAProxy starts them UP).
  down=0
  while [ "$(now_us)" -lt "$end" ]; do
    if cli "@1 show stat" > "$d/stat.out" 2>/dev/null && grep -q '^nodes,' "$d/stat.out" \
       && awk -F, '$1 == "nodes" && $2 != "BACKEND" && $18 !~ /^DOWN/ { up++ } END { exit up > 0 }' "$d/stat.out"; then
      down=1; break
    fi
    sleep 0.2
  done
  [ "$down" = 1 ] || fail "the dead servers were not all DOWN within ${START_S}s"
  reloads0=$(cli "show proc" | awk '$2 == "master" { print $3 }') || true

  h_join=(); h_add=(); h_idle=(); h_busy=(); h_failed=()
  a_join=(); a_add=(); g_idle=(); g_busy=(); g_failed=(); after_busy=()
  by_idle=0; by_busy=0; by_failed=0
  w_join=(); w_add=(); w_idle=(); w_busy=(); w_failed=()
  h_put=(); a_put=(); w_put=(); h_del=(); g_del=(); w_del=(); by_del=0
  rev=1   # the etcd revision of the next event
  line_a=$'web-a\t127.0.0.1\tbackend\trole=backend,port='"$port_a"
  for ((run = 1; run <= runs; run++)); do
    # 1. member-join of web-a: handler, first answer, worker gone.
    label="member-join"; line=$line_a
    SERF_EVENT=member-join handler h_join -- "${rt[@]}" serf
    s=$t0
    record a_join "$(until_answer web-a "$s")" "join: first answer from web-a"
    record w_join "$(until_settled "$s")" "join: settle (no worker, nothing pending)"
    # 2. member-leave of web-a, idle.
    label="member-leave idle"
    SERF_EVENT=member-leave handler h_idle -- "${rt[@]}" serf
    s=$t0
    by_handler=0; gone g_idle web-a "$s" "idle leave: deletion of web-a"; by_idle=$((by_idle + by_handler))
    record w_idle "$(until_settled "$s")" "idle leave: settle (no worker, nothing pending)"
    # 3. hacfg add of web-b: handler, first answer.
    label="add"; line=""
    handler h_add -- "${rt[@]}" add web-b "127.0.0.1:$port_b"
    s=$t0
    record a_add "$(until_answer web-b "$s")" "add: first answer from web-b"
    record w_add "$(until_settled "$s")" "add: settle (no worker, nothing pending)"
    # 4. member-leave of web-b with a 3 s request in flight to it.
    rm -f "$d/slow.done"
    ( code=$(curl -s -o /dev/null -w '%{http_code}' -m 15 "http://127.0.0.1:$front/slow" 2>/dev/null) || true
      echo "$(now_us) ${code:-none}" > "$d/slow.done" ) &
    slowpid=$!; bgpids+=($slowpid)
    end=$(($(now_us) + 3000000)); busy=0
    while [ "$(now_us)" -lt "$end" ]; do
      [ "$(scur web-b)" -ge 1 ] && { busy=1; break; }
      sleep 0.02
    done
    [ "$busy" = 1 ] || fail "busy leave: the slow request never reached web-b"
    label="member-leave busy"; line=$'web-b\t127.0.0.1\tbackend\trole=backend,port='"$port_b"
    SERF_EVENT=member-leave handler h_busy -- "${rt[@]}" serf
    s=$t0
    by_handler=0; last_gone=""
    gone g_busy web-b "$s" "busy leave: deletion of web-b"; by_busy=$((by_busy + by_handler))
    gone=$last_gone
    record w_busy "$(until_settled "$s")" "busy leave: settle (no worker, nothing pending)"
    wait "$slowpid" 2>/dev/null || true
    read -r slow_end slow_code < "$d/slow.done" || { slow_end=""; slow_code="none"; }
    [ "$slow_code" = 200 ] || fail "busy leave: the request in flight got $slow_code, not 200"
    [ -n "$gone" ] && [ -n "$slow_end" ] && after_busy+=($((s + gone - slow_end)))
    # 5. web-a joins again (not timed), then member-failed.
    label="member-join (again)"; line=$line_a; scratch=()
    SERF_EVENT=member-join handler scratch -- "${rt[@]}" serf
    s=$t0
    [ -n "$(until_answer web-a "$s")" ] || fail "join again: no answer from web-a"
    [ -n "$(until_settled "$s")" ] || fail "join again: settle (no worker, nothing pending)"
    label="member-failed"
    SERF_EVENT=member-failed handler h_failed -- "${rt[@]}" serf
    s=$t0
    by_handler=0; gone g_failed web-a "$s" "failed: deletion of web-a"; by_failed=$((by_failed + by_handler))
    record w_failed "$(until_settled "$s")" "failed: settle (no worker, nothing pending)"
    # 6. etcd: a PUT of web-a, then its DELETE (idle).
    label="etcd PUT"; line=""; key='"/hacfg/nodes/web-a"'
    ETCD_WATCH_KEY=$key ETCD_WATCH_REVISION=$((rev++)) ETCD_WATCH_EVENT_TYPE='"PUT"' ETCD_WATCH_VALUE="\"127.0.0.1:$port_a\"" \
      handler h_put -- "${rt[@]}" etcd
    s=$t0
    record a_put "$(until_answer web-a "$s")" "etcd PUT: first answer from web-a"
    record w_put "$(until_settled "$s")" "etcd PUT: settle (no worker, nothing pending)"
    label="etcd DELETE"
    ETCD_WATCH_KEY=$key ETCD_WATCH_REVISION=$((rev++)) ETCD_WATCH_EVENT_TYPE='"DELETE"' ETCD_WATCH_VALUE='""' \
      handler h_del -- "${rt[@]}" etcd
    s=$t0
    by_handler=0; gone g_del web-a "$s" "etcd DELETE: deletion of web-a"; by_del=$((by_del + by_handler))
    record w_del "$(until_settled "$s")" "etcd DELETE: settle (no worker, nothing pending)"
  done
  run=end
  reloads1=$(cli "show proc" | awk '$2 == "master" { print $3 }') || true
  cost_state=$(cost "@1 show servers state nodes"); cost_stat=$(cost "@1 show stat nodes 4 -1")
  [ -n "$reloads0" ] && [ "$reloads1" = "$reloads0" ] || fail "HAProxy reloaded during the runs (show proc: ${reloads0:-?} then ${reloads1:-?})"
  [ -z "$(workers "$nodes")" ] || fail "a worker is still running: $(workers "$nodes" | tr '\n' ' ')"
  [ ! -e "$nodes/.hacfg.pending" ] || fail "work still pending: $(tr -d '\n ' < "$nodes/.hacfg.pending")"
  nn=$(commas "$n")
  table+=("| $nn | \`serf\` member-join | $(stats "${h_join[@]}") | first answer through HAProxy | $(stats "${a_join[@]}") | $(median_ms "${w_join[@]}") |")
  table+=("| $nn | \`add\` | $(stats "${h_add[@]}") | first answer through HAProxy | $(stats "${a_add[@]}") | $(median_ms "${w_add[@]}") |")
  table+=("| $nn | \`serf\` member-leave, idle | $(stats "${h_idle[@]}") | deleted (by the handler itself in $by_idle/$runs runs) | $(stats "${g_idle[@]}") | $(median_ms "${w_idle[@]}") |")
  table+=("| $nn | \`serf\` member-leave, busy (3 s request in flight) | $(stats "${h_busy[@]}") | deleted ($(median_ms "${after_busy[@]}") ms after that request's answer; by the handler in $by_busy/$runs) | $(stats "${g_busy[@]}") | $(median_ms "${w_busy[@]}") |")
  table+=("| $nn | \`serf\` member-failed | $(stats "${h_failed[@]}") | deleted (by the handler itself in $by_failed/$runs runs) | $(stats "${g_failed[@]}") | $(median_ms "${w_failed[@]}") |")
  table+=("| $nn | \`etcd\` PUT (a new key) | $(stats "${h_put[@]}") | first answer through HAProxy | $(stats "${a_put[@]}") | $(median_ms "${w_put[@]}") |")
  table+=("| $nn | \`etcd\` DELETE, idle | $(stats "${h_del[@]}") | deleted (by the handler itself in $by_del/$runs runs) | $(stats "${g_del[@]}") | $(median_ms "${w_del[@]}") |")
  table+=("| $nn | reloads during the runs: $((${reloads1:-0} - ${reloads0:-0})); socat round trips: \`show servers state nodes\` $cost_state ms, \`show stat nodes 4 -1\` $cost_stat ms | | | | |")
  kill -- "-${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
  rm -rf "$d"
done

echo "| N | handler | handler wall time, ms: median (range) | until | handler start to that, ms: median (range) | no worker left, nothing pending, ms (median) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
echo
if [ "${#failures[@]}" -gt 0 ]; then
  echo "bench/handler: ${#failures[@]} failure(s):"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
echo "bench/handler: done"
