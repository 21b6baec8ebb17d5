"""The HTTP/2 parser and tap: frames from the real h2 library and by hand, through
the parser alone and through the whole pipeline (exact tokens and cost)."""

from __future__ import annotations

import json
from decimal import Decimal

import hpack
import pytest
from builders import FAKE_KEY, load_fixture
from h2_builders import H2Conversation, raw_headers
from hyperframe.frame import DataFrame, GoAwayFrame, RstStreamFrame, SettingsFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumen_agent.parsers.http1 import (
    Body,
    EndOfMessage,
    MessageHead,
    MessageKind,
    Skipped,
    Truncated,
)
from lumen_agent.parsers.http2 import (
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    MAX_STREAMS,
    PREFACE,
    Http2Parser,
    StreamDropped,
    StreamEvent,
    StreamReset,
    sniff_side,
)
from lumen_agent.pipeline.call import Outcome
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.pipeline.keyhash import hash_credential
from lumen_agent.pricing.table import PriceTable

REQ, RESP = MessageKind.REQUEST, MessageKind.RESPONSE
SALT = b"s" * 32
M = Decimal(1_000_000)
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def parse(pieces, step: int | None = None, joined: bool = False):
    parser = Http2Parser(joined=joined)
    events = []
    for kind, data in pieces:
        size = step or len(data) or 1
        for i in range(0, len(data), size):
            parser.receive_data(kind, data[i : i + size])
            events.extend(parser.next_events())
    return events, parser


def run(prices, events):
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(events)
    pipeline.close()
    return calls, pipeline


def stream_call(conv: H2Conversation, **respond) -> int:
    _facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    sid = conv.request(CHAT, {"model": "gpt-4o-mini", "stream": True, "messages": [],
                              "stream_options": {"include_usage": True}})
    conv.respond(sid, body, content_type="text/event-stream", **respond)
    return sid


# -------------------------------------------------------------------- the parser


def test_request_and_response_events():
    conv = H2Conversation()
    sid = conv.request(CHAT, {"a": True})
    conv.respond(sid, b'{"ok": 1}')
    events, parser = parse(conv.pieces)
    kinds = [(e.kind, type(e.event)) for e in events]
    assert kinds == [(REQ, MessageHead), (REQ, Body), (REQ, EndOfMessage),
                     (RESP, MessageHead), (RESP, Body), (RESP, EndOfMessage)]
    head = events[0].event
    assert (head.method, head.target, head.status, head.http_version) == ("POST", CHAT, None, "2")
    assert head.header(":authority") == "api.openai.com"
    assert head.header("authorization") == f"Bearer {FAKE_KEY}"
    assert events[1].event == Body(b'{"a": true}')
    assert events[3].event.status == 200 and events[3].event.header("x-request-id") == "req_test_0001"
    assert {e.stream_id for e in events} == {sid}
    assert parser.open_streams == 0


def test_whole_and_byte_by_byte_agree():
    conv = H2Conversation()
    sids = [conv.request(CHAT, {"n": n}) for n in range(3)]
    for sid in reversed(sids):  # answered out of order, DATA padded
        conv.respond(sid, b"data: x\n\n" * 40, content_type="text/event-stream", pad=5, piece=33)
    whole, _ = parse(conv.pieces)
    assert whole == parse(conv.pieces, step=1)[0] == parse(conv.pieces, step=7)[0]
    ends = [e for e in whole if isinstance(e, StreamEvent) and e.event == EndOfMessage()]
    assert len(ends) == 6
    assert not [e for e in whole if isinstance(e, Skipped)]


def test_padded_priority_continuation_and_trailers():
    client, server = hpack.Encoder(), hpack.Encoder()
    request = [(":method", "POST"), (":scheme", "https"), (":path", CHAT), (":authority", "api.openai.com"),
               ("x-long", "v" * 300)]
    pieces = [(REQ, PREFACE + SettingsFrame(0).serialize()),
              (REQ, raw_headers(client, 1, request, pad=17, priority=True, split=40)),
              (REQ, DataFrame(1, b"{}", flags=["END_STREAM"]).serialize()),
              (RESP, SettingsFrame(0).serialize()),
              (RESP, raw_headers(server, 1, [(":status", "200"), ("content-type", "application/json")], pad=3)),
              (RESP, DataFrame(1, b'{"x": 1}').serialize()),
              (RESP, raw_headers(server, 1, [("grpc-status", "0")], end_stream=True, split=2))]
    for step in (None, 1):
        events, parser = parse(pieces, step)
        assert [(e.kind, type(e.event)) for e in events] == [
            (REQ, MessageHead), (REQ, Body), (REQ, EndOfMessage),
            (RESP, MessageHead), (RESP, Body), (RESP, EndOfMessage)]
        assert events[0].event.header("x-long") == "v" * 300
        assert parser.open_streams == 0


