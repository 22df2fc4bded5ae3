#!/usr/bin/env bash
# Install meetingd under systemd (Debian): meetingd and meetingctl in
# /usr/local/bin, the system user and group meetingd, /etc/meetingd with a
# configuration file and the unit's environment file, and the units in
# /etc/systemd/system. Run it as root from the checkout:
#
#   cargo build --release && sudo bash scripts/install.sh
#
# It builds target/release itself when that is missing or older than the
# source and cargo is on its PATH (root often has no Rust: build as
# yourself first, as above). It never overwrites /etc/meetingd/meetingd.toml
# or /etc/meetingd/env once they exist. Then:
#
#   systemctl enable --now meetingd.service     (or meetingd.socket)
#
# Options (for staging and the CI check, not needed to install):
#   --destdir DIR     install under DIR instead of /, and leave users,
#                     ownership and systemd alone
#   --binaries DIR    install the binaries of DIR (default target/release)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

destdir=""
binaries=target/release
while [ $# -gt 0 ]; do
  case $1 in
    --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
    --binaries) binaries=${2:?--binaries needs a directory}; shift 2 ;;
    -h | --help)
      sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install.sh: unknown option $1 (--destdir DIR, --binaries DIR, --help)" >&2
      exit 2
      ;;
  esac
done

say() { printf '==> %s\n' "$*"; }

if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run it as root: sudo bash scripts/install.sh (build first as yourself: cargo build --release)" >&2
  exit 1
fi

# The binaries: built when missing or older than the source.
stale=false
for binary in meetingd meetingctl; do
  if [ ! -x "$binaries/$binary" ] ||
    [ -n "$(find src lua Cargo.toml Cargo.lock -newer "$binaries/$binary" -print -quit)" ]; then
    stale=true
  fi
done
if $stale; then
  if [ "$binaries" != target/release ]; then
    echo "install.sh: $binaries has no up-to-date meetingd and meetingctl" >&2
    exit 1
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install.sh: target/release is missing or older than the source, and cargo is not on" >&2
    echo "this user's PATH: build as the user who has Rust (cargo build --release), then run" >&2
    echo "this again" >&2
    exit 1
  fi
  say "cargo build --release"
  cargo build --release --bins
fi

root=${destdir%/}
etc=$root/etc/meetingd

say "installing meetingd and meetingctl in $root/usr/local/bin"
install -d "$root/usr/local/bin"
install -m 0755 "$binaries/meetingd" "$binaries/meetingctl" "$root/usr/local/bin/"

# owner and group for /etc/meetingd: root:meetingd, the group reads it
own=()
if [ -z "$destdir" ]; then
  if ! getent passwd meetingd >/dev/null; then
    say "creating the system user meetingd"
    if getent group meetingd >/dev/null; then
      useradd --system --gid meetingd --home-dir /var/lib/meetingd --no-create-home \
        --shell /usr/sbin/nologin meetingd
    else
      useradd --system --user-group --home-dir /var/lib/meetingd --no-create-home \
        --shell /usr/sbin/nologin meetingd
    fi
  fi
  own=(-o root -g meetingd)
fi

say "$etc: the configuration (readable by the group meetingd)"
install -d -m 0750 "${own[@]}" "$etc"
if [ -e "$etc/meetingd.toml" ]; then
  echo "    $etc/meetingd.toml exists: kept as it is (config/meetingd.toml has every key)"
else
  install -m 0640 "${own[@]}" config/meetingd.toml "$etc/meetingd.toml"
fi
if [ -e "$etc/env" ]; then
  echo "    $etc/env exists: kept as it is"
else
  tmp=$(mktemp)
  cat >"$tmp" <<'EOT'
# The environment of meetingd.service. SERVE_ARGS are the arguments of
# `meetingd serve`; MEETINGD_<SECTION>__<KEY>=value lines override the
# configuration file (e.g. MEETINGD_REDIS__URL=redis://127.0.0.1:6379/0).
SERVE_ARGS=--config /etc/meetingd/meetingd.toml
EOT
  install -m 0640 "${own[@]}" "$tmp" "$etc/env"
  rm -f "$tmp"
fi

say "installing the units in $root/etc/systemd/system"
install -d "$root/etc/systemd/system"
install -m 0644 systemd/meetingd.service systemd/meetingd.socket "$root/etc/systemd/system/"

if [ -n "$destdir" ]; then
  say "staged in $destdir"
  exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "note: with no redis.url, meetingd runs its own redis-server, which is not installed:"
  echo "      apt-get install redis-server"
fi
if [ -d /run/systemd/system ]; then
  say "systemctl daemon-reload"
  systemctl daemon-reload
else
  echo "note: systemd is not running here; run systemctl daemon-reload where it is"
fi
cat <<'EOT'

Installed. Next:
  systemctl enable --now meetingd.service   # or meetingd.socket: started at the first connection
  usermod -aG meetingd <user>               # who may use meetingctl (then log in again)
Settings: /etc/meetingd/meetingd.toml, then systemctl reload meetingd.
EOT
