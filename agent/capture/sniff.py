"""Live plain-HTTP capture: packet sockets on lo and the host's interfaces.

Local model servers (Ollama 11434, vLLM 8000, llama.cpp 8080, LM Studio 1234)
and in-cluster gateways (LiteLLM 4000) are called over ``http://``: no TLS
library, so no uprobe sees them.  This source reads their TCP packets.

One ``AF_PACKET`` socket per interface (``packet_socket``), each with a
classic BPF program attached in the kernel (``SO_ATTACH_FILTER``): only TCP
segments to or from the configured ports ever reach user space, so other
traffic costs the agent nothing.  libpcap (Debian's libpcap0.8) compiles the
filter expression, as it does for tcpdump; ``frames`` reads the headers.  On
``lo`` every packet passes a packet socket twice (leaving, then arriving);
the filter's ``inbound`` keeps one copy, as tcpdump does.

Packets are read in the run loop's turns (``poll``), non-blocking, at most
``MAX_PACKETS_PER_POLL`` a turn, and go through ``Conversations`` (TCP
reassembly, socket owner) to the pipeline as DataEvents.  A thread of the
sniffer's own (``syn_watch``) reads the SYNs of new connections from a second
filtered socket per interface and finds each one's process the moment it
connects, so a short-lived client is attributed even when the run loop reads
its packets after it has exited.

    cap = PlainHttpCapture(on_event, ports={11434, 8000})
    cap.start()
    while running:
        cap.poll(100)
    cap.close()
"""

from __future__ import annotations

import logging
import select
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from lumen_agent.capture.conversations import Conversations
from lumen_agent.capture.frames import frame_segment
from lumen_agent.capture.packet_socket import PacketSocket
from lumen_agent.capture.socket_owner import SocketOwners
from lumen_agent.capture.syn_watch import SYN_SNAPLEN, SYN_SOCKET_BUFFER_BYTES, SynWatcher, syn_filter
from lumen_agent.capture.tcp_reassembly import Endpoint
from lumen_agent.errors import LumenError
from lumen_agent.pipeline.attribution import ProcessIdentity
from lumen_agent.pipeline.events import DataEvent

log = logging.getLogger("lumen_agent")

DEFAULT_PORTS = (11434, 8000, 8080, 1234, 4000)
# Packets read per poll turn, so the run loop gets back to its other work.
MAX_PACKETS_PER_POLL = 4096
# Kernel receive buffer per socket: packets wait here while the loop is busy
# (a pipeline turn, a /proc scan).  Loopback segments are up to 64 KiB.
SOCKET_BUFFER_BYTES = 16 * 1024 * 1024
# Bytes of a packet the kernel filter keeps and a read takes: more than an
# IP packet (64 KiB; loopback's MTU allows that much) and its link header.
# libpcap compiles filters to keep 65535, which would cut those packets.
SNAPLEN = 256 * 1024
# Longest one poll may spend reading (a backlog after a stall must not keep
# the run loop from its housekeeping or from a stop request).
MAX_POLL_S = 0.25
HOUSEKEEPING_S = 1.0
# How often the interface list is read again (interfaces that come and go).
INTERFACE_RESCAN_S = 10.0
# Processes, (pid, start time), already handed to ``on_process`` (most recent kept).
MAX_KNOWN_PROCESSES = 4096


class SniffError(LumenError):
    """The sniffer cannot start (no CAP_NET_RAW, no libpcap to compile the filter)."""


def port_filter(ports: Iterable[int], *, loopback: bool) -> str:
    """The BPF filter expression: TCP to or from one of ``ports``."""
    ports = sorted(set(ports))
    expr = " or ".join(f"tcp port {p}" for p in ports)
    return f"inbound and ({expr})" if loopback else expr


def host_interfaces() -> list[str]:
    """lo and every interface that is up, by name."""
    import psutil

    names = ["lo"]
    for name, stats in psutil.net_if_stats().items():
        if stats.isup and name != "lo":
            names.append(name)
    return names


