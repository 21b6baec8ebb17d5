"""Provider recognition and usage readers (lumen_agent.parsers.providers).

Expected token counts are computed by hand from the wire fixtures in
shared/fixtures/wire/, following DESIGN.md section 3.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen_agent.parsers.errors import ParseError
from lumen_agent.parsers.providers import (
    RequestInfo,
    UsageError,
    UsageReader,
    identify,
    usage_reader,
)
from lumen_agent.parsers.providers.anthropic import MessagesReader
from lumen_agent.parsers.providers.base import NoUsageReader
from lumen_agent.parsers.providers.bedrock import ConverseReader
from lumen_agent.parsers.providers.google import GeminiReader
from lumen_agent.parsers.providers.ollama import OllamaReader
from lumen_agent.parsers.providers.openai import (
    ChatCompletionsReader,
    EmbeddingsReader,
    ResponsesReader,
)
from lumen_agent.parsers.usage import Usage

WIRE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wire"
# A call that reported usage and has no cache: its cache parts are 0, not NULL.
NO_CACHE = {"cache_read_tokens": 0, "cache_write_tokens": 0, "cache_write_1h_tokens": 0}


# -- test-local helpers: fixture body, a tiny SSE splitter, an NDJSON splitter


def fixture_body(name: str) -> str:
    """The fixture without its leading ``# `` header lines."""
    lines = (WIRE / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event, data) per SSE event, as an SSE parser would dispatch them."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((event, "\n".join(data)))
    return events


def json_objects(text: str) -> list[object]:
    """Concatenated JSON values (NDJSON, or the docs' pretty-printed objects)."""
    decoder, objects, pos = json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return objects
        obj, pos = decoder.raw_decode(text, pos)
        objects.append(obj)


def identify_url(url: str, body: object, headers: dict[str, str] | None = None) -> RequestInfo | None:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return identify("POST", target, parts.netloc, headers or {}, body)


def read(info: RequestInfo, name: str, mode: str) -> Usage:
    reader = usage_reader(info)
    text = fixture_body(name)
    if mode == "json":
        reader.feed_json(json.loads(text))
    elif mode == "sse":
        for event, data in sse_events(text):
            reader.feed_sse(event, data)
    elif mode == "ndjson":
        for obj in json_objects(text):
            reader.feed_ndjson(obj)
    return reader.result()


# -- every wire fixture, end to end through identify() and usage_reader()

