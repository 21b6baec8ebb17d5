"""The short path of a streamed chunk (Exchange.on_response_body for an
identity-coded SSE stream whose content is not kept) gives exactly what the
general path gives: the same usage, the same problem, the same limits."""

from __future__ import annotations

import json

import pytest

from lumen_agent.parsers.http1 import MessageHead
from lumen_agent.pipeline.exchange import MAX_STREAM_EVENTS, Exchange


def sse_chunks(n: int) -> list[bytes]:
    chunks = [b"data: " + json.dumps({"id": "c1", "model": "gpt-4o-mini-2024-07-18",
                                      "choices": [{"delta": {"content": f"t{i}"}}], "usage": None}).encode() + b"\n\n"
              for i in range(n)]
    chunks.append(b"data: " + json.dumps({"id": "c1", "model": "gpt-4o-mini-2024-07-18", "choices": [],
                                          "usage": {"prompt_tokens": 12, "completion_tokens": n,
                                                    "total_tokens": 12 + n}}).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def streamed(pieces: list[bytes], *, capture_content: bool, stream_limit: int | None = None) -> Exchange:
    request = MessageHead("POST", "/v1/chat/completions", None,
                          (("host", "api.openai.com"), ("content-type", "application/json")), "1.1")
    ex = Exchange(pid=1, conn=2, stream_id=1, http_version="1.1", ts_start_ns=1, request=request,
                  capture_content=capture_content)
    ex.on_request_body(json.dumps({"model": "gpt-4o-mini", "stream": True,
                                   "stream_options": {"include_usage": True}}).encode())
    assert ex.on_request_end() is not None
    ex.on_response_head(MessageHead(None, None, 200, (("content-type", "text/event-stream"),), "1.1"), 2)
    assert ex._plain_sse is not capture_content  # content kept: the general path
    if stream_limit is not None:
        ex._stream_limit = stream_limit  # MAX_STREAM_BYTES is 256 MiB: a small one for the test
    for piece in pieces:
        ex.on_response_body(piece)
    ex.on_response_end(3)
    return ex


@pytest.mark.parametrize("split", [None, 7])
def test_short_path_reads_what_the_general_path_reads(split):
    pieces = sse_chunks(20)
    if split:  # pieces cut across lines and events
        whole = b"".join(pieces)
        pieces = [whole[i : i + split] for i in range(0, len(whole), split)]
    short, general = streamed(pieces, capture_content=False), streamed(pieces, capture_content=True)
    # 12 prompt tokens, 20 completion tokens, from the final chunk.
    assert short.usage() == general.usage()
    assert (short.usage().input_tokens, short.usage().output_tokens) == (12, 20)
    assert short.body_problem is None and general.body_problem is None
    assert short.complete and short._stream_finished and general._stream_finished
    assert short._stream_events == general._stream_events == 22


def test_short_path_gives_up_at_the_stream_limit_as_the_general_path_does():
    pieces = sse_chunks(20)
    limit = sum(len(p) for p in pieces[:5])  # five chunks fit, the sixth does not
    short = streamed(pieces, capture_content=False, stream_limit=limit)
    general = streamed(pieces, capture_content=True, stream_limit=limit)
    assert short.body_problem == general.body_problem == "body exceeds its limit"
    assert short._stream_events == general._stream_events == 5
    assert short.usage() == general.usage()
    assert short.usage().usage_missing  # the usage chunk came after the limit


def test_short_path_keeps_max_stream_events(monkeypatch):
    from lumen_agent.pipeline import exchange

    monkeypatch.setattr(exchange, "MAX_STREAM_EVENTS", 10)
    short = streamed(sse_chunks(20), capture_content=False)
    assert short.body_problem == "stream exceeds MAX_STREAM_EVENTS (10) events"
    assert short._stream_events == 11  # the eleventh is counted, then the stream is dropped
    assert short.usage().usage_missing
    assert MAX_STREAM_EVENTS == 500_000


# -- the byte-level short path of one whole SSE event (issue 15) ----------------------
#
# A piece that is one whole event, read while the SSE parser holds nothing,
# is recognised from its bytes (whole_event_data_start), and an event the
# reader would ignore is counted without being decoded (ignores_sse_data,
# may_carry_usage_raw).  Each test compares with what the general rules give.

import random  # noqa: E402

from builders import load_fixture, request_bytes  # noqa: E402
from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame  # noqa: E402
from support import fake_provider as fp  # noqa: E402

from lumen_agent.parsers.providers.base import _may_carry_usage, may_carry_usage_raw  # noqa: E402
from lumen_agent.parsers.providers.google import GeminiReader  # noqa: E402
from lumen_agent.parsers.providers.openai import ChatCompletionsReader  # noqa: E402
from lumen_agent.parsers.sse import SseParser, whole_event_data_start  # noqa: E402
from lumen_agent.pipeline.core import Pipeline, PipelineOptions  # noqa: E402
from lumen_agent.pipeline.events import DataEvent, Direction  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

# Pieces of text around the usage patterns: the patterns themselves, near
# misses, escaped quotes (a text delta quoting JSON), words that hold "sage",
# and bytes that are not UTF-8 (decoded as U+FFFD).
USAGE_BITS = [b"usage", b"Usage", b"USAGE", b'"usage":null', b'"usage": null', b'"usage" :null', b'"usage":nul',
              b'\\"usage\\":null', b'"usage":{}', b"message", b"sage", b"usag", b"u", b"\xff", "é".encode(), b"\xe2\x80",
              b"us\xffage", b'"', b":", b"null", b" ", b"webSearchQueries", b"{", b"x"]


def test_usage_check_on_bytes_is_the_check_on_text():
    rng = random.Random(15)
    for _ in range(30000):
        raw = b"".join(rng.choice(USAGE_BITS) for _ in range(rng.randint(0, 9)))
        assert may_carry_usage_raw(raw) is _may_carry_usage(raw.decode("utf-8", "replace")), raw


@pytest.mark.parametrize("reader_type", [ChatCompletionsReader, GeminiReader])
def test_a_reader_ignores_exactly_what_feed_sse_skips(reader_type):
    """ignores_sse_data(raw) is the skip of feed_sse(text): before the model
    is known nothing is ignored; after it, what names no usage (and, for
    Gemini, no search queries)."""
    rng = random.Random(16)
    for model_known in (False, True):
        reader = reader_type()
        if model_known:
            reader._model = "m"
        for _ in range(5000):
            raw = b"".join(rng.choice(USAGE_BITS) for _ in range(rng.randint(0, 9)))
            text = raw.decode("utf-8", "replace")
            skipped = model_known and not _may_carry_usage(text)
            if reader_type is GeminiReader:
                skipped = skipped and "webSearchQueries" not in text
            assert reader.ignores_sse_data(raw) is skipped, raw


def _general_pairs(piece: bytes) -> tuple[list, bool]:
    """What the line rules make of a piece fed a byte at a time (never one whole event)."""
    parser = SseParser()
    pairs = []
    for i in range(len(piece)):
        pairs += parser.receive(piece[i : i + 1])
    return pairs, parser.idle


SSE_BITS = [b"data: ", b"data:", b"event: ", b"event:", b"id: 1", b": ping", b"x", b"{}", b"\xff", b":", b" ",
            b"\n", b"\n", b"\r", b"\r\n", b"data: [DONE]", b"message_stop"]


def test_whole_event_recognition_agrees_with_the_line_rules():
    rng = random.Random(17)
    whole = 0
    shapes = [b"data: {}\n\n", b"event: message_stop\ndata: {}\n\n", b"data: \n\n", b"event: \ndata: x\n\n",
              b"event:  a:b\ndata: c\n\n", b"data: a\rb\n\n", b"event: a\rdata: b\n\n", b"data: a\r\n\r\n",
              b"data:x\n\n", b"event: a\ndata:b\n\n", b"event: a\n\n", b"data: a\ndata: b\n\n", b"\n\n", b"data: a\n",
              b"data: a\r\n\r\n\r\n", b"data: a\rb\r\n\r\n", b"data: a\nb\r\n\r\n", b"data: \r\n\r\n", b"data:\r\n\r\n",
              b"data: a\r\n\n", b"data: a\n\r\n", b"\r\n\r\n"]


    def bits(most: int) -> bytes:
        return b"".join(rng.choice(SSE_BITS) for _ in range(rng.randint(0, most)))

    pieces = shapes + [bits(7) + rng.choice([b"", b"\n\n"]) for _ in range(10000)]
    # Near the recognised forms: an event line or not, a data line, a blank line, odd bytes inside.
    pieces += [rng.choice([b"", b"event: " + bits(2) + b"\n"]) + b"data: " + bits(3) + b"\n\n" for _ in range(10000)]
    pieces += [b"data: " + bits(3) + b"\r\n\r\n" for _ in range(5000)]  # Gemini's CRLF form
    for piece in pieces:
        expected, idle = _general_pairs(piece)
        parser = SseParser()
        assert (parser.receive(piece), parser.idle) == (expected, idle), piece
        if start := whole_event_data_start(piece):
            whole += 1
            name = None if start == 6 else piece[7 : start - 7].decode("utf-8", "replace")
            assert (expected, idle) == ([(name, piece[start:-2].decode("utf-8", "replace"))], True), piece
    assert whole > 2000  # the random pieces did reach the recognised forms


def test_idle_says_whether_the_parser_holds_anything():
    rng = random.Random(18)
    for _ in range(3000):
        parser = SseParser()
        for _ in range(rng.randint(1, 6)):
            parser.receive(b"".join(rng.choice(SSE_BITS) for _ in range(rng.randint(0, 4))))
            assert parser.idle is (not parser._buffer and not parser._data and parser._event is None)


# Streams read both ways.  Each is (request path, host, request body, pieces of the response body).

def _openai(pieces: list[bytes]) -> tuple:
    return ("/v1/chat/completions", "api.openai.com",
            {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}, pieces)


def _chunk(obj: dict, event: str | None = None, crlf: bool = False) -> bytes:
    piece = (f"event: {event}\n" if event else "") + "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"
    return (piece.replace("\n", "\r\n") if crlf else piece).encode()


def _fake(scenario: str, path: str, host: str, body: dict, *, crlf: bool = False, chunks: int = 12) -> tuple:
    headers = {"host": host, "authorization": "Bearer sk-test-fake", "x-api-key": "sk-test-fake",
               "x-fake-chunks": str(chunks)}
    reply = fp.build_reply("POST", path, headers, json.dumps(body).encode())
    assert reply.status == 200 and reply.scenario == scenario, reply
    FAKE_TOKENS[scenario] = None if reply.tokens is None else (reply.tokens.input, reply.tokens.output)
    return (path, host, body, [p.replace(b"\n", b"\r\n") if crlf else p for p in reply.pieces])


FAKE_TOKENS: dict[str, tuple[int, int] | None] = {}  # what the fake provider says each scenario used


def _fixture(name: str, path: str, host: str, body: dict) -> tuple:
    """A recorded response, one event per piece as a server writes them."""
    _, raw = load_fixture(name)
    pieces = [event + b"\n\n" for event in raw.replace(b"\r\n", b"\n").split(b"\n\n") if event.strip()]
    return (path, host, body, pieces)


def _mid_stream_usage() -> tuple:
    """Usage in the middle of a stream, then chunks without it, then the final usage (the latest wins),
    and text deltas that say usage in every way a text can."""
    model = "gpt-4o-mini-2024-07-18"
    texts = ['usage', 'Usage', '"usage":null', '"usage": null', 'the "usage" field', 'usage":null', 'message', '\r']
    pieces = [_chunk({"id": "c", "model": model, "choices": [{"delta": {"content": t}}], "usage": None}) for t in texts]
    pieces.insert(3, _chunk({"id": "c", "model": model, "choices": [], "usage": {"prompt_tokens": 5,
                                                                                 "completion_tokens": 1}}))
    pieces.append(_chunk({"id": "c", "model": model, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9,
                                                                             "total_tokens": 16}}))
    pieces.append(b"data: [DONE]\n\n")
    return _openai(pieces)


