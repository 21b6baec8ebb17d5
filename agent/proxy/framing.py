"""Sans-I/O HTTP/1.x framing for the proxy: heads and message boundaries.

The proxy forwards bytes as they are, so it never re-encodes a body: it only
needs to know where each message starts and ends, to keep both connections
alive between requests.  ``parse_request_head`` / ``parse_response_head``
read a complete head (the bytes up to and including the empty line);
``BodyFramer`` is told about body bytes as they pass and says where the
message ends (Content-Length, chunked, until close, or none).

Requests are parsed strictly: anything the proxy cannot forward faithfully is
a ``BadRequest`` (answered 400), never a guess.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# Request line and header block together; real LLM clients send a few KiB.
MAX_HEAD_BYTES = 64 * 1024
# One chunk-size line or trailer line of a chunked body.
MAX_CHUNK_LINE = 4096
# Trailer block of a chunked body.
MAX_TRAILER_BYTES = 64 * 1024

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
_STATUS_LINE = re.compile(rb"^HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?$")
_CHUNK_SIZE = re.compile(rb"^([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?$")
# Header values: any visible characters, spaces and tabs, obs-text; no controls.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class BadRequest(ValueError):
    """A request the proxy will not forward; the message is shown to the client."""


class BadResponse(ValueError):
    """An upstream response the proxy cannot frame."""


class Framing(enum.Enum):
    NONE = "none"  # no body
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # until the connection closes (responses only)


@dataclass(frozen=True, slots=True)
class Head:
    """A parsed head.  ``headers`` keep the sender's spelling and order."""

    version: bytes  # b"HTTP/1.1" or b"HTTP/1.0"
    headers: tuple[tuple[bytes, bytes], ...]
    framing: Framing
    length: int | None  # Content-Length when framing is LENGTH
    keep_alive: bool
    method: bytes = b""  # requests
    target: bytes = b""  # requests
    status: int = 0  # responses

    def get(self, name: bytes) -> bytes | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def _lines(head: bytes, error: type[ValueError]) -> list[bytes]:
    if not head.endswith(b"\n\n") and not head.endswith(b"\n\r\n"):
        raise error("incomplete head")
    lines = head.split(b"\n")[:-2]  # drop the empty line and what follows it
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _headers(lines: list[bytes], error: type[ValueError]) -> tuple[tuple[bytes, bytes], ...]:
    out: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise error("obsolete header line folding is not supported")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise error(f"malformed header line {line[:60]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise error(f"control character in header {name.decode('latin-1')!r}")
        out.append((name, value))
    return tuple(out)


def _connection_tokens(headers: tuple[tuple[bytes, bytes], ...]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def _body_framing(headers: tuple[tuple[bytes, bytes], ...], error: type[ValueError]) -> tuple[Framing, int | None]:
    """Framing from Transfer-Encoding / Content-Length (RFC 9112 section 6.3)."""
    te = [v for k, v in headers if k.lower() == b"transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == b"content-length"]
    if te:
        if cl:
            raise error("both Transfer-Encoding and Content-Length")
        codings = [c.strip().lower() for v in te for c in v.split(b",") if c.strip()]
        if not codings or codings[-1] != b"chunked":
            return Framing.CLOSE, None
        if codings.count(b"chunked") != 1:
            raise error("chunked applied more than once")
        return Framing.CHUNKED, None
    if cl:
        values = {c.strip() for v in cl for c in v.split(b",")}
        if len(values) != 1:
            raise error("conflicting Content-Length values")
        value = values.pop()
        if not value.isdigit() or len(value) > 18:
            raise error(f"bad Content-Length {value[:30]!r}")
        n = int(value)
        return (Framing.LENGTH, n) if n else (Framing.NONE, 0)
    return Framing.NONE, None


def parse_request_head(head: bytes) -> Head:
    """A complete request head (through the empty line), strictly."""
    if len(head) > MAX_HEAD_BYTES:
        raise BadRequest("request head too large")
    lines = _lines(head, BadRequest)
    while lines and not lines[0]:  # RFC 9112 2.2: ignore empty lines before the request line
        lines.pop(0)
    if not lines:
        raise BadRequest("empty request")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1] or not _VERSION.match(parts[2]):
        raise BadRequest(f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if any(c <= 0x20 or c == 0x7F for c in target):
        raise BadRequest("malformed request target")
    headers = _headers(lines[1:], BadRequest)
    framing, length = _body_framing(headers, BadRequest)
    if framing is Framing.CLOSE:
        raise BadRequest("a request body must be chunked or have a Content-Length")
    tokens = _connection_tokens(headers)
    keep_alive = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
    return Head(version, headers, framing, length, keep_alive, method=method, target=target)


def parse_response_head(head: bytes, request_method: bytes) -> Head:
    """A complete response head; ``request_method`` decides HEAD's empty body."""
    if len(head) > MAX_HEAD_BYTES:
        raise BadResponse("response head too large")
    lines = _lines(head, BadResponse)
    match = _STATUS_LINE.match(lines[0]) if lines else None
    if match is None:
        raise BadResponse(f"malformed status line {lines[0][:80] if lines else b''!r}")
    version = b"HTTP/1." + match.group(1)
    status = int(match.group(2))
    headers = _headers(lines[1:], BadResponse)
    tokens = _connection_tokens(headers)
    keep_alive = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
    if request_method == b"HEAD" or status < 200 or status in (204, 304):
        framing, length = Framing.NONE, None
    else:
        framing, length = _body_framing(headers, BadResponse)
        if framing is Framing.NONE and length is None:
            framing = Framing.CLOSE  # no framing headers: the body runs until close
    if framing is Framing.CLOSE:
        keep_alive = False
    return Head(version, headers, framing, length, keep_alive, status=status)


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just past the head's empty line, or -1.  Accepts bare LF line ends."""
    i = buf.find(b"\n\r\n", start)
    j = buf.find(b"\n\n", start)
    if i < 0:
        return -1 if j < 0 else j + 2
    if j < 0 or i < j:
        return i + 3
    return j + 2


class _Chunk(enum.Enum):
    SIZE = 0
    DATA = 1
    DATA_END = 2
    TRAILER = 3
    DONE = 4


class BodyFramer:
    """Tracks where a body ends while its bytes pass by untouched.

    ``feed(data)`` returns how many bytes of ``data`` belong to this body;
    ``done`` turns true once the body is complete.  Bytes past the end belong
    to whatever follows (a pipelined request).  Errors raise ``error``.
    """

    def __init__(self, framing: Framing, length: int | None = None,
                 error: type[ValueError] = BadResponse) -> None:
        self.framing = framing
        self._error = error
        self._remaining = length or 0
        self._state = _Chunk.SIZE
        self._line = bytearray()
        self._trailer_bytes = 0
        self.done = framing is Framing.NONE or (framing is Framing.LENGTH and not self._remaining)

    def feed(self, data: bytes) -> int:
        if self.done or not data:
            return 0
        if self.framing is Framing.CLOSE:
            return len(data)
        if self.framing is Framing.LENGTH:
            n = min(len(data), self._remaining)
            self._remaining -= n
            self.done = self._remaining == 0
            return n
        return self._feed_chunked(data)

    def _feed_chunked(self, data: bytes) -> int:
        i, n = 0, len(data)
        while i < n and self._state is not _Chunk.DONE:
            state = self._state
            if state is _Chunk.DATA:
                take = min(n - i, self._remaining)
                i += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _Chunk.DATA_END
                continue
            # A line: the size line, the CRLF after data, or a trailer line.
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise self._error("chunk line too long")
                return n
            self._line += data[i:end]
            i = end + 1
            line = bytes(self._line).rstrip(b"\r")
            self._line.clear()
            if state is _Chunk.SIZE:
                match = _CHUNK_SIZE.match(line)
                if match is None:
                    raise self._error(f"bad chunk size line {line[:40]!r}")
                self._remaining = int(match.group(1), 16)
                self._state = _Chunk.DATA if self._remaining else _Chunk.TRAILER
            elif state is _Chunk.DATA_END:
                if line:
                    raise self._error("chunk data longer than its size")
                self._state = _Chunk.SIZE
            else:  # TRAILER
                if not line:
                    self._state = _Chunk.DONE
                else:
                    self._trailer_bytes += len(line)
                    if self._trailer_bytes > MAX_TRAILER_BYTES:
                        raise self._error("chunked trailer too large")
        self.done = self._state is _Chunk.DONE
        return i

    def connection_closed(self) -> bool:
        """The peer closed: True when that ends the body cleanly (read-until-close)."""
        if self.framing is Framing.CLOSE:
            self.done = True
        return self.done
