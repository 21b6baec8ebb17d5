"""The sniffer's own thread: who opened each new connection, found while it is opening.

The run loop reads sniffed packets in its turns, between pipeline work and
database flushes.  A curl that connects, calls a local model server and
exits within one of those stalls is gone -- socket and process -- when the
loop reads its SYN, and its row lost its pid (bench/plain_http_bench.py: 4
of 1,959 rows attributed at ~390 new connections a second).

This thread reads only the SYNs of new connections to the sniffed ports, from
packet sockets of its own (a kernel filter keeps every other packet out, so
it costs nothing while no connection opens), and asks ``SocketOwners`` at
once: the socket's inode by sock_diag, the process holding it, and who that
process is (``ProcessIdentity``).  The SYNs of one read are looked up
together, one netlink socket and one walk of /proc for the batch.  The run
loop later finds each answer cached, the process's identity with it.

With eBPF the owner comes from the kernel's connect-owner map, which files a
connection when its handshake ends -- sometimes after its SYN is read here.
Such a connection waits in a short list, asked again after
``PENDING_POLL_S``, then after twice as long each time, while new SYNs are
still read, until the map has it or the handshake has had
``HANDSHAKE_WAIT_S`` (then sock_diag and /proc).

Threads: the run loop hands sockets in (``watch``/``unwatch``, under a lock,
with a wake-up byte); only this thread reads or closes them.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lumen_agent.capture.frames import frame_segment
from lumen_agent.capture.socket_owner import HANDSHAKE_WAIT_S, Flow, SocketOwners
from lumen_agent.capture.tcp_reassembly import ACK, SYN, Endpoint

log = logging.getLogger("lumen_agent")

# Bytes kept of a SYN: its headers (Ethernet 14 + IPv6 40 + TCP with options 60).
SYN_SNAPLEN = 256
# Kernel receive buffer of a SYN socket: some thousands of SYNs, for a burst
# that arrives while this thread waits for the interpreter.
SYN_SOCKET_BUFFER_BYTES = 1024 * 1024
# SYNs read before their owners are looked up together (a flood is cut in
# batches, so the first ones are not looked up too late).
MAX_SYNS_PER_BATCH = 64
# First wait before a connection the kernel's map has not filed yet is asked
# about again (a loopback handshake takes ~0.1 ms, a descheduled client's a
# few ms); each later wait is twice as long, so a handshake that never ends
# (a refused connection) costs 8 map lookups over HANDSHAKE_WAIT_S, not ~100.
PENDING_POLL_S = 0.001
# Connections waiting for their handshake at once; more (a flood of SYNs
# nobody answers) go to sock_diag at once, so a poll stays a few map lookups.
MAX_PENDING = 64
# How often, at most, the kernel's drop counts of the SYN sockets are read.
# Only after SYNs were read: a socket drops only when packets arrive faster
# than they are read, and arriving packets wake this thread.  So an idle
# thread sleeps until a SYN, a wake-up byte or a pending connection's turn.
DROPS_CHECK_S = 1.0
# The thread's nice value (it sleeps but for the moments a connection opens).
SYN_THREAD_NICE = -10
# Longest wait for the thread to finish at close.
JOIN_TIMEOUT_S = 2.0


@dataclass(slots=True)
class _Pending:
    """A connection whose SYN was read before the kernel's map had it."""

    flow: Flow
    read: float  # monotonic time its SYN was read
    due: float  # when it is asked about again
    wait: float  # how long before that (doubles each time)


def syn_filter(ports: Iterable[int], *, loopback: bool) -> str:
    """The BPF filter expression: a client's SYN (SYN without ACK) to one of ``ports``.

    libpcap's ``tcp[]`` reads IPv4 only; for IPv6 the TCP flags are read at
    their place after a 40-byte header (no extension headers: a SYN to a
    local model server has none).
    """
    to_ports = " or ".join(f"tcp dst port {p}" for p in sorted(set(ports)))
    syn = "((ip and tcp[13] & 0x12 == 0x02) or (ip6 and ip6[6] == 6 and ip6[53] & 0x12 == 0x02))"
    expression = f"({to_ports}) and {syn}"
    return f"inbound and {expression}" if loopback else expression