STREAMS = {
    "fake openai chat": _fake("openai.chat.stream", "/v1/chat/completions", "api.openai.com",
                              {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}),
    "fake openai chat crlf": _fake("openai.chat.stream", "/v1/chat/completions", "api.openai.com",
                                   {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}},
                                   crlf=True),
    "fake openai no usage": _fake("openai.chat.stream_no_usage", "/v1/chat/completions", "api.openai.com",
                                  {"model": "gpt-4o-mini", "stream": True}),
    "fake anthropic": _fake("anthropic.messages.stream", "/v1/messages", "api.anthropic.com",
                            {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 100}),
    "fake anthropic crlf": _fake("anthropic.messages.stream", "/v1/messages", "api.anthropic.com",
                                 {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 100}, crlf=True),
    "fake responses": _fake("openai.responses.stream", "/v1/responses", "api.openai.com",
                            {"model": "gpt-5-mini", "stream": True}),
    "fake gemini crlf": _fake("gemini.streamGenerateContent",
                              "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                              "generativelanguage.googleapis.com", {"contents": []}, crlf=True),
    "fake gemini lf": _fake("gemini.streamGenerateContent",
                            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                            "generativelanguage.googleapis.com", {"contents": []}),
    "recorded openai": _fixture("openai_chat_completions_stream_text.txt", "/v1/chat/completions", "api.openai.com",
                                {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}),
    "recorded anthropic": _fixture("anthropic_messages_stream.txt", "/v1/messages?beta=true", "api.anthropic.com",
                                   {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 100}),
    "recorded gemini": _fixture("gemini_streamgeneratecontent_sse.txt",
                                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                                "generativelanguage.googleapis.com", {"contents": []}),
    "usage mid-stream, usage in text": _mid_stream_usage(),
}


