"""AWS event stream (``application/vnd.amazon.eventstream``), incrementally.

Bedrock's ConverseStream and InvokeModelWithResponseStream answer in this
binary framing, not SSE.  Each message is::

    prelude   total_length u32 | headers_length u32 | prelude_crc u32   (big endian)
    headers   headers_length bytes: name_len u8, name, type u8, value
    payload   total_length - headers_length - 16 bytes (JSON for Bedrock)
    trailer   message_crc u32 (CRC32 of every byte before it)

The CRC is plain CRC-32 (IEEE 802.3), which ``zlib.crc32`` computes.

Why not botocore's ``EventStreamBuffer``: it raises on the first bad message
and cannot carry on, and it would pull botocore into the agent for a hundred
lines.  Here a message whose own CRC fails (prelude sound) is skipped and
counted, and the stream goes on; a prelude whose CRC or lengths are wrong
means the framing is lost, so ``receive_data`` raises ``ParseError`` and the
caller stops reading that body.  Nothing is invented either way.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from lumen_agent.parsers.errors import LimitExceeded, ParseError

PRELUDE_BYTES = 12
CRC_BYTES = 4
# The smallest message: prelude and message CRC, no headers, no payload.
MIN_MESSAGE_BYTES = PRELUDE_BYTES + CRC_BYTES
# AWS's own limits for one message (botocore: _MAX_HEADERS_LENGTH,
# _MAX_PAYLOAD_LENGTH); a larger length in a prelude is damage, not data.
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = MIN_MESSAGE_BYTES + MAX_HEADERS_BYTES + MAX_PAYLOAD_BYTES

HeaderValue = bool | int | str | bytes

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
# Header value types with a fixed size: type -> (size, struct format).
_FIXED = {2: (1, ">b"), 3: (2, ">h"), 4: (4, ">i"), 5: (8, ">q"), 8: (8, ">q")}


class EventStreamError(ParseError):
    """The framing is lost (a prelude that fails its CRC or names impossible lengths)."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    headers: tuple[tuple[str, HeaderValue], ...]
    payload: bytes
    message_type: str | None = None  # ":message-type": event, exception, error
    event_type: str | None = None  # ":event-type", or ":exception-type" for exceptions

    def header(self, name: str) -> HeaderValue | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SkippedMessage:
    """A whole message that was framed correctly but cannot be used."""

    reason: str  # "message_crc", "headers"


_PRELUDE = struct.Struct(">III")


