#!/usr/bin/env bash
# The quick start: build meetingd, run it with its own (embedded) Redis, load
# the sample data around the current time, show a few meetingctl commands,
# and keep the daemon running until Ctrl-C.
#
#   bash scripts/demo.sh           interactive: runs until Ctrl-C
#   bash scripts/demo.sh --check   loads, checks, stops (CI uses this)
#
# Everything lives in target/demo (socket, Redis data); delete it to start
# afresh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check=false
[ "${1:-}" = "--check" ] && check=true

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing redis-server"
    DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server </dev/null >/dev/null
  else
    echo "redis-server is missing: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi

echo "==> building"
cargo build --bins --quiet

demo="$PWD/target/demo"
sock="$demo/meetingd.sock"
mkdir -p "$demo"
ctl() { ./target/debug/meetingctl --socket "$sock" "$@"; }

echo "==> starting meetingd (its own redis-server in $demo/data)"
MEETINGD_EMBEDDED__DATA_DIR="$demo/data" ./target/debug/meetingd serve --socket "$sock" \
  2>"$demo/meetingd.log" &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; }
trap stop EXIT

for _ in $(seq 1 100); do
  ctl ping >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "meetingd did not start:" >&2
    cat "$demo/meetingd.log" >&2
    exit 1
  fi
  sleep 0.2
done

echo "==> loading config/sample.json (times moved to around now)"
ctl import --shift-from 2026-01-01T12:00:00Z config/sample.json | tail -1
ctl tick >/dev/null

echo "==> meetingctl --socket $sock active"
ctl active
echo
echo "==> a few joins, a refusal, a chat message"
ctl join 1 1 >/dev/null && echo "Ada joined the town hall"
ctl join 3 2 >/dev/null && echo "Grace joined the reading group"
echo -n "Alan tries the reading group: "; ctl join 2 2 2>&1 || true
ctl post 1 1 "hello, town hall" >/dev/null && echo "Ada said hello"
echo
echo "==> meetingctl --socket $sock participants 1"
ctl participants 1
echo
echo "==> meetingctl --socket $sock messages 1"
ctl messages 1

if $check; then
  active=$(ctl --json active)
  for m in '"meeting":1' '"meeting":2' '"meeting":3'; do
    case "$active" in
      *"$m"*) ;;
      *) echo "demo check failed: $m is not active: $active" >&2; exit 1 ;;
    esac
  done
  echo "==> demo check passed"
  exit 0
fi

cat <<EOT

meetingd is running (pid $pid, log in $demo/meetingd.log). Try:
  ./target/debug/meetingctl --socket $sock help
  ./target/debug/meetingctl --socket $sock attendance
  ./target/debug/meetingctl --socket $sock events 1
  ./target/debug/meetingctl --socket $sock --json stats
Ctrl-C stops it (it drains and stops its redis-server).
EOT
wait "$pid"
