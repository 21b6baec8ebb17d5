"""Sans-I/O HTTP/1.1 message parser for one direction of one connection.

``Http1Parser(MessageKind.REQUEST)`` reads what a client writes,
``Http1Parser(MessageKind.RESPONSE)`` what it reads.  Feed bytes with
``receive_data`` and collect ``next_events()``: a ``MessageHead``, ``Body``
pieces (transfer coding already removed, content coding untouched) and an
``EndOfMessage``, repeated for every message on a keep-alive connection.

The parser does not assume it saw the connection from its start: bytes that
do not begin a message (a capture joined mid-stream, a gap after lost
events) are skipped up to the next start line, and reported in a ``Skipped``
event so the caller can count them.  llhttp (through httptools) does the
framing: chunked coding, Content-Length, keep-alive.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

import httptools

from lumen_agent.parsers.errors import LimitExceeded, ParseError

# Request line and header block together; real LLM clients send a few KiB.
MAX_HEAD_BYTES = 64 * 1024
# While hunting for a message boundary, keep at most this much unparsed tail.
MAX_HUNT_BYTES = 64 * 1024

_MAX_START_LINE = 8300  # the longest start line the patterns below accept
_METHODS = rb"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"
_REQUEST_LINE = rb"" + _METHODS + rb" [^\s]{1,8192} HTTP/1\.[01]\r?\n"
_STATUS_LINE = rb"HTTP/1\.[01] [1-5]\d\d(?: [^\r\n]*)?\r?\n"
# Anchored forms for the common case, a message that starts the data; the
# others find a start line at any line boundary (slower: they scan).
REQUEST_AT_START = re.compile(_REQUEST_LINE)
STATUS_AT_START = re.compile(_STATUS_LINE)
REQUEST_LINE = re.compile(rb"(?:^|(?<=\n))" + _REQUEST_LINE)
STATUS_LINE = re.compile(rb"(?:^|(?<=\n))" + _STATUS_LINE)


class MessageKind(enum.Enum):
    REQUEST = "request"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class MessageHead:
    method: str | None  # requests
    target: str | None  # requests: path and query as sent
    status: int | None  # responses
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    http_version: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    pass


@dataclass(frozen=True, slots=True)
class Truncated:
    """The connection ended in the middle of a message."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes that were not part of any message we could parse."""

    nbytes: int
    reason: str


Event = MessageHead | Body | EndOfMessage | Truncated | Skipped


def find_start(data: bytes | bytearray) -> tuple[int, MessageKind] | None:
    """The first start line in ``data`` (at a line boundary): its offset and kind."""
    if REQUEST_AT_START.match(data):
        return (0, MessageKind.REQUEST)
    if STATUS_AT_START.match(data):
        return (0, MessageKind.RESPONSE)
    found = None
    for kind, pattern in ((MessageKind.REQUEST, REQUEST_LINE), (MessageKind.RESPONSE, STATUS_LINE)):
        match = pattern.search(data)
        if match is not None and (found is None or match.start() < found[0]):
            found = (match.start(), kind)
    return found


class _Callbacks:
    """httptools calls these; they only record, never raise."""

    __slots__ = ("parser", "url", "headers", "head_bytes", "status")

    def __init__(self, parser: Http1Parser) -> None:
        self.parser = parser
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.head_bytes = 0

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.parser._in_message = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes <= MAX_HEAD_BYTES:
            self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.parser._headers_complete(self)

    def on_body(self, body: bytes) -> None:
        parser = self.parser
        if parser.body_sink is not None and not parser._events:
            parser.body_sink(body)
        else:
            parser._events.append(Body(body))

    def on_message_complete(self) -> None:
        self.parser._in_message = False
        self.parser._events.append(EndOfMessage())


