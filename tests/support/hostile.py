"""Hostile whole recordings for the fuzz test and bench/fuzz_recordings.py.

A recording here is what ``run --record`` writes (JSON lines of events), made
of LLM calls of several providers and wire shapes (JSON, SSE, NDJSON) whose
usage blocks and names hold hostile values, under every content encoding
(corrupt ones and compression bombs included), cut into random pieces, with
junk lines between them.  :func:`check_run` feeds one through the pipeline
into a real DuckDB file and asserts the invariants of the hardening issue.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import tracemalloc
import zlib
from dataclasses import dataclass, fields
from decimal import Decimal

import brotli
import zstandard
from hypothesis import strategies as st

from lumen_agent.outputs.store import CallStore
from lumen_agent.parsers.providers.base import MAX_NAME_LENGTH, MAX_PLAUSIBLE_TOKENS
from lumen_agent.pipeline.bounds import MAX_BODY_CHARS, MAX_PATH_CHARS, MAX_STORABLE_COST, MAX_TEXT_CHARS
from lumen_agent.pipeline.call import Call
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.recording import read_events

# Peak Python memory one recording may cost: the largest buffer the pipeline
# keeps is a 16 MiB JSON body (exchange.MAX_RESPONSE_BODY) plus its parse;
# a stream is decoded in 256 KiB steps whatever it inflates to.
MEMORY_CEILING = 96 * 1024 * 1024

TOKENS = ["prompt_tokens", "completion_tokens"]
NUMBERS = st.one_of(
    st.sampled_from(["10", "0", "-5", "1000000000000000", "1e400", "-1e400", "NaN", "Infinity", "1.5", "true",
                     "null", '"12"', "[]", "{}", "99999999999999999999999999999", "1000000000", "1000000001"]),
    st.integers(-(2**70), 2**70).map(str),
)
NAMES = st.one_of(
    st.sampled_from(['"gpt-4o-mini"', '"claude-sonnet-4-5"', '"gpt-\\udfff"', '"\\ud800\\udc00x"',
                     '"\\u0000\\u001b[31mred\\u007f"', '"' + "m" * 10_000 + '"', "5", "null", '""',
                     '"' + "\\ud800" * 300 + '"', '"llama3.2"', '"gemini-2.0-flash"']),
    st.text(max_size=40).map(json.dumps),
)
HEADER_VALUES = st.one_of(st.sampled_from(["team-a", "victim-team", "x" * 5000, "\u00e9t\u00e9", "a\tb"]),
                          st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30))


@dataclass(frozen=True)
class Shape:
    host: str
    path: str
    content_type: str


def _openai_json(model: str, a: str, b: str) -> bytes:
    return (f'{{"id":"c","object":"chat.completion","model":{model},"choices":[],'
            f'"usage":{{"prompt_tokens":{a},"completion_tokens":{b},'
            f'"prompt_tokens_details":{{"cached_tokens":{a}}}}}}}').encode()


def _openai_sse(model: str, a: str, b: str) -> bytes:
    return (f'data: {{"id":"c","model":{model},"choices":[{{"delta":{{"content":"hi"}}}}]}}\n\n'
            f'data: {{"id":"c","model":{model},"choices":[],"usage":{{"prompt_tokens":{a},'
            f'"completion_tokens":{b}}}}}\n\ndata: [DONE]\n\n').encode()


def _anthropic_sse(model: str, a: str, b: str) -> bytes:
    return ('event: message_start\ndata: {"type":"message_start","message":{"model":' + model
            + ',"usage":{"input_tokens":' + a + ',"output_tokens":1}}}\n\n'
            'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":' + b + '}}\n\n'
            'event: message_stop\ndata: {"type":"message_stop"}\n\n').encode()


def _ollama_ndjson(model: str, a: str, b: str) -> bytes:
    return ('{"model":' + model + ',"done":false}\n{"model":' + model + ',"done":true,"prompt_eval_count":'
            + a + ',"eval_count":' + b + '}\n').encode()


def _gemini_json(model: str, a: str, b: str) -> bytes:
    return ('{"modelVersion":' + model + ',"usageMetadata":{"promptTokenCount":' + a
            + ',"candidatesTokenCount":' + b + '}}').encode()


SHAPES = {
    "openai_json": (Shape("api.openai.com", "/v1/chat/completions", "application/json"), _openai_json, False),
    "openai_sse": (Shape("api.openai.com", "/v1/chat/completions", "text/event-stream"), _openai_sse, True),
    "anthropic_sse": (Shape("api.anthropic.com", "/v1/messages", "text/event-stream"), _anthropic_sse, True),
    "ollama_ndjson": (Shape("localhost:11434", "/api/chat", "application/x-ndjson"), _ollama_ndjson, True),
    "gemini_json": (Shape("generativelanguage.googleapis.com",
                          "/v1beta/models/gemini-2.0-flash:generateContent", "application/json"), _gemini_json, False),
}


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=1)
    if encoding == "deflate":
        return zlib.compress(body, 1)
    if encoding == "br":
        return brotli.compress(body, quality=1)
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(body)
    return body


@st.composite
def exchanges(draw, max_bomb_mib: int = 4) -> list[bytes]:
    """One call as the client saw it: the request written, the response read."""
    shape, make, streaming = SHAPES[draw(st.sampled_from(sorted(SHAPES)))]
    model = draw(NAMES)
    body = make(model, draw(NUMBERS), draw(NUMBERS))
    encoding = draw(st.sampled_from(["identity", "gzip", "deflate", "br", "zstd"]))
    kind = draw(st.sampled_from(["plain", "plain", "plain", "corrupt", "bomb"]))
    if kind == "bomb":  # a few KB that inflate to up to max_bomb_mib MiB of one repeated line or event
        unit = b"data: {}\n\n" if "event-stream" in shape.content_type else b"{}\n"
        body = unit * (draw(st.integers(1, max_bomb_mib)) * 1024 * 1024 // len(unit))
        encoding = draw(st.sampled_from(["gzip", "br", "zstd"]))
    payload = _encode(body, encoding)
    if kind == "corrupt" and len(payload) > 4:
        at = draw(st.integers(0, len(payload) - 1))
        payload = payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1 :]
    request_model = draw(NAMES)
    request_body = ('{"model":' + request_model + ',"stream":' + ("true" if streaming else "false")
                    + ',"stream_options":{"include_usage":true},"messages":[]}').encode()
    headers = [f"POST {shape.path} HTTP/1.1", f"Host: {shape.host}", "Content-Type: application/json",
               f"Content-Length: {len(request_body)}", "Authorization: Bearer sk-test-fake-fuzz",
               f"x-lumen-tenant: {draw(HEADER_VALUES)}"]
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + request_body
    status = draw(st.sampled_from([200, 200, 200, 429, 500]))
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {shape.content_type}"]
    if encoding != "identity":
        head.append(f"Content-Encoding: {encoding}")
    if draw(st.booleans()):
        head.append("Transfer-Encoding: chunked")
        step = draw(st.integers(16, 65536))
        framed = b"".join(b"%x\r\n%s\r\n" % (len(payload[i : i + step]), payload[i : i + step])
                          for i in range(0, len(payload), step)) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(payload)}")
        framed = payload
    response = ("\r\n".join(head) + "\r\n\r\n").encode() + framed
    if draw(st.booleans()):  # cut off mid-response
        response = response[: draw(st.integers(0, len(response)))]
    return [request, response]


JUNK = st.sampled_from([b"not json", b"[" * 100_000, b"\xff\xfe\x00garbage", b'{"ts":"x","pid":1}',
                        b'{"ts":1,"pid":1,"conn":1,"dir":"sideways","data":""}', b"{}", b"null",
                        b'{"kind":"process","pid":1,"process":5}', b'{"ts":1e999,"pid":1,"conn":1,"dir":"send"}'])


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@st.composite
def recordings(draw, max_calls: int = 4, max_bomb_mib: int = 4) -> bytes:
    lines: list[bytes] = []
    ts = 1_763_000_000_000_000_000
    for conn in range(1, draw(st.integers(1, max_calls)) + 1):
        request, response = draw(exchanges(max_bomb_mib))
        pid = draw(st.sampled_from([100, 200]))
        for direction, data in (("send", request), ("recv", response)):
            cuts = draw(st.lists(st.integers(0, 2**20), max_size=6))
            for piece in _pieces(data, cuts):
                ts += 1000
                record = {"ts": ts, "pid": pid, "conn": conn, "dir": direction,
                          "data": base64.b64encode(piece).decode()}
                if draw(st.integers(0, 20)) == 0:
                    record["flags"] = [draw(st.sampled_from(["gap", "truncated"]))]
                lines.append(json.dumps(record).encode())
        if draw(st.booleans()):
            lines.append(json.dumps({"ts": ts + 1, "pid": pid, "conn": conn, "dir": "recv", "data": "",
                                     "flags": ["close"]}).encode())
        if draw(st.integers(0, 3)) == 0:
            lines.append(draw(JUNK))
    return b"\n".join(lines) + b"\n"


# -- invariants -------------------------------------------------------------------------------

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                 "cache_write_1h_tokens", "reasoning_tokens")
_LIMITS = {"model": MAX_NAME_LENGTH, "request_model": MAX_NAME_LENGTH, "exe": MAX_PATH_CHARS,
           "request_body": MAX_BODY_CHARS, "response_body": MAX_BODY_CHARS}


def check_row(call: Call) -> None:
    """No unbounded or invalid value: what the bounds promise, checked."""
    for f in fields(Call):
        value = getattr(call, f.name)
        if isinstance(value, str):
            value.encode("utf-8")  # no lone surrogates
            assert len(value) <= _LIMITS.get(f.name, MAX_TEXT_CHARS), f.name
            if f.name not in ("request_body", "response_body"):
                assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value), f.name
    for name in _TOKEN_FIELDS:
        value = getattr(call, name)
        assert value is None or (type(value) is int and 0 <= value <= MAX_PLAUSIBLE_TOKENS), name
    if call.cost_usd is not None:
        assert isinstance(call.cost_usd, Decimal) and call.cost_usd.is_finite()
        assert abs(call.cost_usd) < MAX_STORABLE_COST
        assert not call.usage_implausible
    for name in ("latency_ms", "ttft_ms"):
        value = getattr(call, name)
        assert value is None or math.isfinite(value)


@dataclass
class RunFigures:
    events: int = 0
    bad_lines: int = 0
    calls: int = 0
    implausible: int = 0
    skipped: int = 0
    peak_bytes: int = 0


def check_run(recording: bytes, prices, store: CallStore, salt: bytes = b"s" * 32, *,
              flush: bool = True) -> RunFigures:
    """Feed ``recording`` through the pipeline into ``store``; assert the
    invariants.  ``flush=False`` leaves the flush (and its check) to the caller."""
    figures = RunFigures()
    calls: list[Call] = []

    def on_bad_line(lineno: int, error: Exception) -> None:
        figures.bad_lines += 1

    tracemalloc.start()
    try:
        pipeline = Pipeline(prices, calls.append, salt=salt)
        for event in read_events(io.BytesIO(recording), on_bad_line):
            pipeline.feed(event)
        pipeline.close()
        _, figures.peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert figures.peak_bytes < MEMORY_CEILING, f"peak {figures.peak_bytes} bytes"
    for call in calls:
        check_row(call)
    before = store.stats()
    store.add_many(calls)
    if flush:
        written = store.flush()
        after = store.stats()
        assert written == len(calls), "the writer must take every row"
        assert after["dead_lettered"] == before["dead_lettered"]
    counters = pipeline.counters.snapshot()
    figures.events = counters.get("events", 0)
    figures.calls = len(calls)
    figures.implausible = sum(c.usage_implausible for c in calls)
    figures.skipped = sum(v for k, v in counters.items() if k.startswith("skipped."))
    return figures
