#!/usr/bin/env bash
# Runs the "Installing under systemd" steps of docs/operations.md on a real systemd and
# checks what that section says: boots a container whose PID 1 is systemd
# (systemd-nspawn on a throwaway overlay of this machine's /, so it has the
# same packages) and, as root in it, installs with scripts/install.sh and
# drives meetingd.service and meetingd.socket. Nothing of it is kept: the
# container is powered off and the overlay, held in memory, unmounted.
#
# Needs a Debian machine, root, and fresh binaries in target/release (it
# never builds: cargo build --release first); installs systemd-container
# and redis-server when missing. It works where PID 1 is not systemd too.
# Not part of CI, which cannot boot a container. Usage:
#
#   sudo bash scripts/systemd-container-check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkout=$(pwd)

if [ "$(id -u)" != 0 ]; then
  echo "systemd-container-check: run it as root" >&2
  exit 1
fi
for binary in meetingd meetingctl; do
  if [ ! -x "target/release/$binary" ] ||
    [ -n "$(find src lua Cargo.toml Cargo.lock -newer "target/release/$binary" -print -quit)" ]; then
    echo "systemd-container-check: target/release/$binary is missing or older than the source: cargo build --release first" >&2
    exit 1
  fi
done
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" </dev/null
fi

work=$(mktemp -d /tmp/meetingd-container.XXXXXX)
nspawn=""
leader=""
in_container() {
  nsenter -t "$leader" -a env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
cleanup() {
  if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
    [ -z "$leader" ] || in_container systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 60); do
      kill -0 "$nspawn" 2>/dev/null || break
      sleep 1
    done
    kill "$nspawn" 2>/dev/null || true
    wait "$nspawn" 2>/dev/null || true
  fi
  umount "$work/root" 2>/dev/null || true
  umount "$work" 2>/dev/null || true
  rmdir "$work" 2>/dev/null || true
}
trap cleanup EXIT

# The overlay's upper layer lives on a tmpfs of its own: overlayfs refuses
# an upper directory inside its lower one.
mount -t tmpfs -o size=2G tmpfs "$work"
mkdir "$work/upper" "$work/scratch" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/scratch" "$work/root"

# A private network (loopback only); the unified cgroup hierarchy, CAP_BPF
# and bpf() so that systemd can apply IPAddressDeny=; no machined needed.
# basic.target: none of this machine's own services start.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --quiet -D "$work/root" \
  --machine=meetingd-check --register=no --keep-unit --private-network \
  --capability=CAP_BPF,CAP_PERFMON --system-call-filter=bpf \
  --bind="$checkout" --console=read-only \
  -b systemd.unit=basic.target >"$work/console.log" 2>&1 </dev/null &
nspawn=$!
for _ in $(seq 60); do
  leader=$(pgrep -P "$nspawn" -x systemd || true)
  [ -n "$leader" ] && break
  sleep 0.5
done
if [ -z "$leader" ]; then
  cat "$work/console.log" >&2
  echo "systemd-container-check: the container did not boot" >&2
  exit 1
fi
echo "container booted: $(in_container systemctl is-system-running --wait || true)"

# Those steps, as root in the container, and what the section says.
in_container bash -s -- "$checkout" <<'EOF'
set -uo pipefail
cd "$1"
passed=0
failed=0
check() {
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then
    passed=$((passed + 1))
    echo "ok: $what"
  else
    failed=$((failed + 1))
    echo "FAILED: $what"
  fi
}
show() { [ "$(systemctl show -P "$2" "$1")" = "$3" ]; }
conf=/etc/meetingd/meetingd.toml

bash scripts/install.sh >/dev/null
check "install.sh installs /usr/local/bin/meetingd and $conf" test -x /usr/local/bin/meetingd -a -f "$conf"
systemctl enable --now meetingd.service
sleep 1
check "meetingd.service is active (Type=notify)" show meetingd.service ActiveState active
check "the watchdog is fed" test "$(systemctl show -P WatchdogTimestampMonotonic meetingd)" -gt 0
check "root: meetingctl ping" meetingctl --socket /run/meetingd/meetingd.sock ping
meetingctl user set --name Ann --age 30 --gender f --email ann@example.org 1 >/dev/null
useradd -m outsider
useradd -m member
usermod -aG meetingd member
check "a user outside the group is refused" bash -c '! su - outsider -c "meetingctl ping"'
check "a member of the group gets in" su - member -c "meetingctl stats"

