#!/usr/bin/env bash
# Quick start: build hacfg, add two nodes to a demo folder, print the config.
# Needs only the Rust toolchain; no root, nothing outside ./target/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
# A first release build takes a minute or more and prints nothing itself.
echo "demo: building hacfg (cargo build --release) ..." >&2
cargo build --quiet --release
hacfg=target/release/hacfg
demo=target/demo
rm -rf "$demo"
export HACFG_NODES_DIR="$demo/nodes" HACFG_OUTPUT="$demo/haproxy.cfg"
# The server-state file `init` creates, here rather than in /var/lib/haproxy.
export HACFG_VARS="state_file=$demo/server-state"
# With HAProxy installed every config is checked with `haproxy -c`; without
# it the demo says so once, instead of hacfg warning at every write.
if ! command -v haproxy >/dev/null; then
  echo "demo: no haproxy installed; configs are not checked (--no-check)" >&2
  export HACFG_NO_CHECK=true
fi
"$hacfg" init
"$hacfg" add s1 172.17.0.3
"$hacfg" add s2 172.17.0.4:8080 --weight 2
"$hacfg" list
echo "--- $HACFG_OUTPUT"
cat "$HACFG_OUTPUT"
