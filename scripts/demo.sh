#!/usr/bin/env bash
# The quick start: build meetingd, run it with its own (embedded) Redis, load
# the sample data around the current time, show a few meetingctl commands,
# print the lines that talk to it, and keep the daemon running until Ctrl-C.
#
#   bash scripts/demo.sh              interactive: runs until Ctrl-C
#   bash scripts/demo.sh --keep       the same, keeping the last run's data
#   bash scripts/demo.sh --check      loads, checks, stops (CI uses this)
#   bash scripts/demo.sh --no-build   uses target/debug/ as it is (tests)
#
# Everything lives in target/demo of this checkout: the socket, the log,
# the Redis data. Each run starts afresh (the data of the run before is
# removed) unless --keep is given, and one run at a time: while another
# runs, this one says so and stops. --check works in target/demo-check
# instead, so it runs beside a demo and never touches its data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

check=false
build=true
keep=false
for arg in "$@"; do
  case $arg in
    --check) check=true ;;
    --keep) keep=true ;;
    --no-build) build=false ;;
    -h | --help)
      sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo.sh: unknown option $arg (--check, --keep, --no-build, --help)" >&2
      exit 2
      ;;
  esac
done
if $check && $keep; then
  echo "demo.sh: --check starts from fresh data: it takes no --keep" >&2
  exit 2
fi

demo="$root/target/demo"
if $check; then
  demo="$root/target/demo-check"
fi
sock="$demo/meetingd.sock"
data="$demo/data"
log="$demo/meetingd.log"
mkdir -p "$demo"

# One demo per checkout at a time: the lock is held by this script alone
# (its children do not inherit it), and released however it ends.
exec 9>"$demo/lock"
if ! flock -n 9; then
  other=$(cat "$demo/pid" 2>/dev/null || echo "?")
  cat >&2 <<EOT
demo.sh: another copy of the demo is running in this checkout (meetingd pid $other,
socket $sock). Talk to it with the lines it printed:
  export PATH="$root/target/debug:\$PATH" MEETINGD_SOCKET__PATH="$sock"
  meetingctl active
or stop it (Ctrl-C where it runs, or kill $other) and run this again.
EOT
  exit 1
fi

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing redis-server"
    DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server </dev/null >/dev/null
  else
    echo "demo.sh: redis-server is missing: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi

if $build; then
  echo "==> building"
  cargo build --bins --quiet
fi
for binary in meetingd meetingctl; do
  if [ ! -x "target/debug/$binary" ]; then
    echo "demo.sh: target/debug/$binary is missing: run without --no-build" >&2
    exit 1
  fi
done
ctl() { ./target/debug/meetingctl --socket "$sock" "$@"; }

# A daemon left behind by a demo that was killed outright still serves.
if [ -S "$sock" ] && ctl ping >/dev/null 2>&1; then
  other=$(cat "$demo/pid" 2>/dev/null || echo "?")
  echo "demo.sh: a meetingd left by an earlier demo still serves on $sock (pid $other): stop it (kill $other) and run this again" >&2
  exit 1
fi

# The demo's settings, whatever this shell has exported.
while IFS= read -r name; do
  unset "$name"
done < <(compgen -e | grep '^MEETINGD_' || true)

kept=false
if [ -e "$data" ]; then
  if $keep; then
    echo "==> keeping the data of the last run ($data)"
    kept=true
  else
    echo "==> starting afresh: removing the data of the last run ($data; --keep keeps it)"
    rm -rf "$data"
  fi
fi
echo "==> starting meetingd (its own redis-server in $data)"
# its own session: a Ctrl-C in this terminal reaches this script alone,
# which then stops the daemon with one SIGTERM (it drains)
# the web view on a loopback port the kernel picks (its log says which)
MEETINGD_EMBEDDED__DATA_DIR="$data" MEETINGD_HTTP__LISTEN=127.0.0.1:0 \
  setsid ./target/debug/meetingd serve --socket "$sock" \
  2>"$log" 9>&- &
pid=$!
echo "$pid" >"$demo/pid"
stop() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -f "$demo/pid"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=false
for _ in $(seq 1 150); do
  if ctl ping >/dev/null 2>&1; then
    started=true
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
if ! $started; then
  echo "demo.sh: meetingd did not start; its log ($log):" >&2
  cat "$log" >&2
  exit 1
fi

# the web view's address, as the daemon logged it
web=$(grep -o 'url=http://[^ ]*' "$log" | head -n 1 | cut -d= -f2 || true)

if $kept; then
  echo "==> the sample data is there from the last run (not loaded again)"
else
  echo "==> loading config/sample.json (times moved to around now)"
  if ! report=$(ctl import --shift-from 2026-01-01T12:00:00Z config/sample.json); then
    printf '%s\n' "$report" >&2
    echo "demo.sh: the sample data did not load" >&2
    exit 1
  fi
  printf '%s\n' "$report" | tail -n 1
fi
ctl tick >/dev/null

echo "==> meetingctl active"
ctl active
echo
if ! $kept; then
  echo "==> a few joins, a refusal, a chat message"
  ctl join 1 1 >/dev/null && echo "Ada joined the town hall"
  ctl join 3 2 >/dev/null && echo "Grace joined the reading group"
  echo -n "Alan tries the reading group: "
  ctl join 2 2 2>&1 || true
  ctl post 1 1 "hello, town hall" >/dev/null && echo "Ada said hello"
  echo
  echo "==> meetingctl participants 1"
  ctl participants 1
  echo
  echo "==> meetingctl messages 1"
  ctl messages 1
  echo
fi

if $check; then
  active=$(ctl --json active)
  for m in '"meeting":1' '"meeting":2' '"meeting":3'; do
    case "$active" in
      *"$m"*) ;;
      *)
        echo "demo check failed: $m is not active: $active" >&2
        exit 1
        ;;
    esac
  done
  # the web view answers, with the live meetings on its first page
  if [ -z "$web" ]; then
    echo "demo check failed: the daemon logged no web view address" >&2
    exit 1
  fi
  hostport=${web#http://}
  hostport=${hostport%/}
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
  printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$hostport" >&3
  page=$(cat <&3)
  exec 3<&-
  case "$page" in
    *"Town hall"*) echo "==> the web view answers at $web" ;;
    *)
      echo "demo check failed: the web view at $web did not list the town hall" >&2
      exit 1
      ;;
  esac
  echo "==> demo check passed"
  exit 0
fi

cat <<EOT

meetingd is running (pid $pid; log $log).
Its web view (live meetings, timelines, chat; this machine only): ${web:-see the log}
To talk to it, from another terminal (README.md's examples start there):
  export PATH="$root/target/debug:\$PATH" MEETINGD_SOCKET__PATH="$sock"
  meetingctl help
  meetingctl participants 1
Its Redis, with the meetingd library loaded:
  redis-cli -s "$data/redis.sock"
Ctrl-C stops it (it drains and stops its redis-server).
EOT
wait "$pid"
