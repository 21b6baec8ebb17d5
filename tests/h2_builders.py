"""Build HTTP/2 conversations as a client writes and reads them.

``H2Conversation`` drives two real ``h2`` connections (the PyPI library
every Python HTTP/2 client and server uses) against each other and keeps the
bytes each side wrote, in order, as ``(MessageKind, bytes)`` pieces: REQUEST
for what the client wrote, RESPONSE for what it read.  ``raw_frame`` makes
frames by hand (with hyperframe) for the shapes h2 does not send on its own,
such as padded HEADERS.
"""

from __future__ import annotations

import itertools
import json

import h2.config
import h2.connection
import h2.events
from builders import FAKE_KEY, encode
from hyperframe.frame import ContinuationFrame, HeadersFrame

from lumen_agent.parsers.http1 import MessageKind
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

_ts = itertools.count(1_764_000_000_000_000_000, 1_000_000)


class H2Conversation:
    def __init__(self) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.pieces: list[tuple[MessageKind, bytes]] = []
        # A server writes its SETTINGS first, before it reads the client's preface.
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.flush_client()
        self.flush_server()

    def flush_client(self) -> None:
        data = self.client.data_to_send()
        if data:
            self.pieces.append((MessageKind.REQUEST, data))
            _acknowledge(self.server, self.server.receive_data(data))

    def flush_server(self) -> None:
        data = self.server.data_to_send()
        if data:
            self.pieces.append((MessageKind.RESPONSE, data))
            _acknowledge(self.client, self.client.receive_data(data))
            self.flush_client()  # WINDOW_UPDATE, PING ACK, SETTINGS ACK

    def raw(self, kind: MessageKind, data: bytes) -> None:
        """Bytes that bypass h2 (hand-made frames): recorded, not delivered."""
        self.pieces.append((kind, data))

    # -- one call -----------------------------------------------------------

    def request(self, url_path: str, body: dict | bytes | None, *, host: str = "api.openai.com",
                method: str = "POST", extra: list[tuple[str, str]] | None = None) -> int:
        sid = self.client.get_next_available_stream_id()
        raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        headers = [(":method", method), (":scheme", "https"), (":authority", host), (":path", url_path),
                   ("authorization", f"Bearer {FAKE_KEY}"), ("content-type", "application/json"),
                   ("user-agent", "test-client/1.0"), *(extra or [])]
        self.client.send_headers(sid, headers, end_stream=not raw)
        if raw:
            self.client.send_data(sid, raw, end_stream=True)
        self.flush_client()
        return sid

    def respond(self, sid: int, body: bytes, *, status: int = 200, content_type: str = "application/json",
                encoding: str | None = None, piece: int = 97, pad: int | None = None,
                trailers: list[tuple[str, str]] | None = None, end: bool = True) -> None:
        payload = encode(body, encoding)
        headers = [(":status", str(status)), ("content-type", content_type), ("x-request-id", "req_test_0001")]
        if encoding:
            headers.append(("content-encoding", encoding))
        self.server.send_headers(sid, headers)
        self.flush_server()
        for i in range(0, len(payload), piece):
            last = i + piece >= len(payload) and not trailers and end
            self.server.send_data(sid, payload[i : i + piece], end_stream=last, pad_length=pad)
            self.flush_server()
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)
            self.flush_server()
        elif not payload and end:
            self.server.end_stream(sid)
            self.flush_server()

    # -- as DataEvents --------------------------------------------------------

    def events(self, *, pid: int = 4242, conn: int = 0xABC, step: int | None = None,
               close: bool = False) -> list[DataEvent]:
        out = []
        for kind, data in self.pieces:
            direction = Direction.SEND if kind is MessageKind.REQUEST else Direction.RECV
            size = step or len(data)
            for i in range(0, len(data), size):
                out.append(DataEvent(next(_ts), pid, pid, conn, direction, data[i : i + size]))
        if close:
            out.append(DataEvent(next(_ts), pid, pid, conn, Direction.RECV, b"", EventFlag.CLOSE))
        return out

    def bytes_of(self, kind: MessageKind) -> bytes:
        return b"".join(data for k, data in self.pieces if k is kind)


def _acknowledge(conn: h2.connection.H2Connection, events) -> None:
    """Give back flow-control credit, as a reading application does (WINDOW_UPDATE)."""
    for event in events:
        if isinstance(event, h2.events.DataReceived) and event.stream_id in conn.streams:
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)


def raw_headers(encoder, stream_id: int, headers: list[tuple[str, str]], *, end_stream: bool = False,
                pad: int = 0, priority: bool = False, split: int | None = None) -> bytes:
    """A header block as hand-made frames: PADDED / PRIORITY flags, CONTINUATION after ``split`` bytes."""
    block = encoder.encode(headers)
    first, rest = (block, b"") if split is None else (block[:split], block[split:])
    frame = HeadersFrame(stream_id, first)
    if end_stream:
        frame.flags.add("END_STREAM")
    if pad:
        frame.flags.add("PADDED")
        frame.pad_length = pad
    if priority:
        frame.flags.add("PRIORITY")
        frame.depends_on, frame.stream_weight, frame.exclusive = 0, 200, False
    if not rest:
        frame.flags.add("END_HEADERS")
        return frame.serialize()
    out = frame.serialize()
    while rest:
        size = 7 if len(rest) < 100 else 16384  # tiny pieces for small blocks, as many frames as can be
        piece, rest = rest[:size], rest[size:]
        cont = ContinuationFrame(stream_id, piece)
        if not rest:
            cont.flags.add("END_HEADERS")
        out += cont.serialize()
    return out