FIXTURE_CASES = [
    pytest.param(
        "openai_chat_completions_nonstream_cached.txt",
        "https://api.openai.com/v1/chat/completions",
        {"model": "gpt-5.6-sol", "messages": [{"role": "user", "content": "hi"}]},
        "json",
        RequestInfo("openai", "chat.completions", "gpt-5.6-sol", False, None),
        Usage(
            model="gpt-5.6-sol",
            response_id="chatcmpl-E1mBQt42vYTsKNd5wnyJlT0db7v9S",
            input_tokens=4020,
            output_tokens=4,
            cache_read_tokens=4012,
            cache_write_tokens=0,
            cache_write_1h_tokens=0,
            reasoning_tokens=0,
            service_tier="default",
        ),
        id="openai-chat-nonstream-cached",
    ),
    pytest.param(
        "openai_chat_completions_stream_text.txt",
        "https://api.openai.com/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "sse",
        RequestInfo("openai", "chat.completions", "gpt-4o-mini", True, True),
        Usage(
            model="gpt-4o-mini-2024-07-18",
            response_id="chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc",
            input_tokens=78,
            output_tokens=9,
            cache_read_tokens=0,
            cache_write_tokens=0,  # OpenAI has no cache writes: 0, not NULL
            cache_write_1h_tokens=0,
            reasoning_tokens=0,
            service_tier="default",
        ),
        id="openai-chat-stream",
    ),
    pytest.param(
        "openai_embeddings_nonstream.txt",
        "https://api.openai.com/v1/embeddings",
        {"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
        "json",
        RequestInfo("openai", "embeddings", "text-embedding-3-small", False, None),
        Usage(model="text-embedding-3-small", input_tokens=4, output_tokens=0, cache_read_tokens=0,
              cache_write_tokens=0, cache_write_1h_tokens=0, reasoning_tokens=0),
        id="openai-embeddings",
    ),
    pytest.param(
        "anthropic_messages_stream.txt",
        "https://api.anthropic.com/v1/messages?beta=true",
        {"model": "claude-sonnet-4-5", "max_tokens": 64000, "messages": [], "stream": True},
        "sse",
        RequestInfo("anthropic", "messages", "claude-sonnet-4-5", True, None),
        Usage(
            model="claude-sonnet-4-5-20250929",
            response_id="msg_018E1hg8GoVTGEKQY3ovMcSJ",
            input_tokens=20,  # 20 + cache read 0 + cache write 0
            output_tokens=5,  # message_delta's cumulative count, not message_start's 1
            cache_read_tokens=0,
            cache_write_tokens=0,
            cache_write_1h_tokens=0,
            service_tier="standard",
            web_search_requests=0,
        ),
        id="anthropic-stream",
    ),
    pytest.param(
        "gemini_streamgeneratecontent_sse.txt",
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "count"}]}]},
        "sse",
        RequestInfo("google", "streamGenerateContent", "gemini-2.5-flash", True, None),
        Usage(
            model="gemini-2.5-flash",
            response_id="ru1garvBEoOiqtsP2fznmQw",
            input_tokens=18,
            output_tokens=115,  # last chunk: candidates 80 + thoughts 35
            cache_read_tokens=0,  # no cache on this call: 0, not NULL
            cache_write_tokens=0,
            cache_write_1h_tokens=0,
            reasoning_tokens=35,
            input_audio_tokens=0,  # promptTokensDetails: TEXT only
            web_search_requests=0,  # no groundingMetadata: no search, 0 not NULL
        ),
        id="gemini-stream",
    ),
    pytest.param(
        "bedrock_converse_nonstream.txt",
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
        {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        "json",
        RequestInfo(
            "bedrock", "converse", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", False, None
        ),
        Usage(
            model="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            input_tokens=1324,  # 2 + cache read 1322 + cache write 0
            output_tokens=5,
            cache_read_tokens=1322,
            cache_write_tokens=0,
            cache_write_1h_tokens=0,
        ),
        id="bedrock-converse",
    ),
    pytest.param(
        "ollama_chat_nonstream.txt",
        "http://localhost:11434/api/chat",
        {"model": "llama3.2", "messages": [], "stream": False},
        "json",
        RequestInfo("ollama", "chat", "llama3.2", False, None),
        Usage(model="llama3.2", input_tokens=122, output_tokens=33, **NO_CACHE),
        id="ollama-chat-nonstream",
    ),
    pytest.param(
        "ollama_chat_stream.txt",
        "http://localhost:11434/api/chat",
        {"model": "llama3.2", "messages": []},
        "ndjson",
        RequestInfo("ollama", "chat", "llama3.2", True, None),
        Usage(model="llama3.2", input_tokens=26, output_tokens=282, **NO_CACHE),
        id="ollama-chat-stream",
    ),
    pytest.param(
        "openrouter_chat_completions_nonstream.txt",
        "https://openrouter.ai/api/v1/chat/completions",
        {"model": "openai/gpt-5-mini", "messages": []},
        "json",
        RequestInfo("openrouter", "chat.completions", "openai/gpt-5-mini", False, None),
        Usage(
            model="openai/gpt-5-mini",
            response_id="gen-1762789734-sxYWfPfn343ZvBkw9zV9",
            input_tokens=17,
            output_tokens=2177,  # includes reasoning 960
            cache_read_tokens=0,
            cache_write_tokens=0,
            cache_write_1h_tokens=0,
            reasoning_tokens=960,
            charged_usd=Decimal("0.00435825"),  # usage.cost: what OpenRouter charged
        ),
        id="openrouter-nonstream",
    ),
]


@pytest.mark.parametrize(("name", "url", "body", "mode", "info", "expected"), FIXTURE_CASES)
def test_wire_fixture(name, url, body, mode, info, expected):
    assert identify_url(url, body) == info
    assert read(info, name, mode) == expected


def test_every_fixture_is_covered():
    covered = {case.values[0] for case in FIXTURE_CASES}
    assert covered == {p.name for p in WIRE.glob("*.txt")}


def test_openai_stream_without_include_usage_is_missing():
    body = {"model": "gpt-4o-mini", "messages": [], "stream": True}
    info = identify("POST", "/v1/chat/completions", "api.openai.com", {}, body)
    assert info.include_usage is False
    reader = usage_reader(info)
    # The same stream as the fixture, as sent without include_usage: no usage chunk.
    for event, data in sse_events(fixture_body("openai_chat_completions_stream_text.txt")):
        if data == "[DONE]" or json.loads(data)["usage"] is None:
            reader.feed_sse(event, data)
    usage = reader.result()
    assert usage == Usage(
        model="gpt-4o-mini-2024-07-18",
        response_id="chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc",
        usage_missing=True,
        service_tier="default",
    )


