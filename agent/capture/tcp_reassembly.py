"""Sans-I/O TCP reassembly: segments of many connections in, ordered byte streams out.

A packet source (the live sniffer, a pcap file) turns each TCP packet into a
``Segment`` and feeds it to a ``FlowTable``; the table hands back
``StreamData`` (bytes of one direction of one connection, in order, each byte
once) and ``StreamClosed``.  No sockets, no clocks: time comes from the
segments, so a test, a capture file and the kernel drive it the same way.

What real captures contain and how it is handled:

- retransmissions and overlapping segments: bytes already delivered are
  trimmed off, so every byte is delivered once (counted as ``retransmitted``);
- out-of-order segments: held in a per-direction reorder buffer until the
  hole before them fills; the buffer is bounded (``MAX_REORDER_*``), and when
  it would overflow the hole is given up on: delivery skips to the earliest
  held segment with ``gap`` set, as with lost ring-buffer records;
- a connection joined mid-stream (no SYN seen): its first bytes carry ``gap``;
- FIN from both sides (or RST): ``StreamClosed`` once, after the data;
- SYN floods and port scans: the table holds at most ``MAX_FLOWS``
  connections, least recently active evicted first.

Which side is the client: the sender of a SYN without ACK; failing that, the
side talking *to* one of the ``server_ports``; failing that, the side with
the higher (ephemeral) port.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

# Connections tracked at once: bounds memory under SYN floods and scans.
MAX_FLOWS = 16384
# Out-of-order bytes held for one direction of one connection.  Loopback
# segments are up to 64 KiB, so this holds a few of them.
MAX_REORDER_BYTES = 512 * 1024
# Out-of-order segments held for one direction of one connection.
MAX_REORDER_SEGMENTS = 128
# Out-of-order bytes held over all connections together.
MAX_REORDER_BYTES_TOTAL = 32 * 1024 * 1024
# A segment further ahead than this of the next expected byte is not a
# reordering but a lost stretch (or junk): it is not held, it becomes a gap.
MAX_REORDER_WINDOW = 16 * 1024 * 1024
# Closed connections remembered, so a stray retransmission after the close
# (a duplicated FIN-time segment) is not taken for a new connection.
MAX_CLOSED_REMEMBERED = 4096
# A connection silent this long is closed (matches the pipeline's idle timeout).
FLOW_IDLE_TIMEOUT_NS = 15 * 60 * 1_000_000_000

SEQ_MOD = 1 << 32

FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Segment:
    ts_ns: int
    src: Endpoint
    dst: Endpoint
    seq: int
    flags: int  # TCP flag bits (FIN, SYN, RST, ACK, ...)
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class StreamData:
    flow_id: int
    client: Endpoint
    server: Endpoint
    from_client: bool
    ts_ns: int
    data: bytes
    gap: bool = False  # bytes before these on this direction were lost


@dataclass(frozen=True, slots=True)
class StreamClosed:
    flow_id: int
    client: Endpoint
    server: Endpoint
    ts_ns: int
    reason: str  # fin, rst, idle, evicted, end


StreamEvent = StreamData | StreamClosed


_MAPPED_V4 = "::ffff:"


def normalise_ip(ip: str) -> str:
    """IPv4-mapped IPv6 addresses (a dual-stack socket's view) as plain IPv4."""
    return ip[len(_MAPPED_V4):] if ip.startswith(_MAPPED_V4) and "." in ip else ip


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in 32-bit sequence space, as a signed number."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


class HalfStream:
    """One direction of one connection: next expected byte and what is held ahead of it."""

    __slots__ = ("fin_seq", "finished", "held", "held_bytes", "next_seq", "pending_gap")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, bytes] = {}  # seq -> payload, all after next_seq
        self.held_bytes = 0
        self.fin_seq: int | None = None
        self.finished = False
        self.pending_gap = False


