"""Server-sent events (text/event-stream), incrementally, per the WHATWG rules.

Only ``event`` and ``data`` matter for usage; ``id`` and ``retry`` are
accepted and ignored.  Lines end in LF, CRLF or CR.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumen_agent.parsers.errors import LimitExceeded

# A single event larger than this is not an LLM stream chunk we can use.
MAX_EVENT_BYTES = 4 * 1024 * 1024


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

    def receive_data(self, data: bytes) -> None:
        self._buffer += data
        # No line ends in the new bytes: no new line is complete (a CR left
        # at the end before may now be complete, so look then too).
        if b"\n" in data or b"\r" in data or self._buffer[-len(data) - 1 : -len(data)] == b"\r":
            self._split_lines()
        if len(self._buffer) + self._pending_size > MAX_EVENT_BYTES:
            raise LimitExceeded("server-sent event exceeds MAX_EVENT_BYTES")

    def end_of_stream(self) -> None:
        """A stream may end without a final blank line: dispatch what is pending."""
        if self._buffer:
            self._line(bytes(self._buffer))
            self._buffer.clear()
        self._dispatch()

    def next_events(self) -> list[SseEvent]:
        events, self._events = self._events, []
        return events

    def _split_lines(self) -> None:
        buf = self._buffer
        if b"\r" not in buf:
            # The usual case, LF line endings only: one split does it all.
            *lines, rest = buf.split(b"\n")
            for line in lines:
                self._line(line)
            self._buffer = bytearray(rest)
            return
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
            self._line(bytes(buf[start:end]))
            start = nxt
        del buf[:start]

    def _line(self, raw: bytes) -> None:
        if not raw:
            self._dispatch()
            return
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._pending_size += len(value)
        elif name == "event":
            self._event = value

    def _dispatch(self) -> None:
        if self._data:
            self._events.append(SseEvent(self._event, "\n".join(self._data)))
        self._event = None
        self._data = []
        self._pending_size = 0