def test_rst_stream_and_goaway():
    conv = H2Conversation()
    one, three, five = (conv.request(CHAT, {"n": n}) for n in range(3))
    conv.raw(REQ, RstStreamFrame(one, error_code=8).serialize())  # CANCEL by the client
    conv.raw(RESP, GoAwayFrame(0, last_stream_id=three, error_code=0).serialize())
    events, parser = parse(conv.pieces)
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert resets == [StreamReset(one, 8, REQ), StreamReset(five, 0, RESP)]
    assert parser.open_streams == 1  # stream 3 may still be answered


def test_peer_header_table_size_is_honoured():
    """The client allows a 64 KiB table; the server's encoder grows to it."""
    conv = H2Conversation()
    conv.client.update_settings({SettingsFrame.HEADER_TABLE_SIZE: 65536})
    conv.flush_client()
    conv.flush_server()  # the server's ACK
    conv.server.encoder.header_table_size = 65000  # grows (within the 64 KiB allowed): an update in the next block
    for n in range(3):
        sid = conv.request(CHAT, {"n": n})
        conv.respond(sid, b"{}")
    events, _ = parse(conv.pieces)
    assert not [e for e in events if isinstance(e, Skipped)], events
    assert sum(1 for e in events if isinstance(e, StreamEvent) and e.event == EndOfMessage()) == 6
    # Without the client's SETTINGS the update is beyond the default 4 KiB: refused, counted.
    without = [(k, d.replace(b"\x00\x01\x00\x01\x00\x00", b"\x00\x03\x00\x00\x00\x64")) for k, d in conv.pieces]
    events, _ = parse(without)
    assert any(isinstance(e, Skipped) and "header block" in e.reason for e in events)


def test_header_list_limit_skips_the_block():
    encoder = hpack.Encoder()
    huge = [(":method", "POST"), (":path", CHAT), ("x-huge", "~" * (MAX_HEADER_LIST_SIZE + 1))]
    pieces = [(REQ, PREFACE + SettingsFrame(0).serialize()), (REQ, raw_headers(encoder, 1, huge, split=9000))]
    events, parser = parse(pieces)
    assert [type(e) for e in events] == [Skipped]
    assert events[0].reason == "header block exceeds MAX_HEADER_BLOCK_SIZE"
    small = [(":method", "POST"), (":path", CHAT), ("x-big", "h" * 40_000), ("x-big2", "h" * 40_000)]
    pieces = [(REQ, PREFACE + SettingsFrame(0).serialize()), (REQ, raw_headers(hpack.Encoder(), 1, small, split=9000))]
    events, parser = parse(pieces)
    assert [type(e) for e in events] == [Skipped]
    assert events[0].reason == "undecodable header block (bad HPACK: OversizedHeaderListError)"
    assert parser.open_streams == 1  # remembered as unreadable: its DATA is dropped quietly


def test_oversized_frame_is_skipped_keeping_framing():
    conv = H2Conversation()
    sid = conv.request(CHAT, {"a": 1})
    conv.server.send_headers(sid, [(":status", "200")])
    conv.flush_server()
    big = DataFrame(sid, b"z" * (MAX_FRAME_SIZE + 1)).serialize()
    conv.raw(RESP, big)
    events, _ = parse(conv.pieces, step=4096)
    assert Skipped(len(big), "frame exceeds MAX_FRAME_SIZE") in events
    assert events[-1] == StreamEvent(sid, RESP, Truncated())


def test_stream_table_is_bounded():
    encoder = hpack.Encoder()
    request = [(":method", "GET"), (":scheme", "https"), (":path", "/v1/models"), (":authority", "api.openai.com")]
    frames = b"".join(raw_headers(encoder, 1 + 2 * n, request, end_stream=True) for n in range(MAX_STREAMS + 5))
    events, parser = parse([(REQ, PREFACE + SettingsFrame(0).serialize() + frames)])
    assert parser.open_streams == MAX_STREAMS
    assert sum(1 for e in events if isinstance(e, Skipped) and "MAX_STREAMS" in e.reason) == 5
    # The five oldest streams were dropped: their responses are cut.
    assert [e.stream_id for e in events if isinstance(e, StreamEvent) and e.event == Truncated()] == [1, 3, 5, 7, 9]


