"""Sans-I/O HTTP/2 parser for both directions of one connection.

``Http2Parser()`` reads what a client writes (``MessageKind.REQUEST``) and
what it reads (``MessageKind.RESPONSE``): feed bytes with
``receive_data(kind, data)`` and collect ``next_events()``.  Each stream's
request and response come out as the HTTP/1.1 parser's events (a
``MessageHead``, ``Body`` pieces, an ``EndOfMessage`` or ``Truncated``),
wrapped in a ``StreamEvent`` that names the stream, so the exchange layer
reads both versions alike.  A reset stream gives ``StreamReset``.

hyperframe splits frames and parses their bodies (padding, priority);
hpack keeps one header table per direction.  The two directions are read by
one object because they are not independent: a SETTINGS frame sent one way
sets the header table limit of the other way.

The parser does not assume it saw the connection from its start.  A
direction whose start was missed (``joined=True``) or that lost bytes
(``lost_data``) hunts for a frame boundary, and its header table is unknown
from then on: HPACK never resynchronises.  A header block is then decoded
with an empty table, which is exact when the block refers only to the static
table and to entries it adds itself (a new stream from a fresh client often
does) and fails otherwise; a block that fails is skipped, never guessed.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import hpack
from hpack.exceptions import HPACKError
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from lumen_agent.parsers.http1 import Body, EndOfMessage, MessageHead, MessageKind, Skipped, Truncated

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE = 9

# Largest frame kept in memory.  Peers send at most 16 KiB unless the other
# side raised SETTINGS_MAX_FRAME_SIZE, and the servers LLM clients talk to
# allow 16 KiB to 1 MiB (Go's default); a larger frame is skipped unread,
# its length still known, so framing holds.
MAX_FRAME_SIZE = 1024 * 1024
# A header list (decoded) larger than this is skipped: as the HTTP/1.1
# parser's MAX_HEAD_BYTES, LLM requests and responses carry a few KiB.
MAX_HEADER_LIST_SIZE = 64 * 1024
# Compressed header block (HEADERS + CONTINUATION fragments) kept while it
# is assembled; HPACK never expands less than this compresses.
MAX_HEADER_BLOCK_SIZE = 64 * 1024
# Header table a peer may ask for with SETTINGS_HEADER_TABLE_SIZE; the
# default is 4 KiB and clients ask 64 KiB at most.  Bounds memory per
# connection; a table update beyond it makes the block undecodable (skipped).
MAX_HEADER_TABLE_SIZE = 1024 * 1024
# Streams tracked per connection.  Servers allow 100-250 concurrent streams
# (SETTINGS_MAX_CONCURRENT_STREAMS); past this the oldest stream is dropped.
MAX_STREAMS = 512
# While hunting for a frame boundary this many consecutive well-formed
# frames must follow a candidate offset.  Text never looks like a frame
# header (its first byte would make a multi-MiB length) and two chained
# headers in compressed bytes are rare enough.
HUNT_FRAMES = 2
# Bytes kept while hunting: two frames of the default maximum size.
MAX_HUNT_BYTES = 2 * (FRAME_HEADER_SIZE + 16384)

_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONTINUATION = range(10)
_STREAM_WORD = struct.Struct(">L")  # bytes 5-8 of a frame header: R bit and stream id
# Flag bits each frame type may carry (RFC 9113 section 6), for hunting.
_VALID_FLAGS = {_DATA: 0x09, _HEADERS: 0x2D, _PRIORITY: 0, _RST: 0, _SETTINGS: 0x01, _PUSH: 0x0C,
                _PING: 0x01, _GOAWAY: 0, _WINDOW: 0, _CONTINUATION: 0x04}
_FIXED_LENGTH = {_PRIORITY: 5, _RST: 4, _PING: 8, _WINDOW: 4}
_ON_STREAM_ZERO = (_SETTINGS, _PING, _GOAWAY)
_HUNT_MAX_LENGTH = 16384  # a hunted frame is no larger than the default maximum
_END_STREAM = 0x01
_PADDED = 0x08


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An HTTP/1.1-parser event for one message of one stream."""

    stream_id: int
    kind: MessageKind  # REQUEST: the client's message on this stream; RESPONSE: the server's
    event: MessageHead | Body | EndOfMessage | Truncated