class PlainHttpCapture:
    def __init__(
        self,
        on_event: Callable[[DataEvent], None],
        ports: Iterable[int] = DEFAULT_PORTS,
        *,
        interfaces: Iterable[str] | None = None,
        owners: SocketOwners | None = None,
        on_process: Callable[[int, ProcessIdentity | None], None] | None = None,
        fast: bool = True,
        early_owners: bool = True,
        connect_owners: Any | None = None,
    ) -> None:
        """``on_process(pid, identity)``: a process just found owning a connection,
        and who it was when found (None: not read; learn about it now, while
        it runs -- a curl may be gone by its first bytes).

        ``early_owners``: a thread of its own reads each new connection's SYN
        and finds its owner at once (``syn_watch``); off, the run loop looks
        when it reads the SYN.

        ``connect_owners`` (a ``connect_owner.ConnectOwners``, eBPF only):
        started with the sniffer, asked first for each connection's owner."""
        self._on_event = on_event
        self._on_process = on_process
        self.fast = fast  # read Ethernet/IP/TCP headers directly (False: scapy dissects every packet)
        self._known_processes: OrderedDict[tuple[int, float | None], None] = OrderedDict()
        self.ports = tuple(sorted(set(ports)))
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._owners = owners or SocketOwners()
        self._watcher = SynWatcher(self._owners) if early_owners else None
        self._connect_owners = connect_owners
        self._conversations = Conversations(frozenset(self.ports), owner_of=self._owner_of)
        self._sockets: list[Any] = []
        self._by_fd: dict[int, Any] = {}
        self._iface_of: dict[int, str] = {}
        self._next_interface_scan = 0.0
        self._excluded: set[int] = set()
        self._next_housekeeping = 0.0
        self._events = 0
        self._bytes = 0
        self._skipped: dict[str, int] = {}
        self._kernel_drops = 0
        self.attached: list[str] = []

    # -- CaptureSource --------------------------------------------------------

    def prepare(self) -> None:
        """Work that may start before :meth:`start`: the kernel connect-owner program's compile."""
        if self._connect_owners is not None:
            self._connect_owners.prepare()

    def start(self) -> None:
        names = self._interfaces if self._interfaces is not None else host_interfaces()
        errors = self._open(names)
        self._next_interface_scan = time.monotonic() + INTERFACE_RESCAN_S
        if not self._sockets:
            if self._watcher is not None:
                self._watcher.close()
            raise SniffError("plain-HTTP capture cannot open a packet socket (" + "; ".join(errors) + ")",
                             "run as root (CAP_NET_RAW) with libpcap installed (apt install libpcap0.8)")
        for error in errors:
            log.warning("plain-HTTP capture skips an interface: %s", error)
        self._start_connect_owners()
        if self._watcher is not None:
            self._watcher.start()
        log.info("plain-HTTP capture interfaces=%s ports=%s", ",".join(self.attached),
                 ",".join(map(str, self.ports)))

    def _start_connect_owners(self) -> None:
        if self._connect_owners is None:
            return
        try:
            self._connect_owners.start()
        except Exception as exc:  # noqa: BLE001 - owners are still looked up in /proc
            log.warning("plain-HTTP capture records no owners at connect(): %s", exc)
            self._connect_owners = None
            return
        self._owners.kernel = self._connect_owners.owner

    def _open(self, names: Iterable[str]) -> list[str]:
        """Open a filtered packet socket on each interface; the errors, one line each."""
        errors = []
        for name in names:
            expression = port_filter(self.ports, loopback=name == "lo")
            try:
                sock = self._filtered_socket(name, expression, SNAPLEN, SOCKET_BUFFER_BYTES)
            except (OSError, ValueError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            self._sockets.append(sock)
            self._by_fd[sock.fileno()] = sock
            self._iface_of[sock.fileno()] = name
            self.attached.append(name)
            if self._watcher is not None:
                try:
                    syns = self._filtered_socket(name, syn_filter(self.ports, loopback=name == "lo"),
                                                 SYN_SNAPLEN, SYN_SOCKET_BUFFER_BYTES)
                except (OSError, ValueError) as exc:  # the run loop still looks owners up, later
                    log.warning("plain-HTTP capture reads no SYNs on %s: %s", name, exc)
                else:
                    self._watcher.watch(name, syns)
        return errors

    def _filtered_socket(self, name: str, expression: str, snaplen: int, buffer_bytes: int) -> PacketSocket:
        return PacketSocket.open(name, expression, snaplen=snaplen, receive_buffer=buffer_bytes)

    def _follow_interfaces(self) -> None:
        """Sniff interfaces that came up since the start (containers, VPNs); drop those gone."""
        try:
            wanted = set(host_interfaces())
        except OSError:
            return
        for fd, name in list(self._iface_of.items()):
            if name not in wanted:
                sock = self._by_fd.pop(fd)
                del self._iface_of[fd]
                self._sockets.remove(sock)
                self.attached.remove(name)
                if self._watcher is not None:
                    self._watcher.unwatch(name)
                try:
                    sock.close()
                except OSError:
                    pass
        new = sorted(wanted - set(self.attached))
        if new:
            for error in self._open(new):
                log.warning("plain-HTTP capture skips an interface: %s", error)
            log.info("plain-HTTP capture interfaces=%s", ",".join(self.attached))

    def poll(self, timeout_ms: int = 100) -> None:
        if self._sockets:
            try:
                ready, _, _ = select.select(list(self._by_fd), [], [], max(timeout_ms, 0) / 1000)
            except (OSError, ValueError):
                ready = []
            budget = MAX_PACKETS_PER_POLL
            deadline = time.monotonic() + MAX_POLL_S
            for fd in ready:
                budget -= self._read(self._by_fd[fd], budget, deadline)
        elif timeout_ms > 0:
            time.sleep(timeout_ms / 1000)
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            for sock in self._sockets:
                self._kernel_drops += sock.kernel_drops()
            if self._interfaces is None and now >= self._next_interface_scan:
                self._next_interface_scan = now + INTERFACE_RESCAN_S
                self._follow_interfaces()
            self._conversations.tick(time.time_ns(), self._emit)

    def fds(self) -> frozenset[tuple[int, int]]:
        """The packet sockets, as (fd, identity of the socket object), for a
        caller that waits on them with other things (a closed socket's fd
        number may come back as another's)."""
        return frozenset((fd, id(sock)) for fd, sock in self._by_fd.items())

    def next_due_s(self) -> float | None:
        """Seconds until :meth:`poll` has work with no packet: expiring open
        conversations (every second while there are any), looking for new
        interfaces; the kernel's drop counters are read then too."""
        if not self._sockets:
            return None
        now = time.monotonic()
        due = None
        if len(self._conversations.table):
            due = self._next_housekeeping - now
        if self._interfaces is None:
            scan = max(self._next_interface_scan, self._next_housekeeping) - now
            due = scan if due is None else min(due, scan)
        return None if due is None else max(due, 0.0)

    def ignore_connection(self, pid: int, conn: int) -> None:
        self._conversations.ignore(conn)

    def exclude_pid(self, pid: int) -> None:
        self._excluded.add(pid)

    def include_pid(self, pid: int) -> None:
        self._excluded.discard(pid)

    def stats(self) -> dict[str, int]:
        table = self._conversations.table.counters
        out = {
            "events": self._events,
            "bytes": self._bytes,
            "plain.packets": table["segments"] + sum(self._skipped.values()),
            "plain.bytes": table["bytes"],
            "plain.connections": table["connections"],
            "plain.open_connections": len(self._conversations.table),
            "plain.reorder_drops": table["reorder_drops"],
            "plain.kernel_drops": self._kernel_drops,
            "plain.retransmitted_bytes": table["retransmitted_bytes"],
            "plain.gaps": table["gaps"],
            "plain.evicted_connections": table["evicted_connections"],
            "plain.unattributed_connections": self._conversations.counters["unattributed_connections"],
        }
        out.update({f"plain.{k}": v for k, v in self._owners.counters.items()})
        if self._watcher is not None:
            out.update({f"plain.{k}": v for k, v in self._watcher.counters.items()})
        out.update({f"plain.skipped.{k}": v for k, v in self._skipped.items()})
        return out

    def targets(self) -> list[str]:
        if not self._sockets:
            return []
        return [f"plain HTTP on {','.join(self.attached)} ports {','.join(map(str, self.ports))}"]

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        self._conversations.close(time.time_ns(), self._emit)
        if self._connect_owners is not None:
            self._owners.kernel = None
            self._connect_owners.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        self._sockets.clear()
        self._by_fd.clear()
        self._iface_of.clear()

    # -- internals ------------------------------------------------------------

    def _read(self, sock: Any, budget: int, deadline: float) -> int:
        n = 0
        while n < budget:
            if n % 64 == 63 and time.monotonic() > deadline:
                break
            try:
                link, data, ts_ns = sock.recv_frame()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("plain-HTTP capture read failed error=%s", exc)
                break
            n += 1
            segment = frame_segment(link, data, ts_ns or time.time_ns(), fast=self.fast)
            if isinstance(segment, str):
                self._skip(segment)
                continue
            self._conversations.feed(segment, self._emit)
        return n

    def _skip(self, reason: str) -> None:
        self._skipped[reason] = self._skipped.get(reason, 0) + 1

    def _owner_of(self, client: Endpoint, server: Endpoint, seen_ns: int, connecting: bool):
        owner = self._owners.lookup(client, server, seen_ns=seen_ns, connecting=connecting)
        if owner is None or self._on_process is None:
            return owner
        key = (owner.pid, owner.identity.start if owner.identity is not None else None)
        if key not in self._known_processes:
            self._known_processes[key] = None
            if len(self._known_processes) > MAX_KNOWN_PROCESSES:
                self._known_processes.popitem(last=False)
            self._on_process(owner.pid, owner.identity)
        return owner

    def _emit(self, event: DataEvent) -> None:
        if event.pid in self._excluded:
            return
        self._events += 1
        self._bytes += len(event.data)
        self._on_event(event)