def test_joined_mid_stream_recovers_static_only_streams():
    """A fresh stream whose headers need no old table entries is read; one
    that refers to entries added before the join is skipped, never guessed."""
    conv = H2Conversation()
    first = conv.request(CHAT, {"n": 0})
    conv.respond(first, b"{}")
    cut = len(conv.pieces)
    # The client's encoder re-uses table entries from the first request...
    second = conv.request(CHAT, {"n": 1})
    conv.respond(second, b"{}")
    late = conv.pieces[cut:]
    events, _ = parse(late, joined=True)
    assert [e for e in events if isinstance(e, StreamEvent)] == []
    assert any(isinstance(e, Skipped) and "HPACK state lost" in e.reason for e in events)
    # ...but a block that names its headers literally decodes with an empty table.
    encoder = hpack.Encoder()
    block = raw_headers(encoder, 5, [(":method", "POST"), (":path", CHAT), (":authority", "api.openai.com")])
    events, _ = parse([(REQ, block + DataFrame(5, b"{}", flags=["END_STREAM"]).serialize())], joined=True)
    assert [type(e.event) for e in events if isinstance(e, StreamEvent)] == [MessageHead, Body, EndOfMessage]


def test_sniff_side_reads_pseudo_headers():
    conv = H2Conversation()
    sid = conv.request(CHAT, {"n": 0})
    conv.respond(sid, b"{}")
    sent = [d for k, d in conv.pieces if k is REQ and b"PRI *" not in d]
    assert any(sniff_side(d) is REQ for d in sent)
    received = [d for k, d in conv.pieces if k is RESP]
    assert any(sniff_side(d) is RESP for d in received)
    assert sniff_side(b"POST /v1/chat HTTP/1.1\r\n\r\n") is None
    assert sniff_side(SettingsFrame(0).serialize()) is None  # no header block: undecided


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([REQ, RESP]), st.binary(max_size=200)), max_size=20),
       st.booleans())
def test_fuzz_never_raises(chunks, joined):
    parser = Http2Parser(joined=joined)
    if not joined:
        parser.receive_data(REQ, PREFACE)
    for kind, chunk in chunks:
        parser.receive_data(kind, chunk)
        parser.next_events()
    parser.lost_data(RESP)
    parser.receive_data(RESP, b"\x00" * 30)
    parser.connection_closed()
    parser.next_events()


def _sample_pieces():
    conv = H2Conversation()
    for n in range(2):
        sid = conv.request(CHAT, {"n": n})
        conv.respond(sid, b"data: x\n\n" * 5, content_type="text/event-stream", pad=2)
    return conv.pieces


SAMPLE = _sample_pieces()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 400), st.binary(max_size=40), st.integers(0, 8))
def test_fuzz_mutated_frames(index, position, noise, delete):
    pieces = list(SAMPLE)
    kind, data = pieces[index]
    data = bytearray(data)
    position = min(position, len(data))
    data[position : position + delete] = noise
    pieces[index] = (kind, bytes(data))
    for step in (None, 1, 13):
        events, _ = parse(pieces, step)
        assert all(isinstance(e, (StreamEvent, StreamReset, StreamDropped, Skipped)) for e in events)


# -------------------------------------------------------------------- through the pipeline


@pytest.mark.parametrize("encoding", [None, "gzip", "br", "zstd"])
@pytest.mark.parametrize("step", [None, 1])
def test_stream_exact_tokens_and_cost(prices, encoding, step):
    conv = H2Conversation()
    stream_call(conv, encoding=encoding)
    calls, pipeline = run(prices, conv.events(step=step))
    assert len(calls) == 1, pipeline.counters.snapshot()
    call = calls[0]
    assert (call.provider, call.endpoint, call.model) == ("openai", "chat.completions", "gpt-4o-mini-2024-07-18")
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens) == (78, 9, 0)
    # gpt-4o-mini: $0.15 input, $0.60 output per 1M -> 78 * 0.15 + 9 * 0.60 = 17.10 per 1M
    assert call.cost_usd == Decimal("0.00001710")
    assert call.streaming and call.outcome is Outcome.SUCCESS and call.status_code == 200
    assert call.http_version == "2"
    assert (call.server_address, call.server_port) == ("api.openai.com", 443)
    assert call.request_id == "req_test_0001"
    assert call.api_key_hash == hash_credential(FAKE_KEY, SALT)


