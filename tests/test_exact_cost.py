"""Exact cost for every response shape the providers send, through the whole
pipeline (bytes in, priced row out), each with its cost worked out by hand.

Shapes come from recorded responses (shared/fixtures/wire) and from the
providers' documented bodies; keys are fake.  Prices are the shipped table's
(per 1M tokens), quoted in each comment.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import pytest
from builders import exchange_events, load_fixture, request_bytes, response_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumen_agent.outputs.queries import run_sql
from lumen_agent.outputs.store import CallStore
from lumen_agent.parsers.eventstream import encode_message
from lumen_agent.parsers.providers import identify
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pricing.table import PriceTable

SALT = b"s" * 32
M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def priced(prices, url: str, request: dict, response: bytes, *, content_type: str = "application/json",
           headers: dict[str, str] | None = None, chunked: bool = False, piece: int | None = None):
    raw = response_bytes(response, content_type=content_type, headers=headers, chunked=chunked)
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(exchange_events(request_bytes("POST", url, request), raw, piece=piece))
    pipeline.close()
    assert len(calls) == 1, calls
    return calls[0]


def sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


# ---------------------------------------------------------------- OpenRouter usage.cost


def test_openrouter_recorded_cost_is_the_charge(prices):
    facts, body = load_fixture("openrouter_chat_completions_nonstream.txt")
    call = priced(prices, facts["url"], {"model": "openai/gpt-5-mini", "messages": []}, body)
    # usage.cost 0.00435825 is what OpenRouter charged.  Token price of gpt-5-mini
    # ($0.25 in, $2 out): 17 x 0.25 + 2177 x 2 = 4358.25 / 1M = 0.00435825.
    assert call.cost_usd == Decimal("0.00435825")
    assert call.charged_usd == Decimal("0.00435825")
    assert call.token_cost_usd == Decimal("0.00435825")
    assert (call.input_tokens, call.output_tokens, call.reasoning_tokens) == (17, 2177, 960)


def test_openrouter_server_tool_charge_far_above_token_price(prices):
    # OpenRouter's documented usage shape, for a call with the web plugin: the
    # search results are billed on top of the tokens (cost_details only
    # breaks down the upstream inference part).
    body = {
        "id": "gen-1762789999-webplugin0000", "object": "chat.completion", "model": "openai/gpt-5-mini",
        "provider": "OpenAI", "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."},
                                           "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
                  "cost": 0.02038, "is_byok": False,
                  "cost_details": {"upstream_inference_cost": None, "upstream_inference_prompt_cost": 0.0003,
                                   "upstream_inference_completions_cost": 0.00008}},
    }
    call = priced(prices, "https://openrouter.ai/api/v1/chat/completions",
                  {"model": "openai/gpt-5-mini", "messages": [], "plugins": [{"id": "web"}]},
                  json.dumps(body).encode())
    # Tokens: 1200 x 0.25 + 40 x 2 = 380 / 1M = 0.00038; charged 0.02038 (53.6x).
    assert call.token_cost_usd == Decimal("0.00038000")
    assert call.cost_usd == Decimal("0.02038000")
    assert call.provider == "openrouter" and not call.unpriced


# ---------------------------------------------------------------- Anthropic compaction iterations

# The shape of the compaction docs' example ("Compaction at a token
# threshold"): top-level usage is the last iteration only; iterations list
# every billed sampling step.  Here the compaction step also read the cache.
COMPACTION_USAGE = {
    "input_tokens": 23000, "output_tokens": 1000, "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0, "service_tier": "standard",
    "iterations": [
        {"type": "compaction", "input_tokens": 30000, "output_tokens": 3500, "cache_read_input_tokens": 150000,
         "cache_creation_input_tokens": 0, "cache_creation": None},
        {"type": "message", "input_tokens": 23000, "output_tokens": 1000, "cache_read_input_tokens": 0,
         "cache_creation_input_tokens": 0, "cache_creation": None},
    ],
}
# claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read.  Each iteration on its own
# (neither exceeds 200k input, so no long-context tier):
#   compaction: 30000 x 3 + 150000 x 0.3 + 3500 x 15 = 90000 + 45000 + 52500 = 187500
#   message:    23000 x 3 + 1000 x 15                 = 69000 + 15000         =  84000
#   total 271500 / 1M = 0.2715   (the last iteration alone would be 0.084: 3.2x under)
COMPACTION_COST = Decimal("0.27150000")


def test_anthropic_compaction_nonstreaming_sums_iterations(prices):
    body = {"id": "msg_01compaction0000000000", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [{"type": "compaction", "content": "Summary..."},
                                                               {"type": "text", "text": "Based on..."}],
            "stop_reason": "end_turn", "usage": COMPACTION_USAGE}
    call = priced(prices, "https://api.anthropic.com/v1/messages",
                  {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": []}, json.dumps(body).encode(),
                  headers={"anthropic-ratelimit-requests-remaining": "49"})
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (203000, 150000, 4500)
    assert call.cost_usd == COMPACTION_COST


def test_anthropic_compaction_streaming_sums_iterations(prices):
    start = {"type": "message_start", "message": {
        "id": "msg_01compaction0000000001", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": None,
        "usage": {"input_tokens": 23000, "output_tokens": 1, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0, "service_tier": "standard"}}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": COMPACTION_USAGE}
    body = sse(start, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
               {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
               {"type": "content_block_stop", "index": 0}, delta, {"type": "message_stop"})
    call = priced(prices, "https://api.anthropic.com/v1/messages",
                  {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": [], "stream": True}, body,
                  content_type="text/event-stream", chunked=True)
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (203000, 150000, 4500)
    assert call.cost_usd == COMPACTION_COST


# ---------------------------------------------------------------- Gemini audio


def test_gemini_audio_is_priced_above_text(prices):
    # usageMetadata as the Gemini API reports an audio prompt with a cache.
    body = {"candidates": [{"content": {"parts": [{"text": "A dog barks."}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1100, "candidatesTokenCount": 50, "totalTokenCount": 1150,
                              "cachedContentTokenCount": 400,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 100},
                                                      {"modality": "AUDIO", "tokenCount": 1000}],
                              "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 400}]},
            "modelVersion": "gemini-2.5-flash", "responseId": "fakeResponseId0001"}
    call = priced(prices, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
                  {"contents": []}, json.dumps(body).encode())
    # gemini-2.5-flash: text $0.30, audio $1.00, cached text $0.03, cached audio $0.10, out $2.50.
    #   text 100 x 0.30 = 30; audio uncached (1000 - 400) x 1.00 = 600; cached audio 400 x 0.10 = 40;
    #   output 50 x 2.5 = 125; total 795 / 1M = 0.000795
    assert call.cost_usd == Decimal("0.00079500")
    assert (call.input_audio_tokens, call.cache_read_audio_tokens) == (1000, 400)
    assert (call.cache_read_tokens, call.reasoning_tokens) == (400, 0)


# ---------------------------------------------------------------- service tiers


@pytest.mark.parametrize("tier,cost", [
    # gpt-5-mini flex: $0.125 in, $0.0125 cached, $1 out:
    #   800 x 0.125 + 200 x 0.0125 + 100 x 1 = 100 + 2.5 + 100 = 202.5
    ("flex", Decimal("0.00020250")),
    # priority: $0.45 in, $0.045 cached, $3.60 out: 800 x 0.45 + 200 x 0.045 + 100 x 3.6 = 360 + 9 + 360 = 729
    ("priority", Decimal("0.00072900")),
    # default: $0.25, $0.025, $2: 200 + 5 + 200 = 405
    ("default", Decimal("0.00040500")),
])
def test_openai_service_tier(prices, tier, cost):
    body = {"id": "chatcmpl-tier", "object": "chat.completion", "model": "gpt-5-mini-2025-08-07",
            "service_tier": tier, "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                      "prompt_tokens_details": {"cached_tokens": 200}, "completion_tokens_details":
                      {"reasoning_tokens": 64}}}
    call = priced(prices, "https://api.openai.com/v1/chat/completions",
                  {"model": "gpt-5-mini", "messages": [], "service_tier": tier}, json.dumps(body).encode())
    assert call.service_tier == tier
    assert call.cost_usd == cost


@pytest.mark.parametrize("tier,cost", [
    # claude-sonnet-4-5 batch (half price): $1.50 in, $7.50 out: 1000 x 1.5 + 100 x 7.5 = 2250
    ("batch", Decimal("0.00225000")),
    # priority: no per-token rate is published (committed capacity): the standard
    # rates, $3 / $15: 3000 + 1500 = 4500
    ("priority", Decimal("0.00450000")),
])
def test_anthropic_service_tier(prices, tier, cost):
    body = {"id": "msg_tier", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [], "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 0,
                                     "cache_creation_input_tokens": 0, "service_tier": tier}}
    call = priced(prices, "https://api.anthropic.com/v1/messages",
                  {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}, json.dumps(body).encode())
    assert (call.service_tier, call.cost_usd) == (tier, cost)


# ---------------------------------------------------------------- per-request fees


def test_anthropic_web_search_requests_are_billed(prices):
    # usage as the web search tool docs show it
    body = {"id": "msg_search", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [], "usage": {"input_tokens": 10000, "output_tokens": 500, "cache_read_input_tokens": 0,
                                     "cache_creation_input_tokens": 0,
                                     "server_tool_use": {"web_search_requests": 3}}}
    call = priced(prices, "https://api.anthropic.com/v1/messages",
                  {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}, json.dumps(body).encode())
    # tokens 10000 x 3 + 500 x 15 = 37500 / 1M = 0.0375; searches 3 x $10 / 1000 = 0.03
    assert call.web_search_requests == 3
    assert call.cost_usd == Decimal("0.06750000")


def test_openai_responses_web_search_calls_are_billed(prices):
    body = {"id": "resp_search", "object": "response", "model": "gpt-5-mini-2025-08-07", "status": "completed",
            "output": [{"type": "web_search_call", "id": "ws_1", "status": "completed",
                        "action": {"type": "search", "query": "weather"}},
                       {"type": "web_search_call", "id": "ws_2", "status": "completed",
                        "action": {"type": "search", "query": "news"}},
                       {"type": "message", "id": "msg_1", "role": "assistant", "content": []}],
            "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 200,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1200}}
    call = priced(prices, "https://api.openai.com/v1/responses",
                  {"model": "gpt-5-mini", "input": "hi", "tools": [{"type": "web_search"}]},
                  json.dumps(body).encode())
    # tokens 1000 x 0.25 + 200 x 2 = 650 / 1M = 0.00065; 2 calls x $10 / 1000 = 0.02
    assert call.web_search_requests == 2
    assert call.cost_usd == Decimal("0.02065000")


# ---------------------------------------------------------------- 0 is not NULL


def test_openai_row_input_minus_cache_parts_is_never_null(prices, tmp_path: Path):
    facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    call = priced(prices, facts["url"], {"model": "gpt-4o-mini", "messages": [], "stream": True,
                                         "stream_options": {"include_usage": True}},
                  body, content_type="text/event-stream", chunked=True)
    assert (call.cache_read_tokens, call.cache_write_tokens, call.cache_write_1h_tokens) == (0, 0, 0)
    db = tmp_path / "lumen.duckdb"
    with CallStore(db) as store:
        store.add(call)
    rows = run_sql(db, "SELECT input_tokens - cache_read_tokens - cache_write_tokens FROM llm_calls").rows
    assert rows == [(78,)]


def test_usage_missing_stays_null(prices):
    facts, body = load_fixture("openai_chat_completions_stream_text.txt")
    text = b"".join(line + b"\n" for line in body.split(b"\n") if b'"usage":{' not in line)
    call = priced(prices, facts["url"], {"model": "gpt-4o-mini", "messages": [], "stream": True}, text,
                  content_type="text/event-stream", chunked=True)
    assert call.usage_missing
    assert (call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.cost_usd) == (
        None, None, None, None)


# ---------------------------------------------------------------- Bedrock

BEDROCK = "https://bedrock-runtime.us-east-1.amazonaws.com"
PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"


def aws_event(kind: str, payload: dict) -> bytes:
    return encode_message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                          json.dumps({**payload, "p": "abcdefgh"}).encode())


CONVERSE_STREAM = (aws_event("messageStart", {"role": "assistant"})
                   + aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}})
                   + aws_event("contentBlockStop", {"contentBlockIndex": 0})
                   + aws_event("messageStop", {"stopReason": "end_turn"})
                   + aws_event("metadata", {"usage": {"inputTokens": 25, "outputTokens": 10, "totalTokens": 335,
                                                      "cacheReadInputTokens": 0, "cacheWriteInputTokens": 300},
                                            "metrics": {"latencyMs": 812}}))
# us.anthropic.claude-sonnet-4-5 (the US geographic profile costs 10% more than
# global): $3.30 in, $16.50 out, $4.125 cache write (5m):
#   25 x 3.3 + 300 x 4.125 + 10 x 16.5 = 82.5 + 1237.5 + 165 = 1485 / 1M = 0.001485
CONVERSE_STREAM_COST = Decimal("0.00148500")


@pytest.mark.parametrize("piece", [None, 1, 13])
def test_bedrock_converse_stream(prices, piece):
    call = priced(prices, f"{BEDROCK}/model/{PROFILE}/converse-stream",
                  {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, CONVERSE_STREAM,
                  content_type="application/vnd.amazon.eventstream", chunked=True, piece=piece)
    assert (call.provider, call.endpoint, call.streaming) == ("bedrock", "converse-stream", True)
    assert call.model == "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert (call.input_tokens, call.cache_write_tokens, call.output_tokens) == (325, 300, 10)
    assert call.cost_usd == CONVERSE_STREAM_COST
    assert call.price_id.startswith("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0@")


def test_bedrock_converse_stream_broken_crc_keeps_no_invented_usage(prices):
    broken = bytearray(CONVERSE_STREAM)
    broken[-10] ^= 0x20  # inside the metadata message: its CRC fails, the message is skipped
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    raw = response_bytes(bytes(broken), content_type="application/vnd.amazon.eventstream", chunked=True)
    pipeline.feed_all(exchange_events(request_bytes("POST", f"{BEDROCK}/model/{PROFILE}/converse-stream",
                                                    {"messages": []}), raw))
    pipeline.close()
    (call,) = calls
    assert call.usage_missing and call.input_tokens is None and call.cost_usd is None
    assert pipeline.counters.snapshot()["skipped.response_body"] == 1


def test_bedrock_invoke_model_counts_from_headers(prices):
    # A Llama body (no usage we read): the x-amzn-bedrock-* headers carry the counts.
    body = {"generation": "Hi there", "prompt_token_count": 18, "generation_token_count": 4, "stop_reason": "stop"}
    call = priced(prices, f"{BEDROCK}/model/meta.llama3-1-70b-instruct-v1%3A0/invoke",
                  {"prompt": "hi", "max_gen_len": 50}, json.dumps(body).encode(),
                  headers={"X-Amzn-Bedrock-Input-Token-Count": "18", "X-Amzn-Bedrock-Output-Token-Count": "4",
                           "X-Amzn-Bedrock-Invocation-Latency": "311"})
    row = prices.lookup("meta.llama3-1-70b-instruct-v1:0", "bedrock")
    assert (call.input_tokens, call.output_tokens) == (18, 4)
    assert call.cost_usd == ((18 * row.input + 4 * row.output) / M).quantize(Decimal("0.00000001"))
    assert call.cost_usd is not None and not call.unpriced


def test_bedrock_invoke_with_response_stream(prices):
    def chunk(obj: dict) -> bytes:
        return aws_event("chunk", {"bytes": base64.b64encode(json.dumps(obj).encode()).decode()})

    stream = (chunk({"type": "message_start", "message": {
        "id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [], "usage": {"input_tokens": 60, "output_tokens": 1, "cache_read_input_tokens": 400,
                                 "cache_creation_input_tokens": 0}}})
        + chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
        + chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 10}})
        + chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 60, "outputTokenCount": 10, "invocationLatency": 640, "firstByteLatency": 210}}))
    call = priced(prices, f"{BEDROCK}/model/{PROFILE}/invoke-with-response-stream",
                  {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": []}, stream,
                  content_type="application/vnd.amazon.eventstream", chunked=True, piece=5)
    # Priced by the profile in the URL, us.anthropic.claude-sonnet-4-5 ($3.30 in, $0.33 cache read,
    # $16.50 out), not by the vendor name in the body (which has no region premium):
    #   60 x 3.3 + 400 x 0.33 + 10 x 16.5 = 198 + 132 + 165 = 495 / 1M
    assert call.model == "claude-sonnet-4-5-20250929"
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (460, 400, 10)
    assert call.cost_usd == Decimal("0.00049500")


APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"


def test_bedrock_application_inference_profile_unpriced_without_alias(prices):
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120}, "metrics": {"latencyMs": 300}}
    from urllib.parse import quote

    call = priced(prices, f"{BEDROCK}/model/{quote(APP_PROFILE, safe='')}/converse", {"messages": []},
                  json.dumps(body).encode())
    # Converse names no model and the profile id is opaque: tokens kept, unpriced, never $0.
    assert call.request_model == APP_PROFILE
    assert (call.input_tokens, call.output_tokens, call.cost_usd, call.unpriced) == (100, 20, None, True)


def test_bedrock_application_inference_profile_priced_by_alias(tmp_path: Path):
    overrides = tmp_path / "prices.toml"
    overrides.write_text('[aliases]\n"a1b2c3d4e5f6" = "anthropic.claude-sonnet-4-5-20250929-v1:0"\n')
    table = PriceTable.load(overrides)
    body = {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120}}
    # curl-style: the ARN's "/" left raw in the path
    call = priced(table, f"{BEDROCK}/model/{APP_PROFILE}/converse", {"messages": []}, json.dumps(body).encode())
    # 100 x 3 + 20 x 15 = 600 / 1M
    assert call.request_model == APP_PROFILE
    assert call.cost_usd == Decimal("0.00060000")


def test_bedrock_foundation_model_arn_names_the_model():
    info = identify("POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2F"
                    "anthropic.claude-3-haiku-20240307-v1%3A0/converse", "bedrock-runtime.us-east-1.amazonaws.com",
                    {}, {"messages": []})
    assert info.request_model == "anthropic.claude-3-haiku-20240307-v1:0"
    info = identify("POST", "/model/arn:aws:bedrock:eu-west-1:123456789012:inference-profile/"
                    "eu.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream", None, {}, {"messages": []})
    assert (info.provider, info.request_model) == ("bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0")


@pytest.mark.parametrize("prefix,price", [
    # geographic cross-region profiles carry AWS's 10% premium; global and in-region do not
    ("us.", ("3.3", "16.5")), ("eu.", ("3.3", "16.5")), ("jp.", ("3.3", "16.5")),
    ("global.", ("3", "15")), ("", ("3", "15")),
    # a prefix without its own row falls back to the in-region model
    ("apac.", ("3", "15")),
])
def test_bedrock_region_prefixes(prices, prefix, price):
    row = prices.lookup(f"{prefix}anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock")
    assert (row.input, row.output) == tuple(Decimal(p) for p in price)


# ---------------------------------------------------------------- Vertex AI


def test_vertex_gemini_stream(prices):
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 18, "candidatesTokenCount": 80, "thoughtsTokenCount": 35,
                               "totalTokenCount": 133}, "modelVersion": "gemini-2.5-flash", "responseId": "v1"}
    call = priced(prices, "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/"
                  "publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse", {"contents": []},
                  f"data: {json.dumps(chunk)}\r\n\r\n".encode(), content_type="text/event-stream", chunked=True)
    # 18 x 0.30 + (80 + 35) x 2.50 = 5.4 + 287.5 = 292.9 / 1M
    assert (call.provider, call.endpoint, call.streaming) == ("google", "streamGenerateContent", True)
    assert call.cost_usd == Decimal("0.00029290")


def test_vertex_anthropic_raw_predict(prices):
    body = {"id": "msg_vrtx_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 40, "output_tokens": 30, "cache_read_input_tokens": 1000,
                      "cache_creation_input_tokens": 0}}
    call = priced(prices, "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/"
                  "publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
                  {"anthropic_version": "vertex-2023-10-16", "max_tokens": 50, "messages": []},
                  json.dumps(body).encode())
    # Claude on Vertex: $3 in, $0.30 cache read, $15 out: 40 x 3 + 1000 x 0.3 + 30 x 15 = 120 + 300 + 450 = 870
    assert (call.provider, call.endpoint, call.request_model) == ("google", "messages", "claude-sonnet-4-5@20250929")
    assert call.cost_usd == Decimal("0.00087000")


# ---------------------------------------------------------------- provider from response headers

CHAT = {"id": "chatcmpl-gw", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}


# gpt-4o-mini: 100 x 0.15 + 10 x 0.60 = 21 / 1M; on Azure 100 x 0.165 + 10 x 0.66 = 23.1 / 1M
@pytest.mark.parametrize("headers,provider,cost", [
    ({"openai-organization": "user-fake", "openai-version": "2020-10-01"}, "openai", "0.00002100"),
    ({"anthropic-ratelimit-requests-remaining": "49"}, "anthropic", "0.00002100"),  # its OpenAI-compatible API
    ({"x-goog-request-id": "abc"}, "google", "0.00002100"),
    ({"apim-request-id": "f00", "x-ms-region": "East US", "openai-version": "x"}, "azure", "0.00002310"),
    ({}, "openai-compatible", "0.00002100"),
])
def test_provider_from_response_headers_on_an_unknown_host(prices, headers, provider, cost):
    call = priced(prices, "https://llm-gateway.corp.internal/v1/chat/completions",
                  {"model": "gpt-4o-mini", "messages": []}, json.dumps(CHAT).encode(), headers=headers)
    assert call.provider == provider
    assert call.cost_usd == Decimal(cost)


def test_known_host_is_not_renamed_by_headers(prices):
    call = priced(prices, "https://openrouter.ai/api/v1/chat/completions", {"model": "openai/gpt-4o-mini",
                  "messages": []}, json.dumps(CHAT).encode(), headers={"openai-organization": "x"})
    assert call.provider == "openrouter"


def test_reprice_keeps_the_stated_charge_and_reprices_the_rest(prices, tmp_path: Path):
    from lumen_agent.outputs.queries import reprice

    facts, body = load_fixture("openrouter_chat_completions_nonstream.txt")
    charged = priced(prices, facts["url"], {"model": "openai/gpt-5-mini", "messages": []}, body)
    gemini = {"candidates": [], "modelVersion": "gemini-2.5-flash", "responseId": "r",
              "usageMetadata": {"promptTokenCount": 1100, "candidatesTokenCount": 50, "cachedContentTokenCount": 400,
                                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 100},
                                                        {"modality": "AUDIO", "tokenCount": 1000}],
                                "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 400}]}}
    audio = priced(prices, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
                   {"contents": []}, json.dumps(gemini).encode())
    db = tmp_path / "lumen.duckdb"
    with CallStore(db) as store:
        store.add(charged)
        store.add(audio)
    result = reprice(db, prices)
    assert (result.examined, result.changed) == (2, 0)  # the same table gives the same figures
    rows = run_sql(db, "SELECT cost_usd, token_cost_usd, charged_usd FROM llm_calls ORDER BY cost_usd").rows
    assert rows == [(Decimal("0.00079500"), Decimal("0.00079500"), None),
                    (Decimal("0.00435825"), Decimal("0.00435825"), Decimal("0.00435825"))]


def test_override_file_carries_tier_audio_and_fee_rates(tmp_path: Path):
    overrides = tmp_path / "prices.toml"
    overrides.write_text('''
[[price]]
provider = "openai"
model = "my-model"
input = "2.00"
output = "8.00"
cache_read = "0.50"
input_audio = "4.00"
web_search_per_1000 = "25"

[price.service_tiers.flex]
input = "1.00"
output = "4.00"
''')
    row = PriceTable.load(overrides).lookup("my-model", "openai")
    assert (row.input_audio, row.web_search_per_1000) == (Decimal("4.00"), Decimal("25"))
    flex = row.service_tier("flex")
    assert (flex.input, flex.output, flex.cache_read) == (Decimal("1.00"), Decimal("4.00"), None)


@pytest.mark.parametrize("served,cost", [
    # gemini-3.6-flash priority: $2.70 in, $0.27 cached, $13.50 out:
    #   (1000 - 200) x 2.7 + 200 x 0.27 + 100 x 13.5 = 2160 + 54 + 1350 = 3564
    ("priority", Decimal("0.00356400")),
    # flex: $0.75, $0.075, $3.75: 600 + 15 + 375 = 990
    ("flex", Decimal("0.00099000")),
    # a priority request over its limit is served (and billed) at standard: $1.50, $0.15, $7.50:
    #   1200 + 30 + 750 = 1980
    ("standard", Decimal("0.00198000")),
])
def test_gemini_service_tier_from_the_response_header(prices, served, cost):
    body = {"candidates": [], "modelVersion": "gemini-3.6-flash", "responseId": "tier",
            "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 200, "candidatesTokenCount": 100,
                              "totalTokenCount": 1100}}
    call = priced(prices, "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.6-flash:generateContent",
                  {"contents": [], "service_tier": "priority"}, json.dumps(body).encode(),
                  headers={"x-gemini-service-tier": served})
    assert (call.service_tier, call.cost_usd) == (served, cost)


def test_bedrock_stream_exception_is_an_error_not_a_success(prices):
    stream = (aws_event("messageStart", {"role": "assistant"})
              + aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}})
              + encode_message({":exception-type": "throttlingException", ":content-type": "application/json",
                                ":message-type": "exception"}, b'{"message":"Too many tokens, please wait."}'))
    call = priced(prices, f"{BEDROCK}/model/{PROFILE}/converse-stream", {"messages": []}, stream,
                  content_type="application/vnd.amazon.eventstream", chunked=True)
    assert (call.status_code, call.outcome.value) == (200, "rate_limited")
    assert call.usage_missing and call.cost_usd is None


def test_anthropic_compaction_iterations_with_one_hour_cache_writes(prices):
    usage = {"input_tokens": 500, "output_tokens": 100, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0,
             "iterations": [
                 {"type": "compaction", "input_tokens": 2000, "output_tokens": 300, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 1000,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000}},
                 {"type": "message", "input_tokens": 500, "output_tokens": 100, "cache_read_input_tokens": 1000,
                  "cache_creation_input_tokens": 0}]}
    body = {"id": "msg_c1h", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [], "usage": usage}
    call = priced(prices, "https://api.anthropic.com/v1/messages",
                  {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}, json.dumps(body).encode())
    # compaction: 2000 x 3 + 1000 x 6 (1h write) + 300 x 15 = 6000 + 6000 + 4500 = 16500
    # message:    500 x 3 + 1000 x 0.3 + 100 x 15        = 1500 + 300 + 1500  =  3300
    # total 19800 / 1M
    assert (call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.cache_write_1h_tokens,
            call.output_tokens) == (4500, 1000, 1000, 1000, 400)
    assert call.cost_usd == Decimal("0.01980000")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=len(CONVERSE_STREAM) - 1), st.integers(min_value=1, max_value=255),
       st.sampled_from([None, 1, 7, 64]))
def test_bedrock_stream_any_damaged_byte_gives_exact_or_missing_never_invented(prices, position, flip, piece):
    # CRC-32 catches every single-byte error: a damaged stream either still has its
    # metadata message intact (exact numbers) or has no usage at all.
    damaged = bytearray(CONVERSE_STREAM)
    damaged[position] ^= flip
    call = priced(prices, f"{BEDROCK}/model/{PROFILE}/converse-stream", {"messages": []}, bytes(damaged),
                  content_type="application/vnd.amazon.eventstream", chunked=True, piece=piece)
    got = (call.input_tokens, call.cache_write_tokens, call.output_tokens, call.cost_usd)
    assert got in ((325, 300, 10, CONVERSE_STREAM_COST), (None, None, None, None))
