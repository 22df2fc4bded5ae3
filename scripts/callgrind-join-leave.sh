#!/usr/bin/env bash
# Redis' instructions per JOIN+LEAVE pair: the library's meet_join and
# meet_leave against the floor's floor_join and floor_leave (a minimal Lua
# doing the same Redis work, see src/bin/meetingd-bench/floor.rs), each on a
# redis-server of its own run under callgrind. Instruction counts do not
# depend on what else the machine is doing, so two libraries compare
# exactly (a library from another build: --library FILE, written by that
# build's `meetingd library --partitions 16`).
#
# With --op post, the same for POST: 1,000 messages of 40 bytes, by the 100
# users (all joined), against the floor's floor_post. --detail also prints
# the inclusive instructions per request of Redis' own commands and of the
# Lua interpreter, for the last library.
#
# Usage: scripts/callgrind-join-leave.sh [--pairs N] [--op join-leave|post]
#        [--detail] [--library FILE]...
# Needs valgrind and redis-server; builds nothing: run `cargo build --bins`
# first (the Lua is the same in a debug and a release build).
#
# Prints, for each library and the floor: instructions per pair inside
# FCALL (the functions' own cost) and in all (the request's parsing and
# reply too, without Redis' timer, which runs by wall time and so more
# often under valgrind).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
pairs=1000
op=join-leave
detail=false
libraries=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) pairs=$2; shift 2 ;;
    --library) libraries+=("$2"); shift 2 ;;
    --op) op=$2; shift 2 ;;
    --detail) detail=true; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

bin=target/debug
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/meetingd" library --partitions 16 >"$work/current.lua"
"$bin/meetingd-bench" floor-library >"$work/floor.lua"
[ "${#libraries[@]}" -gt 0 ] || libraries=("$work/current.lua")

# What one Redis is given before the measured calls: the library and the
# floor, meeting 1 (private, partition 1 of 16) with an audience of 100
# users, one instance running since a minute ago.
setup() {
  local cli=$1 library=$2 now=$3
  $cli -x FUNCTION LOAD REPLACE <"$library" >/dev/null
  $cli -x FUNCTION LOAD REPLACE <"$work/floor.lua" >/dev/null
  $cli FCALL meet_layout 1 'meetingd:{layout}:partitions' 16 >/dev/null
  $cli FCALL meet_meeting_set 1 'meetingd:{p1}:meeting:1' Bench Bench false >/dev/null
  for u in $(seq 1 100); do
    echo "FCALL meet_audience_add 1 meetingd:{p1}:meeting:1 u$u@example.com"
  done | $cli >/dev/null
  $cli FCALL meet_instance_set 1 'meetingd:{p1}:meeting:1' 1 $((now - 60000)) $((now + 3600000)) \
    $((now - 120000)) >/dev/null
  $cli FCALL meet_tick 1 'meetingd:{p1}:due' "$now" >/dev/null
  if [ "$op" = post ]; then
    for u in $(seq 1 100); do
      echo "FCALL meet_join 1 meetingd:{p1}:meeting:1 \"\" $u u$u@example.com $now"
    done | $cli >/dev/null
  fi
}

# The requests: `pairs` joins and leaves, users 1..100 in turn, each call a
# millisecond after the one before (so each takes a fresh id).
requests() {
  local kind=$1 now=$2
  awk -v kind="$kind" -v op="$op" -v n="$pairs" -v now="$now" 'BEGIN {
    k = "meetingd:{p1}:meeting:1"
    for (i = 0; i < n; i++) {
      u = i % 100 + 1; t = now + 2 * i
      text = sprintf("\"message %05d of the measured run, 40 B.\"", i)
      if (op == "post" && kind == "library") {
        printf "FCALL meet_post 1 %s \"\" %d %s %d\n", k, u, text, t
      } else if (op == "post") {
        printf "FCALL floor_post 1 %s 1 %d %s\n", k, u, text
      } else if (kind == "library") {
        printf "FCALL meet_join 1 %s \"\" %d u%d@example.com %d\n", k, u, u, t
        printf "FCALL meet_leave 1 %s \"\" %d %d\n", k, u, t + 1
      } else {
        printf "FCALL floor_join 1 %s 1 %d u%d@example.com %d\n", k, u, u, t
        printf "FCALL floor_leave 1 %s 1 %d\n", k, u
      }
    }
  }'
}

# Inclusive instructions of `function` in a callgrind file.
inclusive() {
  callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
    awk -v f="$2" '!found && $0 ~ ("[?]:" f " ") { gsub(",", "", $1); print $1; found = 1 }'
}

measure() {
  local label=$1 kind=$2 library=$3
  local dir
  dir=$(mktemp -d -p "$work")
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/out" \
    redis-server --port 0 --unixsocket "$dir/redis.sock" --save '' --appendonly no \
    --dir "$dir" >"$dir/valgrind.log" 2>&1 &
  local pid=$!
  local cli="redis-cli -s $dir/redis.sock"
  for _ in $(seq 1 200); do
    $cli ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  local now
  now=$(date +%s%3N)
  setup "$cli" "$library" "$now"
  requests "$kind" "$now" >"$dir/requests"
  # warm up: the first calls fill Lua's memos and Redis' tables
  head -n 100 "$dir/requests" | $cli >/dev/null
  requests "$kind" $((now + 4 * pairs)) >"$dir/requests"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  $cli <"$dir/requests" >"$dir/replies"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  $cli shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
  if grep -q -i -E '^(ERR|BAD_REQUEST|NOT_|INACTIVE|ALREADY)' "$dir/replies"; then
    echo "$label: a call failed:" >&2
    grep -m 3 -i -E '^(ERR|BAD_REQUEST|NOT_|INACTIVE|ALREADY)' "$dir/replies" >&2
    exit 1
  fi
  local file="$dir/out.1"
  local fcall cron total
  fcall=$(inclusive "$file" fcallCommand)
  cron=$(inclusive "$file" serverCron)
  total=$(callgrind_annotate "$file" 2>/dev/null |
    awk '!found && /PROGRAM TOTALS/ { gsub(",", "", $1); print $1; found = 1 }')
  printf '%-40s %12d %12d\n' "$label" $((fcall / pairs)) $(((total - ${cron:-0}) / pairs))
  if [ "$detail" = true ]; then
    local f
    for f in luaRedisGenericCommand xaddCommand spublishCommand zscoreCommand \
      zaddCommand zremCommand hsetCommand hmgetCommand hgetCommand zrangeCommand \
      pexpireatCommand luaV_execute luaD_precall; do
      local n
      n=$(inclusive "$file" "$f")
      if [ -n "$n" ]; then
        printf '    %-36s %12d\n' "$f" $((n / pairs))
      fi
    done
  fi
}

if [ "$op" = post ]; then
  printf '%-40s %12s %12s\n' "instructions per POST" "in FCALL" "in all"
else
  printf '%-40s %12s %12s\n' "instructions per JOIN+LEAVE pair" "in FCALL" "in all"
fi
measure floor floor "${libraries[0]}"
for library in "${libraries[@]}"; do
  measure "library $(basename "$library")" library "$library"
done