def test_anthropic_json_and_ndjson_like_http1(prices):
    conv = H2Conversation()
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
    sid = conv.request("/v1/messages", body, host="api.anthropic.com", extra=[("anthropic-version", "2023-06-01")])
    conv.respond(sid, json.dumps({"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5-20250929",
                                  "content": [], "usage": {"input_tokens": 100, "output_tokens": 10}}).encode(),
                 encoding="gzip")
    (call,), _ = run(prices, conv.events())
    assert (call.provider, call.input_tokens, call.output_tokens) == ("anthropic", 100, 10)
    # $3 input, $15 output per 1M: 100 * 3 + 10 * 15 = 450 per 1M
    assert call.cost_usd == Decimal("0.00045000") and call.http_version == "2"


def test_twenty_concurrent_streams_give_twenty_rows(prices):
    conv = H2Conversation()
    _facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    sids = [conv.request(CHAT, {"model": "gpt-4o-mini", "stream": True, "messages": [],
                                "stream_options": {"include_usage": True}}) for _ in range(20)]
    # All twenty answered at once: their DATA frames interleave.
    for sid in sids:
        conv.server.send_headers(sid, [(":status", "200"), ("content-type", "text/event-stream")])
    conv.flush_server()
    parts = [body[i : i + 50] for i in range(0, len(body), 50)]
    for i, part in enumerate(parts):
        for sid in sids:
            conv.server.send_data(sid, part, end_stream=i == len(parts) - 1)
        conv.flush_server()
    calls, pipeline = run(prices, conv.events())
    assert len(calls) == 20, pipeline.counters.snapshot()
    assert all((c.input_tokens, c.output_tokens, c.cost_usd, c.http_version) == (78, 9, Decimal("0.00001710"), "2")
               for c in calls)


def test_rate_limited_over_h2(prices):
    conv = H2Conversation()
    sid = conv.request(CHAT, {"model": "gpt-4o-mini", "messages": []})
    conv.respond(sid, b'{"error": {"type": "rate_limit_error"}}', status=429)
    (call,), _ = run(prices, conv.events())
    assert (call.status_code, call.outcome, call.usage_missing, call.cost_usd) == (
        429, Outcome.RATE_LIMITED, True, None)


def test_client_reset_mid_stream_is_cancelled(prices):
    conv = H2Conversation()
    _facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    sid = conv.request(CHAT, {"model": "gpt-4o-mini", "stream": True, "messages": []})
    conv.respond(sid, body[: len(body) // 2], content_type="text/event-stream", end=False)
    conv.client.reset_stream(sid, 8)
    conv.flush_client()
    (call,), pipeline = run(prices, conv.events())
    assert call.outcome is Outcome.CANCELLED and call.http_version == "2"
    assert pipeline.counters["h2.stream_reset"] == 1


def test_connection_cut_is_cancelled(prices):
    conv = H2Conversation()
    _facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    sid = conv.request(CHAT, {"model": "gpt-4o-mini", "stream": True, "messages": []})
    conv.respond(sid, body[:100], content_type="text/event-stream", end=False)
    (call,), _ = run(prices, conv.events(close=True))
    assert call.outcome is Outcome.CANCELLED


def test_joined_mid_stream_counts_and_never_invents(prices):
    conv = H2Conversation()
    stream_call(conv)
    cut = len(conv.pieces)
    stream_call(conv)  # its headers refer to table entries of the first call
    late = H2Conversation.__new__(H2Conversation)
    late.pieces = conv.pieces[cut:]
    calls, pipeline = run(prices, late.events())
    assert calls == []
    counters = pipeline.counters.snapshot()
    assert counters["skipped.h2_joined_midstream"] == 1, counters
    assert counters["skipped.h2_header_block"] >= 1


def test_joined_mid_stream_reads_a_literal_only_stream(prices):
    """A client whose encoder does not index (or a fresh stream after the join
    that names its headers literally) is read from its headers on."""
    _facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    client, server = hpack.Encoder(), hpack.Encoder()
    request = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [],
                          "stream_options": {"include_usage": True}}).encode()
    req_headers = [(":method", "POST"), (":scheme", "https"), (":path", CHAT), (":authority", "api.openai.com"),
                   ("authorization", f"Bearer {FAKE_KEY}")]
    # Neither side has seen these encoders' earlier blocks: the table is new for both.
    sent = raw_headers(client, 7, req_headers) + DataFrame(7, request, flags=["END_STREAM"]).serialize()
    recv = (DataFrame(5, b"tail of an older stream").serialize()
            + raw_headers(server, 7, [(":status", "200"), ("content-type", "text/event-stream")])
            + DataFrame(7, body, flags=["END_STREAM"]).serialize())
    events = [DataEvent(1, 9, 9, 1, Direction.SEND, sent), DataEvent(2, 9, 9, 1, Direction.RECV, b"\x17garbage" + recv)]
    (call,), pipeline = run(prices, events)
    assert (call.input_tokens, call.output_tokens, call.cost_usd, call.http_version) == (
        78, 9, Decimal("0.00001710"), "2")
    assert pipeline.counters["skipped.h2_joined_midstream"] == 1