class SynWatcher:
    def __init__(self, owners: SocketOwners) -> None:
        self._owners = owners
        self._lock = threading.Lock()
        self._wanted: dict[str, Any] = {}  # interface -> its SYN socket (what the run loop asked for)
        self._sockets: dict[int, tuple[str, Any]] = {}  # this thread's view: fd -> (interface, socket)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._next_drops_check = 0.0
        self._drops_owed = False  # SYNs were read since the drop counts were
        self._pending: list[_Pending] = []
        self.counters = {"syn_packets": 0, "syn_batches": 0, "syn_skipped": 0, "syn_faults": 0,
                         "syn_kernel_drops": 0}

    # -- the run loop's side --------------------------------------------------

    def watch(self, interface: str, sock: Any) -> None:
        """Read the SYNs of ``sock`` (opened, filtered, non-blocking) from now on."""
        with self._lock:
            self._wanted[interface] = sock
        self._wake()

    def unwatch(self, interface: str) -> None:
        with self._lock:
            self._wanted.pop(interface, None)
        self._wake()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lumen-syn-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread; it closes its sockets on its way out."""
        if self._wake_r < 0:
            return
        with self._lock:
            self._wanted.clear()
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                return  # stuck in /proc (a daemon thread): leave its sockets and pipe to the exit
        else:
            self._apply()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the thread wakes anyway) or closed

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            # A curl lives milliseconds after its SYN: this thread is woken ahead of busier ones.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SYN_THREAD_NICE)
        except OSError:
            pass  # not root: the default priority
        while not self._stop:
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the thread must outlive a bad packet or a /proc surprise
                self.counters["syn_faults"] += 1
                if self.counters["syn_faults"] == 1 or self.counters["syn_faults"] % 1000 == 0:
                    log.exception("SYN watcher failed faults=%d", self.counters["syn_faults"])
                time.sleep(0.01)
        self._apply()

    def _turn(self) -> None:
        self._apply()
        try:
            ready, _, _ = select.select([self._wake_r, *self._sockets], [], [], self._timeout())
        except (OSError, ValueError):
            return
        self._ask_pending()
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        batch: list[tuple[Endpoint, Endpoint, int]] = []
        for fd in ready:
            entry = self._sockets.get(fd)
            if entry is not None:
                self._drops_owed = True
                self._read(entry[1], batch)
                if len(batch) >= MAX_SYNS_PER_BATCH:
                    self._resolve(batch)
                    batch = []
        self._resolve(batch)
        now = time.monotonic()
        if self._drops_owed and now >= self._next_drops_check:
            self._drops_owed = False
            self._next_drops_check = now + DROPS_CHECK_S
            self.counters["syn_kernel_drops"] += sum(sock.kernel_drops() for _name, sock in self._sockets.values())

    def _read(self, sock: Any, batch: list[tuple[Endpoint, Endpoint, int]]) -> None:
        for _ in range(MAX_SYNS_PER_BATCH):
            try:
                link, data, ts_ns = sock.recv_frame()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("SYN watcher read failed error=%s", exc)
                return
            segment = frame_segment(link, data, ts_ns or time.time_ns())
            if isinstance(segment, str) or segment.flags & (SYN | ACK) != SYN:
                self.counters["syn_skipped"] += 1
                continue
            self.counters["syn_packets"] += 1
            batch.append((segment.src, segment.dst, segment.ts_ns))

    def _resolve(self, batch: list[tuple[Endpoint, Endpoint, int]]) -> None:
        if batch:
            self.counters["syn_batches"] += 1
            now = time.monotonic()
            self._pending.extend(_Pending(flow, now, now + PENDING_POLL_S, PENDING_POLL_S)
                                 for flow in self._owners.resolve_new(batch))
            if len(self._pending) > MAX_PENDING:
                overflow, self._pending = self._pending[:-MAX_PENDING], self._pending[-MAX_PENDING:]
                self._owners.resolve_new([p.flow for p in overflow], waited=True)

    def _timeout(self) -> float | None:
        """Until the next pending connection's turn or owed drop check; None: until woken."""
        dues = [p.due for p in self._pending]
        if self._drops_owed:
            dues.append(self._next_drops_check)
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    def _ask_pending(self) -> None:
        """Ask again about connections whose handshake had not ended; past ``HANDSHAKE_WAIT_S``, for the last time."""
        now = time.monotonic()
        due = [p for p in self._pending if p.due <= now]
        if not due:
            return
        waited = [p.flow for p in due if now - p.read >= HANDSHAKE_WAIT_S]
        again = [p for p in due if now - p.read < HANDSHAKE_WAIT_S]
        still = set(self._owners.resolve_new([p.flow for p in again])) if again else set()
        self._pending = [p for p in self._pending if p.due > now]
        for p in again:
            if p.flow in still:
                p.wait *= 2
                p.due = min(now + p.wait, p.read + HANDSHAKE_WAIT_S)
                self._pending.append(p)
        if waited:
            self._owners.resolve_new(waited, waited=True)

    def _apply(self) -> None:
        """Take up the sockets the run loop asked for; close those it gave up."""
        with self._lock:
            wanted = {id(sock): (name, sock) for name, sock in self._wanted.items()}
        current = {id(sock): fd for fd, (_name, sock) in self._sockets.items()}
        for key, fd in current.items():
            if key not in wanted:
                _name, sock = self._sockets.pop(fd)
                try:
                    sock.close()
                except OSError:
                    pass
        for key, (name, sock) in wanted.items():
            if key not in current:
                self._sockets[sock.fileno()] = (name, sock)
