"""Both directions of one HTTP/2 connection, seen from the client.

The HTTP/2 counterpart of ``connections.Http1Tap``, with the same interface
(``sent``, ``received``, ``close`` and the ``saw_*`` flags the connection
tracker reads).  Every stream is its own ``Exchange``; many run at once on
one connection.  The exchange layer is per stream already, so content
codings, SSE and NDJSON are read exactly as over HTTP/1.1.
"""

from __future__ import annotations

from lumen_agent.parsers.http1 import (
    Body,
    EndOfMessage,
    MessageHead,
    MessageKind,
    Skipped,
    Truncated,
)
from lumen_agent.parsers.http2 import Http2Parser, StreamDropped, StreamEvent, StreamReset
from lumen_agent.parsers.providers.recognise import provider_of_host
from lumen_agent.pipeline.counters import Counters
from lumen_agent.pipeline.events import EventFlag
from lumen_agent.pipeline.exchange import Exchange

# Skip reasons of the parser counted under their own name (the rest are
# bytes, under ``http2_bytes``), so a limit that bites is easy to see.
_SKIP_KEYS = (
    ("undecodable header block", "h2_header_block"),
    ("stream table full", "h2_stream_limit"),
    ("frame exceeds", "h2_frame_limit"),
    ("header block exceeds", "h2_header_limit"),
)


# Bound once (per event): reading an enum member through its class costs
# about 0.14 us on Python 3.11.
_RESPONSE = MessageKind.RESPONSE


def _skip_key(reason: str) -> str:
    for prefix, key in _SKIP_KEYS:
        if reason.startswith(prefix):
            return key
    return "http2_bytes"


class Http2Tap:
    def __init__(self, pid: int, conn: int, counters: Counters, capture_content: bool, *, joined: bool = False) -> None:
        self.pid = pid
        self.conn = conn
        self._counters = counters
        self._capture_content = capture_content
        self._parser = Http2Parser(joined=joined)
        # Open exchanges by stream id; the parser bounds how many streams are
        # open (MAX_STREAMS) and cuts the ones it drops, so this is bounded too.
        self._exchanges: dict[int, Exchange] = {}
        self._parser.response_body_sink = self._response_body
        self.saw_llm = False
        self.saw_non_llm = False
        self.provider_host = False
        if joined:
            counters.skip("h2_joined_midstream", "HTTP/2 connection seen without its start")

    def sent(self, data: bytes, ts_ns: int, flags: EventFlag) -> list[Exchange]:
        return self._receive(MessageKind.REQUEST, data, ts_ns, flags)

    def received(self, data: bytes, ts_ns: int, flags: EventFlag) -> list[Exchange]:
        # _receive(_RESPONSE, ...), inline: once per streamed chunk.
        if flags and flags & EventFlag.GAP:
            self._parser.lost_data(_RESPONSE)
        if not self._parser.receive_data(_RESPONSE, data):
            return []  # body bytes only, which the parser handed to _response_body
        return self._handle(self._parser.next_events(), ts_ns)

    def close(self, ts_ns: int) -> list[Exchange]:
        """The connection ended: whatever is still open was cut off."""
        self._parser.connection_closed()
        done = self._handle(self._parser.next_events(), ts_ns)
        for exchange in self._exchanges.values():
            exchange.on_cut(ts_ns)
            done.append(exchange)
        self._exchanges.clear()
        return done

    # -- internals ----------------------------------------------------------

    def _receive(self, kind: MessageKind, data: bytes, ts_ns: int, flags: EventFlag) -> list[Exchange]:
        if flags and flags & EventFlag.GAP:
            self._parser.lost_data(kind)
        if not self._parser.receive_data(kind, data):
            return []  # body bytes only, which the parser handed to _response_body
        return self._handle(self._parser.next_events(), ts_ns)

    def _response_body(self, stream_id: int, data: bytes) -> None:
        """A piece of a response body, straight from the parser (the hot path of a stream)."""
        exchange = self._exchanges.get(stream_id)
        if exchange is not None:
            exchange.on_response_body(data)

    def _handle(self, events, ts_ns: int) -> list[Exchange]:
        done: list[Exchange] = []
        for event in events:
            if type(event) is StreamEvent and type(event.event) is Body and event.kind is MessageKind.RESPONSE:
                # The hot path: a piece of a streamed response.
                exchange = self._exchanges.get(event.stream_id)
                if exchange is not None:
                    exchange.on_response_body(event.event.data)
                continue
            match event:
                case StreamEvent(kind=MessageKind.REQUEST):
                    self._request(event.stream_id, event.event, ts_ns)
                case StreamEvent():
                    self._response(event.stream_id, event.event, ts_ns, done)
                case StreamReset():
                    # Cut by RST_STREAM (or refused by GOAWAY): cancelled,
                    # unless the stream had already said its last word.
                    exchange = self._exchanges.pop(event.stream_id, None)
                    self._counters.add("h2.stream_reset")
                    if exchange is not None and exchange.request_done:
                        exchange.on_cut(ts_ns)
                        done.append(exchange)
                case StreamDropped():
                    # Its response could not be read: no row rather than a guessed one.
                    if self._exchanges.pop(event.stream_id, None) is not None:
                        self._counters.skip("h2_response_unreadable", event.reason)
                case Skipped():
                    key = _skip_key(event.reason)  # *_bytes reasons count bytes, the others items
                    self._counters.skip(key, event.reason, event.nbytes if key.endswith("_bytes") else 1)
        return done

    def _request(self, stream_id: int, event, ts_ns: int) -> None:
        match event:
            case MessageHead():
                if stream_id in self._exchanges:
                    self._counters.skip("h2_stream_reused")
                self._exchanges[stream_id] = Exchange(
                    pid=self.pid,
                    conn=self.conn,
                    stream_id=stream_id,
                    http_version="2",
                    ts_start_ns=ts_ns,
                    request=event,
                    capture_content=self._capture_content,
                )
            case Body():
                if (exchange := self._exchanges.get(stream_id)) is not None:
                    exchange.on_request_body(event.data)
            case EndOfMessage():
                exchange = self._exchanges.get(stream_id)
                if exchange is not None and not exchange.request_done:
                    if exchange.on_request_end() is None:
                        self.saw_non_llm = True
                        self.provider_host = self.provider_host or provider_of_host(exchange.authority) is not None
                    else:
                        self.saw_llm = True
            case Truncated():
                if self._exchanges.pop(stream_id, None) is not None:
                    self._counters.skip("request_cut")

    def _response(self, stream_id: int, event, ts_ns: int, done: list[Exchange]) -> None:
        exchange = self._exchanges.get(stream_id)
        if exchange is None:
            if isinstance(event, MessageHead):
                self._counters.skip("response_without_request")
            return
        match event:
            case MessageHead() if event.status is not None and event.status < 200:
                pass  # 100 Continue and friends: the real response follows
            case MessageHead():
                if not exchange.request_done:
                    # Answered before the request ended (an early error): read
                    # the request as far as it went.
                    exchange.on_request_end()
                exchange.on_response_head(event, ts_ns)
            case Body():
                exchange.on_response_body(event.data)
            case EndOfMessage():
                del self._exchanges[stream_id]
                exchange.on_response_end(ts_ns)
                done.append(exchange)
            case Truncated():
                del self._exchanges[stream_id]
                if exchange.request_done:
                    exchange.on_cut(ts_ns)
                    done.append(exchange)