def test_joined_mid_stream_unreadable_response_makes_no_row(prices):
    """The request decodes, the response's headers refer to table entries from
    before the join: its status is unknown, so no row, and it is counted."""
    facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    client, server = hpack.Encoder(), hpack.Encoder()
    server.encode([("content-type", "text/event-stream")])  # an entry the tap never saw
    request = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}).encode()
    req_headers = [(":method", "POST"), (":scheme", "https"), (":path", CHAT), (":authority", "api.openai.com")]
    sent = raw_headers(client, 9, req_headers) + DataFrame(9, request, flags=["END_STREAM"]).serialize()
    recv = (raw_headers(server, 9, [(":status", "200"), ("content-type", "text/event-stream")])
            + DataFrame(9, body, flags=["END_STREAM"]).serialize())
    events = [DataEvent(1, 9, 9, 1, Direction.SEND, sent), DataEvent(2, 9, 9, 1, Direction.RECV, recv)]
    calls, pipeline = run(prices, events)
    assert calls == []
    assert pipeline.counters["skipped.h2_response_unreadable"] == 1
    assert pipeline.counters["skipped.h2_header_block"] == 1


def test_gap_cuts_open_streams_and_resynchronises(prices):
    conv = H2Conversation()
    stream_call(conv)
    events = conv.events()
    last_recv = max(i for i, e in enumerate(events) if e.direction is Direction.RECV)
    gap = events[last_recv]
    events[last_recv] = DataEvent(gap.ts_ns, gap.pid, gap.tid, gap.conn, gap.direction, gap.data[5:], EventFlag.GAP)
    (call,), _pipeline = run(prices, events)
    assert call.outcome is Outcome.CANCELLED


def test_server_side_of_an_h2_call_never_counts(prices):
    conv = H2Conversation()
    stream_call(conv)
    swap = {Direction.SEND: Direction.RECV, Direction.RECV: Direction.SEND}
    server = [DataEvent(e.ts_ns, 9999, 9999, 7, swap[e.direction], e.data, e.flags) for e in conv.events()]
    calls, pipeline = run(prices, conv.events() + server)
    assert len(calls) == 1 and calls[0].pid == 4242
    assert pipeline.counters["connections.inbound_connection"] == 1


def test_server_settings_before_preface_is_server_side(prices):
    """A server writes its SETTINGS as soon as TLS is up: that alone says server."""
    calls, pipeline = run(prices, [DataEvent(1, 5, 5, 1, Direction.SEND, SettingsFrame(0).serialize())])
    assert calls == [] and pipeline.counters["connections.inbound_connection"] == 1


event_strategy = st.builds(
    DataEvent,
    ts_ns=st.integers(0, 10**12),
    pid=st.integers(1, 2),
    tid=st.just(1),
    conn=st.integers(1, 2),
    direction=st.sampled_from(list(Direction)),
    data=st.one_of(st.binary(max_size=80), st.sampled_from([d for _, d in SAMPLE])),
    flags=st.sampled_from([EventFlag.NONE, EventFlag.GAP, EventFlag.CLOSE]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, max_size=30))
def test_no_h2_event_sequence_crashes_the_pipeline(prices, events):
    _calls, pipeline = run(prices, events)
    assert pipeline.open_connections == 0
