"""Which local process owns one end of a TCP connection, and who that process is.

First the fast path (``sock_diag``): the kernel names the socket's inode from
its four-tuple, and the inode is looked for in the likely processes' file
descriptors -- a fraction of a millisecond, quick enough for a curl that
lives a few milliseconds.  Failing that, psutil's ``net_connections`` reads /proc/net/tcp{,6} (endpoints -> socket
inode) and every /proc/PID/fd (inode -> pid): a few milliseconds on a quiet
host, more on a busy one.  So one scan answers for every connection open at
that moment (all are cached), and scans are rate-limited: a SYN flood on a
sniffed port cannot turn into a flood of /proc walks.  A connection that
misses the budget is counted and stays unattributed (pid 0).

The sniffer's SYN thread (``syn_watch``) calls :meth:`SocketOwners.resolve_new`
the moment a connection opens, while the run loop may be busy with a
database flush; the run loop's :meth:`SocketOwners.lookup` then finds the
answer cached.  When the fast path finds a process it reads who the process
is (comm, exe, user, unit: ``ProcessIdentity``) there and then, so a row
needs no /proc once a short-lived client has exited.  Both threads share one
instance; a lock keeps them from doing the same lookup twice.

Every cached answer carries the time it was found: it answers only for a
connection first seen before then.  A four-tuple reused by a later
connection (another process, another ephemeral port cycle) is looked up
afresh, never taken from an older connection's answer.  And the other way
round: a connection is answered by the FIRST answer found after it was
seen, so the run loop, reading late, does not take the answer the SYN
thread found for a later connection on the same four-tuple (loopback
reuses a client port within a second or two: tcp_tw_reuse).

With eBPF, the kernel's connect-owner map (``connect_owner``) is asked
first.  It files a connection when the client's handshake ends, and a SYN
can be read before that: on loopback the client's socket turns ESTABLISHED
when it processes the SYN-ACK, usually ~0.1 ms after the SYN, but up to
milliseconds when the client is descheduled inside connect() -- while the
SYN thread or the run loop may read the SYN within 0.3 ms.  A miss during the
handshake is not an answer (``owner_kernel_pending``): the SYN thread asks
again until the handshake has had ``HANDSHAKE_WAIT_S``, the run loop at the
connection's first bytes, by when the client's handshake has surely ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import psutil

from lumen_agent.capture.sock_diag import pids_of_inodes, socket_inodes
from lumen_agent.capture.tcp_reassembly import Endpoint, normalise_ip
from lumen_agent.pipeline.attribution import Attribution, ProcessIdentity

log = logging.getLogger("lumen_agent")

# Scans of all sockets allowed per second (each ~5 ms on the reference host).
MAX_SCANS_PER_S = 20
# Owners remembered at once (local endpoint, remote endpoint) -> pid.
MAX_CACHED_SOCKETS = 65536
# Answers kept per four-tuple, oldest first: the connections on it that the
# run loop may not have read yet.
ANSWERS_PER_SOCKET = 4
# Fast-path lookups allowed per second (a netlink request each, and a walk
# of /proc per batch; a SYN flood on a sniffed port must not become a flood
# of them either).
MAX_DIAGS_PER_S = 2000
# Recent owners tried first when looking for a socket's process.
MAX_CANDIDATES = 16
# How long the host's own addresses are trusted before they are read again.
ADDRESSES_TTL_S = 30.0
# How long a connection's handshake may take before a SYN the kernel's map
# has not filed is looked for in sock_diag and /proc instead.  Loopback
# handshakes measured 0.09 ms (median) to 6 ms (slowest of 1,137, load ~2);
# a dropped SYN is retransmitted after 1 s, and such a client is still in
# connect(), alive for sock_diag to find.
HANDSHAKE_WAIT_S = 0.1

Pair = tuple[Endpoint, Endpoint]  # (local, remote) of one socket
Flow = tuple[Endpoint, Endpoint, int]  # (client, server, seen_ns) of a connection
# ``diag(pairs, candidates)``: the pid holding each socket, or None.
Diag = Callable[[Sequence[Pair], list[int]], list["int | None"]]
# ``kernel(client, server, seen_ns)``: the connecting process, or None.
Kernel = Callable[[Endpoint, Endpoint, int], "ProcessIdentity | None"]


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    is_client: bool  # the owner is the client end of the connection
    # What the process was, read when its socket was found (None: not read,
    # e.g. found by the psutil scan).  Not part of equality: it describes the pid.
    identity: ProcessIdentity | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Answer:
    pid: int  # 0: looked for and not there (the socket, or its process, was gone)
    identity: ProcessIdentity | None
    found_ns: int  # wall clock when it was looked up


def scan_sockets() -> dict[Pair, int]:
    """(local, remote) -> pid for every connected TCP socket of this network namespace."""
    owners: dict[Pair, int] = {}
    for c in psutil.net_connections(kind="tcp"):
        if not c.raddr or not c.pid:
            continue
        local = Endpoint(normalise_ip(c.laddr.ip), c.laddr.port)
        remote = Endpoint(normalise_ip(c.raddr.ip), c.raddr.port)
        owners[(local, remote)] = c.pid
    return owners


def diag_owners(pairs: Sequence[Pair], candidates: list[int]) -> list[int | None]:
    """The pid holding each socket ``local`` -> ``remote``: sock_diag, then one look through the fds."""
    inodes = socket_inodes([((local.ip, local.port), (remote.ip, remote.port)) for local, remote in pairs])
    pids = pids_of_inodes([i for i in inodes if i is not None], candidates)
    return [None if inode is None else pids.get(inode) for inode in inodes]


class SocketOwners:
    def __init__(self, scan: Callable[[], dict[Pair, int]] = scan_sockets,
                 clock: Callable[[], float] = time.monotonic,
                 diag: Diag | None = None,
                 identify: Callable[[int], ProcessIdentity | None] | None = None,
                 kernel: Kernel | None = None) -> None:
        """``diag(pairs, candidates)``: the fast path's pids (None: sock_diag);
        ``identify(pid)``: who a process is (None: read from /proc);
        ``kernel(client, server, seen_ns)``: who connected, as recorded in the
        kernel at connect() (``connect_owner``), asked before anything else."""
        self._scan = scan
        self.kernel = kernel
        self._clock = clock
        self._diag = diag or diag_owners
        self._identify = identify or Attribution().identify
        self._lock = threading.Lock()
        self._diag_budget = float(MAX_DIAGS_PER_S)
        self._diag_refilled = clock()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._addresses: set[str] = set()
        self._addresses_expire = 0.0
        self._cache: OrderedDict[Pair, tuple[_Answer, ...]] = OrderedDict()  # by found_ns
        self._budget = float(MAX_SCANS_PER_S)
        self._refilled = clock()
        self._wall_ns = time.time_ns
        self._last_scan_ns = 0
        self.counters = {"owner_fast": 0, "owner_early": 0, "owner_misses": 0, "owner_diags_refused": 0,
                         "owner_scans": 0, "owner_scans_refused": 0, "owner_kernel": 0, "owner_kernel_misses": 0,
                         "owner_kernel_pending": 0}

    def lookup(self, client: Endpoint, server: Endpoint, *, seen_ns: int, connecting: bool = False) -> Owner | None:
        """The client's process if it is local, else the server's, else None.

        ``seen_ns``: when the connection's first packet was captured (wall
        clock).  A scan that started after it and found nothing is the
        answer: the socket existed then, so it is gone (or in another network
        namespace) and another scan would not find it either.

        ``connecting``: asked at the connection's SYN, its handshake maybe
        not over.  Then a miss of the kernel's map returns None at once, and
        the caller asks again at the first bytes: the map has the connection
        by then, so this thread spends no sock_diag or /proc walk on it now.
        """
        with self._lock:
            owner, final = self._cached(client, server, seen_ns)
            if (owner is None or owner.identity is None) and self._is_local(client.ip):
                # The SYN thread may have looked before the kernel's entry was written,
                # or found the pid but not who it was (the process exited in between).
                found = self._from_kernel(client, server, seen_ns, connecting=connecting)
                if found is None and owner is None and connecting and self.kernel is not None:
                    return None
                owner = found or owner
                final = final or owner is not None
            if owner is None and not final:
                owner = self._fast(client, server)
            if owner is not None or final or self._last_scan_ns >= seen_ns or not self._take_budget():
                return owner
            self.counters["owner_scans"] += 1
            scan_ns = self._last_scan_ns = self._wall_ns()
        # The scan takes milliseconds (more on a busy host): the SYN thread must not wait for it.
        found = self._scan_all()
        with self._lock:
            for key, pid in found.items():
                answers = self._cache.get(key)
                if not answers or not answers[-1].pid or answers[-1].found_ns < scan_ns:  # never over a newer owner
                    self._store(key, _Answer(pid, None, scan_ns))
            return self._cached(client, server, seen_ns)[0]

    def resolve_new(self, flows: Sequence[Flow], *, waited: bool = False) -> list[Flow]:
        """Find the owners of connections that are just opening: (client, server, seen_ns) each.

        Called by the sniffer's SYN thread for the SYNs of one read, all in
        one netlink socket and one walk of /proc.  Only local clients: a
        server's socket for the connection does not exist before the
        handshake ends (the run loop looks for it at the first bytes).

        With the kernel's map, the connections it has not filed yet (their
        handshake has not ended) are returned, not looked for elsewhere: the
        caller asks again shortly, and with ``waited`` once the handshake has
        had ``HANDSHAKE_WAIT_S``; then sock_diag and /proc are asked.
        """
        pending: list[Flow] = []
        with self._lock:
            todo: dict[Pair, int] = {}
            for client, server, seen_ns in flows:
                if not self._is_local(client.ip) or self._cached(client, server, seen_ns) != (None, False):
                    continue
                if self._from_kernel(client, server, seen_ns, connecting=not waited) is not None:
                    continue
                if self.kernel is not None and not waited:
                    pending.append((client, server, seen_ns))
                else:
                    todo.setdefault((client, server), seen_ns)
            pairs = self._within_budget(list(todo))
            for pid in self._find(pairs):
                if pid:
                    self.counters["owner_early"] += 1
                else:
                    self.counters["owner_misses"] += 1
        return pending

    # -- internals (the caller holds self._lock) ---------------------------

    def _from_kernel(self, client: Endpoint, server: Endpoint, seen_ns: int, *,
                     connecting: bool = False) -> Owner | None:
        """The connecting process as the kernel recorded it (cached with its identity), or None.

        ``connecting``: the handshake may not have ended, so a miss is not yet one (``owner_kernel_pending``).
        """
        if self.kernel is None:
            return None
        try:
            identity = self.kernel(client, server, seen_ns)
        except OSError as exc:
            log.warning("kernel owner lookup failed error=%s", exc)
            identity = None
        if identity is None:
            self.counters["owner_kernel_pending" if connecting else "owner_kernel_misses"] += 1
            return None
        self.counters["owner_kernel"] += 1
        self._note_recent(identity.pid)
        self._store((client, server), _Answer(identity.pid, identity, self._wall_ns()))
        return Owner(identity.pid, True, identity)

    def _within_budget(self, pairs: list[Pair]) -> list[Pair]:
        now = self._clock()
        self._diag_budget = min(float(MAX_DIAGS_PER_S),
                                self._diag_budget + (now - self._diag_refilled) * MAX_DIAGS_PER_S)
        self._diag_refilled = now
        allowed = min(len(pairs), int(self._diag_budget))
        self._diag_budget -= allowed
        self.counters["owner_diags_refused"] += len(pairs) - allowed
        return pairs[:allowed]

    def _find(self, pairs: list[Pair]) -> list[int]:
        """The fast path for ``pairs``: cache each answer (0: not found) with its process."""
        if not pairs:
            return []
        found_ns = self._wall_ns()
        try:
            pids = self._diag(pairs, list(reversed(self._recent)))
        except OSError as exc:
            log.warning("socket owner lookup failed error=%s", exc)
            return [0] * len(pairs)
        out = []
        for pair, pid in zip(pairs, pids, strict=True):
            identity = None
            if pid:
                self.counters["owner_fast"] += 1
                identity = self._identify(pid)
                self._note_recent(pid)
            self._store(pair, _Answer(pid or 0, identity, found_ns))
            out.append(pid or 0)
        return out

    def _fast(self, client: Endpoint, server: Endpoint) -> Owner | None:
        sides = [(client, server, True)]
        if not self._is_local(client.ip):
            sides.append((server, client, False))
        for local, remote, is_client in sides:
            if not self._within_budget([(local, remote)]):
                return None
            pid = self._find([(local, remote)])[0]
            if pid:
                return Owner(pid, is_client, self._cache[(local, remote)][-1].identity)
            if is_client and self._is_local(client.ip):
                self.counters["owner_misses"] += 1  # a local client, gone already
        return None

    def _cached(self, client: Endpoint, server: Endpoint, seen_ns: int) -> tuple[Owner | None, bool]:
        """(owner, final) from the first answer found after ``seen_ns``; ``final``: looked for, gone."""
        answer = self._first_after((client, server), seen_ns)
        if answer is not None:
            if answer.pid:
                self._note_recent(answer.pid)
                return Owner(answer.pid, True, answer.identity), True
            if self._is_local(client.ip):
                return None, True  # the local client's socket was gone when looked for: so it stays
        answer = self._first_after((server, client), seen_ns)
        if answer is not None and answer.pid and not self._is_local(client.ip):
            self._note_recent(answer.pid)
            return Owner(answer.pid, False, answer.identity), True
        return None, False

    def _first_after(self, pair: Pair, seen_ns: int) -> _Answer | None:
        for answer in self._cache.get(pair, ()):
            if answer.found_ns >= seen_ns:
                return answer
        return None

    def _note_recent(self, pid: int) -> None:
        self._recent[pid] = None
        self._recent.move_to_end(pid)
        if len(self._recent) > MAX_CANDIDATES:
            self._recent.popitem(last=False)

    def _store(self, pair: Pair, answer: _Answer) -> None:
        kept = self._cache.get(pair, ())
        if answer.pid:
            # Found where it was not found before: that miss was the fast
            # path's (a scan finds what sock_diag did not), not an answer.
            kept = tuple(a for a in kept if a.pid)
        answers = sorted((*kept, answer), key=attrgetter("found_ns"))
        self._cache[pair] = tuple(answers[-ANSWERS_PER_SOCKET:])
        self._cache.move_to_end(pair)
        while len(self._cache) > MAX_CACHED_SOCKETS:
            self._cache.popitem(last=False)

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

    def _scan_all(self) -> dict[Pair, int]:
        try:
            return self._scan()
        except (psutil.Error, OSError) as exc:
            log.warning("cannot list sockets error=%s", exc)
            return {}