def test_gemini_json_array_stream_matches_sse():
    # streamGenerateContent without alt=sse answers one JSON array of the same chunks.
    chunks = [json.loads(data) for _, data in sse_events(fixture_body("gemini_streamgeneratecontent_sse.txt"))]
    reader = GeminiReader(fallback_model="gemini-2.5-flash")
    reader.feed_json(chunks)
    usage = reader.result()
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (18, 115, 35)


def test_ollama_stream_as_compact_ndjson_lines():
    lines = [json.dumps(o) for o in json_objects(fixture_body("ollama_chat_stream.txt"))]
    reader = OllamaReader()
    for line in lines:
        reader.feed_ndjson(json.loads(line))
    assert (reader.result().input_tokens, reader.result().output_tokens) == (26, 282)


# -- hand-built bodies for fields the fixtures do not exercise


def test_anthropic_nonstream_cache_write_split():
    reader = MessagesReader()
    reader.feed_json(
        {
            "id": "msg_1",
            "type": "message",
            "model": "claude-opus-4-1",
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 50,
                "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
                "output_tokens": 7,
            },
        }
    )
    assert reader.result() == Usage(
        model="claude-opus-4-1",
        response_id="msg_1",
        input_tokens=160,
        output_tokens=7,
        cache_read_tokens=100,
        cache_write_tokens=50,
        cache_write_1h_tokens=30,
        web_search_requests=0,
    )


