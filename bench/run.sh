#!/usr/bin/env bash
# hacfg's benchmark: whole processes, as a user or Serf runs them.
#
#   bash bench/run.sh                 # N = 10 .. 100,000, hacfg alone
#   bash bench/run.sh --with-lab      # the same, beside the lab's handler
#   bash bench/run.sh --sizes "1000"  # chosen sizes
#   bash bench/run.sh --smoke         # N = 10, one run each (CI)
#
# --with-lab installs handlebars-cmd from npm into the benchmark's folder
# (BENCH_DIR, else $TMPDIR/hacfg-bench), for the lab's handler. Nothing is
# installed without it.
#
# Times are medians of RUNS runs (3×RUNS up to 1,000 nodes, 3 at 100,000;
# 3 for the lab's handler from 1,000 nodes on) after a warm-up, wall clock ($EPOCHREALTIME)
# around the process (fork+exec included, the same for every row); RSS is peak resident
# memory from /usr/bin/time. The floor is one `find -exec cat {} +` reading
# every node file. Node files use the lab's one-line format, which both
# hacfg and the lab's handler read.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

sizes="10 100 1000 10000 100000"
runs=5
smoke=0
lab=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; sizes="10"; runs=1; lab=0 ;;
    --sizes) sizes="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    --with-lab) lab=1 ;;
    --no-lab) lab=0 ;; # the default; kept for old command lines
    *) echo "usage: bench/run.sh [--smoke] [--sizes \"N ...\"] [--runs R] [--with-lab]" >&2; exit 2 ;;
  esac
  shift
done

cargo build --release --quiet
hacfg="$root/target/release/hacfg"
work="${BENCH_DIR:-${TMPDIR:-/tmp}/hacfg-bench}"
mkdir -p "$work"
# A full run keeps its folder (the lab handler's npm install is slow); the
# smoke run leaves nothing behind.
[ "$smoke" = 0 ] || trap 'rm -rf "$work"' EXIT
have_time=0; [ -x /usr/bin/time ] && have_time=1
haproxy_bin=$(command -v haproxy || true)

# The lab's handler (--with-lab) needs handlebars-cmd from npm; without npm
# it is skipped. Without --with-lab, nothing is installed.
handlebars=""
if [ "$lab" = 1 ]; then
  if [ ! -f "$work/npm/node_modules/handlebars-cmd/index.js" ] && command -v npm >/dev/null; then
    (mkdir -p "$work/npm" && cd "$work/npm" && npm install --silent --no-audit --no-fund handlebars-cmd@0.1.4 >/dev/null 2>&1) || true
  fi
  [ -f "$work/npm/node_modules/handlebars-cmd/index.js" ] && handlebars="$work/npm/node_modules/handlebars-cmd/index.js"
  [ -n "$handlebars" ] || echo "note: npm or handlebars-cmd unavailable; the lab handler is skipped" >&2
fi

# median_ms RUNS PREPARE COMMAND: the median wall time in ms (3 decimals).
median_ms() {
  local n=$1 prep=$2 cmd=$3 i s e
  eval "$prep"; eval "$cmd" >/dev/null 2>&1 || true
  for ((i = 0; i < n; i++)); do
    eval "$prep"
    s=$EPOCHREALTIME; eval "$cmd" >/dev/null 2>&1 || true; e=$EPOCHREALTIME
    echo $((${e/./} - ${s/./}))
  done | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] / 1000 }'
}

# rss_mb PREPARE COMMAND: peak RSS in MB, or n/a.
rss_mb() {
  [ "$have_time" = 1 ] || { echo "n/a"; return; }
  eval "$1"
  /usr/bin/time -f %M -o "$work/rss" bash -c "$2" >/dev/null 2>&1 || true
  awk '{ printf "%.1f", $1 / 1024 }' "$work/rss"
}

# make_nodes DIR N: N lab-format node files, then a steady state: their
# data flushed (so no measured fsync pays for writing them) and older than
# hacfg's 2-second "racy" window (so its index may trust them, as it would
# trust any node file that has not changed in the last two seconds).
make_nodes() {
  rm -rf "$1"; mkdir -p "$1"
  awk -v n="$2" -v dir="$1" 'BEGIN { for (i = 0; i < n; i++) {
    name = sprintf("web-%06d", i); f = dir "/" name
    printf "%s 10.%d.%d.%d\n", name, int(i / 65536) % 256, int(i / 256) % 256, i % 256 > f
    close(f) } }'
  sync
  sleep 2.1
}

