"""TCP conversations as the pipeline's ``DataEvent``s, seen from the local process.

Reassembly (``tcp_reassembly``) gives each connection's two byte streams;
this module says whose they are.  A connection is told from the side of the
local process that owns a socket of it, as a TLS probe in that process
would see it: the client's bytes are ``SEND`` when the client is local.

- Both ends local (a local model server and its caller): the client's view,
  so the call counts once, as the client's, exactly as on the eBPF path.
- Only the server local (remote callers of a local Ollama): the server's
  view; the pipeline recognises the inbound side and drops it, as it does
  for a TLS server's probes.
- No local owner (a capture file, another network namespace, a process
  gone before it was looked up): the client's view with pid 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lumen_agent.capture.socket_owner import Owner
from lumen_agent.capture.tcp_reassembly import (
    ACK,
    SYN,
    Endpoint,
    FlowTable,
    Segment,
    StreamClosed,
    StreamData,
    StreamEvent,
)
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

# Connection ids of sniffed connections start here, far above any user-space
# pointer (the eBPF capture's SSL*), so the two never collide in one agent.
CONN_ID_BASE = 1 << 56

# (client, server, when the connection's first packet was captured, asked at its
# SYN: the handshake may not have ended) -> its local owner
OwnerOf = Callable[[Endpoint, Endpoint, int, bool], "Owner | None"]


class StreamDecryptor(Protocol):
    """Turns a TLS connection's bytes into its plaintext (``replay --keylog``)."""

    def feed(self, event: StreamData) -> list[StreamData]: ...
    def closed(self, flow_id: int) -> None: ...


# The ``capture`` of rows from sniffed connections, when they share an agent
# with another capture.
SNIFFED_CAPTURE = "plain"


def is_sniffed_conn(conn: int) -> bool:
    return conn >= CONN_ID_BASE


def capture_of_conn(conn: int) -> str | None:
    """How a connection was seen, for a pipeline fed by more than one capture."""
    return SNIFFED_CAPTURE if conn >= CONN_ID_BASE else None


class Conversations:
    def __init__(self, server_ports: frozenset[int] | set[int] = frozenset(),
                 owner_of: OwnerOf | None = None, decrypt: StreamDecryptor | None = None) -> None:
        """``owner_of(client, server, seen_ns, connecting)``: the local owner of a
        connection seen at ``seen_ns``; ``connecting``: asked at its SYN."""
        self.table = FlowTable(server_ports)
        self._decrypt = decrypt
        self._owner_of = owner_of
        self._owners: dict[int, Owner | None] = {}
        self._first_ns: dict[int, int] = {}  # flow -> when its first packet was captured
        self._retried: set[int] = set()
        self.counters = {"unattributed_connections": 0}

    def feed(self, segment: Segment, emit: Callable[[DataEvent], None]) -> None:
        out: list[StreamEvent] = []
        before = self.table.counters["connections"]
        self.table.feed(segment, out)
        if self._owner_of is not None and self.table.counters["connections"] != before:
            # A new connection: find its process now, while it surely runs.
            flow = self.table.newest()
            if flow is not None:
                self._first_ns[flow.flow_id] = segment.ts_ns
                connecting = segment.flags & (SYN | ACK) == SYN
                self._owners[flow.flow_id] = self._owner_of(flow.client, flow.server, segment.ts_ns, connecting)
        self._emit_all(out, emit)

    def tick(self, now_ns: int, emit: Callable[[DataEvent], None]) -> None:
        out: list[StreamEvent] = []
        self.table.expire(now_ns, out)
        self._emit_all(out, emit)

    def close(self, now_ns: int, emit: Callable[[DataEvent], None]) -> None:
        out: list[StreamEvent] = []
        self.table.close_all(now_ns, out)
        self._emit_all(out, emit)

    def ignore(self, conn: int) -> None:
        if is_sniffed_conn(conn):
            self.table.ignore(conn - CONN_ID_BASE)

    def _owner(self, event: StreamData | StreamClosed) -> Owner | None:
        fid = event.flow_id
        owner = self._owners.get(fid)
        if owner is None and self._owner_of is not None and fid not in self._retried and isinstance(event, StreamData):
            # Not found at the first packet (a server's accepted socket does
            # not exist yet at SYN time): one more look at the first bytes.
            self._retried.add(fid)
            owner = self._owners[fid] = self._owner_of(event.client, event.server,
                                                       self._first_ns.get(fid, event.ts_ns), False)
            if owner is None:
                self.counters["unattributed_connections"] += 1
        return owner

    def _emit_all(self, out: list[StreamEvent], emit: Callable[[DataEvent], None]) -> None:
        if self._decrypt is not None:
            out = self._decrypted(out)
        for event in out:
            owner = self._owner(event)
            pid = owner.pid if owner is not None else 0
            client_view = owner is None or owner.is_client
            conn = CONN_ID_BASE + event.flow_id
            if isinstance(event, StreamClosed):
                self._owners.pop(event.flow_id, None)
                self._first_ns.pop(event.flow_id, None)
                self._retried.discard(event.flow_id)
                emit(DataEvent(event.ts_ns, pid, pid, conn, Direction.SEND, b"", EventFlag.CLOSE))
                continue
            direction = Direction.SEND if event.from_client == client_view else Direction.RECV
            emit(DataEvent(event.ts_ns, pid, pid, conn, direction, event.data,
                           EventFlag.GAP if event.gap else EventFlag.NONE))

    def _decrypted(self, out: list[StreamEvent]) -> list[StreamEvent]:
        plain: list[StreamEvent] = []
        for event in out:
            if isinstance(event, StreamData):
                plain.extend(self._decrypt.feed(event))
            else:
                self._decrypt.closed(event.flow_id)
                plain.append(event)
        return plain