class EventStreamParser:
    """Feed bytes with ``receive_data``; collect messages with ``next_events``.

    When ``receive_data`` raises, the messages completed before the damage
    are still handed out by ``next_events``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._events: list[EventMessage | SkippedMessage] = []
        self.skipped = 0

    def receive_data(self, data: bytes) -> None:
        # Usually a read holds whole messages: parse it in place, and keep
        # only an unfinished tail.
        if self._buffer:
            self._buffer += data
            buf: bytes | bytearray = self._buffer
        else:
            buf = data
        start, size = 0, len(buf)
        while size - start >= PRELUDE_BYTES:
            total, headers_len, prelude_crc = _PRELUDE.unpack_from(buf, start)
            if zlib.crc32(buf[start : start + 8]) != prelude_crc:
                self._lost("prelude CRC mismatch")
            if total < MIN_MESSAGE_BYTES or headers_len > total - MIN_MESSAGE_BYTES:
                self._lost(f"impossible lengths total={total} headers={headers_len}")
            if total > MAX_MESSAGE_BYTES or headers_len > MAX_HEADERS_BYTES:
                self._buffer = bytearray()
                raise LimitExceeded(f"event stream message of {total} bytes exceeds MAX_MESSAGE_BYTES")
            if size - start < total:
                break
            end = start + total
            message = _message(bytes(buf[start:end]), headers_len)
            if message.__class__ is SkippedMessage:
                self.skipped += 1
            self._events.append(message)
            start = end
        if buf is self._buffer:
            del self._buffer[:start]
        elif start < size:
            self._buffer = bytearray(buf[start:])

    def next_events(self) -> list[EventMessage | SkippedMessage]:
        events, self._events = self._events, []
        return events

    @property
    def pending_bytes(self) -> int:
        """Bytes of a message not yet complete (a stream cut here lost them)."""
        return len(self._buffer)

    def _lost(self, why: str) -> None:
        self._buffer = bytearray()
        raise EventStreamError(f"event stream framing lost: {why}")


# A stream repeats a handful of header blocks byte for byte (one per event
# type): parsed blocks are kept, up to this many, so each is parsed once.
MAX_CACHED_HEADER_BLOCKS = 64
_Parsed = tuple[tuple[tuple[str, HeaderValue], ...], str | None, str | None] | None
_header_cache: dict[bytes, _Parsed] = {}


def _message(message: bytes, headers_len: int) -> EventMessage | SkippedMessage:
    if zlib.crc32(message[:-CRC_BYTES]) != _U32.unpack_from(message, len(message) - CRC_BYTES)[0]:
        return SkippedMessage("message_crc")
    end = PRELUDE_BYTES + headers_len
    block = message[PRELUDE_BYTES:end]
    try:
        parsed = _header_cache[block]
    except KeyError:
        parsed = _parsed(block)
        if len(_header_cache) >= MAX_CACHED_HEADER_BLOCKS:
            _header_cache.clear()
        _header_cache[block] = parsed
    if parsed is None:
        return SkippedMessage("headers")
    headers, message_type, event_type = parsed
    return EventMessage(headers, message[end:-CRC_BYTES], message_type, event_type)


def _parsed(block: bytes) -> _Parsed:
    headers = _headers(block, 0, len(block))
    if headers is None:
        return None
    found = dict(headers)
    message_type = found.get(":message-type")
    event_type = found.get(":event-type", found.get(":exception-type"))
    return (headers, message_type if isinstance(message_type, str) else None,
            event_type if isinstance(event_type, str) else None)


def _headers(buf: bytes, pos: int, end: int) -> tuple[tuple[str, HeaderValue], ...] | None:
    """The header block, or None when it does not parse exactly to its end."""
    out: list[tuple[str, HeaderValue]] = []
    try:
        while pos < end:
            name_len = buf[pos]
            name = buf[pos + 1 : pos + 1 + name_len].decode("utf-8")
            pos += 1 + name_len
            kind = buf[pos]
            pos += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                size, fmt = _FIXED[kind]
                value = struct.unpack_from(fmt, buf, pos)[0]
                pos += size
            elif kind in (6, 7):
                length = _U16.unpack_from(buf, pos)[0]
                raw = buf[pos + 2 : pos + 2 + length]
                if len(raw) != length:
                    return None
                value = raw.decode("utf-8") if kind == 7 else bytes(raw)
                pos += 2 + length
            elif kind == 9:
                raw = buf[pos : pos + 16]
                if len(raw) != 16:
                    return None
                value = str(uuid.UUID(bytes=bytes(raw)))
                pos += 16
            else:
                return None
            out.append((name, value))
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return tuple(out) if pos == end else None


def encode_message(headers: dict[str, HeaderValue], payload: bytes) -> bytes:
    """One framed message (string, bytes, bool and int32 headers): for tests
    and the fake provider, the inverse of the parser."""
    block = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        block += bytes([len(raw_name)]) + raw_name
        if isinstance(value, bool):
            block += bytes([0 if value else 1])
        elif isinstance(value, int):
            block += bytes([4]) + struct.pack(">i", value)
        elif isinstance(value, bytes):
            block += bytes([6]) + _U16.pack(len(value)) + value
        else:
            raw = value.encode()
            block += bytes([7]) + _U16.pack(len(raw)) + raw
    total = MIN_MESSAGE_BYTES + len(block) + len(payload)
    prelude = _U32.pack(total) + _U32.pack(len(block))
    prelude += _U32.pack(zlib.crc32(prelude))
    body = prelude + bytes(block) + payload
    return body + _U32.pack(zlib.crc32(body))
