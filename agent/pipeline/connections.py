"""Per-connection reassembly: from interleaved DataEvents to finished Exchanges.

Events of many processes and connections arrive interleaved.  Each
connection (pid, conn id) gets its own state, found in an LRU table with a
bound on its size and on idle time.  The side of the conversation the
process is on is read from the bytes: a process that writes a request line
(or reads a status line) is the client; for HTTP/2 (http2_tap.py), one that
writes the client preface, and one that writes a SETTINGS frame first is a
server.  Only client sides become calls; the
server side of a call between two local processes is the same call seen
again, so it is ignored (and the kernel told to stop copying it).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from lumen_agent.parsers.http1 import (
    Body,
    EndOfMessage,
    Http1Parser,
    MessageHead,
    MessageKind,
    Skipped,
    Truncated,
    find_start,
)
from lumen_agent.parsers.http2 import PREFACE as HTTP2_PREFACE
from lumen_agent.parsers.http2 import is_settings_frame, might_be_frames, sniff_side
from lumen_agent.parsers.providers.recognise import provider_of_host
from lumen_agent.pipeline.counters import Counters
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.pipeline.exchange import Exchange
from lumen_agent.pipeline.http2_tap import Http2Tap

# Open connections tracked at once; the least recently active is evicted.
MAX_CONNECTIONS = 4096
# A connection silent this long is forgotten (long enough for slow reasoning
# models that think for minutes before the first byte).
IDLE_TIMEOUT_NS = 15 * 60 * 1_000_000_000
# Requests in flight on one HTTP/1.1 connection (pipelining is rare).
MAX_PENDING_EXCHANGES = 64
# Bytes seen on a connection without any HTTP start line before we decide it
# is some other protocol and stop looking.
MAX_SNIFF_BYTES = 64 * 1024


class Role(enum.Enum):
    UNKNOWN = "unknown"
    CLIENT = "client"
    SERVER = "server"  # inbound: the other side's call, not ours to count
    OTHER = "other"  # not HTTP, or a protocol we do not read


# The members read once per event, bound once: on Python 3.11 reading an
# enum member through its class costs about 0.14 us (measured here), a module
# global a tenth of that.
_CLIENT, _UNKNOWN, _SEND = Role.CLIENT, Role.UNKNOWN, Direction.SEND


class Http1Tap:
    """Both directions of one HTTP/1.1 connection, seen from the client."""

    def __init__(self, pid: int, conn: int, counters: Counters, capture_content: bool) -> None:
        self.pid = pid
        self.conn = conn
        self._counters = counters
        self._capture_content = capture_content
        self._requests = Http1Parser(MessageKind.REQUEST)
        self._responses = Http1Parser(MessageKind.RESPONSE)
        self._sending: Exchange | None = None  # request being written
        self._awaiting: deque[Exchange] = deque()  # requests sent, response not done
        self._receiving: Exchange | None = None  # response being read
        self._sequence = 0
        self.saw_llm = False
        self.saw_non_llm = False
        # A known LLM API host: other requests (model lists, file uploads) may
        # share its connection with calls, so it is never ignored.
        self.provider_host = False

    def sent(self, data: bytes, ts_ns: int, flags: EventFlag) -> list[Exchange]:
        """Bytes the client wrote.  Always ``[]`` here: an HTTP/1.1 request never
        finishes a call (:meth:`received` and :meth:`close` do); the list is the
        taps' common signature, and the HTTP/2 tap's ``sent`` can finish one."""
        if flags and flags & EventFlag.GAP:
            self._requests.lost_data()
        self._requests.receive_data(data)
        for event in self._requests.next_events():
            match event:
                case MessageHead():
                    self._sequence += 1
                    self._sending = Exchange(
                        pid=self.pid,
                        conn=self.conn,
                        stream_id=self._sequence,
                        http_version=event.http_version,
                        ts_start_ns=ts_ns,
                        request=event,
                        capture_content=self._capture_content,
                    )
                case Body() if self._sending is not None:
                    self._sending.on_request_body(event.data)
                case EndOfMessage() if self._sending is not None:
                    exchange, self._sending = self._sending, None
                    if exchange.on_request_end() is None:
                        self.saw_non_llm = True
                        self.provider_host = self.provider_host or (
                            provider_of_host(exchange.authority) is not None
                        )
                    else:
                        self.saw_llm = True
                    if len(self._awaiting) >= MAX_PENDING_EXCHANGES:
                        self._counters.skip("pipelining_limit")
                        self._awaiting.popleft()
                    self._awaiting.append(exchange)
                case Truncated():
                    self._sending = None
                    self._counters.skip("request_cut")
                case Skipped():
                    self._counters.skip("http1_request_bytes", event.reason, event.nbytes)
        return []

    def received(self, data: bytes, ts_ns: int, flags: EventFlag) -> list[Exchange]:
        responses = self._responses
        if flags and flags & EventFlag.GAP:
            responses.lost_data()
        if not responses.receive_data(data):
            return []  # body bytes only: the parser handed them to the exchange
        done: list[Exchange] = []
        for event in responses.next_events():
            match event:
                case MessageHead() if event.status is not None and event.status < 200:
                    continue  # 100 Continue and friends: the real response follows
                case MessageHead():
                    if not self._awaiting:
                        self._counters.skip("response_without_request")
                        self._receive_into(None)
                        continue
                    self._receive_into(self._awaiting.popleft())
                    self._receiving.on_response_head(event, ts_ns)
                case Body() if self._receiving is not None:
                    self._receiving.on_response_body(event.data)
                case EndOfMessage() if self._receiving is not None:
                    self._receiving.on_response_end(ts_ns)
                    done.append(self._receiving)
                    self._receive_into(None)
                case Truncated() if self._receiving is not None:
                    self._receiving.on_cut(ts_ns)
                    done.append(self._receiving)
                    self._receive_into(None)
                case Skipped():
                    self._counters.skip("http1_response_bytes", event.reason, event.nbytes)
        return done

    def _receive_into(self, exchange: Exchange | None) -> None:
        """The exchange whose response is being read; the response parser
        hands it body bytes directly (no ``Body`` event) while it is set."""
        self._receiving = exchange
        self._responses.body_sink = exchange.on_response_body if exchange is not None else None

    def close(self, ts_ns: int) -> list[Exchange]:
        """The connection ended: whatever is still open was cut off."""
        self._responses.connection_closed()
        done = self.received(b"", ts_ns, EventFlag.NONE)
        for exchange in self._awaiting:
            exchange.on_cut(ts_ns)
            done.append(exchange)
        self._awaiting.clear()
        self._sending = None
        return done


@dataclass(slots=True)
class Connection:
    pid: int
    conn: int
    last_ns: int
    role: Role = Role.UNKNOWN
    tap: Http1Tap | Http2Tap | None = None
    sniffed: int = 0
    # Bytes held while the role is unknown, per direction.
    sniff_send: bytearray = field(default_factory=bytearray)
    sniff_recv: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class TrackerResult:
    exchanges: list[Exchange] = field(default_factory=list)
    # Connections the capture may stop copying: (pid, conn).
    ignore: list[tuple[int, int]] = field(default_factory=list)


class ConnectionTracker:
    def __init__(self, counters: Counters, *, capture_content: bool = False) -> None:
        self._connections: OrderedDict[tuple[int, int], Connection] = OrderedDict()
        self._counters = counters
        self._capture_content = capture_content

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._connections

    def feed(self, event: DataEvent, out: TrackerResult) -> None:
        key = (event.pid, event.conn)  # event.conn_key, without the property call
        flags = event.flags
        connections = self._connections
        connection = connections.get(key)
        if connection is None:
            if flags and flags & EventFlag.CLOSE:
                return
            connection = Connection(event.pid, event.conn, event.ts_ns)
            connections[key] = connection
            if len(connections) > MAX_CONNECTIONS:
                self._evict_oldest(event.ts_ns, out)
        else:
            connections.move_to_end(key)
            connection.last_ns = event.ts_ns

        if flags and flags & EventFlag.CLOSE:
            del connections[key]
            if connection.tap is not None:
                out.exchanges.extend(connection.tap.close(event.ts_ns))
            return

        role = connection.role
        if role is not _CLIENT:
            if role is _UNKNOWN:
                self._sniff_role(connection, event, out)
            return

        tap = connection.tap
        if event.direction is _SEND:
            out.exchanges.extend(tap.sent(event.data, event.ts_ns, flags))
            self._check_not_llm(connection, out)
        elif done := tap.received(event.data, event.ts_ns, flags):
            out.exchanges.extend(done)

    def expire(self, now_ns: int, out: TrackerResult) -> None:
        """Forget connections idle past IDLE_TIMEOUT_NS (their exchanges time out)."""
        while self._connections:
            key, connection = next(iter(self._connections.items()))
            if now_ns - connection.last_ns < IDLE_TIMEOUT_NS:
                break
            self._evict(key, now_ns, out, "idle_connection")

    def close_all(self, now_ns: int, out: TrackerResult) -> None:
        for key in list(self._connections):
            connection = self._connections.pop(key)
            if connection.tap is not None:
                out.exchanges.extend(connection.tap.close(now_ns))

    # -- internals ----------------------------------------------------------

    def _sniff_role(self, connection: Connection, event: DataEvent, out: TrackerResult) -> None:
        """Decide from the first start line seen which side of HTTP the process is on."""
        sending = event.direction is Direction.SEND
        buf = connection.sniff_send if sending else connection.sniff_recv
        buf += event.data
        if HTTP2_PREFACE.startswith(bytes(buf[: len(HTTP2_PREFACE)])):
            if len(buf) < len(HTTP2_PREFACE):
                return  # could still be the HTTP/2 preface
            if sending:
                self._start_http2(connection, event, out, joined=False)
            else:
                connection.role = Role.SERVER
                self._forget(event.conn_key, "inbound_connection", out)
            return
        if sending and is_settings_frame(buf):
            # A server's first frame: it may send it before the preface arrives.
            connection.role = Role.SERVER
            self._forget(event.conn_key, "inbound_connection", out)
            return
        found = find_start(buf)
        if found is None:
            side = sniff_side(buf)
            if side is not None:  # HTTP/2 joined after its start
                if (side is MessageKind.REQUEST) == sending:
                    self._start_http2(connection, event, out, joined=True)
                else:
                    connection.role = Role.SERVER
                    self._forget(event.conn_key, "inbound_connection", out)
                return
            if len(buf) <= MAX_SNIFF_BYTES and might_be_frames(buf):
                return  # HTTP/2 frames, perhaps: keep them whole until they say
            # Keep only what may be the beginning of a start line still to come.
            keep = len(buf) - (buf.rfind(b"\n") + 1)
            dropped = len(buf) - keep
            if dropped:
                del buf[:dropped]
                connection.sniffed += dropped
                self._counters.skip("unsynchronised_bytes", "no HTTP start line yet", dropped)
            if connection.sniffed > MAX_SNIFF_BYTES or keep > MAX_SNIFF_BYTES:
                connection.role = Role.OTHER
                self._forget(event.conn_key, "non_http_connection", out)
            return
        offset, kind = found
        is_request = kind is MessageKind.REQUEST
        connection.role = Role.CLIENT if is_request == sending else Role.SERVER
        if connection.role is Role.SERVER:
            self._forget(event.conn_key, "inbound_connection", out)
            return
        if offset:
            self._counters.skip("unsynchronised_bytes", "joined mid-stream", offset)
        tap = connection.tap = Http1Tap(connection.pid, connection.conn, self._counters, self._capture_content)
        sent, received = bytes(connection.sniff_send), bytes(connection.sniff_recv)
        connection.sniff_send = connection.sniff_recv = bytearray()
        # Both parsers start by hunting for a boundary, so the bytes before
        # the start line are dropped (and counted) there.
        if sent:
            tap.sent(sent, event.ts_ns, EventFlag.NONE)
            self._check_not_llm(connection, out)
        if received:
            out.exchanges.extend(tap.received(received, event.ts_ns, EventFlag.NONE))

    def _start_http2(self, connection: Connection, event: DataEvent, out: TrackerResult, *, joined: bool) -> None:
        connection.role = Role.CLIENT
        tap = connection.tap = Http2Tap(
            connection.pid, connection.conn, self._counters, self._capture_content, joined=joined
        )
        sent, received = bytes(connection.sniff_send), bytes(connection.sniff_recv)
        connection.sniff_send = connection.sniff_recv = bytearray()
        if sent:
            out.exchanges.extend(tap.sent(sent, event.ts_ns, EventFlag.NONE))
            self._check_not_llm(connection, out)
        if received and connection.tap is not None:
            out.exchanges.extend(tap.received(received, event.ts_ns, EventFlag.NONE))

    def _check_not_llm(self, connection: Connection, out: TrackerResult) -> None:
        tap = connection.tap
        if tap is not None and tap.saw_non_llm and not tap.saw_llm and not tap.provider_host:
            # Its first request went to no LLM API: this connection is not
            # ours, and the kernel can stop copying it.
            self._forget((connection.pid, connection.conn), "non_llm_connection", out)

    def _forget(self, key: tuple[int, int], reason: str, out: TrackerResult) -> None:
        """Stop reading a connection; keep its entry so later bytes are dropped fast."""
        self._counters.add(f"connections.{reason}")
        connection = self._connections[key]
        connection.role = Role.OTHER if connection.role is Role.CLIENT else connection.role
        connection.tap = None
        out.ignore.append(key)

    def _evict_oldest(self, now_ns: int, out: TrackerResult) -> None:
        key = next(iter(self._connections))
        self._evict(key, now_ns, out, "evicted_connection")

    def _evict(self, key: tuple[int, int], now_ns: int, out: TrackerResult, reason: str) -> None:
        connection = self._connections.pop(key)
        self._counters.add(f"connections.{reason}")
        if connection.tap is not None:
            out.exchanges.extend(connection.tap.close(now_ns))
