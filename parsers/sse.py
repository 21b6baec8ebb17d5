"""Server-sent events (text/event-stream), incrementally, per the WHATWG rules.

Only ``event`` and ``data`` matter for usage; ``id`` and ``retry`` are
accepted and ignored.  Lines end in LF, CRLF or CR.

Two ways to read events: ``receive_data`` and ``next_events`` (``SseEvent``
objects), or ``receive``, which returns the ``(event, data)`` pairs its bytes
completed.  The pipeline takes the pairs: a stream costs one SSE event per
token, and an object per event is a measurable share of that cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumen_agent.parsers.errors import LimitExceeded

# A single event larger than this is not an LLM stream chunk we can use.
MAX_EVENT_BYTES = 4 * 1024 * 1024


def whole_event_data_start(piece: bytes) -> int:
    """Where the data begins when ``piece`` is one whole event of the two
    commonest forms, LF-ended, ``data: X`` (OpenAI, Gemini) or ``event: N``
    then ``data: X`` (Anthropic, the Responses API), each followed by the
    blank line: 6, or the offset of X after the event line.  0 for any other
    piece.  The event is then ``(N or None, X)``: ``N`` is ``piece[7:start - 7]``,
    ``X`` is ``piece[start:-2]``, as the line rules read them (an event line
    and a data line with one space after the colon; no CR, which also ends
    a line).  Read only when the parser holds nothing (``SseParser.idle``)."""
    # Fewest operations first: this runs once per streamed chunk.  (find,
    # not ``in``: ``bytes in bytes`` raises and clears a TypeError inside.)
    end = len(piece) - 2
    first = piece.find(b"\n")
    if first == end:
        if piece[-1] == 10 and piece.startswith(b"data: ") and piece.find(b"\r") < 0:
            return 6
        return 0
    if (piece.startswith(b"event: ") and piece.find(b"\n", first + 1) == end and piece[-1] == 10
            and piece.startswith(b"data: ", first + 1) and piece.find(b"\r") < 0):
        return first + 7
    return 0


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None
    data: str


class SseParser:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._event: str | None = None
        self._data: list[str] = []
        self._pending_size = 0
        self._events: list[SseEvent] = []
        # Nothing held: the next byte starts a new line of a new event.
        self.idle = True

    def receive_data(self, data: bytes) -> None:
        self._events += [SseEvent(event, text) for event, text in self.receive(data)]

    def end_of_stream(self) -> None:
        """A stream may end without a final blank line: dispatch what is pending."""
        self._events += [SseEvent(event, text) for event, text in self.finish()]

    def next_events(self) -> list[SseEvent]:
        events, self._events = self._events, []
        return events

    def receive(self, data: bytes) -> list[tuple[str | None, str]]:
        """The ``(event, data)`` pairs that ``data`` completed.

        Raises ``LimitExceeded`` (and the pairs of this call are lost) when
        an unfinished event outgrows MAX_EVENT_BYTES."""
        if self.idle:
            # The commonest pieces of a stream: one whole event, nothing
            # pending before it.  What _lines would make of them, without the loop.
            if start := whole_event_data_start(data):
                value = data[start:-2].decode("utf-8", "replace")
                return [(None if start == 6 else data[7 : start - 7].decode("utf-8", "replace"), value)]
            end = len(data) - 4
            if data.find(b"\r") == end and data.find(b"\n") == end + 1 and data.endswith(b"\r\n\r\n") and (
                    data.startswith(b"data: ")):
                # One data line and the blank line, CRLF-ended (Gemini's).
                return [(None, data[6:end].decode("utf-8", "replace"))]
        done: list[tuple[str | None, str]] = []
        buf = self._buffer
        if not buf and b"\r" not in data:
            # The usual case, a piece of LF-ended lines and nothing held
            # over: one split of the new bytes, no copy into the buffer.
            lines = data.split(b"\n")
            rest = lines.pop()  # after the last line end: a line still to come
            if lines:
                self._lines(lines, done)
            if rest:
                buf += rest
        else:
            buf += data
            # No line ends in the new bytes: no new line is complete (a CR left
            # at the end before may now be complete, so look then too).
            if b"\n" in data or b"\r" in data or buf[-len(data) - 1 : -len(data)] == b"\r":
                self._split_lines(done)
        self.idle = not self._buffer and not self._data and self._event is None
        if len(self._buffer) + self._pending_size > MAX_EVENT_BYTES:
            raise LimitExceeded("server-sent event exceeds MAX_EVENT_BYTES")
        return done

    def finish(self) -> list[tuple[str | None, str]]:
        """End of the stream: the pairs of what is pending, with or without a final blank line."""
        done: list[tuple[str | None, str]] = []
        lines = [bytes(self._buffer)] if self._buffer else []
        self._buffer.clear()
        self._lines(lines + [b""], done)
        self.idle = True
        return done

    def _split_lines(self, done: list[tuple[str | None, str]]) -> None:
        buf = self._buffer
        if b"\r" not in buf:
            # LF line endings only: one split does it all.
            *lines, rest = buf.split(b"\n")
            self._lines(lines, done)
            self._buffer = bytearray(rest)
            return
        lines = []
        start = 0
        while True:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf != -1 else len(buf))
            if cr != -1:
                if cr + 1 == len(buf):
                    break  # a CR at the very end may be the first half of CRLF
                end, nxt = cr, cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1
            elif lf != -1:
                end, nxt = lf, lf + 1
            else:
                break
            lines.append(bytes(buf[start:end]))
            start = nxt
        del buf[:start]
        self._lines(lines, done)

    def _lines(self, lines: list[bytes], done: list[tuple[str | None, str]]) -> None:
        """Complete lines, in order; a blank one dispatches the event they built."""
        # The event being built lives in locals for the loop (one or two
        # lines per token in a stream), and goes back to self at the end.
        event, data, size = self._event, self._data, self._pending_size
        for raw in lines:
            if not raw:
                if data:
                    done.append((event, "\n".join(data)))
                event, data, size = None, [], 0
            elif raw.startswith(b"data: "):
                # The common form, ASCII name and one space: decoding the
                # rest alone gives the same text as decoding the line.
                value = raw[6:].decode("utf-8", "replace")
                data.append(value)
                size += len(value)
            else:
                line = raw.decode("utf-8", "replace")
                if line.startswith(":"):
                    continue
                name, sep, value = line.partition(":")
                if sep and value.startswith(" "):
                    value = value[1:]
                if name == "data":
                    data.append(value)
                    size += len(value)
                elif name == "event":
                    event = value
        self._event, self._data, self._pending_size = event, data, size