@dataclass(frozen=True, slots=True)
class StreamReset:
    """RST_STREAM, or a GOAWAY that refused a stream: the stream ended unfinished."""

    stream_id: int
    error_code: int
    sender: MessageKind  # REQUEST: the client ended it


@dataclass(frozen=True, slots=True)
class StreamDropped:
    """A response whose headers could not be read: its call is not reported.

    Its status is unknown, so any row would be a guess; the caller drops
    the exchange and counts it.
    """

    stream_id: int
    reason: str


Event = StreamEvent | StreamReset | StreamDropped | Skipped


class _Stream:
    __slots__ = ("ignored", "request_open", "response_final", "response_open")

    def __init__(self, *, ignored: bool = False) -> None:
        self.request_open = not ignored  # head seen, end not yet
        self.response_open = not ignored  # awaiting or reading the response
        self.response_final = False  # a final (non-1xx) response head was seen: later HEADERS are trailers
        self.ignored = ignored  # pushed, or its headers could not be read: its frames are dropped

    @property
    def done(self) -> bool:
        return not self.request_open and not self.response_open


class _Block:
    """A header block being assembled from HEADERS / PUSH_PROMISE and CONTINUATION."""

    __slots__ = ("end_stream", "fragments", "promised", "size", "stream_id")

    def __init__(self, stream_id: int, end_stream: bool, promised: int, fragment: bytes) -> None:
        self.stream_id = stream_id
        self.end_stream = end_stream
        self.promised = promised  # PUSH_PROMISE: the stream it reserves
        self.fragments: bytearray | None = bytearray(fragment)  # None: too large, read to its end unkept
        self.size = len(fragment)


class _Direction:
    """Framing and header table of what one side sends."""

    __slots__ = ("block", "buffer", "decoder", "kind", "skip", "state")

    def __init__(self, kind: MessageKind, *, joined: bool) -> None:
        self.kind = kind
        self.buffer = bytearray()
        # preface -> first_frame -> frames; hunting after a gap.
        if joined:
            self.state = "hunting"
        else:
            self.state = "preface" if kind is MessageKind.REQUEST else "first_frame"
        self.skip = 0  # bytes of an oversized frame still to pass over
        # None: the header table is unknown (joined mid-stream, or a gap).
        self.decoder: hpack.Decoder | None = None if joined else _new_decoder()
        self.block: _Block | None = None  # header block being assembled

    def lose_table(self) -> None:
        self.decoder = None


def _new_decoder() -> hpack.Decoder:
    return hpack.Decoder(max_header_list_size=MAX_HEADER_LIST_SIZE)


# Bound once for the per-frame path: on Python 3.11 reading an enum member
# through its class costs about 0.14 us, a module global a tenth of that.
_REQUEST, _RESPONSE = MessageKind.REQUEST, MessageKind.RESPONSE