def _exchange(path: str, host: str, body: dict, pieces: list[bytes], *, general: bool) -> Exchange:
    """The response read by the short path, or (``general``: content kept) by the general one."""
    request = MessageHead("POST", path, None, (("host", host), ("content-type", "application/json")), "1.1")
    ex = Exchange(pid=1, conn=2, stream_id=1, http_version="1.1", ts_start_ns=1, request=request,
                  capture_content=general)
    ex.on_request_body(json.dumps(body).encode())
    assert ex.on_request_end() is not None
    ex.on_response_head(MessageHead(None, None, 200, (("content-type", "text/event-stream"),), "1.1"), 2)
    assert ex._plain_sse is not general
    for piece in pieces:
        ex.on_response_body(piece)
    ex.on_response_end(3)
    return ex


def _outcome(ex: Exchange) -> tuple:
    return ex.usage(), ex._stream_events, ex._stream_finished, ex.body_problem


# What each stream must give: the fake provider's own counts (12 chunks), the
# recordings' (their notes: gemini 18 in, 80 candidates + 35 thoughts out;
# anthropic 20 in), and the synthetic stream's final chunk (7 in, 9 out; not
# the 5 and 1 of the chunk mid-stream).
_OPENAI_12 = FAKE_TOKENS["openai.chat.stream"]
EXPECTED_TOKENS = {
    "fake openai chat": _OPENAI_12, "fake openai chat crlf": _OPENAI_12, "fake openai no usage": (None, None),
    "fake anthropic": FAKE_TOKENS["anthropic.messages.stream"], "fake anthropic crlf": FAKE_TOKENS["anthropic.messages.stream"],
    "fake responses": FAKE_TOKENS["openai.responses.stream"],
    "fake gemini crlf": FAKE_TOKENS["gemini.streamGenerateContent"], "fake gemini lf": FAKE_TOKENS["gemini.streamGenerateContent"],
    "recorded openai": None, "recorded anthropic": (20, None), "recorded gemini": (18, 115),
    "usage mid-stream, usage in text": (7, 9),
}