class Http1Parser:
    def __init__(self, kind: MessageKind) -> None:
        self.kind = kind
        # Where body bytes go, set by the caller while a message's body has
        # somewhere to go: a piece parsed while no event is waiting is handed
        # straight to it instead of becoming a ``Body`` event (the caller has
        # seen every event before it, so the order is the same).  A stream
        # is mostly such pieces, one per chunk read.
        self.body_sink: Callable[[bytes], None] | None = None
        self._events: list[Event] = []
        self._in_message = False
        self._until_close = False  # response body delimited by connection close
        self._hunting = True  # not yet at a known message boundary
        self._hunt_buffer = bytearray()
        self._hunt_scanned = 0  # bytes of the hunt buffer already searched
        self._llhttp = self._new_llhttp()

    # -- public API ---------------------------------------------------------

    def receive_data(self, data: bytes) -> bool:
        """Parse ``data``; whether events now wait for ``next_events`` (not
        when every byte went to ``body_sink``)."""
        if self._hunting:
            data = self._hunt(data)
            if not data:
                return bool(self._events)
        try:
            self._llhttp.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_failed(data, exc)
            return bool(self._events)
        if self._callbacks.head_bytes > MAX_HEAD_BYTES and self._in_message:
            self._events.append(Truncated())
            self._events.append(Skipped(len(data), "header block exceeds MAX_HEAD_BYTES"))
            self._reset(hunting=True)
        return bool(self._events)

    def lost_data(self) -> None:
        """Bytes before the next ``receive_data`` are missing: resynchronise."""
        if self._in_message:
            self._events.append(Truncated())
        self._reset(hunting=True)

    def connection_closed(self) -> None:
        if self._in_message:
            if self._until_close:
                self._events.append(EndOfMessage())
            else:
                self._events.append(Truncated())
        self._reset(hunting=True)

    def next_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def in_message(self) -> bool:
        return self._in_message

    # -- internals ----------------------------------------------------------

    def _new_llhttp(self):
        self._callbacks = _Callbacks(self)
        if self.kind is MessageKind.REQUEST:
            return httptools.HttpRequestParser(self._callbacks)
        return httptools.HttpResponseParser(self._callbacks)

    def _reset(self, *, hunting: bool) -> None:
        self._in_message = False
        self._until_close = False
        self._hunting = hunting
        self._hunt_buffer.clear()
        self._hunt_scanned = 0
        self._llhttp = self._new_llhttp()

    def _hunt(self, data: bytes) -> bytes:
        """Drop bytes up to the next start line; return what follows it."""
        buf = self._hunt_buffer
        if not buf:
            at_start = REQUEST_AT_START if self.kind is MessageKind.REQUEST else STATUS_AT_START
            if at_start.match(data):
                self._hunting = False
                return data
        buf += data
        pattern = REQUEST_LINE if self.kind is MessageKind.REQUEST else STATUS_LINE
        # A start line ends in the new bytes, so it begins at most one
        # line's length before them, and after the last line end of the old
        # bytes (a line that ended there was searched already): never rescan
        # the whole buffer, nor 8 KiB of it per small chunk of a body.
        scanned = self._hunt_scanned
        match = pattern.search(buf, max(0, scanned - _MAX_START_LINE, buf.rfind(b"\n", 0, scanned) + 1))
        self._hunt_scanned = len(buf)
        if match is None:
            # Keep a tail that may hold the beginning of a start line.
            if len(buf) > MAX_HUNT_BYTES:
                cut = len(buf) - _MAX_START_LINE
                self._events.append(Skipped(cut, "no message boundary"))
                del buf[:cut]
                self._hunt_scanned = len(buf)
            return b""
        if match.start():
            self._events.append(Skipped(match.start(), "joined mid-stream"))
        rest = bytes(buf[match.start() :])
        buf.clear()
        self._hunt_scanned = 0
        self._hunting = False
        return rest

    def _parse_failed(self, data: bytes, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            # Upgrade (websocket, h2c): whatever follows is not HTTP/1.1.
            self._events.append(Skipped(len(data), "protocol upgrade"))
        else:
            if self._in_message:
                self._events.append(Truncated())
            self._events.append(Skipped(len(data), f"malformed HTTP/1.1: {exc}"))
        self._reset(hunting=True)

    def _headers_complete(self, cb: _Callbacks) -> None:
        llhttp = self._llhttp
        headers = tuple(cb.headers)
        version = llhttp.get_http_version()
        if self.kind is MessageKind.REQUEST:
            head = MessageHead(
                method=llhttp.get_method().decode("ascii", "replace"),
                target=cb.url.decode("latin-1"),
                status=None,
                headers=headers,
                http_version=version,
            )
            self._until_close = False
        else:
            status = llhttp.get_status_code()
            head = MessageHead(None, None, status, headers, version)
            self._until_close = _body_until_close(status, headers)
        self._events.append(head)


def _body_until_close(status: int, headers: tuple[tuple[str, str], ...]) -> bool:
    if status < 200 or status in (204, 304):
        return False
    for name, value in headers:
        if name == "content-length":
            return False
        if name == "transfer-encoding" and "chunked" in value.lower():
            return False
    return True


__all__ = [
    "Body",
    "EndOfMessage",
    "Event",
    "Http1Parser",
    "LimitExceeded",
    "MessageHead",
    "MessageKind",
    "ParseError",
    "Skipped",
    "Truncated",
    "find_start",
]