pid=$(systemctl show -P MainPID meetingd)
systemctl reload meetingd
sleep 1
check "reload: still active, same process" show meetingd MainPID "$pid"
check "the journal has the reload" bash -c 'journalctl -u meetingd | grep -q "configuration reloaded"'
cp "$conf" /root/before-reload.toml
echo 'bogus_key = 1' >>"$conf"
systemctl reload meetingd
sleep 1
check "a refused reload: still active, same process" show meetingd MainPID "$pid"
check "a refused reload: the journal line says why" \
  bash -c 'journalctl -u meetingd | grep "reload refused" | grep -q "bogus_key: no such key"'
cp /root/before-reload.toml "$conf"

redis-cli -s /var/lib/meetingd/redis.sock bgrewriteaof >/dev/null
sleep 2
check "the embedded redis-server forks (AOF rewrite) in the sandbox" \
  bash -c 'redis-cli -s /var/lib/meetingd/redis.sock info persistence | grep -q aof_last_bgrewrite_status:ok'

systemctl stop meetingd
check "stop: exit 0, no failure" show meetingd Result success
check "stop: the embedded redis-server stopped too" bash -c '! pgrep -u meetingd redis-server'
systemctl start meetingd
check "start again: the data is kept" bash -c 'meetingctl user get 1 | grep -q Ann'

cp "$conf" /root/meetingd.toml
echo 'bogus_key = 1' >>"$conf"
check "check-config refuses an unknown key" bash -c '! meetingd check-config --config /etc/meetingd/meetingd.toml'
systemctl restart meetingd 2>/dev/null
sleep 5
check "refused configuration: exit status 2" show meetingd ExecMainStatus 2
check "refused configuration: not restarted" show meetingd NRestarts 0
check "systemctl status says why" bash -c 'systemctl status meetingd | grep -q "bogus_key: no such key"'
cp /root/meetingd.toml "$conf"
check "check-config accepts the restored file" meetingd check-config --config /etc/meetingd/meetingd.toml
systemctl restart meetingd
check "restored: active again" show meetingd ActiveState active

systemctl disable --now meetingd.service 2>/dev/null
systemctl enable --now meetingd.socket 2>/dev/null
check "socket activation: meetingd waits" show meetingd.service ActiveState inactive
check "socket activation: the first connection gets an answer" su - member -c "meetingctl ping"
check "socket activation: meetingd.service started" show meetingd.service ActiveState active
echo 'bogus_key = 1' >>"$conf"
systemctl stop meetingd.service 2>/dev/null
meetingctl ping >/dev/null 2>&1
sleep 2
check "refused configuration under socket activation: meetingd.socket fails" show meetingd.socket ActiveState failed
cp /root/meetingd.toml "$conf"
systemctl reset-failed meetingd
systemctl restart meetingd.socket
check "fixed, reset-failed, meetingd.socket restarted: answers again" meetingctl ping

# IPAddressAllow=localhost: another address of this (private) network,
# refused at once without the rule, is never reached with it.
ip addr add 192.0.2.1/32 dev lo
reach() { systemd-run --wait --pipe --quiet "$@" timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.1/9' 2>&1; }
check "IPAddressDeny: reached without it" bash -c "$(declare -f reach); reach | grep -q 'Connection refused'"
check "IPAddressDeny: blocked with the unit's rules" bash -c "$(declare -f reach); ! reach -p IPAddressDeny=any -p IPAddressAllow=localhost | grep -q 'Connection refused'"
check "no warning from meetingd or its redis-server, besides the refused configuration" \
  bash -c '! journalctl -b -p warning -o cat _UID=$(id -u meetingd) | grep -v bogus_key | grep -q .'
check "no warning in the embedded redis-server's log" bash -c '! grep -q WARNING /var/lib/meetingd/redis.log'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
EOF
