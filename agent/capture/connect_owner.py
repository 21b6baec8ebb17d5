"""Who opened a sniffed connection, as the kernel recorded it at connect().

The sniffer's SYN thread looks a new connection's owner up in /proc right
after the SYN, but a curl answered in 2 ms may have exited by then on a
loaded host.  With eBPF allowed, ``bpf/connect_owner.c`` (a tracepoint on
``sock:inet_sock_set_state``) records the connecting process -- pid and comm
-- under the connection's four-tuple in a BPF LRU map, inside connect()
itself.  ``SocketOwners`` asks this map first and falls back to sock_diag and
/proc.  Only compiled when the agent runs eBPF and sniffs (``run``, not
``run --capture plain``).

The map gives pid and comm.  The rest of a process's identity (exe, user,
unit, start time) is read from /proc when the process is still alive and its
comm matches; a process gone already keeps its pid and comm, the rest NULL.

    table = ConnectOwners(ports=(11434, 8000))
    table.start()                        # CaptureError if BCC cannot load it
    identity = table.owner(client, server, seen_ns)
    table.close()
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable

from lumen_agent.capture.kernel_comm import KernelIdentities
from lumen_agent.capture.tcp_reassembly import Endpoint
from lumen_agent.pipeline.attribution import ProcessIdentity

log = logging.getLogger("lumen_agent")

# Connections remembered by the kernel at once (each map; LRU evicts the oldest).
CONNECT_OWNERS = 16384
# A map entry written this long after a connection was first seen belongs to
# a later connection on the same four-tuple (clock read skew between the
# kernel's monotonic clock and the packet's wall-clock stamp is microseconds).
REUSE_SLACK_NS = 100_000_000
SOURCE = "connect_owner.c"


class OwnerKey(ct.Structure):
    _fields_ = [("family", ct.c_uint16), ("sport", ct.c_uint16), ("dport", ct.c_uint16), ("pad", ct.c_uint16),
                ("saddr", ct.c_uint8 * 16), ("daddr", ct.c_uint8 * 16)]


class OwnerValue(ct.Structure):
    _fields_ = [("tgid", ct.c_uint32), ("pad", ct.c_uint32), ("connect_ns", ct.c_uint64), ("comm", ct.c_char * 16)]


def owner_keys(client: Endpoint, server: Endpoint) -> list[OwnerKey]:
    """The map keys a connection from ``client`` to ``server`` may be stored under.

    An IPv4 connection from an IPv6 socket is stored as AF_INET6 with
    v4-mapped addresses (``::ffff:127.0.0.1``), so both are tried.
    """
    c, s = ipaddress.ip_address(client.ip), ipaddress.ip_address(server.ip)
    keys = []
    if c.version == 4 and s.version == 4:
        keys.append(_key(socket.AF_INET, client.port, server.port, c.packed, s.packed))
        c, s = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + c.packed), \
            ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + s.packed)
    if c.version == 6 and s.version == 6:
        keys.append(_key(socket.AF_INET6, client.port, server.port, c.packed, s.packed))
    return keys


def _key(family: int, sport: int, dport: int, saddr: bytes, daddr: bytes) -> OwnerKey:
    key = OwnerKey(family=family, sport=sport, dport=dport)
    ct.memmove(key.saddr, saddr, len(saddr))
    ct.memmove(key.daddr, daddr, len(daddr))
    return key


class ConnectOwners:
    def __init__(self, ports: Iterable[int], identify: Callable[[int], ProcessIdentity | None] | None = None) -> None:
        """``identify(pid)``: who a live process is, from /proc (None: gone)."""
        self.ports = tuple(sorted(set(ports)))
        self._identify = identify
        self._bpf = None
        self._build = None
        self._table = None
        self._identities: KernelIdentities | None = None

    def prepare(self) -> None:
        """Start compiling the program (in a child process), so it builds while the caller does other work."""
        if self._build is None and self._bpf is None:
            from lumen_agent.capture.bpf_loader import BpfBuild
            from lumen_agent.capture.ebpf import bpf_source_dir

            src = bpf_source_dir() / SOURCE
            self._build = BpfBuild(SOURCE, src.read_bytes(), [f"-DLUMEN_CONNECT_OWNERS={CONNECT_OWNERS}"])

    def start(self) -> None:
        self.prepare()
        build, self._build = self._build, None
        self._bpf = build.result()
        ports = self._bpf.maps["sniffed_ports"]
        for port in self.ports:
            ports.update(struct.pack("=H", port), b"\x01")
        self._table = self._bpf.maps["connect_owners"]
        if self._identify is None:
            from lumen_agent.pipeline.attribution import Attribution

            self._identify = Attribution().identify
        self._identities = KernelIdentities(self._identify)

    def owner(self, client: Endpoint, server: Endpoint, seen_ns: int) -> ProcessIdentity | None:
        """Who connected ``client`` to ``server``, for a connection first seen at ``seen_ns`` (wall clock)."""
        if self._table is None:
            return None
        for key in owner_keys(client, server):
            raw = self._table.lookup(bytes(key))
            if raw is None:
                continue
            value = OwnerValue.from_buffer_copy(raw)
            connect_wall_ns = value.connect_ns + time.time_ns() - time.monotonic_ns()
            if connect_wall_ns > seen_ns + REUSE_SLACK_NS:
                return None  # a later connection on the same four-tuple
            return self._identity(value.tgid, value.comm.decode(errors="replace"), connect_wall_ns)
        return None

    def _identity(self, pid: int, comm: str, connect_wall_ns: int) -> ProcessIdentity:
        # Gone (or the pid is another process's now): what the kernel saw, the
        # first connection seen of the process standing in for its start time.
        if self._identities is None:
            self._identities = KernelIdentities(self._identify)
        return self._identities.identity(pid, comm, connect_wall_ns)

    def close(self) -> None:
        bpf, self._bpf, self._table = self._bpf, None, None
        if bpf is not None:
            bpf.close()
        build, self._build = self._build, None
        if build is not None:
            build.cancel()