@pytest.mark.parametrize("name", STREAMS)
def test_one_event_per_piece_reads_as_the_general_path(name):
    path, host, body, pieces = STREAMS[name]
    short, general = _exchange(path, host, body, pieces, general=False), _exchange(path, host, body, pieces, general=True)
    assert _outcome(short) == _outcome(general)
    assert short._stream_events == len(pieces)
    usage = short.usage()
    expected = EXPECTED_TOKENS[name]
    if expected is not None:
        assert usage.input_tokens == expected[0]
        if expected[1] is not None:
            assert usage.output_tokens == expected[1]


def test_the_recorded_streams_give_their_documented_usage():
    # openai_chat_completions_stream_text.txt: the final chunk's usage.
    usage = _exchange(*STREAMS["recorded openai"], general=False).usage()
    final = json.loads(STREAMS["recorded openai"][3][-2][6:])["usage"]
    assert (usage.input_tokens, usage.output_tokens) == (final["prompt_tokens"], final["completion_tokens"])
    assert usage.model == "gpt-4o-mini-2024-07-18"
    # anthropic_messages_stream.txt: input 20 from message_start, output from message_delta.
    usage = _exchange(*STREAMS["recorded anthropic"], general=False).usage()
    delta = next(json.loads(p.split(b"data: ", 1)[1]) for p in STREAMS["recorded anthropic"][3] if b"message_delta" in p)
    assert (usage.input_tokens, usage.output_tokens) == (20, delta["usage"]["output_tokens"])


