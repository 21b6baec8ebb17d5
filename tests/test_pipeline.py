"""The pipeline end to end on the recorded wire fixtures: exact tokens, exact cost."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from builders import FAKE_KEY, exchange_events, load_fixture, request_bytes, response_bytes, server_view
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumen_agent.pipeline.call import Outcome
from lumen_agent.pipeline.connections import MAX_CONNECTIONS
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.pipeline.keyhash import hash_credential
from lumen_agent.pricing.table import PriceTable

SALT = b"s" * 32
M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def run(prices, events):
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(events)
    pipeline.close()
    return calls, pipeline


# fixture -> (request body, content type, expected tokens, cost from the published price)
CASES = {
    "openai_chat_completions_nonstream_cached.txt": (
        {"model": "gpt-5.6-sol", "messages": [{"role": "user", "content": "hi"}]},
        "application/json",
        dict(provider="openai", endpoint="chat.completions", model="gpt-5.6-sol", input_tokens=4020,
             cache_read_tokens=4012, output_tokens=4, reasoning_tokens=0),
        # $5 input, $0.50 cached input, $30 output per 1M
        (8 * Decimal(5) + 4012 * Decimal("0.5") + 4 * Decimal(30)) / M,
    ),
    "openai_chat_completions_stream_text.txt": (
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True,
         "stream_options": {"include_usage": True}},
        "text/event-stream",
        dict(provider="openai", endpoint="chat.completions", model="gpt-4o-mini-2024-07-18", input_tokens=78,
             cache_read_tokens=0, output_tokens=9, streaming=True),
        # $0.15 input, $0.60 output per 1M
        (78 * Decimal("0.15") + 9 * Decimal("0.6")) / M,
    ),
    "openai_embeddings_nonstream.txt": (
        {"model": "text-embedding-3-small", "input": "hello"},
        "application/json",
        dict(provider="openai", endpoint="embeddings", model="text-embedding-3-small", input_tokens=4,
             output_tokens=0),
        4 * Decimal("0.02") / M,
    ),
    "anthropic_messages_stream.txt": (
        {"model": "claude-sonnet-4-5", "max_tokens": 64000, "stream": True,
         "messages": [{"role": "user", "content": "hi"}]},
        "text/event-stream",
        dict(provider="anthropic", endpoint="messages", model="claude-sonnet-4-5-20250929", input_tokens=20,
             cache_read_tokens=0, cache_write_tokens=0, output_tokens=5, streaming=True),
        (20 * Decimal(3) + 5 * Decimal(15)) / M,
    ),
    "openrouter_chat_completions_nonstream.txt": (
        {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "Tell me about Mars"}]},
        "application/json",
        None,  # tokens read from the fixture below
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c[2] is not None))
@pytest.mark.parametrize("variant", ["plain", "chunked-gzip", "br", "zstd-bytewise", "deflate-chunked"])
def test_fixture_gives_exact_tokens_and_cost(prices, name, variant):
    body_json, content_type, expected, cost = CASES[name]
    facts, body = load_fixture(name)
    encoding = {"plain": None, "chunked-gzip": "gzip", "br": "br", "zstd-bytewise": "zstd",
                "deflate-chunked": "deflate"}[variant]
    response = response_bytes(body, content_type=content_type, encoding=encoding, chunked="chunked" in variant)
    events = exchange_events(request_bytes("POST", facts["url"], body_json), response,
                             piece=1 if "bytewise" in variant else 61)
    calls, pipeline = run(prices, events)
    assert len(calls) == 1, pipeline.counters.snapshot()
    call = calls[0]
    for key, value in expected.items():
        assert getattr(call, key) == value, key
    assert call.cost_usd == cost.quantize(Decimal("1e-8"))
    assert call.outcome is Outcome.SUCCESS and call.status_code == 200
    assert call.price_id and not call.unpriced
    assert call.request_id == "req_test_0001"
    assert call.api_key_hash == hash_credential(FAKE_KEY, SALT)
    assert FAKE_KEY not in repr(call)


def test_openrouter_usage_and_cost(prices):
    facts, body = load_fixture("openrouter_chat_completions_nonstream.txt")
    usage = json.loads(body)["usage"]
    events = exchange_events(request_bytes("POST", facts["url"], CASES[facts and "openrouter_chat_completions_nonstream.txt"][0]),
                             response_bytes(body, chunked=True, encoding="gzip"))
    (call,), _ = run(prices, events)
    assert call.provider == "openrouter"
    assert call.input_tokens == usage["prompt_tokens"]
    assert call.output_tokens == usage["completion_tokens"]
    assert call.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    # gpt-5-mini: $0.25 input, $0.025 cached, $2 output per 1M
    expected = ((usage["prompt_tokens"] - cached) * Decimal("0.25") + cached * Decimal("0.025")
                + usage["completion_tokens"] * Decimal(2)) / M
    assert call.cost_usd == expected.quantize(Decimal("1e-8"))


def openai_stream(include_usage: bool, model: str = "gpt-4o-mini") -> list[DataEvent]:
    facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    request = {"model": model, "stream": True, "messages": []}
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    else:  # the server sends no usage chunk then
        body = b"\n\n".join(part for part in body.split(b"\n\n") if b'"usage":{' not in part)
    return exchange_events(request_bytes("POST", facts["url"], request),
                           response_bytes(body, content_type="text/event-stream", chunked=True))


def test_stream_without_include_usage_keeps_tokens_null(prices):
    (call,), _ = run(prices, openai_stream(include_usage=False))
    assert call.usage_missing
    assert call.input_tokens is None and call.output_tokens is None
    assert call.cost_usd is None and not call.unpriced


def test_unknown_model_is_stored_unpriced_never_zero(prices):
    body = json.dumps({"id": "x", "model": "totally-new-model-9", "choices": [],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
    events = exchange_events(request_bytes("POST", "https://llm.internal:8443/v1/chat/completions",
                                           {"model": "totally-new-model-9", "messages": []}), response_bytes(body))
    (call,), pipeline = run(prices, events)
    assert call.provider == "openai-compatible"
    assert (call.input_tokens, call.output_tokens) == (10, 5)
    assert call.cost_usd is None and call.unpriced and call.price_id is None
    assert pipeline.counters["calls.unpriced"] == 1
    assert (call.server_address, call.server_port) == ("llm.internal", 8443)


@pytest.mark.parametrize("status,outcome", [(429, Outcome.RATE_LIMITED), (500, Outcome.ERROR),
                                            (400, Outcome.ERROR), (201, Outcome.SUCCESS)])
def test_outcome_from_status(prices, status, outcome):
    body = b'{"error": {"type": "rate_limit_error", "message": "slow down"}}'
    events = exchange_events(request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                                           {"model": "gpt-4o-mini", "messages": []}),
                             response_bytes(body, status=status))
    (call,), _ = run(prices, events)
    assert call.status_code == status and call.outcome is outcome


def test_response_cut_off_is_cancelled(prices):
    events = openai_stream(include_usage=True)
    cut = [e for e in events if e.direction is Direction.SEND]
    recv = b"".join(e.data for e in events if e.direction is Direction.RECV)
    cut.append(DataEvent(cut[-1].ts_ns + 1, 4242, 4242, 0xABC, Direction.RECV, recv[: len(recv) // 2]))
    cut.append(DataEvent(cut[-1].ts_ns + 2, 4242, 4242, 0xABC, Direction.RECV, b"", EventFlag.CLOSE))
    (call,), _ = run(prices, cut)
    assert call.outcome is Outcome.CANCELLED


def test_keep_alive_and_interleaved_connections(prices):
    per_conn = []
    for pid, conn in [(100, 1), (100, 2), (200, 1)]:
        events = []
        for _ in range(3):  # three calls on each keep-alive connection
            events += openai_stream(include_usage=True)
        per_conn.append([DataEvent(e.ts_ns, pid, pid, conn, e.direction, e.data) for e in events])
    interleaved = [e for group in zip(*per_conn, strict=False) for e in group]
    calls, _ = run(prices, interleaved)
    assert len(calls) == 9
    assert sorted({(c.pid) for c in calls}) == [100, 200]
    assert all(c.input_tokens == 78 and c.output_tokens == 9 for c in calls)


def test_server_side_of_a_local_call_never_counts(prices):
    client = openai_stream(include_usage=True)
    calls, pipeline = run(prices, client + server_view(client, pid=9999))
    assert len(calls) == 1 and calls[0].pid == 4242
    assert pipeline.counters["connections.inbound_connection"] == 1


def test_joined_mid_stream_waits_for_next_message(prices):
    first = openai_stream(include_usage=True)
    recv = b"".join(e.data for e in first if e.direction is Direction.RECV)
    middle = DataEvent(1, 4242, 4242, 0xABC, Direction.RECV, recv[len(recv) // 3 :])
    calls, pipeline = run(prices, [middle] + openai_stream(include_usage=True))
    assert len(calls) == 1 and calls[0].output_tokens == 9
    assert pipeline.counters["skipped.unsynchronised_bytes"] > 0


def test_compression_bomb_is_counted_not_fatal(prices):
    import gzip
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb))
    events = exchange_events(request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                                           {"model": "gpt-4o-mini", "messages": []}), head + bomb, piece=65536)
    (call,), pipeline = run(prices, events)
    assert call.usage_missing and call.cost_usd is None
    assert pipeline.counters["skipped.response_body"] == 1


def test_non_llm_connection_is_ignored_in_kernel(prices):
    ignored = []
    pipeline = Pipeline(prices, lambda c: None, salt=SALT, on_ignore=lambda pid, conn: ignored.append((pid, conn)))
    events = exchange_events(b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n",
                             response_bytes(b"<html></html>", content_type="text/html"))
    pipeline.feed_all(events)
    assert ignored == [(4242, 0xABC)]


def test_tenant_and_feature_headers(prices):
    events = exchange_events(
        request_bytes("POST", "https://api.anthropic.com/v1/messages",
                      {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []},
                      {"x-lumen-tenant": "acme", "x-lumen-feature": "search", "anthropic-version": "2023-06-01"}),
        response_bytes(json.dumps({"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5-20250929",
                                   "content": [], "usage": {"input_tokens": 100, "output_tokens": 10,
                                   "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 500,
                                   "cache_creation": {"ephemeral_5m_input_tokens": 200,
                                                      "ephemeral_1h_input_tokens": 300}}}).encode()))
    (call,), _ = run(prices, events)
    assert (call.tenant, call.feature) == ("acme", "search")
    assert (call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.cache_write_1h_tokens) == (
        1600, 1000, 500, 300)
    # $3 input, $0.30 cache read, $3.75 5m write, $6 1h write, $15 output per 1M
    expected = (100 * Decimal(3) + 1000 * Decimal("0.3") + 200 * Decimal("3.75") + 300 * Decimal(6)
                + 10 * Decimal(15)) / M
    assert call.cost_usd == expected.quantize(Decimal("1e-8"))


def test_connection_table_is_bounded(prices):
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []})
    for conn in range(MAX_CONNECTIONS + 500):
        pipeline.feed(DataEvent(conn, 1, 1, conn, Direction.SEND, request))
    assert pipeline.open_connections == MAX_CONNECTIONS
    assert pipeline.counters["connections.evicted_connection"] == 500
    assert len(calls) == 500 and all(c.outcome is Outcome.CANCELLED for c in calls)


event_strategy = st.builds(
    DataEvent,
    ts_ns=st.integers(0, 10**12),
    pid=st.integers(1, 3),
    tid=st.just(1),
    conn=st.integers(1, 3),
    direction=st.sampled_from(list(Direction)),
    data=st.one_of(
        st.binary(max_size=120),
        st.sampled_from([
            request_bytes("POST", "https://api.openai.com/v1/chat/completions", {"model": "gpt-4o-mini"}),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
            b"5\r\ndata:\r\n", b"0\r\n\r\n", b"data: {\"usage\": 5}\n\n",
        ]),
    ),
    flags=st.sampled_from([EventFlag.NONE, EventFlag.GAP, EventFlag.CLOSE, EventFlag.TRUNCATED]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, max_size=40))
def test_no_event_sequence_crashes_the_pipeline(prices, events):
    calls, pipeline = run(prices, events)
    assert pipeline.open_connections == 0


def test_stream_closed_right_after_done_is_a_success(prices):
    """The openai SDK closes a stream after `data: [DONE]`, before the last chunk of the body."""
    events = openai_stream(include_usage=True)
    sends = [e for e in events if e.direction is Direction.SEND]
    recv = b"".join(e.data for e in events if e.direction is Direction.RECV)
    cut_at = recv.index(b"data: [DONE]") + len(b"data: [DONE]\n\n\r\n")
    cut = sends + [DataEvent(sends[-1].ts_ns + 1, 4242, 4242, 0xABC, Direction.RECV, recv[:cut_at]),
                   DataEvent(sends[-1].ts_ns + 2, 4242, 4242, 0xABC, Direction.SEND, b"", EventFlag.CLOSE)]
    (call,), _ = run(prices, cut)
    assert call.outcome is Outcome.SUCCESS
    assert (call.input_tokens, call.output_tokens) == (78, 9)


def _peak_bytes(fn) -> int:
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_bodies_stay_within_limits(prices):
    from lumen_agent.pipeline.exchange import MAX_REQUEST_BODY, MAX_RESPONSE_BODY
    prompt = "x" * (MAX_REQUEST_BODY + 4 * 1024 * 1024)
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "stream": False, "messages": [{"role": "user", "content": prompt}]})
    huge = b'{"pad": "' + b"y" * (MAX_RESPONSE_BODY + 8 * 1024 * 1024) + b'"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(huge)
    piece = 256 * 1024
    sends = [DataEvent(1, 7, 7, 1, Direction.SEND, request[i:i + piece]) for i in range(0, len(request), piece)]
    recvs = [DataEvent(2, 7, 7, 1, Direction.RECV, (head + huge)[i:i + piece])
             for i in range(0, len(head) + len(huge), piece)]
    del request, huge
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)

    def feed():
        pipeline.feed_all(sends + recvs)

    peak = _peak_bytes(feed)
    # The request is kept up to its limit, the response up to its limit, never both whole.
    assert peak < MAX_REQUEST_BODY + MAX_RESPONSE_BODY + 8 * 1024 * 1024
    (call,) = calls
    assert call.request_model == "gpt-4o-mini" and call.usage_missing
    assert pipeline.counters["skipped.response_body"] == 1


def test_giant_stream_event_is_cut_and_counted(prices):
    from lumen_agent.parsers.sse import MAX_EVENT_BYTES
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "stream": True, "messages": []})
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = [DataEvent(1, 7, 7, 1, Direction.SEND, request), DataEvent(2, 7, 7, 1, Direction.RECV, head)]
    blob = b"data: " + b"z" * (64 * 1024)
    for _ in range(MAX_EVENT_BYTES // len(blob) + 10):  # one event that never ends
        events.append(DataEvent(3, 7, 7, 1, Direction.RECV, b"%x\r\n%s\r\n" % (len(blob), blob)))
    events.append(DataEvent(4, 7, 7, 1, Direction.RECV, b"0\r\n\r\n"))
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    peak = _peak_bytes(lambda: pipeline.feed_all(events))
    assert peak < 3 * MAX_EVENT_BYTES
    (call,) = calls
    assert call.usage_missing and call.outcome is Outcome.SUCCESS
    assert pipeline.counters["skipped.response_body"] == 1
