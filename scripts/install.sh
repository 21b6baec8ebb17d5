#!/usr/bin/env bash
# Installs everything lumen-agent needs on a Debian/Ubuntu host, idempotently:
# Debian's BCC (bcc is not on PyPI), kernel headers, and a virtualenv in
# .venv with the package and, with --test, what the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"

# libpcap0.8: compiles the plain-HTTP sniffer's kernel socket filter (as for tcpdump), and scapy reads capture files with it
apt_pkgs=(python3-bpfcc python3-venv curl openssl libpcap0.8)
if [[ -e /etc/debian_version ]] && grep -qi ubuntu /etc/os-release; then
  apt_pkgs+=("linux-headers-$(uname -r)")
else
  apt_pkgs+=(linux-headers-amd64)
fi
(( with_test )) && apt_pkgs+=(nodejs tmux prometheus systemd)
(( with_test )) && apt_pkgs+=(redis-server)  # the Redis Streams export test starts its own server
# Go toolchain: the tests build a stdlib-only Go client (crypto/tls capture)
(( with_test )) && apt_pkgs+=(golang-go)
# tcpdump: plain-HTTP and keylog replay tests record real sessions with it
(( with_test )) && apt_pkgs+=(tcpdump)
# tshark: the --record pcapng test opens the file with it too
(( with_test )) && apt_pkgs+=(tshark)
# iptables, iproute2: the slow-handshake test holds SYN-ACKs (NFQUEUE) in a network namespace of its own
(( with_test )) && apt_pkgs+=(iptables iproute2)

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "install: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# BCC's Python module is built for the distribution's python3; use the same
# minor version for the virtualenv so the module imports.
PY=${LUMEN_PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
extra=""
(( with_test )) && extra="[test]"
stamp=".venv/.installed${extra}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".${extra}"
  touch "$stamp"
fi