# join_event FILE: a member-join event with 1,000 new members, as Serf sends it.
awk 'BEGIN { for (i = 0; i < 1000; i++)
  printf "join-%04d\t10.200.%d.%d\tbackend\trole=backend,port=3000\n", i, int(i / 250), i % 250 + 1 }' \
  > "$work/join.txt"
printf 'bench-new\t10.255.0.1\tbackend\trole=backend\n' > "$work/one.txt"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo "hacfg benchmark: $(nproc) cores, $(uname -sr), runs=$runs (median), $(date -u +%Y-%m-%d)"
echo
echo "| N | floor: cat all (ms) | add (ms) | add/floor | render (ms) | render/floor | render RSS (MB) | output (MB) | serf 1,000-join (ms) | lab handler add (ms) | lab/hacfg |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
declare -A render_ms
for n in $sizes; do
  d="$work/n$n"; nodes="$d/nodes"; out="$d/haproxy.cfg"
  make_nodes "$nodes" "$n"
  # Small sizes are quick and noisy: more runs there, fewer at 100,000.
  r=$runs
  [ "$n" -le 1000 ] && [ "$runs" -ge 5 ] && r=$((runs * 3))
  [ "$n" -ge 100000 ] && [ "$runs" -gt 3 ] && r=3
  h="$hacfg --no-check --quiet --nodes-dir $nodes --output $out"
  "$hacfg" --no-check --quiet --nodes-dir "$nodes" --output "$out" render
  floor=$(median_ms "$r" ":" "find $nodes -maxdepth 1 -type f -exec cat {} + >/dev/null")
  # Each run adds a node the live config lacks, so it really writes.
  reset="rm -f $nodes/bench-new $nodes/join-*; $h render"
  add=$(median_ms "$r" "$reset" "$h add bench-new 10.255.0.1")
  render=$(median_ms "$r" ":" "$h --force render")
  render_ms[$n]=$render
  rss=$(rss_mb ":" "$h --force render")
  size=$(awk -v b="$(stat -c %s "$out")" 'BEGIN { printf "%.2f", b / 1048576 }')
  serf=$(median_ms "$r" "$reset" "SERF_EVENT=member-join $h serf < $work/join.txt")
  eval "$reset"
  labcell="skipped"; labratio="-"
  if [ -n "$handlebars" ] && [ "$n" -le 10000 ]; then
    labout="$d/lab.cfg"
    if [ "$n" -ge 10000 ]; then
      # One run: it is slow, and it fails here.
      err=$(cd "$d" && SERF_EVENT=member-join bash "$root/bench/lab-handler.sh" "$nodes" \
            "$root/bench/lab-haproxy.cfg.hb" "$labout" "$handlebars" < "$work/one.txt" 2>&1 >/dev/null | sed -n 1p || true)
      servers=$(grep -c '^    server ' "$labout" || true)
      labcell="fails: ${servers} servers written (${err##*: })"
    else
      lr=$r; [ "$n" -ge 1000 ] && lr=3
      labcell=$(median_ms "$lr" "$reset" \
        "SERF_EVENT=member-join bash $root/bench/lab-handler.sh $nodes $root/bench/lab-haproxy.cfg.hb $labout $handlebars < $work/one.txt")
      labratio="$(ratio "$labcell" "$add")×"
    fi
    rm -f "$nodes/bench-new"
  fi
  echo "| $n | $floor | $add | $(ratio "$add" "$floor") | $render | $(ratio "$render" "$floor") | $rss | $size | $serf | $labcell | $labratio |"
done

if [ -n "$haproxy_bin" ] && [ "$smoke" = 0 ]; then
  echo
  echo "With validation (\`haproxy -c\` on the candidate): hacfg's own share of the time"
  echo
  echo "| N | hacfg add, check on (ms) | haproxy -c alone (ms) | hacfg's share |"
  echo "|---|---|---|---|"
  for n in 1000 10000; do
    d="$work/n$n"; nodes="$d/nodes"; out="$d/haproxy.cfg"
    [ -d "$nodes" ] || make_nodes "$nodes" "$n"
    "$hacfg" --no-check --quiet --nodes-dir "$nodes" --output "$out" --force render
    reset="rm -f $nodes/bench-new; $hacfg --no-check --quiet --nodes-dir $nodes --output $out render"
    with=$(median_ms "$runs" "$reset" "$hacfg --quiet --nodes-dir $nodes --output $out add bench-new 10.255.0.1")
    rm -f "$nodes/bench-new"
    alone=$(median_ms "$runs" ":" "$haproxy_bin -c -f $out")
    share=$(awk -v w="$with" -v a="$alone" 'BEGIN { printf "%.1f %%", (w - a) / w * 100 }')
    echo "| $n | $with | $alone | $share |"
  done
fi
echo
echo "bench: done"