class Http2Parser:
    def __init__(self, *, joined: bool = False) -> None:
        self._requests = _Direction(MessageKind.REQUEST, joined=joined)
        self._responses = _Direction(MessageKind.RESPONSE, joined=joined)
        self._streams: OrderedDict[int, _Stream] = OrderedDict()
        self._events: list[Event] = []
        self.joined = joined
        # Where a response's body bytes go, ``sink(stream_id, data)``, when
        # set: a DATA payload read while no event is waiting is handed
        # straight to it instead of becoming a ``StreamEvent`` (the caller
        # has seen every event before it, so the order is the same).
        self.response_body_sink: Callable[[int, bytes], None] | None = None

    # -- public API ---------------------------------------------------------

    def receive_data(self, kind: MessageKind, data: bytes) -> bool:
        """Read ``data`` that ``kind``'s side wrote; whether events now wait
        for ``next_events`` (not when every body byte went to the sink)."""
        side = self._requests if kind is _REQUEST else self._responses
        size = len(data)
        if (
            FRAME_HEADER_SIZE < size <= FRAME_HEADER_SIZE + MAX_FRAME_SIZE
            and data[3] == _DATA
            and not data[4] & _PADDED
            and (data[0] << 16 | data[1] << 8 | data[2]) == size - FRAME_HEADER_SIZE
            and side.state == "frames"
            and not side.buffer
            and not side.skip
            and side.block is None
        ):
            # The hot path: one read that is one whole DATA frame (a streamed chunk).
            stream_id = _STREAM_WORD.unpack_from(data, 5)[0] & 0x7FFFFFFF
            if stream_id:
                self._data(kind, stream_id, data[FRAME_HEADER_SIZE:], bool(data[4] & _END_STREAM), size)
                return bool(self._events)
        if side.skip and data:
            n = min(side.skip, len(data))
            side.skip -= n
            data = data[n:]
        if not data:
            return bool(self._events)
        if side.buffer:
            side.buffer += data
            rest = self._parse(side, side.buffer)
            del side.buffer[: len(side.buffer) - rest]
        else:  # the usual case, whole frames per read: no copy into the buffer
            rest = self._parse(side, data)
            if rest:
                side.buffer += data[len(data) - rest :]
        return bool(self._events)

    def lost_data(self, kind: MessageKind) -> None:
        """Bytes before the next ``receive_data`` of ``kind`` are missing."""
        side = self._requests if kind is MessageKind.REQUEST else self._responses
        side.buffer.clear()
        side.skip = 0
        side.block = None
        side.state = "hunting"
        side.lose_table()
        for stream_id, stream in list(self._streams.items()):
            self._cut(stream_id, stream, kind)

    def connection_closed(self) -> None:
        """Every message still open was cut off."""
        for stream_id, stream in list(self._streams.items()):
            for kind in MessageKind:
                self._cut(stream_id, stream, kind)
        self._streams.clear()
        for side in (self._requests, self._responses):
            side.buffer.clear()
            side.block = None

    def next_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- framing ------------------------------------------------------------

    def _parse(self, side: _Direction, buf: bytes | bytearray) -> int:
        """Read the frames in ``buf``; return how many bytes at its end are left for later."""
        pos = 0
        while True:
            if side.skip:  # an oversized frame found in this buffer: pass over it
                n = min(side.skip, len(buf) - pos)
                side.skip -= n
                pos += n
                if side.skip:
                    break
            if side.state == "preface":
                if len(buf) - pos < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf[pos:])):
                        side.state = "hunting"
                        continue
                    break
                if buf[pos : pos + len(PREFACE)] != PREFACE:
                    side.state = "hunting"
                    side.lose_table()
                    continue
                pos += len(PREFACE)
                side.state = "first_frame"
                continue
            if side.state == "hunting":
                found = _find_frame_boundary(buf, pos)
                if found is None:
                    # Keep a tail that may hold the start of a frame chain.
                    keep = max(pos, len(buf) - MAX_HUNT_BYTES)
                    if keep > pos:
                        self._events.append(Skipped(keep - pos, "no HTTP/2 frame boundary"))
                    pos = keep
                    break
                offset, complete = found
                if not complete:
                    if offset > pos:
                        self._events.append(Skipped(offset - pos, "no HTTP/2 frame boundary"))
                    pos = offset
                    break
                if offset > pos:
                    self._events.append(Skipped(offset - pos, "joined mid-stream"))
                pos = offset
                side.state = "frames"
                side.lose_table()
                side.block = None
                continue
            if len(buf) - pos < FRAME_HEADER_SIZE:
                break
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > MAX_FRAME_SIZE:
                stream_id = _STREAM_WORD.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
                self._events.append(Skipped(FRAME_HEADER_SIZE + length, "frame exceeds MAX_FRAME_SIZE"))
                self._frame_lost(side, buf[pos + 3], stream_id)
                side.skip = length
                pos += FRAME_HEADER_SIZE
                continue
            end = pos + FRAME_HEADER_SIZE + length
            if end > len(buf):
                break
            if buf[pos + 3] == _DATA and side.state == "frames" and side.block is None:
                self._data_frame(side, buf, pos, length)
            else:
                self._frame(side, bytes(buf[pos:end]))
            pos = end
        return len(buf) - pos

    def _data_frame(self, side: _Direction, buf: bytes | bytearray, pos: int, length: int) -> None:
        """A DATA frame, read here rather than by hyperframe.

        DATA is the hot path (a streamed response is one frame per token or
        so) and its layout is trivial, while hyperframe builds a frame object
        and a flag set for each: that alone made HTTP/2 streams take about
        twice the time of HTTP/1.1 ones.  Every other frame type goes
        through hyperframe.
        """
        flags = buf[pos + 4]
        stream_id = _STREAM_WORD.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
        start, end = pos + FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE + length
        if flags & _PADDED:
            pad = buf[start] if length else 0
            if not length or pad >= length:  # RFC 9113 section 6.1: padding as long as the payload
                self._events.append(Skipped(FRAME_HEADER_SIZE + length, "malformed HTTP/2 frame: bad padding"))
                self._frame_lost(side, _DATA, stream_id)
                return
            start, end = start + 1, end - pad
        if not stream_id:
            self._events.append(Skipped(FRAME_HEADER_SIZE + length, "malformed HTTP/2 frame: DATA on stream 0"))
            return
        self._data(side.kind, stream_id, bytes(buf[start:end]), bool(flags & _END_STREAM),
                   FRAME_HEADER_SIZE + length)

    def _frame(self, side: _Direction, raw: bytes) -> None:
        try:
            view = memoryview(raw)
            frame, _length = HeadersFrame.parse_frame_header(view[:FRAME_HEADER_SIZE])
            frame.parse_body(view[FRAME_HEADER_SIZE:])
        except (HyperframeError, ValueError, struct.error) as exc:
            frame_type, stream_id = raw[3], _STREAM_WORD.unpack_from(raw, 5)[0] & 0x7FFFFFFF
            self._events.append(Skipped(len(raw), f"malformed HTTP/2 frame: {exc}"))
            self._frame_lost(side, frame_type, stream_id)
            return
        if side.state == "first_frame":
            side.state = "frames"
            if side.kind is MessageKind.RESPONSE and not (
                isinstance(frame, SettingsFrame) and "ACK" not in frame.flags
            ):
                # A server starts with SETTINGS: without it, its start was missed.
                side.lose_table()
        if side.block is not None and not (
            isinstance(frame, ContinuationFrame) and frame.stream_id == side.block.stream_id
        ):
            self._events.append(Skipped(side.block.size, "header block interrupted"))
            self._block_lost(side)
        match frame:
            case DataFrame():
                self._data(side.kind, frame.stream_id, frame.data, "END_STREAM" in frame.flags, len(raw))
            case HeadersFrame() | PushPromiseFrame() | ContinuationFrame():
                self._header_fragment(side, frame)
            case RstStreamFrame():
                self._reset(frame.stream_id, frame.error_code, side.kind)
            case SettingsFrame() if "ACK" not in frame.flags:
                size = frame.settings.get(SettingsFrame.HEADER_TABLE_SIZE)
                other = self._responses if side.kind is MessageKind.REQUEST else self._requests
                if size is not None and other.decoder is not None:
                    # Raised at once, never lowered: a block the peer encoded
                    # before it saw a lower value is still valid, and the
                    # limit only guards memory.
                    other.decoder.max_allowed_table_size = max(
                        other.decoder.max_allowed_table_size, min(size, MAX_HEADER_TABLE_SIZE)
                    )
            case GoAwayFrame():
                # Streams the receiver opened above last_stream_id were never
                # processed by the sender of the GOAWAY (clients open odd ids).
                parity = 1 if side.kind is MessageKind.RESPONSE else 0
                refused = [s for s in self._streams if s > frame.last_stream_id and s % 2 == parity]
                for stream_id in refused:
                    self._reset(stream_id, frame.error_code, side.kind)
            case _:
                pass  # PING, WINDOW_UPDATE, PRIORITY, extensions: nothing to read

    def _frame_lost(self, side: _Direction, frame_type: int, stream_id: int) -> None:
        """A frame could not be read: what it carried for its stream is lost."""
        if frame_type in (_HEADERS, _PUSH, _CONTINUATION):
            self._block_lost(side)
        elif frame_type == _DATA and stream_id in self._streams:
            self._cut(stream_id, self._streams[stream_id], side.kind)

    # -- streams ------------------------------------------------------------

    def _data(self, kind: MessageKind, stream_id: int, data: bytes, end: bool, size: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.ignored:
            if stream is None:
                self._events.append(Skipped(size, "DATA on a stream not tracked"))
            elif end and kind is _RESPONSE:
                del self._streams[stream_id]
            return
        is_open = stream.request_open if kind is _REQUEST else stream.response_final and stream.response_open
        if not is_open:
            self._events.append(Skipped(size, "DATA outside a message"))
            return
        if data:
            if kind is _RESPONSE and self.response_body_sink is not None and not self._events:
                self.response_body_sink(stream_id, data)
            else:
                self._events.append(StreamEvent(stream_id, kind, Body(data)))
        if end:
            self._end(stream_id, stream, kind)

    def _header_fragment(self, side: _Direction, frame) -> None:
        block = side.block
        if isinstance(frame, ContinuationFrame):
            if block is None:
                self._events.append(Skipped(len(frame.data) + FRAME_HEADER_SIZE, "CONTINUATION without HEADERS"))
                side.lose_table()  # a block we did not see may have changed the table
                return
            block.size += len(frame.data)
            if block.fragments is not None:
                block.fragments += frame.data
        else:
            promised = frame.promised_stream_id if isinstance(frame, PushPromiseFrame) else 0
            block = side.block = _Block(frame.stream_id, "END_STREAM" in frame.flags, promised, frame.data)
        if block.size > MAX_HEADER_BLOCK_SIZE:
            block.fragments = None  # still read to END_HEADERS, so framing holds
        if "END_HEADERS" not in frame.flags:
            return
        side.block = None
        if block.fragments is None:
            self._events.append(Skipped(block.size, "header block exceeds MAX_HEADER_BLOCK_SIZE"))
            side.block = block
            self._block_lost(side)
            return
        self._header_block(side, block.stream_id, block.end_stream, block.promised, bytes(block.fragments))

    def _block_lost(self, side: _Direction) -> None:
        """A header block was not decoded: the table is unknown and its stream unreadable."""
        if side.block is not None:
            stream_id = side.block.stream_id
            side.block = None
            self._unreadable(side.kind, stream_id)
        side.lose_table()

    def _header_block(self, side: _Direction, stream_id: int, end_stream: bool, promised: int, block: bytes) -> None:
        headers = self._decode(side, block)
        if promised:
            # A pushed response is not a call the client made; its request
            # block was decoded only to keep the table in step.
            self._track(promised, _Stream(ignored=True))
            return
        if headers is None:
            self._unreadable(side.kind, stream_id, end_stream)
            return
        if side.kind is MessageKind.REQUEST:
            self._request_headers(stream_id, end_stream, headers, len(block))
        else:
            self._response_headers(stream_id, end_stream, headers, len(block))

    def _decode(self, side: _Direction, block: bytes) -> tuple[tuple[str, str], ...] | None:
        decoder = side.decoder
        known = decoder is not None
        if decoder is None:
            # The table is unknown: an empty one reads exactly the blocks that
            # need none of its old entries, and fails on the others.
            decoder = _new_decoder()
            decoder.max_allowed_table_size = MAX_HEADER_TABLE_SIZE
        try:
            decoded = decoder.decode(block, raw=True)
        except (HPACKError, ValueError, IndexError, struct.error) as exc:
            # hpack stops mid-block: entries it did not add leave the table unknown.
            side.lose_table()
            why = "bad HPACK" if known else "HPACK state lost"
            self._events.append(Skipped(len(block), f"undecodable header block ({why}: {type(exc).__name__})"))
            return None
        return tuple((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in decoded)

    def _request_headers(self, stream_id: int, end_stream: bool, headers, size: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            if stream.ignored:
                return
            if stream.request_open and end_stream:  # trailers
                self._end(stream_id, stream, MessageKind.REQUEST)
            return
        method, path = _pseudo(headers, ":method"), _pseudo(headers, ":path")
        if method is None or path is None or stream_id % 2 == 0:
            self._events.append(Skipped(size, "request HEADERS without :method and :path"))
            self._track(stream_id, _Stream(ignored=True))
            return
        stream = _Stream()
        self._track(stream_id, stream)
        head = MessageHead(method, path, None, headers, "2")
        self._events.append(StreamEvent(stream_id, MessageKind.REQUEST, head))
        if end_stream:
            self._end(stream_id, stream, MessageKind.REQUEST)

    def _response_headers(self, stream_id: int, end_stream: bool, headers, size: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.ignored:
            if stream is None:
                self._events.append(Skipped(size, "response HEADERS on a stream not tracked"))
            elif end_stream:
                del self._streams[stream_id]
            return
        if not stream.response_open:
            return
        if stream.response_final:  # trailers
            if end_stream:
                self._end(stream_id, stream, MessageKind.RESPONSE)
            return
        status = _pseudo(headers, ":status")
        if status is None or not (status.isdigit() and len(status) == 3):
            self._events.append(Skipped(size, "response HEADERS without :status"))
            self._drop(stream_id, stream, "response HEADERS without :status")
            return
        code = int(status)
        stream.response_final = code >= 200
        self._events.append(StreamEvent(stream_id, MessageKind.RESPONSE, MessageHead(None, None, code, headers, "2")))
        if end_stream and stream.response_final:
            self._end(stream_id, stream, MessageKind.RESPONSE)

    def _unreadable(self, kind: MessageKind, stream_id: int, end_stream: bool = False) -> None:
        """The headers of ``stream_id`` from ``kind`` could not be read."""
        stream = self._streams.get(stream_id)
        if stream is None:
            self._track(stream_id, _Stream(ignored=True))
        elif stream.ignored:
            return
        elif kind is MessageKind.RESPONSE and not stream.response_final:
            self._drop(stream_id, stream, "response headers unreadable")
        elif end_stream:  # trailers: what they said is lost, not that the message ended
            self._end(stream_id, stream, kind)

    def _drop(self, stream_id: int, stream: _Stream, reason: str) -> None:
        stream.ignored = True  # its frames still to come are dropped quietly
        stream.request_open = stream.response_open = False
        self._events.append(StreamDropped(stream_id, reason))

    def _track(self, stream_id: int, stream: _Stream) -> None:
        self._streams[stream_id] = stream
        if len(self._streams) > MAX_STREAMS:
            old_id, old = self._streams.popitem(last=False)
            self._events.append(Skipped(0, "stream table full (MAX_STREAMS)"))
            for kind in MessageKind:
                self._cut(old_id, old, kind)

    def _end(self, stream_id: int, stream: _Stream, kind: MessageKind) -> None:
        if kind is MessageKind.REQUEST:
            stream.request_open = False
        else:
            stream.response_open = False
        self._events.append(StreamEvent(stream_id, kind, EndOfMessage()))
        if stream.done:
            self._streams.pop(stream_id, None)

    def _cut(self, stream_id: int, stream: _Stream, kind: MessageKind) -> None:
        if stream.ignored:
            self._streams.pop(stream_id, None)
            return
        is_open = stream.request_open if kind is MessageKind.REQUEST else stream.response_open
        if not is_open:
            return
        if kind is MessageKind.REQUEST:
            stream.request_open = False
        else:
            stream.response_open = False
        self._events.append(StreamEvent(stream_id, kind, Truncated()))
        if stream.done:
            self._streams.pop(stream_id, None)

    def _reset(self, stream_id: int, error_code: int, sender: MessageKind) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None or stream.ignored:
            return
        self._events.append(StreamReset(stream_id, error_code, sender))


def _pseudo(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
        if not key.startswith(":"):
            return None  # pseudo-headers come first (RFC 9113 section 8.3)
    return None


# -- recognising frames without context ---------------------------------------


def _plausible_header(buf: bytes | bytearray, pos: int) -> int | None:
    """The length of a well-formed frame header at ``pos``, else None."""
    length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    frame_type, flags = buf[pos + 3], buf[pos + 4]
    if length > _HUNT_MAX_LENGTH or frame_type > _CONTINUATION or flags & ~_VALID_FLAGS[frame_type]:
        return None
    stream_word = _STREAM_WORD.unpack_from(buf, pos + 5)[0]
    if stream_word & 0x80000000:  # the reserved bit is always sent as 0
        return None
    if (stream_word == 0) != (frame_type in _ON_STREAM_ZERO) and frame_type != _WINDOW:
        return None
    if _FIXED_LENGTH.get(frame_type, length) != length:
        return None
    if frame_type == _SETTINGS and length % 6:
        return None
    return length


def _find_frame_boundary(buf: bytes | bytearray, start: int) -> tuple[int, bool] | None:
    """The first offset from ``start`` where ``HUNT_FRAMES`` frames chain.

    ``(offset, True)`` when they are all there; ``(offset, False)`` when
    the bytes so far fit but more are needed to be sure; None when no offset
    in ``buf`` can start a chain.
    """
    end = len(buf)
    for offset in range(start, end):
        if buf[offset]:  # lengths above 64 KiB are never hunted: fast path over text
            continue
        pos, count = offset, 0
        while count < HUNT_FRAMES:
            if pos + FRAME_HEADER_SIZE > end:
                return offset, False
            length = _plausible_header(buf, pos)
            if length is None:
                break
            pos += FRAME_HEADER_SIZE + length
            if pos > end:
                return offset, False
            count += 1
        if count == HUNT_FRAMES:
            return offset, True
    return None


def might_be_frames(data: bytes | bytearray) -> bool:
    """Whether ``data`` may hold HTTP/2 frames (a chain could start in it)."""
    return _find_frame_boundary(data, 0) is not None


def is_settings_frame(data: bytes | bytearray) -> bool:
    """Whether ``data`` starts with a SETTINGS frame (not an ACK): how a server begins."""
    return (
        len(data) >= FRAME_HEADER_SIZE
        and data[3] == _SETTINGS
        and data[4] == 0
        and _plausible_header(data, 0) is not None
    )


def _chains_to_end(data: bytes | bytearray) -> bool:
    pos = 0
    while pos + FRAME_HEADER_SIZE <= len(data):
        length = _plausible_header(data, pos)
        if length is None:
            return False
        pos += FRAME_HEADER_SIZE + length
    return pos == len(data) and pos > 0


def sniff_side(data: bytes | bytearray) -> MessageKind | None:
    """Whose header blocks ``data`` (frames seen without their start) carries.

    REQUEST when a HEADERS frame starts with a request pseudo-header
    (:method, :scheme, :path, :authority), RESPONSE when with :status, None
    when ``data`` shows no such frame.  Pseudo-headers come first in a block
    and encoders send them as static-table references, so this needs no
    header table.
    """
    if _chains_to_end(data):
        pos = 0  # a write or read that is whole frames: the usual case
    else:
        found = _find_frame_boundary(data, 0)
        if found is None or not found[1]:
            return None
        pos = found[0]
    while pos + FRAME_HEADER_SIZE <= len(data):
        length = _plausible_header(data, pos)
        if length is None or pos + FRAME_HEADER_SIZE + length > len(data):
            return None
        if data[pos + 3] == _HEADERS:
            try:
                frame, _ = HeadersFrame.parse_frame_header(memoryview(data)[pos : pos + FRAME_HEADER_SIZE])
                frame.parse_body(memoryview(data)[pos + FRAME_HEADER_SIZE : pos + FRAME_HEADER_SIZE + length])
            except (HyperframeError, ValueError, struct.error):
                return None
            kind = _first_field_kind(frame.data)
            if kind is not None:
                return kind
        pos += FRAME_HEADER_SIZE + length
    return None


def _first_field_kind(block: bytes) -> MessageKind | None:
    pos = 0
    while pos < len(block) and block[pos] & 0xE0 == 0x20:  # table size updates come first
        more = block[pos] & 0x1F == 0x1F  # a 5-bit prefix integer continues in 7-bit groups
        pos += 1
        while more and pos < len(block):
            more = bool(block[pos] & 0x80)
            pos += 1
    if pos >= len(block):
        return None
    first = block[pos]
    if first & 0x80:
        index = first & 0x7F
    elif first & 0x40:
        index = first & 0x3F
    else:
        index = first & 0x0F
    if 1 <= index <= 7:  # :authority, :method, :path, :scheme
        return MessageKind.REQUEST
    if 8 <= index <= 14:  # :status
        return MessageKind.RESPONSE
    return None


__all__ = [
    "MAX_FRAME_SIZE",
    "MAX_HEADER_BLOCK_SIZE",
    "MAX_HEADER_LIST_SIZE",
    "MAX_HEADER_TABLE_SIZE",
    "MAX_STREAMS",
    "PREFACE",
    "Event",
    "Http2Parser",
    "StreamDropped",
    "StreamEvent",
    "StreamReset",
    "is_settings_frame",
    "might_be_frames",
    "sniff_side",
]