@pytest.mark.parametrize("name", ["fake openai chat", "fake anthropic", "recorded anthropic", "fake gemini crlf",
                                  "usage mid-stream, usage in text"])
def test_splits_at_every_byte_read_as_the_general_path(name):
    """Every piece cut in two at every byte (the event on either side of the cut
    may still be whole), and the first events of the stream joined and cut at
    every byte, read as the general path reads them."""
    path, host, body, pieces = STREAMS[name]
    general = _outcome(_exchange(path, host, body, pieces, general=True))
    for k, piece in enumerate(pieces[:4] + pieces[-3:]):
        k = k if k < 4 else len(pieces) - 7 + k
        for cut in range(1, len(piece)):
            split = pieces[:k] + [piece[:cut], piece[cut:]] + pieces[k + 1 :]
            assert _outcome(_exchange(path, host, body, split, general=False)) == general, (k, cut)
    joined = b"".join(pieces[:3])
    for cut in range(1, len(joined)):
        split = [joined[:cut], joined[cut:]] + pieces[3:]
        assert _outcome(_exchange(path, host, body, split, general=False)) == general, cut


# Whole calls through the pipeline: the rows and counters of the short path are
# the general path's (content kept turns the short path off; the kept bodies
# are the only difference).

def _http1_events(path: str, host: str, body: dict, pieces: list[bytes], calls: int = 3) -> list[DataEvent]:
    request = request_bytes("POST", f"https://{host}{path}", body)
    reads = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-request-id: req_1\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n"] + [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    events, ts = [], 1_764_000_000_000_000_000
    for _ in range(calls):  # keep-alive: one connection
        events.append(DataEvent(ts, 7, 7, 1, Direction.SEND, request))
        for read in reads:
            ts += 1_000_000
            events.append(DataEvent(ts, 7, 7, 1, Direction.RECV, read))
    return events


def _http2_events(path: str, host: str, body: dict, pieces: list[bytes], calls: int = 3) -> list[DataEvent]:
    import hpack

    from lumen_agent.parsers.http2 import PREFACE

    client, server = hpack.Encoder(), hpack.Encoder()
    request_headers = [(":method", "POST"), (":scheme", "https"), (":authority", host), (":path", path),
                       ("authorization", "Bearer sk-test-fake"), ("content-type", "application/json")]
    events, ts = [], 1_764_000_000_000_000_000
    for n in range(calls):
        sid = 1 + 2 * n
        sent = (PREFACE + SettingsFrame(0).serialize() if n == 0 else b"") + HeadersFrame(
            sid, client.encode(request_headers), flags=["END_HEADERS"]).serialize() + DataFrame(
            sid, json.dumps(body).encode(), flags=["END_STREAM"]).serialize()
        events.append(DataEvent(ts, 8, 8, 1, Direction.SEND, sent))
        head = (SettingsFrame(0).serialize() if n == 0 else b"") + HeadersFrame(
            sid, server.encode([(":status", "200"), ("content-type", "text/event-stream")]),
            flags=["END_HEADERS"]).serialize()
        events.append(DataEvent(ts + 1, 8, 8, 1, Direction.RECV, head))
        for k, piece in enumerate(pieces):
            ts += 1_000_000
            flags = ["END_STREAM"] if k == len(pieces) - 1 else []
            events.append(DataEvent(ts, 8, 8, 1, Direction.RECV, DataFrame(sid, piece, flags=flags).serialize()))
    return events


