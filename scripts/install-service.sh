#!/usr/bin/env bash
# Installs lumen-agent as a systemd service on a Debian/Ubuntu host, idempotently:
#
#   sudo ./scripts/install-service.sh
#
# * Debian's BCC (python3-bpfcc; BCC is not on PyPI) and kernel headers;
# * a virtualenv in /opt/lumen-agent/venv (Debian's python3) with this checkout;
# * the unit in /usr/local/lib/systemd/system/lumen-agent.service
#   (local changes: `systemctl edit lumen-agent`, a drop-in in /etc);
# * /etc/lumen-agent/config.toml with every option commented out at its
#   default, unless a configuration is already there (never overwritten);
# * when systemd is running: daemon-reload, enable, and (re)start, so a second
#   run upgrades a running agent. Without systemd (a container) it says so and
#   stops after installing.
#
# See docs/service.md.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/lumen-agent
VENV=$PREFIX/venv
UNIT_DIR=/usr/local/lib/systemd/system
UNIT=lumen-agent.service
CONFIG_DIR=/etc/lumen-agent
PY=/usr/bin/python3  # Debian's: the interpreter python3-bpfcc is packaged for

say() { echo "install-service: $*" >&2; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  exec sudo -- "$0" "$@"
fi

# -- Debian packages ----------------------------------------------------------
apt_pkgs=(python3-bpfcc python3-venv)
if grep -qi ubuntu /etc/os-release 2>/dev/null; then
  apt_pkgs+=("linux-headers-$(uname -r)")
else
  apt_pkgs+=("linux-headers-$(dpkg --print-architecture)")
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# -- the package ----------------------------------------------------------------
install -d -m 0755 "$PREFIX" "$PREFIX/doc"
if [[ ! -x $VENV/bin/python ]]; then
  say "virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
say "pip install $SRC -> $VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
# --force-reinstall --no-deps: the checkout may have changed without a version bump.
"$VENV/bin/pip" install -q --disable-pip-version-check "$SRC"
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$SRC"
install -m 0644 "$SRC/docs/service.md" "$PREFIX/doc/service.md"

# -- the unit ---------------------------------------------------------------------
install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$SRC/systemd/$UNIT" "$UNIT_DIR/$UNIT"
say "unit $UNIT_DIR/$UNIT"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$UNIT_DIR/$UNIT" || say "systemd-analyze verify reported the lines above"
fi

# -- the configuration ----------------------------------------------------------
install -d -m 0755 "$CONFIG_DIR"
if [[ -e $CONFIG_DIR/config.toml ]]; then
  say "keeping $CONFIG_DIR/config.toml"
else
  tmp=$(mktemp "$CONFIG_DIR/.config.toml.XXXXXX")
  {
    echo "# lumen-agent configuration (read at start: systemctl restart lumen-agent)."
    echo "# Every option is shown at its default, commented out; uncomment to change."
    echo "# The service may write only under /var/lib/lumen-agent (db, record)."
    echo
    # The same paths the unit gives the agent, whoever runs this script.
    LUMEN_STATE_DIR=/var/lib/lumen-agent LUMEN_CONFIG_DIR=$CONFIG_DIR LUMEN_RUNTIME_DIR=/run/lumen-agent \
      "$VENV/bin/lumen-agent" config show --config /dev/null | sed -E 's/^([a-z_]+ = )/# \1/'
  } >"$tmp"
  chmod 0644 "$tmp"
  mv "$tmp" "$CONFIG_DIR/config.toml"
  say "wrote $CONFIG_DIR/config.toml"
fi

# -- start it -----------------------------------------------------------------------
# sd_booted(3): systemd is the running service manager iff this folder exists.
if [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable -q "$UNIT"
  say "systemctl restart $UNIT (waits until the probes are attached)"
  if systemctl restart "$UNIT"; then
    systemctl --no-pager --lines=0 status "$UNIT" || true
  else
    say "the agent did not start; see: journalctl -u $UNIT -n 50"
    exit 1
  fi
else
  say "systemd is not running here (a container?): installed, but not enabled or started."
  say "run the agent in the foreground instead: $VENV/bin/lumen-agent run"
fi