@dataclass(slots=True)
class Flow:
    flow_id: int
    client: Endpoint
    server: Endpoint
    last_ns: int
    to_server: HalfStream = field(default_factory=HalfStream)
    to_client: HalfStream = field(default_factory=HalfStream)
    ignored: bool = False  # the consumer lost interest: bytes are dropped unread
    closed: bool = False


class FlowTable:
    """Every connection seen, keyed by its endpoints (either order)."""

    def __init__(self, server_ports: frozenset[int] | set[int] = frozenset(), *, first_flow_id: int = 1) -> None:
        self._server_ports = frozenset(server_ports)
        self._flows: OrderedDict[tuple[Endpoint, Endpoint], Flow] = OrderedDict()
        self._by_id: dict[int, Flow] = {}
        self._next_id = first_flow_id
        # (client, server) -> where each direction ended, for closed connections.
        self._closed: OrderedDict[tuple[Endpoint, Endpoint], tuple[int | None, int | None]] = OrderedDict()
        self.held_bytes = 0
        self.counters: dict[str, int] = {
            "segments": 0,
            "bytes": 0,
            "connections": 0,
            "retransmitted_bytes": 0,
            "reordered_segments": 0,
            "reorder_drops": 0,  # held segments given up on (buffer full) or not held
            "gaps": 0,
            "ignored_bytes": 0,
            "evicted_connections": 0,
        }

    def __len__(self) -> int:
        return len(self._flows)

    def flow(self, flow_id: int) -> Flow | None:
        return self._by_id.get(flow_id)

    def newest(self) -> Flow | None:
        """The connection created last, if it is still open."""
        return self._by_id.get(self._next_id - 1)

    def ignore(self, flow_id: int) -> None:
        """Drop this connection's bytes from now on (keep it, so they are known to be junk)."""
        flow = self._by_id.get(flow_id)
        if flow is not None and not flow.ignored:
            flow.ignored = True
            for half in (flow.to_server, flow.to_client):
                self.held_bytes -= half.held_bytes
                half.held.clear()
                half.held_bytes = 0

    # -- input ----------------------------------------------------------------

    def feed(self, seg: Segment, out: list[StreamEvent]) -> None:
        c = self.counters
        c["segments"] += 1
        c["bytes"] += len(seg.payload)
        flow, from_client = self._flow_for(seg, out)
        if flow is None:
            return
        flow.last_ns = seg.ts_ns
        half = flow.to_server if from_client else flow.to_client

        if seg.flags & RST:
            self._close(flow, seg.ts_ns, "rst", out)
            return
        if seg.flags & SYN:
            # The initial sequence number; the SYN itself takes one number.
            if half.next_seq is None:
                half.next_seq = (seg.seq + 1) % SEQ_MOD
            return
        if flow.ignored:
            c["ignored_bytes"] += len(seg.payload)
            half.finished = half.finished or bool(seg.flags & FIN)
        elif seg.payload:
            self._data(flow, half, from_client, seg, out)
        if seg.flags & FIN and not flow.ignored:
            end = (seg.seq + len(seg.payload)) % SEQ_MOD
            half.fin_seq = end
            if half.next_seq is None:
                half.next_seq = end
            self._check_fin(half)
        if flow.to_server.finished and flow.to_client.finished:
            self._close(flow, seg.ts_ns, "fin", out)

    def expire(self, now_ns: int, out: list[StreamEvent]) -> None:
        """Close connections idle past FLOW_IDLE_TIMEOUT_NS."""
        while self._flows:
            flow = next(iter(self._flows.values()))
            if now_ns - flow.last_ns < FLOW_IDLE_TIMEOUT_NS:
                break
            self._close(flow, now_ns, "idle", out)

    def close_all(self, now_ns: int, out: list[StreamEvent]) -> None:
        """End of input: deliver what is held (after its holes) and close everything."""
        for flow in list(self._flows.values()):
            self._close(flow, now_ns, "end", out)

    # -- internals ------------------------------------------------------------

    def _flow_for(self, seg: Segment, out: list[StreamEvent]) -> tuple[Flow | None, bool]:
        key = (seg.src, seg.dst)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows.get((seg.dst, seg.src))
            if flow is None:
                if self._is_stale(seg):
                    self.counters["retransmitted_bytes"] += len(seg.payload)
                    return None, False
                if seg.flags & RST or not (seg.flags & SYN or seg.payload):
                    # A refused connection (port scans), or the last ACK of
                    # one already closed: nothing to track.
                    return None, False
                flow = self._new_flow(seg, out)
                return flow, seg.src == flow.client
            key = (seg.dst, seg.src)
        self._flows.move_to_end(key)
        return flow, seg.src == flow.client

    def _is_stale(self, seg: Segment) -> bool:
        """A segment of a connection closed already, from before its end."""
        if seg.flags & SYN:
            self._closed.pop((seg.src, seg.dst), None)  # the 4-tuple is being reused
            self._closed.pop((seg.dst, seg.src), None)
            return False
        ends = self._closed.get((seg.src, seg.dst))
        end = ends[0] if ends is not None else None
        if ends is None:
            ends = self._closed.get((seg.dst, seg.src))
            end = ends[1] if ends is not None else None
        if ends is None:
            return False
        return end is None or seq_diff((seg.seq + len(seg.payload)) % SEQ_MOD, end) <= 0

    def _new_flow(self, seg: Segment, out: list[StreamEvent]) -> Flow:
        if seg.flags & SYN and not seg.flags & ACK:
            client, server = seg.src, seg.dst
        elif seg.flags & SYN:  # SYN-ACK: the sender is the server
            client, server = seg.dst, seg.src
        elif seg.dst.port in self._server_ports and seg.src.port not in self._server_ports:
            client, server = seg.src, seg.dst
        elif seg.src.port in self._server_ports and seg.dst.port not in self._server_ports:
            client, server = seg.dst, seg.src
        elif seg.src.port >= seg.dst.port:
            client, server = seg.src, seg.dst
        else:
            client, server = seg.dst, seg.src
        flow = Flow(self._next_id, client, server, seg.ts_ns)
        self._next_id += 1
        self._flows[(client, server)] = flow
        self._by_id[flow.flow_id] = flow
        self.counters["connections"] += 1
        if len(self._flows) > MAX_FLOWS:
            oldest = next(iter(self._flows.values()))
            self.counters["evicted_connections"] += 1
            self._close(oldest, seg.ts_ns, "evicted", out)
        return flow

    def _data(self, flow: Flow, half: HalfStream, from_client: bool, seg: Segment,
              out: list[StreamEvent]) -> None:
        c = self.counters
        payload, seq = seg.payload, seg.seq
        if half.next_seq is None:
            # Joined mid-stream: start here, and say bytes came before.
            half.next_seq = seq
            half.pending_gap = True
        ahead = seq_diff(seq, half.next_seq)
        if ahead < 0:
            # Retransmission or overlap: trim what was delivered already.
            if -ahead >= len(payload):
                c["retransmitted_bytes"] += len(payload)
                return
            c["retransmitted_bytes"] += -ahead
            payload, seq, ahead = payload[-ahead:], half.next_seq, 0
        if ahead > 0:
            self._hold(flow, half, from_client, seq, ahead, payload, seg.ts_ns, out)
            return
        self._deliver(flow, half, from_client, payload, seg.ts_ns, out)
        self._drain(flow, half, from_client, seg.ts_ns, out)

    def _deliver(self, flow: Flow, half: HalfStream, from_client: bool, payload: bytes, ts_ns: int,
                 out: list[StreamEvent]) -> None:
        gap, half.pending_gap = half.pending_gap, False
        if gap:
            self.counters["gaps"] += 1
        half.next_seq = (half.next_seq + len(payload)) % SEQ_MOD
        out.append(StreamData(flow.flow_id, flow.client, flow.server, from_client, ts_ns, payload, gap))
        self._check_fin(half)

    def _drain(self, flow: Flow, half: HalfStream, from_client: bool, ts_ns: int, out: list[StreamEvent]) -> None:
        """Deliver held segments that the hole-filling bytes made contiguous."""
        while half.held:
            progressed = False
            for seq in list(half.held):
                ahead = seq_diff(seq, half.next_seq)
                if ahead > 0:
                    continue
                payload = self._release(half, seq)
                if -ahead < len(payload):
                    self.counters["retransmitted_bytes"] += -ahead
                    self._deliver(flow, half, from_client, payload[-ahead:], ts_ns, out)
                    progressed = True
                else:
                    self.counters["retransmitted_bytes"] += len(payload)
            if not progressed:
                return

    def _hold(self, flow: Flow, half: HalfStream, from_client: bool, seq: int, ahead: int, payload: bytes,
              ts_ns: int, out: list[StreamEvent]) -> None:
        c = self.counters
        if ahead > MAX_REORDER_WINDOW:
            # Far beyond anything a reordering explains: give up on the hole.
            c["reorder_drops"] += 1 + len(half.held)
            self._skip_to(half, seq)
            self._deliver(flow, half, from_client, payload, ts_ns, out)
            self._drain(flow, half, from_client, ts_ns, out)
            return
        if seq in half.held and len(half.held[seq]) >= len(payload):
            c["retransmitted_bytes"] += len(payload)
            return
        if seq in half.held:
            self._release(half, seq)
        c["reordered_segments"] += 1
        half.held[seq] = payload
        half.held_bytes += len(payload)
        self.held_bytes += len(payload)
        if (half.held_bytes > MAX_REORDER_BYTES or len(half.held) > MAX_REORDER_SEGMENTS
                or self.held_bytes > MAX_REORDER_BYTES_TOTAL):
            # The hole is not going to fill in time: skip it and deliver what
            # is held from its earliest segment on, with the gap marked.
            c["reorder_drops"] += 1
            first = min(half.held, key=lambda s: seq_diff(s, half.next_seq))
            self._skip_to(half, first)
            self._drain(flow, half, from_client, ts_ns, out)

    def _skip_to(self, half: HalfStream, seq: int) -> None:
        half.next_seq = seq
        half.pending_gap = True

    def _release(self, half: HalfStream, seq: int) -> bytes:
        payload = half.held.pop(seq)
        half.held_bytes -= len(payload)
        self.held_bytes -= len(payload)
        return payload

    def _check_fin(self, half: HalfStream) -> None:
        if half.fin_seq is not None and half.next_seq is not None and seq_diff(half.next_seq, half.fin_seq) >= 0:
            half.finished = True

    def _close(self, flow: Flow, ts_ns: int, reason: str, out: list[StreamEvent]) -> None:
        if flow.closed:
            return
        flow.closed = True
        if not flow.ignored and reason != "rst":
            # Deliver what is held, after its holes: the end of a response
            # is worth more than waiting for bytes that will never come.
            for from_client, half in ((True, flow.to_server), (False, flow.to_client)):
                while half.held:
                    first = min(half.held, key=lambda s: seq_diff(s, half.next_seq))
                    if seq_diff(first, half.next_seq) > 0:
                        self._skip_to(half, first)
                    self._drain(flow, half, from_client, ts_ns, out)
        for half in (flow.to_server, flow.to_client):
            self.held_bytes -= half.held_bytes
            half.held.clear()
            half.held_bytes = 0
        del self._flows[(flow.client, flow.server)]
        del self._by_id[flow.flow_id]
        self._closed[(flow.client, flow.server)] = (flow.to_server.next_seq, flow.to_client.next_seq)
        if len(self._closed) > MAX_CLOSED_REMEMBERED:
            self._closed.popitem(last=False)
        out.append(StreamClosed(flow.flow_id, flow.client, flow.server, ts_ns, reason))
