"""Batch results, search-preview chat models and Gemini grounding: exact cost
through the whole pipeline (bytes in, priced rows out, a real DuckDB file),
each cost worked out by hand from the shipped price table (per 1M tokens,
fees per 1,000).

Shapes: OpenAI's batch "request output object" (API reference example line:
batch_req_wnaDys / chatcmpl-9758Iw), Anthropic's "Retrieve Message Batch
results" lines (succeeded / errored / canceled / expired), Gemini's
grounding response (``groundingMetadata.webSearchQueries``, the "Spain won
Euro 2024" docs example, streamed in the last chunk with ``finishReason``),
and a gpt-4o-search-preview chat completion (``annotations`` of type
``url_citation``).  Keys are fake; texts are placeholders.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from builders import exchange_events, request_bytes, response_bytes

from lumen_agent.outputs.queries import run_sql
from lumen_agent.outputs.store import CallStore
from lumen_agent.parsers.providers import identify
from lumen_agent.parsers.providers.batch import BatchResultsReader
from lumen_agent.pipeline.batch_rows import BatchLineMemory
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pipeline.exchange import _parse_request_json
from lumen_agent.pricing.table import PriceTable

SALT = b"s" * 32


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def run(prices, method: str, url: str, request, response: bytes, *, content_type: str = "application/json",
        headers: dict[str, str] | None = None, pipeline: Pipeline | None = None, chunked: bool = False,
        piece: int | None = None, status: int = 200):
    calls = []
    if pipeline is None:
        pipeline = Pipeline(prices, calls.append, salt=SALT)
    else:
        pipeline._on_call = calls.append
    raw = response_bytes(response, content_type=content_type, headers=headers, chunked=chunked, status=status)
    pipeline.feed_all(exchange_events(request_bytes(method, url, request), raw, piece=piece))
    pipeline.close()
    return calls, pipeline


def jsonl(*lines) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


# ---------------------------------------------------------------- OpenAI batch output

OPENAI_FILE = "https://api.openai.com/v1/files/file-9GaXQ7cvMvsS5Pe5ZjYBCB/content"


def openai_line(line_id, custom_id, body, status=200, request_id="req_c187b3"):
    return {"id": line_id, "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}


OPENAI_BATCH = jsonl(
    # The API reference's example line, as it is.
    openai_line("batch_req_wnaDys", "request-2", {
        "id": "chatcmpl-9758Iw", "object": "chat.completion", "created": 1711475054, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "2 + 2 equals 4."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39}, "system_fingerprint": None}),
    # A reasoning model with a cache hit; batch bodies still say "default".
    openai_line("batch_req_6b1f0c", "request-7", {
        "id": "chatcmpl-C1batch", "object": "chat.completion", "created": 1754600000,
        "model": "gpt-5-mini-2025-08-07", "service_tier": "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
                  "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0}}},
        request_id="req_5e7a"),
    # A request that failed inside the batch: not billed, no row.
    openai_line("batch_req_f41l3d", "request-9", {
        "error": {"message": "Invalid model", "type": "invalid_request_error", "param": None, "code": None}},
        status=400, request_id="req_bad"),
    # An embeddings batch line.
    openai_line("batch_req_e3b0c4", "emb-1", {
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093]}],
        "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}},
        request_id="req_emb"),
    # A corrupt line: counted, skipped; the lines around it still count.
    b'{"id": "batch_req_trunc", "custom_id": "x", "response": {"status_co',
    # A Responses API batch line.
    openai_line("batch_req_r35p0n", "resp-1", {
        "id": "resp_67ccd2bed1ec8190", "object": "response", "created_at": 1741476542, "status": "completed",
        "model": "gpt-4.1-mini-2025-04-14", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                                                         "content": []}],
        "usage": {"input_tokens": 500, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 50,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 550}},
        request_id="req_resp"),
)

# Batch rates (50% of list):
#   gpt-4o-mini        in 0.075, out 0.30:  24 x 0.075 + 15 x 0.30           = 1.8 + 4.5        =   6.3  -> 0.00000630
#   gpt-5-mini         in 0.125, cached 0.0125, out 1.00 (the OpenAI 0.5x rule):
#                      (2000-1024) x 0.125 + 1024 x 0.0125 + 300 x 1.00   = 122 + 12.8 + 300 = 434.8  -> 0.00043480
#   text-embedding-3-small in 0.01:       8 x 0.01                                               =   0.08 -> 0.00000008
#   gpt-4.1-mini       in 0.20, out 0.80:  500 x 0.20 + 50 x 0.80           = 100 + 40         = 140    -> 0.00014000
OPENAI_EXPECTED = [
    ("batch_req_wnaDys", "chat.completions", "gpt-4o-mini", 24, 0, 15, 0, "req_c187b3", Decimal("0.00000630")),
    ("batch_req_6b1f0c", "chat.completions", "gpt-5-mini-2025-08-07", 2000, 1024, 300, 128, "req_5e7a",
     Decimal("0.00043480")),
    ("batch_req_e3b0c4", "embeddings", "text-embedding-3-small", 8, 0, 0, 0, "req_emb", Decimal("0.00000008")),
    ("batch_req_r35p0n", "responses", "gpt-4.1-mini-2025-04-14", 500, 0, 50, 0, "req_resp",
     Decimal("0.00014000")),
]


def test_openai_batch_output_one_row_per_billed_line(prices, tmp_path: Path):
    calls, pipeline = run(prices, "GET", OPENAI_FILE, None, OPENAI_BATCH,
                          content_type="application/octet-stream", chunked=True)
    got = [(c.endpoint, c.model, c.input_tokens, c.cache_read_tokens, c.output_tokens, c.reasoning_tokens,
            c.request_id, c.cost_usd) for c in calls]
    assert got == [e[1:] for e in OPENAI_EXPECTED]
    assert {(c.provider, c.service_tier, c.outcome.value, c.status_code, c.streaming) for c in calls} == {
        ("openai", "batch", "success", 200, False)}
    # The row id comes from the line, so every download names it the same way.
    assert [c.id for c in calls] == [uuid.uuid5(uuid.UUID("6f1c1d52-4a83-4c1e-9a53-0b2f6a3d7c41"),
                                                f"openai:{e[0]}").hex for e in OPENAI_EXPECTED]
    counters = pipeline.counters
    assert (counters["batch.downloads"], counters["batch.lines_billed"], counters["batch.lines_unbilled"],
            counters["skipped.batch_line.not_json"]) == (1, 4, 1, 1)
    assert counters["calls"] == 4

    db = tmp_path / "lumen.duckdb"
    with CallStore(db) as store:
        for call in calls:
            store.add(call)
    # 6.3 + 434.8 + 0.08 + 140 = 581.18 / 1M
    assert run_sql(db, "SELECT count(*), sum(cost_usd), max(service_tier) FROM llm_calls").rows == [
        (4, Decimal("0.00058118"), "batch")]


def test_openai_batch_redownload_adds_no_rows(prices):
    first, pipeline = run(prices, "GET", OPENAI_FILE, None, OPENAI_BATCH, content_type="application/octet-stream")
    again, pipeline = run(prices, "GET", OPENAI_FILE, None, OPENAI_BATCH, content_type="application/octet-stream",
                          pipeline=pipeline)
    assert (len(first), len(again)) == (4, 0)
    assert pipeline.counters["batch.lines_duplicate"] == 4


def test_batch_redownload_after_a_restart_is_not_stored_twice(prices, tmp_path: Path):
    """A new agent (a fresh pipeline with no memory) downloads the same results
    again: the store finds the rows by their line-derived ids and keeps the
    first copy only; a row of an ordinary call in the same flush is stored."""
    db = tmp_path / "lumen.duckdb"
    first, _ = run(prices, "GET", OPENAI_FILE, None, OPENAI_BATCH, content_type="application/octet-stream")
    with CallStore(db) as store:
        store.add_many(first)
    again, _ = run(prices, "GET", OPENAI_FILE, None, OPENAI_BATCH, content_type="application/octet-stream")
    assert len(again) == 4
    ordinary = dataclasses.replace(first[0], id=uuid.uuid4().hex, service_tier=None)
    with CallStore(db) as store:
        store.add_many([*again, ordinary])
        assert store.flush() == 1
    # 581.18 / 1M once, plus the ordinary copy of the gpt-4o-mini line at its batch price (6.3 / 1M)
    assert run_sql(db, "SELECT count(*), count(DISTINCT id), sum(cost_usd) FROM llm_calls").rows == [
        (5, 5, Decimal("0.00058748"))]
    assert run_sql(db, "SELECT value FROM lumen_counters WHERE name = 'batch_lines_already_stored'").rows == [(4,)]


def test_openai_batch_byte_by_byte_gzip_same_rows(prices):
    raw = response_bytes(OPENAI_BATCH, content_type="application/octet-stream", encoding="gzip")
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(exchange_events(request_bytes("GET", OPENAI_FILE, None), raw, piece=1))
    pipeline.close()
    assert [c.cost_usd for c in calls] == [e[-1] for e in OPENAI_EXPECTED]


def test_other_file_downloads_are_not_calls(prices):
    # Fine-tuning training data, a binary file and an error: no rows, no batch counters.
    training = jsonl({"messages": [{"role": "user", "content": "placeholder"},
                                   {"role": "assistant", "content": "placeholder"}]})
    for body, status in ((training, 200), (b"%PDF-1.7\n\x00\x01binary\n", 200),
                         (json.dumps({"error": {"message": "No such File object", "type": "invalid_request_error"}})
                          .encode(), 404)):
        calls, pipeline = run(prices, "GET", OPENAI_FILE, None, body, content_type="application/octet-stream",
                              status=status)
        assert calls == []
        assert pipeline.counters["batch.downloads"] == 0 and pipeline.counters["calls"] == 0


def test_a_plain_get_is_still_not_a_call():
    assert identify("GET", "/v1/models", "api.openai.com", {}, None) is None
    assert identify("GET", "/v1/files/file-abc", "api.openai.com", {}, None) is None
    info = identify("GET", "/v1/messages/batches/msgbatch_01/results", "api.anthropic.com", {}, None)
    assert (info.provider, info.endpoint, info.batch_ref) == ("anthropic", "messages.batches.results",
                                                              "msgbatch_01")


def test_batch_reader_bounds_and_line_limit():
    reader = BatchResultsReader("openai", "file-x")
    reader.feed_ndjson([1, 2])  # JSON, not a result line
    reader.feed_ndjson({"id": "batch_req_1", "custom_id": "a", "response": None,
                        "error": {"code": "batch_expired", "message": "expired"}})
    assert (reader.billed, reader.unbilled, reader.not_batch) == (0, 1, 1)
    memory = BatchLineMemory(limit=2)
    assert [memory.first_time(k) for k in ("a", "b", "a", "c", "a")] == [True, True, False, True, True]


def test_batch_line_longer_than_limit_is_counted(prices, monkeypatch):
    import lumen_agent.pipeline.exchange as exchange_module
    monkeypatch.setattr(exchange_module, "MAX_BATCH_LINE", 4096)
    long_line = openai_line("batch_req_long", "big", {
        "object": "list", "data": [{"object": "embedding", "index": 0,
                                    "embedding": [0.5] * 2000}],
        "model": "text-embedding-3-small", "usage": {"prompt_tokens": 9, "total_tokens": 9}})
    body = jsonl(long_line, json.loads(jsonl(openai_line("batch_req_wnaDys", "request-2", {
        "object": "chat.completion", "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39}}))))
    calls, pipeline = run(prices, "GET", OPENAI_FILE, None, body, content_type="application/octet-stream")
    assert [c.cost_usd for c in calls] == [Decimal("0.00000630")]  # as above
    assert pipeline.counters["skipped.batch_line.too_long"] == 1


# ---------------------------------------------------------------- Anthropic Message Batches

ANTHROPIC_RESULTS = "https://api.anthropic.com/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results"


def anthropic_message(msg_id, model, usage):
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello again! ..."}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": usage}


ANTHROPIC_BATCH = jsonl(
    {"custom_id": "my-second-request", "result": {"type": "succeeded", "message": anthropic_message(
        "msg_014VwiXbi91y3JMjcpyGBHX5", "claude-sonnet-4-5-20250929",
        {"input_tokens": 11, "output_tokens": 36, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
         "service_tier": "batch"})}},
    {"custom_id": "my-first-request", "result": {"type": "errored", "error": {"type": "error", "error": {
        "type": "invalid_request_error", "message": "Validation error: max_tokens"}}}},
    {"custom_id": "cached-one", "result": {"type": "succeeded", "message": anthropic_message(
        "msg_01cachedbatch00000000", "claude-haiku-4-5-20251001",
        {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 4000,
         "cache_creation_input_tokens": 0, "service_tier": "batch"})}},
    {"custom_id": "late", "result": {"type": "expired"}},
    {"custom_id": "stopped", "result": {"type": "canceled"}},
)
# Message Batches: half price (the table's batch tier, Anthropic's 0.5x rule).
#   claude-sonnet-4-5 batch in 1.50, out 7.50:  11 x 1.5 + 36 x 7.5              = 16.5 + 270        = 286.5 -> 0.00028650
#   claude-haiku-4-5  batch in 0.50, read 0.05, out 2.50:
#                     input 1000 + 4000 read:  1000 x 0.5 + 4000 x 0.05 + 200 x 2.5 = 500 + 200 + 500 = 1200  -> 0.00120000


def test_anthropic_batch_results_one_row_per_succeeded_line(prices, tmp_path: Path):
    calls, pipeline = run(prices, "GET", ANTHROPIC_RESULTS, None, ANTHROPIC_BATCH,
                          content_type="application/binary", headers={"request-id": "req_011download"},
                          chunked=True)
    assert [(c.endpoint, c.model, c.input_tokens, c.cache_read_tokens, c.output_tokens, c.service_tier,
             c.cost_usd) for c in calls] == [
        ("messages", "claude-sonnet-4-5-20250929", 11, 0, 36, "batch", Decimal("0.00028650")),
        ("messages", "claude-haiku-4-5-20251001", 5000, 4000, 200, "batch", Decimal("0.00120000")),
    ]
    assert {(c.provider, c.outcome.value, c.request_id) for c in calls} == {("anthropic", "success", None)}
    assert (pipeline.counters["batch.lines_billed"], pipeline.counters["batch.lines_unbilled"]) == (2, 3)
    db = tmp_path / "lumen.duckdb"
    with CallStore(db) as store:
        for call in calls:
            store.add(call)
    # 286.5 + 1200 = 1486.5 / 1M
    assert run_sql(db, "SELECT count(*), sum(cost_usd) FROM llm_calls").rows == [(2, Decimal("0.00148650"))]


# ---------------------------------------------------------------- OpenAI search-preview chat models

CHAT = "https://api.openai.com/v1/chat/completions"


def search_preview_body(model, prompt, completion):
    return {"id": "chatcmpl-search0001", "object": "chat.completion", "created": 1741390000, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "placeholder answer", "refusal": None,
                "annotations": [{"type": "url_citation", "url_citation": {
                    "end_index": 18, "start_index": 0, "title": "example", "url": "https://example.com/"}}]}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": ""}


@pytest.mark.parametrize(("model", "options", "usage", "cost"), [
    # gpt-4o-search-preview $2.50/$10, search high $50/1000:
    #   10 x 2.5 + 200 x 10 = 2025 / 1M = 0.002025; + 0.05 = 0.052025
    ("gpt-4o-search-preview-2025-03-11", {"search_context_size": "high"}, (10, 200), Decimal("0.05202500")),
    # low $30/1000: 10 x 2.5 + 20 x 10 = 225 / 1M = 0.000225; + 0.03 = 0.030225
    ("gpt-4o-search-preview", {"search_context_size": "low"}, (10, 20), Decimal("0.03022500")),
    # gpt-4o-mini-search-preview $0.15/$0.60, no web_search_options -> medium $27.50/1000:
    #   8 x 0.15 + 100 x 0.6 = 61.2 / 1M = 0.0000612; + 0.0275 = 0.0275612
    ("gpt-4o-mini-search-preview-2025-03-11", None, (8, 100), Decimal("0.02756120")),
    # web_search_options without a size: medium, as OpenAI defaults ($35/1000 on gpt-4o):
    #   10 x 2.5 + 20 x 10 = 225 / 1M; + 0.035 = 0.035225
    ("gpt-4o-search-preview-2025-03-11", {"user_location": {"type": "approximate"}}, (10, 20),
     Decimal("0.03522500")),
])
def test_search_preview_one_search_per_call(prices, tmp_path: Path, model, options, usage, cost):
    request = {"model": model.removesuffix("-2025-03-11"), "messages": [{"role": "user", "content": "placeholder"}]}
    if options is not None:
        request["web_search_options"] = options
    calls, _ = run(prices, "POST", CHAT, request, json.dumps(search_preview_body(model, *usage)).encode())
    (call,) = calls
    assert (call.web_search_requests, call.cost_usd, call.token_cost_usd) == (1, cost, cost)
    db = tmp_path / "lumen.duckdb"
    with CallStore(db) as store:
        store.add(call)
    assert run_sql(db, "SELECT web_search_requests, cost_usd, request_body FROM llm_calls").rows == [
        (1, cost, None)]  # the prompt is never stored


def test_search_preview_stream(prices):
    model = "gpt-4o-search-preview-2025-03-11"
    chunks = [{"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "placeholder"},
                            "finish_reason": None}], "usage": None},
              {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}]
    body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    request = {"model": "gpt-4o-search-preview", "messages": [], "stream": True,
               "stream_options": {"include_usage": True}, "web_search_options": {"search_context_size": "high"}}
    calls, _ = run(prices, "POST", CHAT, request, body, content_type="text/event-stream", chunked=True)
    # 10 x 2.5 + 20 x 10 = 225 / 1M = 0.000225; search high 0.05 -> 0.050225
    assert [(c.web_search_requests, c.cost_usd) for c in calls] == [(1, Decimal("0.05022500"))]
    # Without include_usage there is no usage: no tokens, no fee, never invented.
    del request["stream_options"]
    body = f"data: {json.dumps(chunks[0])}\n\ndata: [DONE]\n\n".encode()
    calls, _ = run(prices, "POST", CHAT, request, body, content_type="text/event-stream", chunked=True)
    assert [(c.usage_missing, c.web_search_requests, c.cost_usd) for c in calls] == [(True, None, None)]


def test_ordinary_chat_model_has_no_search_fee(prices):
    body = search_preview_body("gpt-4o-mini", 8, 100)
    calls, _ = run(prices, "POST", CHAT, {"model": "gpt-4o-mini", "messages": []}, json.dumps(body).encode())
    # 8 x 0.15 + 100 x 0.6 = 61.2 / 1M, nothing else
    assert [(c.web_search_requests, c.cost_usd) for c in calls] == [(None, Decimal("0.00006120"))]


def test_search_context_size_survives_a_truncated_request_body():
    head = b'{"model": "gpt-4o-search-preview", "web_search_options": {"search_context_size": "low"}, "messages": ['
    recovered = _parse_request_json(bytearray(head + b'{"role": "user", "content": "' + b"x" * 1000), True)
    assert recovered == {"model": "gpt-4o-search-preview", "web_search_options": {"search_context_size": "low"}}
    # A size quoted inside prompt text is not the request's.
    quoted = b'{"model": "m", "messages": [{"content": "\\"search_context_size\\": \\"high\\""}'
    assert "web_search_options" not in _parse_request_json(bytearray(quoted), True)


# ---------------------------------------------------------------- Gemini grounding with Google Search

GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/{}:{}"
GROUNDING = {
    "webSearchQueries": ["UEFA Euro 2024 winner", "who won euro 2024"],
    "searchEntryPoint": {"renderedContent": "<!-- HTML and CSS for the search widget -->"},
    "groundingChunks": [{"web": {"uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/a",
                                 "title": "aljazeera.com"}},
                        {"web": {"uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/b",
                                 "title": "uefa.com"}}],
    "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": 85, "text": "Spain won Euro 2024"},
                           "groundingChunkIndices": [0]}],
}


def gemini_body(model, usage, grounding=None, text="Spain won Euro 2024, defeating England 2-1 in the final."):
    candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
    if grounding is not None:
        candidate["groundingMetadata"] = grounding
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": "mOkiaJ6cMpC1qtsP3fznmQw"}


@pytest.mark.parametrize(("model", "usage", "grounding", "searches", "cost"), [
    # Gemini 2.5 Flash $0.30/$2.50; grounding $35 per 1,000 grounded PROMPTS, whatever the queries:
    #   12 x 0.3 + 150 x 2.5 = 378.6 / 1M = 0.0003786; + 1 x 0.035 = 0.0353786
    ("gemini-2.5-flash", {"promptTokenCount": 12, "candidatesTokenCount": 150, "totalTokenCount": 162},
     GROUNDING, 2, Decimal("0.03537860")),
    # Gemini 3 Pro preview $2/$12; grounding $14 per 1,000 QUERIES:
    #   20 x 2 + (100 + 50 thoughts) x 12 = 1840 / 1M = 0.00184; + 3 x 0.014 = 0.042 -> 0.04384
    ("gemini-3-pro-preview", {"promptTokenCount": 20, "candidatesTokenCount": 100, "thoughtsTokenCount": 50,
                              "totalTokenCount": 170},
     {**GROUNDING, "webSearchQueries": ["euro 2024 final", "euro 2024 winner", "spain england score"]},
     3, Decimal("0.04384000")),
    # The model chose not to search: an empty query list costs nothing.
    #   12 x 0.3 + 150 x 2.5 = 378.6 / 1M
    ("gemini-2.5-flash", {"promptTokenCount": 12, "candidatesTokenCount": 150, "totalTokenCount": 162},
     {"groundingChunks": [], "groundingSupports": [], "webSearchQueries": []}, 0, Decimal("0.00037860")),
])
def test_gemini_grounding_fee(prices, tmp_path: Path, model, usage, grounding, searches, cost):
    request = {"contents": [{"parts": [{"text": "Who won the euro 2024?"}]}], "tools": [{"google_search": {}}]}
    calls, _ = run(prices, "POST", GEMINI.format(model, "generateContent"), request,
                   json.dumps(gemini_body(model, usage, grounding)).encode())
    (call,) = calls
    assert (call.web_search_requests, call.cost_usd) == (searches, cost)
    db = tmp_path / "lumen.duckdb"
    with CallStore(db) as store:
        store.add(call)
    assert run_sql(db, "SELECT web_search_requests, cost_usd FROM llm_calls").rows == [(searches, cost)]


@pytest.mark.parametrize(("model", "cost"), [
    # 2.5 Flash: 12 x 0.3 + 150 x 2.5 = 378.6 / 1M; + ONE grounded prompt x 0.035 -> 0.0353786
    ("gemini-2.5-flash", Decimal("0.03537860")),
    # 3 Pro preview: 12 x 2 + 150 x 12 = 1824 / 1M = 0.001824; + 2 queries x 0.014 = 0.028 -> 0.029824
    ("gemini-3-pro-preview", Decimal("0.02982400")),
])
def test_gemini_grounding_streamed(prices, model, cost):
    # streamGenerateContent?alt=sse: text chunks first; the last chunk carries
    # finishReason, the grounding metadata and the final usage.
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "Spain won Euro 2024, "}], "role": "model"}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}, "modelVersion": model,
         "responseId": "r1"},
        {"candidates": [{"content": {"parts": [{"text": "defeating England 2-1."}], "role": "model"},
                         "index": 0}],
         "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 90, "totalTokenCount": 102},
         "modelVersion": model, "responseId": "r1"},
        {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP",
                         "index": 0, "groundingMetadata": GROUNDING}],
         "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 150, "totalTokenCount": 162},
         "modelVersion": model, "responseId": "r1"},
    ]
    body = b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks)
    calls, _ = run(prices, "POST", GEMINI.format(model, "streamGenerateContent") + "?alt=sse",
                   {"contents": [], "tools": [{"google_search": {}}]}, body, content_type="text/event-stream",
                   chunked=True, piece=7)
    assert [(c.web_search_requests, c.output_tokens, c.cost_usd) for c in calls] == [(2, 150, cost)]


def test_override_file_carries_search_unit_and_context_rates(tmp_path: Path):
    overrides = tmp_path / "prices.toml"
    overrides.write_text('''
[[price]]
provider = "openai"
model = "my-search-model-search-preview"
input = "1.00"
output = "2.00"
web_search_context_per_1000 = { low = "10", medium = "20", high = "40" }

[[price]]
provider = "google"
model = "gemini-2.5-flash"
effective_from = 2026-01-01
input = "0.30"
output = "2.50"
web_search_per_1000 = "35"
web_search_unit = "prompt"
''')
    table = PriceTable.load(overrides)
    body = search_preview_body("my-search-model-search-preview", 100, 100)
    calls, _ = run(table, "POST", CHAT, {"model": "my-search-model-search-preview", "messages": [],
                                         "web_search_options": {"search_context_size": "high"}},
                   json.dumps(body).encode())
    # 100 x 1 + 100 x 2 = 300 / 1M = 0.0003; high $40 / 1000 = 0.04 -> 0.0403
    assert [(c.price_id, c.cost_usd) for c in calls] == [
        ("override:openai/my-search-model-search-preview@2000-01-01", Decimal("0.04030000"))]
    row = table.lookup("gemini-2.5-flash", "google", date(2026, 6, 1))
    assert (row.price_id, row.web_search_unit, row.web_search_rate(None)) == (
        "override:google/gemini-2.5-flash@2026-01-01", "prompt", Decimal("35"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[[price]]\nprovider = "x"\nmodel = "y"\ninput = "1"\noutput = "1"\nweb_search_unit = "call"\n')
    with pytest.raises(Exception, match="web_search_unit must be one of request, prompt"):
        PriceTable.load(bad)


def test_batch_retrieve_keeps_its_connection_but_is_no_row(prices):
    # The anthropic SDK retrieves the batch (for results_url) and then downloads
    # the results on the same keep-alive connection; on a host that names no
    # provider, a connection whose first request were "not an LLM call" would
    # be dropped before the download.
    host = "http://gateway.internal:8080"
    batch = {"id": "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "type": "message_batch", "processing_status": "ended",
             "results_url": f"{host}/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results"}
    retrieve = ("GET", f"{host}/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", json.dumps(batch).encode(),
                "application/json")
    results = ("GET", batch["results_url"], ANTHROPIC_BATCH, "application/binary")
    events = []
    for method, url, body, content_type in (retrieve, results):
        events += exchange_events(request_bytes(method, url, None), response_bytes(body, content_type=content_type))
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(events)
    pipeline.close()
    # The two succeeded lines, as priced above; nothing for the retrieval.
    assert [c.cost_usd for c in calls] == [Decimal("0.00028650"), Decimal("0.00120000")]
    assert pipeline.counters["connections.non_llm_connection"] == 0
    assert identify("GET", "/v1/batches/batch_abc123", "gateway.internal", {}, None).endpoint == "batches.retrieve"


def test_openai_batch_output_over_http2(prices):
    from h2_builders import H2Conversation

    conv = H2Conversation()
    sid = conv.request("/v1/files/file-9GaXQ7cvMvsS5Pe5ZjYBCB/content", None, method="GET")
    conv.respond(sid, OPENAI_BATCH, content_type="application/octet-stream", piece=500)
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(conv.events(step=300))
    pipeline.close()
    # The same four billed lines and costs as over HTTP/1.1 (worked out above).
    assert [(c.http_version, c.endpoint, c.cost_usd) for c in calls] == [
        ("2", e[1], e[-1]) for e in OPENAI_EXPECTED]


def test_gemini_grounding_chunk_without_usage_is_still_read():
    from lumen_agent.parsers.providers.google import GeminiReader

    # Once the model is known, SSE chunks without usage are skipped unread
    # (base.py); a chunk with only the grounding metadata must not be.
    reader = GeminiReader(fallback_model="gemini-3-pro-preview")
    reader.feed_sse(None, json.dumps({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0}],
                                      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1},
                                      "modelVersion": "gemini-3-pro-preview"}))
    reader.feed_sse(None, json.dumps({"candidates": [{"index": 0, "groundingMetadata": GROUNDING}],
                                      "modelVersion": "gemini-3-pro-preview"}))
    assert (reader.result().web_search_requests, reader.result().input_tokens) == (2, 5)


def test_batch_download_without_its_response_is_no_row(prices):
    # The connection ends before any response: an ordinary call would be a
    # cancelled row; a download is never a row of its own.
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(exchange_events(request_bytes("GET", ANTHROPIC_RESULTS, None), b"", close=True))
    pipeline.feed_all(exchange_events(request_bytes("GET", OPENAI_FILE, None), b"HTTP/1.1 200 OK\r\n", conn=7,
                                      close=True))
    pipeline.close()
    assert calls == []


def test_azure_openai_batch_output(prices):
    url = "https://my-resource.openai.azure.com/openai/files/file-a1b2c3/content?api-version=2024-10-21"
    body = jsonl(openai_line("batch_req_az0001", "task-0", {
        "id": "chatcmpl-az", "object": "chat.completion", "created": 1729000000, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1100, "completion_tokens": 10, "total_tokens": 1110,
                  "prompt_tokens_details": {"cached_tokens": 1024}}}, request_id="req_az"))
    calls, _ = run(prices, "GET", url, None, body, content_type="application/octet-stream")
    # Azure global batch, 50% of gpt-4o-2024-08-06 ($2.50 / $1.25 cached / $10):
    #   (1100 - 1024) x 1.25 + 1024 x 0.625 + 10 x 5 = 95 + 640 + 50 = 785 / 1M
    assert [(c.provider, c.service_tier, c.cost_usd) for c in calls] == [("azure", "batch", Decimal("0.00078500"))]


def test_batch_download_past_its_byte_limit_keeps_the_lines_before(prices, monkeypatch):
    import lumen_agent.pipeline.exchange as exchange_module

    first_two = len(b"".join(OPENAI_BATCH.splitlines(keepends=True)[:2]))
    # Read in 64-byte pieces: the piece that crosses the limit is refused
    # whole, and it starts after the second line's end.
    monkeypatch.setattr(exchange_module, "MAX_BATCH_DOWNLOAD_BYTES", first_two + 200)
    calls, pipeline = run(prices, "GET", OPENAI_FILE, None, OPENAI_BATCH, content_type="application/octet-stream",
                          piece=64)
    # The two whole lines before the limit, priced as above; the rest is a counted skip.
    assert [c.cost_usd for c in calls] == [Decimal("0.00000630"), Decimal("0.00043480")]
    assert pipeline.counters["skipped.response_body"] == 1