def test_anthropic_writes_from_breakdown_only():
    reader = MessagesReader()
    reader.feed_json(
        {"usage": {"input_tokens": 1, "output_tokens": 2,
                   "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}}}
    )
    usage = reader.result()
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (8, 7, 4)


def test_anthropic_stream_takes_latest_nonnull():
    reader = MessagesReader()
    start = {"type": "message_start", "message": {"id": "m", "model": "claude-x",
             "usage": {"input_tokens": 5, "cache_read_input_tokens": 40, "output_tokens": 1}}}
    delta = {"type": "message_delta", "delta": {}, "usage": {"input_tokens": None, "output_tokens": 90}}
    reader.feed_sse("message_start", json.dumps(start))
    reader.feed_sse("ping", '{"type": "ping"}')
    reader.feed_sse("message_delta", json.dumps(delta))
    reader.feed_sse("message_stop", '{"type": "message_stop"}')
    usage = reader.result()
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (45, 40, 90)
    assert usage.cache_write_tokens == 0 and usage.model == "claude-x"  # not reported, usage known: 0


RESPONSE_USAGE = {
    "input_tokens": 1000,
    "input_tokens_details": {"cached_tokens": 800},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 200},
    "total_tokens": 1300,
}
RESPONSES_EXPECTED = Usage(
    model="o4-mini-2025-04-16",
    response_id="resp_1",
    input_tokens=1000,
    output_tokens=300,
    cache_read_tokens=800,
    cache_write_tokens=0,
    cache_write_1h_tokens=0,
    reasoning_tokens=200,
    web_search_requests=0,
)


def test_responses_nonstream():
    reader = ResponsesReader()
    reader.feed_json({"id": "resp_1", "object": "response", "model": "o4-mini-2025-04-16",
                      "usage": RESPONSE_USAGE})
    assert reader.result() == RESPONSES_EXPECTED


@pytest.mark.parametrize("final", ["response.completed", "response.incomplete", "response.failed"])
def test_responses_stream(final):
    reader = ResponsesReader()
    created = {"id": "resp_1", "model": "o4-mini-2025-04-16", "usage": None, "status": "in_progress"}
    reader.feed_sse("response.created", json.dumps({"type": "response.created", "response": created}))
    reader.feed_sse("response.output_text.delta",
                    json.dumps({"type": "response.output_text.delta", "item_id": "msg_9", "delta": "Hi"}))
    done = dict(created, usage=RESPONSE_USAGE, status=final.split(".")[1])
    reader.feed_sse(final, json.dumps({"type": final, "response": done}))
    assert reader.result() == RESPONSES_EXPECTED


def test_responses_stream_cut_short_is_missing():
    reader = ResponsesReader()
    reader.feed_sse("response.created", json.dumps(
        {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5", "usage": None}}))
    assert reader.result() == Usage(model="gpt-5", response_id="resp_1", usage_missing=True)


def test_deepseek_cache_hit_tokens():
    reader = ChatCompletionsReader()
    reader.feed_json({"model": "deepseek-chat", "usage": {
        "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
        "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}})
    usage = reader.result()
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (100, 64, 10)


def test_reasoning_reported_beside_completion_is_added():
    # xAI: total = prompt + completion + reasoning
    reader = ChatCompletionsReader()
    reader.feed_json({"model": "grok-3-mini", "usage": {
        "prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 330,
        "completion_tokens_details": {"reasoning_tokens": 300}}})
    usage = reader.result()
    assert (usage.output_tokens, usage.reasoning_tokens) == (310, 300)


def test_reasoning_inside_completion_is_not_added():
    reader = ChatCompletionsReader()
    reader.feed_json({"usage": {"prompt_tokens": 20, "completion_tokens": 310, "total_tokens": 330,
                                "completion_tokens_details": {"reasoning_tokens": 300}}})
    assert reader.result().output_tokens == 310


def test_groq_stream_usage_in_x_groq():
    reader = ChatCompletionsReader()
    reader.feed_sse(None, json.dumps({"id": "chatcmpl-g", "model": "llama-3.3-70b-versatile",
                                      "choices": [{"delta": {"content": "hi"}}]}))
    reader.feed_sse(None, json.dumps({"id": "chatcmpl-g", "model": "llama-3.3-70b-versatile",
                                      "choices": [{"delta": {}, "finish_reason": "stop"}],
                                      "x_groq": {"id": "req_1", "usage": {
                                          "prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}}}))
    reader.feed_sse(None, "[DONE]")
    usage = reader.result()
    assert (usage.input_tokens, usage.output_tokens, usage.usage_missing) == (40, 3, False)


def test_azure_content_filter_chunk_does_not_blank_identity():
    reader = ChatCompletionsReader()
    reader.feed_sse(None, json.dumps({"id": "chatcmpl-a", "model": "gpt-4o-2024-11-20", "choices": []}))
    reader.feed_sse(None, json.dumps({"id": "", "model": "", "choices": [], "prompt_filter_results": []}))
    usage = reader.result()
    assert (usage.model, usage.response_id) == ("gpt-4o-2024-11-20", "chatcmpl-a")


def test_gemini_cached_and_tool_prompt():
    reader = GeminiReader(fallback_model="gemini-2.5-pro")
    reader.feed_json({"usageMetadata": {"promptTokenCount": 5000, "cachedContentTokenCount": 4000,
                                        "toolUsePromptTokenCount": 120, "candidatesTokenCount": 50}})
    assert reader.result() == Usage(model="gemini-2.5-pro", input_tokens=5120, output_tokens=50,
                                    cache_read_tokens=4000, cache_write_tokens=0, cache_write_1h_tokens=0,
                                    reasoning_tokens=0, web_search_requests=0)


def test_gemini_omitted_zero_output():
    # proto3 JSON drops zero counts: a blocked prompt reports only the prompt.
    reader = GeminiReader()
    reader.feed_json({"usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})
    assert (reader.result().input_tokens, reader.result().output_tokens) == (9, 0)


def test_converse_stream_metadata_event():
    reader = ConverseReader(fallback_model="amazon.nova-pro-v1:0")
    reader.feed_json({"metadata": {"usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 20,
                                             "cacheWriteInputTokens": 6}, "metrics": {"latencyMs": 5}}})
    assert reader.result() == Usage(model="amazon.nova-pro-v1:0", input_tokens=16, output_tokens=4,
                                    cache_read_tokens=0, cache_write_tokens=6, cache_write_1h_tokens=0)


def test_ollama_embed():
    reader = OllamaReader(embedding=True)
    reader.feed_json({"model": "all-minilm", "embeddings": [[0.1]], "prompt_eval_count": 8})
    assert reader.result() == Usage(model="all-minilm", input_tokens=8, output_tokens=0, **NO_CACHE)


def test_embeddings_without_usage_invents_nothing():
    reader = EmbeddingsReader()
    reader.feed_json({"data": [], "model": "m"})
    assert reader.result() == Usage(model="m", usage_missing=True)


# -- robustness


ALL_READERS = [
    ChatCompletionsReader,
    ResponsesReader,
    EmbeddingsReader,
    MessagesReader,
    GeminiReader,
    ConverseReader,
    OllamaReader,
    NoUsageReader,
]


@pytest.mark.parametrize("reader_class", ALL_READERS)
def test_reader_fed_nothing_is_missing(reader_class):
    reader = reader_class()
    assert isinstance(reader, UsageReader)
    assert reader.result() == Usage(usage_missing=True)


@pytest.mark.parametrize("reader_class", ALL_READERS)
def test_non_json_sse_data_is_skipped(reader_class):
    # One odd event must not cost the usage that a later event carries.
    reader = reader_class()
    reader.feed_json({"usage": {"prompt_tokens": 3}, "model": "m"})
    before = reader.result()
    reader.feed_sse(None, "{not json")
    reader.feed_sse("ping", "keep-alive")
    reader.feed_sse(None, "[" * 100_000)  # deeper than the JSON decoder recurses
    reader.feed_sse(None, "")
    assert reader.result() == before


def test_openai_stream_survives_an_odd_event():
    reader = ChatCompletionsReader()
    events = sse_events(fixture_body("openai_chat_completions_stream_text.txt"))
    for event, data in events[:3] + [(None, "not json")] + events[3:]:
        reader.feed_sse(event, data)
    assert (reader.result().input_tokens, reader.result().output_tokens) == (78, 9)


@pytest.mark.parametrize("reader_class", ALL_READERS)
def test_sse_data_not_text_raises_usage_error(reader_class):
    reader = reader_class()
    with pytest.raises(UsageError):
        reader.feed_sse(None, b'{"usage": {}}')
    assert issubclass(UsageError, ParseError)
    assert reader.result() == Usage(usage_missing=True)


def test_odd_values_are_not_counts():
    """Reported but not plausible: NULL, and flagged so the call is not priced."""
    reader = ChatCompletionsReader()
    reader.feed_json({"model": 5, "id": ["x"], "usage": {
        "prompt_tokens": -4, "completion_tokens": True, "total_tokens": "12",
        "prompt_tokens_details": [1], "completion_tokens_details": {"reasoning_tokens": 1.5}}})
    assert reader.result() == Usage(usage_missing=True, usage_implausible=True)
    reader.feed_json({"usage": {"prompt_tokens": 7.0, "completion_tokens": 10**15}})
    assert (reader.result().input_tokens, reader.result().output_tokens) == (7, None)
    assert reader.result().usage_implausible


def test_plain_counts_are_not_flagged():
    reader = ChatCompletionsReader()
    reader.feed_json({"usage": {"prompt_tokens": 7, "completion_tokens": None}})
    assert (reader.result().input_tokens, reader.result().output_tokens) == (7, None)
    assert not reader.result().usage_implausible


KEYS = [
    "usage", "model", "id", "type", "message", "response", "usageMetadata", "metadata", "x_groq",
    "prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "cached_tokens",
    "cache_write_tokens", "completion_tokens_details", "reasoning_tokens", "prompt_cache_hit_tokens",
    "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details",
    "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation",
    "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "promptTokenCount",
    "cachedContentTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
    "toolUsePromptTokenCount", "modelVersion", "responseId", "inputTokens", "outputTokens",
    "cacheReadInputTokens", "cacheWriteInputTokens", "prompt_eval_count", "eval_count",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), children, max_size=6),
    max_leaves=30,
)


def _check(usage: Usage) -> None:
    assert isinstance(usage, Usage)
    for field in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                  "cache_write_1h_tokens", "reasoning_tokens"):
        value = getattr(usage, field)
        assert value is None or (type(value) is int and value >= 0)
    assert usage.usage_missing == (usage.input_tokens is None and usage.output_tokens is None)


@settings(max_examples=300, deadline=None)
@given(
    reader_class=st.sampled_from(ALL_READERS),
    values=st.lists(json_values, max_size=5),
    texts=st.lists(st.text(max_size=30), max_size=3),
)
def test_fuzz_readers_only_raise_parse_error(reader_class, values, texts):
    reader = reader_class()
    for value in values:
        reader.feed_json(value)
        reader.feed_ndjson(value)
        try:
            reader.feed_sse("message", json.dumps(value))
        except ParseError:
            pass
    for text in texts:
        try:
            reader.feed_sse(None, text)
        except ParseError:
            pass
    _check(reader.result())


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["POST", "GET", "post"]) | st.text(max_size=5),
    path=st.text(max_size=60) | st.sampled_from(["/v1/chat/completions", "http://[x/a", "/model/%zz/converse"]),
    host=st.none() | st.text(max_size=20) | st.sampled_from(["[::1]:11434", "h:99999999999", "api.openai.com:"]),
    headers=st.dictionaries(st.sampled_from(["host", ":authority", "anthropic-version"]), st.text(max_size=10)),
    body=json_values,
)
def test_fuzz_identify_never_raises(method, path, host, headers, body):
    info = identify(method, path, host, headers, body)
    if info is not None:
        assert isinstance(usage_reader(info), UsageReader)
