"""Which local process is at the other end of a TCP connection to the proxy.

A client on this host connected from ``peer`` (its address) to ``local``
(ours): its socket is the TCP connection whose local address is ``peer`` and
remote address ``local``; psutil lists each process's TCP sockets.  Scanning
every process costs milliseconds on a busy host, so recent clients are tried
first, then the newest processes, and the lookup runs off the forwarding
path.  Returns None for remote clients, for clients in another network
namespace, or when the process is gone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict

import psutil

# Processes tried first on the next lookup.
RECENT_PIDS = 64


def _endpoint(address: tuple) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """(ip, port) of a socket address, IPv4-mapped IPv6 as IPv4; None when not an IP address."""
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except (ValueError, IndexError):
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(address[1])


def is_local_address(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return True
    try:
        return ip in _own_addresses()
    except OSError:
        return False


def _own_addresses() -> set:
    out = set()
    for info in socket.getaddrinfo(socket.gethostname(), None):
        try:
            out.add(ipaddress.ip_address(info[4][0]))
        except ValueError:
            pass
    return out


class PeerResolver:
    """``pid_of(peer, local)``: the pid of a local client, or None."""

    def __init__(self) -> None:
        self._recent: OrderedDict[int, None] = OrderedDict()

    def pid_of(self, peer: tuple, local: tuple) -> int | None:
        if not is_local_address(peer[0]):
            return None
        want = (_endpoint(peer), _endpoint(local))
        if None in want:
            return None
        kind = _table(peer)
        # Recent clients first, then every process, newest first: a client
        # usually makes many calls, and a new one is usually the newest pid.
        recent = list(reversed(self._recent))
        for pid in recent:
            if self._holds(pid, kind, want):
                return pid
        tried = set(recent)
        for pid in sorted(psutil.pids(), reverse=True):
            if pid not in tried and self._holds(pid, kind, want):
                return pid
        return None

    def _holds(self, pid: int, kind: str, want: tuple) -> bool:
        try:
            conns = psutil.Process(pid).net_connections(kind=kind)
        except psutil.Error:  # gone, or not ours to look at
            self._recent.pop(pid, None)
            return False
        if any(_matches(c, want) for c in conns):
            self._remember(pid)
            return True
        return False

    def _remember(self, pid: int) -> None:
        self._recent[pid] = None
        self._recent.move_to_end(pid)
        while len(self._recent) > RECENT_PIDS:
            self._recent.popitem(last=False)


def _table(peer: tuple) -> str:
    """The one TCP table the client's socket is in (reading only it halves the work);
    both for an IPv4-mapped address, whose client may hold either kind of socket."""
    ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    if ip.version == 4:
        return "tcp4"
    return "tcp" if ip.ipv4_mapped is not None else "tcp6"


def _matches(conn, want: tuple) -> bool:
    return bool(conn.laddr and conn.raddr) and (_endpoint(conn.laddr), _endpoint(conn.raddr)) == want
