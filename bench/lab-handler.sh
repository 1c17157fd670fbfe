#!/usr/bin/env bash
# A re-creation of the lab's Serf member-join handler, written from the
# description in LAB.md (not the lab's own code), for the benchmark only:
# node files from stdin, then a bash loop over /nodes with one small
# process per node file to build JSON, then handlebars-cmd on the template.
# Like the lab's, it truncates the output before rendering.
# Usage: SERF_EVENT=member-join lab-handler.sh NODES_DIR TEMPLATE OUTPUT HANDLEBARS_JS
nodes=$1 template=$2 output=$3 handlebars=$4
while IFS=$'\t' read -r name ip _role _tags; do
  echo "$name $ip" > "$nodes/$name"
done
json=""
for f in "$nodes"/*; do
  json+=$(awk '{ printf "{\"host\":\"%s\",\"ip\":\"%s\"},", $1, $2 }' "$f")
done
node "$handlebars" --nodes "[${json%,}]" < "$template" > "$output"