_ROW_FIELDS_OF_THE_PATH = ("id", "request_body", "response_body")


def _rows_and_counters(events: list[DataEvent], *, general: bool) -> tuple[list[dict], dict]:
    import dataclasses

    calls = []
    pipeline = Pipeline(PriceTable.load(), calls.append, salt=b"s" * 32,
                        options=PipelineOptions(capture_content=general, hostname="h"))
    for event in events:
        pipeline.feed(event)
    pipeline.close()
    rows = [{k: v for k, v in dataclasses.asdict(c).items() if k not in _ROW_FIELDS_OF_THE_PATH} for c in calls]
    return rows, pipeline.counters.snapshot()


@pytest.mark.parametrize("name", ["fake openai chat", "fake anthropic", "fake responses", "fake gemini crlf",
                                  "recorded openai", "recorded anthropic", "usage mid-stream, usage in text"])
@pytest.mark.parametrize("framing", [_http1_events, _http2_events])
def test_pipeline_rows_and_counters_are_the_general_paths(name, framing):
    events = framing(*STREAMS[name])
    short, general = _rows_and_counters(events, general=False), _rows_and_counters(events, general=True)
    assert short == general
    rows, counters = short
    assert len(rows) == 3 and counters["calls"] == 3
    assert counters["events"] == len(events) and counters["bytes"] == sum(len(e.data) for e in events)
    expected = EXPECTED_TOKENS[name]
    if expected is not None:
        assert rows[0]["input_tokens"] == expected[0]
    assert all(row["cost_usd"] is not None for row in rows)


def test_pipeline_cost_of_the_openai_stream_by_hand():
    """12 chunks of the fake provider: 78 input tokens, 12 output.  gpt-4o-mini:
    $0.15 per million input tokens, $0.60 per million output:
    78 x 0.15e-6 + 12 x 0.60e-6 = 0.0000117 + 0.0000072 = 0.0000189 per call."""
    rows, counters = _rows_and_counters(_http1_events(*STREAMS["fake openai chat"]), general=False)
    assert [(r["input_tokens"], r["output_tokens"], str(r["cost_usd"])) for r in rows] == [(78, 12, "0.00001890")] * 3
    assert counters["calls"] == 3


def test_counters_events_and_bytes_read_as_counted_ones():
    from lumen_agent.pipeline.counters import Counters

    counters = Counters()
    assert counters.snapshot() == {} and counters["events"] == 0
    counters.add("calls")
    counters.add("events")
    counters.add("bytes", 330)
    counters.events += 1  # as Pipeline.feed counts, inline
    counters.bytes += 12
    counters.add("bytes", 8)
    assert counters["events"] == 2 and counters["bytes"] == 350 and counters["calls"] == 1
    assert counters.snapshot() == {"events": 2, "bytes": 350, "calls": 1}


def _json_loads_or_none(text: str):
    """decode_event_data as it was: json.loads of the stripped text, None for [DONE], empty or not JSON."""
    text = text.strip()
    if not text or text == "[DONE]":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def test_event_data_is_decoded_as_json_loads_decodes_it():
    from lumen_agent.parsers.providers.base import decode_event_data

    rng = random.Random(19)
    bits = ['{"a":1}', "[1,2]", "1", "-0", "1e5", "NaN", "Infinity", '"s"', "null", "true", " ", "\t", "\n", "\r",
            "\u00a0", "\ufeff", "\x0c", ",", "}", "{", "]", '"', "[DONE]", "x", "9" * 5000]
    texts = ["[" * 100000 + "]" * 100000, '{"a":1}{"b":2}', '{"a":1} x', "\ufeff{}", "\u00a0{}\u00a0", "1 2"]
    texts += ["".join(rng.choice(bits) for _ in range(rng.randint(0, 5))) for _ in range(5000)]
    for text in texts:
        got, expected = decode_event_data(text), _json_loads_or_none(text)
        assert got == expected or (got != got and expected != expected), text[:80]  # NaN is not itself
        assert type(got) is type(expected)
