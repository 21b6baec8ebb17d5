"""One request and its response, assembled from HTTP messages of any version.

A protocol tap (HTTP/1.1, or one HTTP/2 stream) drives an ``Exchange`` through
its life with the ``on_*`` methods; the exchange owns what happens to the
bytes: bounded buffering of the request body, content decoding of the
response, and feeding the provider's usage reader as the body arrives, so a
long stream is read incrementally and never held whole.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from lumen_agent.parsers.encodings import Decoder, DecompressionLimit, IdentityDecoder, decoder_for
from lumen_agent.parsers.errors import LimitExceeded, ParseError
from lumen_agent.parsers.eventstream import EventStreamParser, SkippedMessage
from lumen_agent.parsers.http1 import MessageHead
from lumen_agent.parsers.providers import (
    RequestInfo,
    UsageReader,
    identify,
    served_by,
    usage_reader,
)
from lumen_agent.parsers.providers.batch import BATCH_ENDPOINTS, BatchLine, BatchResultsReader
from lumen_agent.parsers.providers.bedrock import event_objects
from lumen_agent.parsers.sse import SseParser, whole_event_data_start
from lumen_agent.parsers.usage import Usage

# Request bodies carry prompts, sometimes images: keep this much for
# recognising the call; the model and stream flag are near the top anyway.
MAX_REQUEST_BODY = 8 * 1024 * 1024
# A non-streaming JSON response is parsed whole; LLM responses are far smaller.
MAX_RESPONSE_BODY = 16 * 1024 * 1024
# A streamed response is read incrementally; past this many decoded bytes it
# is no longer worth reading (and a decoder that tries is a bomb).
MAX_STREAM_BYTES = 256 * 1024 * 1024
# SSE events or NDJSON lines of one response worth reading: a stream sends
# about one per token (OpenAI's Responses API a few), and the longest outputs
# are ~128k tokens.  Past this a stream is a CPU bomb (millions of tiny
# events cost the run loop seconds each), not a completion.
MAX_STREAM_EVENTS = 500_000
# One NDJSON object (Ollama's chunks are < 1 KiB; the final one of
# /api/generate carries a context array of up to a few hundred KiB).
MAX_NDJSON_LINE = 4 * 1024 * 1024
# One line of a batch results file: a whole response body, and an embeddings
# body of a 2,048-input request carries megabytes of vectors.  A longer line
# is skipped and counted.
MAX_BATCH_LINE = 32 * 1024 * 1024
# A batch results file is read line by line, so its size costs time, not
# memory.  OpenAI's files are up to 512 MB and an output file outgrows its
# input; past 1 GiB a download is not one batch's results worth the CPU.
MAX_BATCH_DOWNLOAD_BYTES = 1024 * 1024 * 1024
# Decoded bytes handed to the SSE/NDJSON parsers per step, so a compressed
# body is never expanded by more than this before it is parsed and dropped.
DECODE_STEP = 256 * 1024
# Body text kept for the opt-in content capture.
MAX_CONTENT_CAPTURE = 1024 * 1024

# Stream events after which a provider sends nothing that matters: a client
# may close the connection right after one (the openai SDK does, before the
# chunked body's last chunk), and the call still ended normally.
_FINAL_SSE_EVENTS = frozenset({"message_stop", "response.completed", "response.incomplete", "response.failed"})
# The same names as bytes, to look an event's name up before decoding it
# (the names are ASCII: their bytes decode to them and nothing else does).
_FINAL_SSE_EVENTS_RAW = frozenset(name.encode() for name in _FINAL_SSE_EVENTS)

_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE_TRUE = re.compile(rb'"include_usage"\s*:\s*true')
_SEARCH_CONTEXT_SIZE = re.compile(rb'"search_context_size"\s*:\s*"(low|medium|high)"')


@dataclass(slots=True)
class Exchange:
    pid: int
    conn: int
    stream_id: int
    http_version: str
    ts_start_ns: int
    request: MessageHead
    capture_content: bool = False
    request_body: bytearray = field(default_factory=bytearray)
    request_body_truncated: bool = False
    request_decoder: Decoder | None = None
    info: RequestInfo | None = None
    request_done: bool = False
    response: MessageHead | None = None
    ts_response_ns: int | None = None
    ts_end_ns: int | None = None
    complete: bool = False
    # Why the body could not be read in full, for the skip counters.
    body_problem: str | None = None
    # An exception event inside a 200 event stream (Bedrock's
    # throttlingException, modelStreamErrorException): the call failed.
    stream_exception: str | None = None
    _reader: UsageReader | None = None
    _decoder: Decoder | None = None
    _identity: bool = False  # _decoder is the identity: body pieces are plaintext
    # An SSE stream without content coding whose content is not kept: the
    # common stream, read by a short path (on_response_body).
    _plain_sse: bool = False
    _mode: str = "json"  # json | sse | ndjson | eventstream | discard
    _body: bytearray = field(default_factory=bytearray)
    _decoded_total: int = 0
    _sse: SseParser | None = None
    _events: EventStreamParser | None = None
    _stream_finished: bool = False
    _content: bytearray | None = None
    _ndjson_scanned: int = 0  # bytes of _body already searched for a newline
    _ndjson_skipping: bool = False  # inside a line too long to keep
    _stream_events: int = 0  # SSE events or NDJSON lines read so far
    _line_limit: int = MAX_NDJSON_LINE
    _stream_limit: int = MAX_STREAM_BYTES
    # NDJSON lines skipped: not JSON, or longer than the line limit.
    bad_lines: int = 0
    long_lines: int = 0

    # -- request ------------------------------------------------------------

    def on_request_body(self, data: bytes) -> None:
        if self.request_body_truncated:
            return
        if self.request_decoder is None:
            self.request_decoder = decoder_for(self.request.header("content-encoding"))
        budget = MAX_REQUEST_BODY - len(self.request_body)
        try:
            self.request_body += self.request_decoder.decode(data, budget)
        except LimitExceeded:
            self.request_body_truncated = True
        except ParseError as exc:
            self.request_body_truncated = True
            self.body_problem = f"request body: {exc}"

    def on_request_end(self) -> RequestInfo | None:
        self.request_done = True
        body = _parse_request_json(self.request_body, self.request_body_truncated)
        try:
            self.info = identify(
                self.request.method or "",
                self.request.target or "",
                self.authority,
                dict(self.request.headers),
                body,
            )
        except ParseError:
            self.info = None
        if self.info is None and not self.capture_content:
            self.request_body = bytearray()  # not ours: free it now
        return self.info

    @property
    def authority(self) -> str | None:
        return self.request.header("host") or self.request.header(":authority")

    # -- response -----------------------------------------------------------

    def on_response_head(self, head: MessageHead, ts_ns: int) -> None:
        self.response = head
        self.ts_response_ns = ts_ns
        if self.info is None:
            self._mode = "discard"
            return
        if not self.info.host_named:
            # An unknown host (a gateway, a base-URL override): the provider's
            # own headers name who served the call.
            provider = served_by(name for name, _ in head.headers)
            if provider is not None and provider != self.info.provider:
                self.info = dataclasses.replace(self.info, provider=provider)
        self._reader = usage_reader(self.info)
        self._reader.feed_headers(dict(head.headers))
        try:
            self._decoder = decoder_for(head.header("content-encoding"))
            self._identity = type(self._decoder) is IdentityDecoder
        except ParseError as exc:
            self._mode = "discard"
            self.body_problem = str(exc)
            return
        content_type = (head.header("content-type") or "").lower()
        if self.info.endpoint in BATCH_ENDPOINTS:
            # Batch results are JSONL whatever the content type says
            # (OpenAI serves files as application/octet-stream); the
            # content of the whole file is no one call's, so never kept.
            self._mode = "ndjson"
            self._line_limit = MAX_BATCH_LINE
            self._stream_limit = MAX_BATCH_DOWNLOAD_BYTES
            return
        if "text/event-stream" in content_type:
            self._mode = "sse"
            self._sse = SseParser()
        elif "ndjson" in content_type or "jsonl" in content_type:
            self._mode = "ndjson"
        elif "vnd.amazon.eventstream" in content_type:
            self._mode = "eventstream"
            self._events = EventStreamParser()
        else:
            self._mode = "json"
        if self.capture_content:
            self._content = bytearray()
        self._plain_sse = self._mode == "sse" and self._identity and self._content is None

    def on_response_body(self, data: bytes) -> None:
        if self._plain_sse and self._decoded_total + (size := len(data)) <= self._stream_limit:
            # What the general path below does for such a stream, less its
            # branches: this runs once per token.  Past the limit, the
            # general path gives up.
            self._decoded_total += size
            try:
                if not self._sse.idle or not (start := whole_event_data_start(data)):
                    if events := self._sse.receive(data):
                        self._feed_sse_events(events)
                    return
                # One whole event (most pieces of a stream), read from its
                # bytes (whole_event_data_start says where its data begins):
                # what _feed_sse_events does with it, except that an event
                # the reader would ignore is counted and never decoded.
                self._stream_events += 1
                if self._stream_events > MAX_STREAM_EVENTS:
                    raise LimitExceeded(f"stream exceeds MAX_STREAM_EVENTS ({MAX_STREAM_EVENTS}) events")
                raw = data[start:-2]
                if start != 6 and data[7 : start - 7] in _FINAL_SSE_EVENTS_RAW or raw == b"[DONE]":
                    self._stream_finished = True
                elif self._reader.ignores_sse_data(raw):
                    return
                name = None if start == 6 else data[7 : start - 7].decode("utf-8", "replace")
                self._reader.feed_sse(name, raw.decode("utf-8", "replace"))
            except ParseError as exc:
                self._give_up(str(exc))
            return
        if self._mode == "discard":
            return
        limit = MAX_RESPONSE_BODY if self._mode == "json" else self._stream_limit
        try:
            if self._identity:
                # No content coding: the piece is its own one step (as
                # IdentityDecoder.steps gives it), without a generator per piece.
                if len(data) > limit - self._decoded_total:
                    raise DecompressionLimit("body exceeds its limit")
                steps = (data,) if data else ()
            else:
                # Decoded a bounded step at a time, each parsed before the next.
                steps = self._decoder.steps(data, limit - self._decoded_total, DECODE_STEP)
            for plain in steps:
                self._decoded_total += len(plain)
                if self._content is not None and len(self._content) < MAX_CONTENT_CAPTURE:
                    self._content += plain[: MAX_CONTENT_CAPTURE - len(self._content)]
                if self._mode == "sse":
                    self._feed_sse_events(self._sse.receive(plain))
                elif self._mode == "ndjson":
                    self._body += plain
                    self._drain_ndjson(final=False)
                elif self._mode == "eventstream":
                    try:
                        self._events.receive_data(plain)
                    finally:  # the messages whole before any damage still count
                        self._feed_stream_events()
                elif self._mode == "json":
                    self._body += plain
                else:  # given up inside this loop
                    return
        except ParseError as exc:  # bomb, corrupt data, a limit: stop reading this body
            self._give_up(str(exc))

    def on_response_end(self, ts_ns: int) -> None:
        self.ts_end_ns = ts_ns
        self.complete = True
        self._finish_body()

    def on_cut(self, ts_ns: int) -> None:
        """The connection ended (or was evicted) before the response did."""
        self.ts_end_ns = ts_ns
        self._finish_body()
        self.complete = self._stream_finished

    def batch_lines(self) -> list[BatchLine] | None:
        """The billed lines of a batch results download; None for any other call.

        A download whose response never came (or could not be read) has none:
        the download itself is never a row."""
        if isinstance(self._reader, BatchResultsReader):
            return self._reader.lines()
        if self.info is not None and self.info.endpoint in BATCH_ENDPOINTS:
            return []
        return None

    @property
    def batch_reader(self) -> BatchResultsReader | None:
        return self._reader if isinstance(self._reader, BatchResultsReader) else None

    def usage(self) -> Usage:
        if self._reader is None:
            return Usage(usage_missing=True)
        return self._reader.result()

    def response_text(self) -> str | None:
        if self._content is None:
            return None
        return self._content.decode("utf-8", "replace")

    def request_text(self) -> str | None:
        if not self.capture_content:
            return None
        return bytes(self.request_body[:MAX_CONTENT_CAPTURE]).decode("utf-8", "replace")

    # -- internals ----------------------------------------------------------

    def _give_up(self, why: str) -> None:
        self.body_problem = why
        self._mode = "discard"
        self._plain_sse = False
        self._body = bytearray()
        self._sse = None
        self._events = None

    def _finish_body(self) -> None:
        try:
            if self._mode == "sse":
                self._feed_sse_events(self._sse.finish())
            elif self._mode == "ndjson":
                self._drain_ndjson(final=True)
            elif self._mode == "eventstream" and self._events.pending_bytes and self.complete:
                self.body_problem = "event stream: truncated message"
            elif self._mode == "json" and self._body:
                try:
                    body = json.loads(self._body)
                except (ValueError, RecursionError):
                    if self.complete:
                        self.body_problem = "response body is not JSON"
                else:
                    self._reader.feed_json(body)
        except ParseError as exc:
            self.body_problem = str(exc)
        self._body = bytearray()
        self._sse = None
        self._events = None
        if self._mode != "discard":
            self._mode = "discard"
        self._plain_sse = False

    def _count_stream_event(self) -> None:
        self._stream_events += 1
        if self._stream_events > MAX_STREAM_EVENTS:
            raise LimitExceeded(f"stream exceeds MAX_STREAM_EVENTS ({MAX_STREAM_EVENTS}) events")

    def _feed_sse_events(self, events: list[tuple[str | None, str]]) -> None:
        for name, data in events:
            self._stream_events += 1  # _count_stream_event, inline: once per token
            if self._stream_events > MAX_STREAM_EVENTS:
                raise LimitExceeded(f"stream exceeds MAX_STREAM_EVENTS ({MAX_STREAM_EVENTS}) events")
            if data == "[DONE]" or name in _FINAL_SSE_EVENTS:
                self._stream_finished = True
            self._reader.feed_sse(name, data)

    def _feed_stream_events(self) -> None:
        for message in self._events.next_events():
            if isinstance(message, SkippedMessage):
                # Counted by the pipeline's response_body skips; the stream goes on.
                self.body_problem = f"event stream message skipped: {message.reason}"
                continue
            if message.message_type in ("exception", "error"):
                self.stream_exception = message.event_type or message.message_type
                continue
            if message.event_type == "metadata":  # ConverseStream's last event
                self._stream_finished = True
            for obj in event_objects(message):
                self._reader.feed_json(obj)

    def _drain_ndjson(self, *, final: bool) -> None:
        """Hand over every complete line; linear in the bytes received: only
        new bytes are searched for a newline, and a line past
        ``MAX_NDJSON_LINE`` is skipped (counted) without being kept."""
        buf = self._body
        start = 0
        while True:
            end = buf.find(b"\n", max(start, self._ndjson_scanned))
            if end == -1:
                break
            if self._ndjson_skipping:
                self._ndjson_skipping = False
            elif end - start > self._line_limit:  # whole in one step, still too long
                self.body_problem = "NDJSON line exceeds its line limit"
                self.long_lines += 1
            else:
                self._ndjson_line(buf[start:end])
            start = self._ndjson_scanned = end + 1
        if start:
            del buf[:start]
            self._ndjson_scanned -= start
        self._ndjson_scanned = max(self._ndjson_scanned, len(buf))
        if len(buf) > self._line_limit:
            if not self._ndjson_skipping:
                self.body_problem = "NDJSON line exceeds its line limit"
                self.long_lines += 1
            self._ndjson_skipping = True
            buf.clear()
            self._ndjson_scanned = 0
        if final:
            if buf and not self._ndjson_skipping:
                self._ndjson_line(buf)
            buf.clear()
            self._ndjson_scanned = 0

    def _ndjson_line(self, line: bytes | bytearray) -> None:
        self._count_stream_event()
        if line.strip():
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                self.bad_lines += 1
                return
            self._reader.feed_ndjson(obj)


def _parse_request_json(body: bytearray, truncated: bool) -> Any | None:
    if not body:
        return None
    if not truncated:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return None
    # A body cut at the limit is not valid JSON: recover what identify needs.
    head = bytes(body[:65536])
    found: dict[str, Any] = {}
    if match := _MODEL_FIELD.search(head):
        found["model"] = match.group(1).decode("utf-8", "replace")
    if _STREAM_TRUE.search(head):
        found["stream"] = True
    if _INCLUDE_USAGE_TRUE.search(body):
        found["stream_options"] = {"include_usage": True}
    if match := _SEARCH_CONTEXT_SIZE.search(body):  # the enum only, never prompt text
        found["web_search_options"] = {"search_context_size": match.group(1).decode()}
    return found or None
