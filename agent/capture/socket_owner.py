"""Which local process owns one end of a TCP connection.

First the fast path (``sock_diag``): the kernel names the socket's inode from
its four-tuple, and the inode is looked for in the likely processes' file
descriptors -- a fraction of a millisecond, quick enough for a curl that
lives a few milliseconds.  Failing that, psutil's ``net_connections`` reads /proc/net/tcp{,6} (endpoints -> socket
inode) and every /proc/PID/fd (inode -> pid): a few milliseconds on a quiet
host, more on a busy one.  So one scan answers for every connection open at
that moment (all are cached), and scans are rate-limited: a SYN flood on a
sniffed port cannot turn into a flood of /proc walks.  A connection that
misses the budget is counted and stays unattributed (pid 0).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from lumen_agent.capture.sock_diag import pid_of_inode, socket_inode
from lumen_agent.capture.tcp_reassembly import Endpoint, normalise_ip

log = logging.getLogger("lumen_agent")

# Scans of all sockets allowed per second (each ~5 ms on the reference host).
MAX_SCANS_PER_S = 20
# Owners remembered at once (local endpoint, remote endpoint) -> pid.
MAX_CACHED_SOCKETS = 65536
# Fast-path lookups allowed per second (two netlink requests each; a SYN
# flood on a sniffed port must not become a flood of them either).
MAX_DIAGS_PER_S = 2000
# Recent owners tried first when looking for a socket's process.
MAX_CANDIDATES = 16
# How long the host's own addresses are trusted before they are read again.
ADDRESSES_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    is_client: bool  # the owner is the client end of the connection


def scan_sockets() -> dict[tuple[Endpoint, Endpoint], int]:
    """(local, remote) -> pid for every connected TCP socket of this network namespace."""
    owners: dict[tuple[Endpoint, Endpoint], int] = {}
    for c in psutil.net_connections(kind="tcp"):
        if not c.raddr or not c.pid:
            continue
        local = Endpoint(normalise_ip(c.laddr.ip), c.laddr.port)
        remote = Endpoint(normalise_ip(c.raddr.ip), c.raddr.port)
        owners[(local, remote)] = c.pid
    return owners


def diag_owner(local: Endpoint, remote: Endpoint, candidates: list[int]) -> int | None:
    """The pid holding the socket ``local`` -> ``remote``, by sock_diag and a look at the fds."""
    inode = socket_inode((local.ip, local.port), (remote.ip, remote.port))
    return None if inode is None else pid_of_inode(inode, candidates)


class SocketOwners:
    def __init__(self, scan: Callable[[], dict[tuple[Endpoint, Endpoint], int]] = scan_sockets,
                 clock: Callable[[], float] = time.monotonic,
                 diag: Callable[[Endpoint, Endpoint, list[int]], int | None] | None = None) -> None:
        """``diag(local, remote, candidates)``: the fast path's pid for one socket (None: sock_diag)."""
        self._scan = scan
        self._clock = clock
        self._diag = diag or diag_owner
        self._diag_budget = float(MAX_DIAGS_PER_S)
        self._diag_refilled = clock()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._addresses: set[str] = set()
        self._addresses_expire = 0.0
        self._cache: OrderedDict[tuple[Endpoint, Endpoint], int] = OrderedDict()
        self._budget = float(MAX_SCANS_PER_S)
        self._refilled = clock()
        self._wall_ns = time.time_ns
        self._last_scan_ns = 0
        self.counters = {"owner_fast": 0, "owner_scans": 0, "owner_scans_refused": 0}

    def lookup(self, client: Endpoint, server: Endpoint, *, seen_ns: int) -> Owner | None:
        """The client's process if it is local, else the server's, else None.

        ``seen_ns``: when a packet of the connection was captured (wall clock).
        A scan that started after it and found nothing is the answer: the
        socket existed then, so it is gone (or in another network namespace)
        and another scan would not find it either.
        """
        owner = self._cached(client, server)
        if owner is None:
            owner = self._fast(client, server)
        if owner is None and self._last_scan_ns < seen_ns and self._take_budget():
            self._rescan()
            owner = self._cached(client, server)
        if owner is not None:
            self._recent[owner.pid] = None
            self._recent.move_to_end(owner.pid)
            if len(self._recent) > MAX_CANDIDATES:
                self._recent.popitem(last=False)
        return owner

    def _fast(self, client: Endpoint, server: Endpoint) -> Owner | None:
        now = self._clock()
        self._diag_budget = min(float(MAX_DIAGS_PER_S),
                                self._diag_budget + (now - self._diag_refilled) * MAX_DIAGS_PER_S)
        self._diag_refilled = now
        if self._diag_budget < 1:
            return None
        self._diag_budget -= 1
        candidates = list(reversed(self._recent))
        sides = [(client, server, True)]
        if not self._is_local(client.ip):
            sides.append((server, client, False))
        for local, remote, is_client in sides:
            pid = self._diag(local, remote, candidates)
            if pid is not None:
                self.counters["owner_fast"] += 1
                self._cache[(local, remote)] = pid
                return Owner(pid, is_client)
        return None

    def _cached(self, client: Endpoint, server: Endpoint) -> Owner | None:
        pid = self._cache.get((client, server))
        if pid is not None:
            return Owner(pid, True)
        pid = self._cache.get((server, client))
        if pid is not None and not self._is_local(client.ip):
            return Owner(pid, False)
        return None

    def _is_local(self, ip: str) -> bool:
        """An address of this host: its client is a local process, even one gone already.

        Then the connection is never taken for the server's (inbound, and
        dropped): a call whose client exited before it was looked up keeps
        its row, unattributed.
        """
        if ip.startswith("127.") or ip == "::1":
            return True
        now = self._clock()
        if now >= self._addresses_expire:
            self._addresses_expire = now + ADDRESSES_TTL_S
            try:
                self._addresses = {normalise_ip(a.address.split("%")[0]) for addrs in psutil.net_if_addrs().values()
                                   for a in addrs}
            except (psutil.Error, OSError):
                pass
        return ip in self._addresses

    def _take_budget(self) -> bool:
        now = self._clock()
        self._budget = min(float(MAX_SCANS_PER_S), self._budget + (now - self._refilled) * MAX_SCANS_PER_S)
        self._refilled = now
        if self._budget < 1:
            self.counters["owner_scans_refused"] += 1
            return False
        self._budget -= 1
        return True

    def _rescan(self) -> None:
        self.counters["owner_scans"] += 1
        self._last_scan_ns = self._wall_ns()
        try:
            found = self._scan()
        except (psutil.Error, OSError) as exc:
            log.warning("cannot list sockets error=%s", exc)
            return
        for key, pid in found.items():
            self._cache[key] = pid
            self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHED_SOCKETS:
            self._cache.popitem(last=False)

    def forget(self, client: Endpoint, server: Endpoint) -> None:
        """The connection closed: its endpoints may be reused by another process."""
        self._cache.pop((client, server), None)
        self._cache.pop((server, client), None)
