"""A local TLS server that answers like the LLM providers' APIs.

Real clients (curl, the openai and anthropic SDKs, Node.js fetch) are pointed at
it; every answer uses the provider's real wire format (modelled on the recorded
bodies in shared/fixtures/wire/) with deterministic token counts, so a test can
assert exact numbers: see ``SCENARIOS``, ``expected()`` and ``EXPECTED``.

Routes (any query string is ignored for routing; ``?beta=true`` etc. are fine):

    POST /v1/chat/completions                 OpenAI chat (JSON, or SSE when "stream": true;
                                              usage chunk only with stream_options.include_usage)
    POST /v1/responses                        OpenAI Responses (JSON, or SSE response.created ... response.completed)
    POST /v1/embeddings                       OpenAI embeddings (float list, or base64 when asked)
    POST /v1/messages                         Anthropic Messages (JSON, or SSE message_start ... message_stop)
    POST /v1beta/models/M:generateContent     Gemini (JSON)
    POST /v1beta/models/M:streamGenerateContent[?alt=sse]   Gemini stream (SSE with alt=sse, else a JSON array)
    POST /v1/projects/P/locations/L/publishers/google/models/M:generateContent|streamGenerateContent
                                              Gemini on Vertex AI (same bodies)
    POST /v1/projects/P/locations/L/publishers/anthropic/models/M:rawPredict|streamRawPredict
                                              Anthropic on Vertex AI (Messages bodies; SSE for streamRawPredict)
    POST /model/ID/converse                   Bedrock Converse (JSON)
    POST /model/ID/converse-stream            Bedrock ConverseStream (application/vnd.amazon.eventstream)
    POST /model/ID/invoke                     Bedrock InvokeModel (Anthropic body + x-amzn-bedrock-*-token-count)
    POST /model/ID/invoke-with-response-stream  Bedrock InvokeModelWithResponseStream (event stream of
                                              base64 Anthropic events, invocation metrics on the last)
    POST /api/chat                            Ollama native chat (NDJSON stream unless "stream": false;
                                              needs no credentials, like a local Ollama)
    anything else (GET /healthz, ...)         200 text/plain "ok" -- non-LLM traffic

Knobs, as request headers (or query parameters ``fake_<name>`` with ``-`` -> ``_``):

    x-fake-status: 429          answer with that status and the provider's error JSON
    x-fake-encoding: gzip       Content-Encoding gzip|deflate|br|zstd, only if the request's
                                Accept-Encoding allows it (else identity)
    x-fake-transfer: chunked    chunked | length (Content-Length) | close (read until close).
                                Default: chunked for streams, length otherwise
    x-fake-chunks: 100          number of text deltas in a stream (= visible output tokens)
    x-fake-usage: input=1200,cache_read=1000,output=50
                                override token counts (normalised names, see Tokens)
    x-fake-delay-ms: 20         sleep between stream events
    x-fake-ttft-ms: 200         sleep before the response starts
    x-fake-abort-after: 3       send that many body pieces, then drop the connection
    x-fake-h2-never-index: 1    HTTP/2: response headers as never-indexed HPACK literals

Requests without credentials (Authorization / x-api-key / x-goog-api-key) get a
401 like the real APIs. Keep-alive works: one connection serves many requests.

With ``--http2`` (``http2=True``) the server also offers HTTP/2 in ALPN (h2 first,
http/1.1 still served to clients that ask for it) and answers the same bodies over
it, many streams at once on one connection; this part needs the ``h2`` package.

Run it as a subprocess:

    python tests/support/fake_provider.py --port 0 --cert server.pem --key server.key \
        --ready-file port.txt [--host 127.0.0.1] [--log served.jsonl]
    python tests/support/fake_provider.py --plain ...   # plain HTTP (a local model server, a gateway)

(``python -m tests.support.fake_provider`` works too from the repository root),
or in process: ``with FakeProvider(cert, key) as fp: fp.port``; or ``spawn(certs)``
to start the subprocess and wait until it listens. This file imports only the
standard library (brotli/zstandard lazily, for those encodings).
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

try:
    from support.fake_batches import batch_download
except ImportError:  # run as a script: tests/support itself is on sys.path
    from fake_batches import batch_download

# --------------------------------------------------------------------------------------
# Deterministic token counts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts in the row's normalised terms (DESIGN.md section 3).

    ``input`` counts every prompt token, cache reads and writes included;
    ``output`` every generated token, reasoning included.
    """

    input: int
    output: int
    cache_read: int = 0
    cache_write_5m: int = 0  # Anthropic cache_creation.ephemeral_5m_input_tokens
    cache_write_1h: int = 0  # Anthropic cache_creation.ephemeral_1h_input_tokens
    reasoning: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def visible_output(self) -> int:
        return self.output - self.reasoning


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    provider: str
    endpoint: str
    method: str
    path: str  # default request path
    streaming: bool
    request_model: str  # model a test should ask for
    tokens: Tokens | None  # None: the response carries no usage
    chunks_tokens: Tokens | None = None  # counts used to size a stream without usage


# Model the real API names in its response for a requested alias.
MODEL_ALIASES: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "o3": "o3-2025-04-16",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-sonnet-4-5@20250929": "claude-sonnet-4-5-20250929",  # Vertex names versions with "@"
}


def response_model(request_model: str, endpoint: str | None = None) -> str:
    """The model the response names (for Converse, which names none, the row
    keeps the request's model id)."""
    if endpoint in ("invoke", "invoke-with-response-stream"):
        return bedrock_inner_model(request_model)
    return MODEL_ALIASES.get(request_model, request_model)


def bedrock_inner_model(model_id: str) -> str:
    """The vendor's own model name in an InvokeModel body:
    us.anthropic.claude-sonnet-4-5-20250929-v1:0 -> claude-sonnet-4-5-20250929."""
    if model_id.count(".") >= 2:
        return model_id.split(".", 2)[-1].rsplit("-v", 1)[0]
    return model_id


_CHAT_STREAM = Tokens(input=78, output=9)  # the recorded gpt-4o-mini stream
VERTEX_PREFIX = "/v1/projects/fake-project/locations/us-east5/publishers"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"  # a cross-region inference profile
BEDROCK_MODEL_PATH = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"  # as botocore quotes it

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("openai.chat", "openai", "chat.completions", "POST", "/v1/chat/completions", False,
                 "gpt-4o-mini", Tokens(input=1300, cache_read=1024, output=12)),
        Scenario("openai.chat.stream", "openai", "chat.completions", "POST", "/v1/chat/completions", True,
                 "gpt-4o-mini", _CHAT_STREAM),
        Scenario("openai.chat.stream_no_usage", "openai", "chat.completions", "POST", "/v1/chat/completions",
                 True, "gpt-4o-mini", None, chunks_tokens=_CHAT_STREAM),
        Scenario("openai.responses", "openai", "responses", "POST", "/v1/responses", False,
                 "gpt-5-mini", Tokens(input=2200, cache_read=2048, output=340, reasoning=320)),
        Scenario("openai.responses.stream", "openai", "responses", "POST", "/v1/responses", True,
                 "gpt-5-mini", Tokens(input=1500, cache_read=1280, output=150, reasoning=128)),
        Scenario("openai.embeddings", "openai", "embeddings", "POST", "/v1/embeddings", False,
                 "text-embedding-3-small", Tokens(input=4, output=0)),
        Scenario("anthropic.messages", "anthropic", "messages", "POST", "/v1/messages", False,
                 "claude-sonnet-4-5",
                 Tokens(input=25 + 2000 + 500 + 200, cache_read=2000, cache_write_5m=500, cache_write_1h=200,
                        output=60)),
        Scenario("anthropic.messages.stream", "anthropic", "messages", "POST", "/v1/messages", True,
                 "claude-sonnet-4-5",
                 Tokens(input=20 + 1500 + 300, cache_read=1500, cache_write_5m=300, output=12)),
        Scenario("gemini.generateContent", "google", "generateContent", "POST",
                 "/v1beta/models/gemini-2.5-flash:generateContent", False,
                 "gemini-2.5-flash", Tokens(input=1200, cache_read=1024, output=40 + 64, reasoning=64)),
        Scenario("gemini.streamGenerateContent", "google", "streamGenerateContent", "POST",
                 "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", True,
                 "gemini-2.5-flash", Tokens(input=18, output=80 + 35, reasoning=35)),
        Scenario("vertex.generateContent", "google", "generateContent", "POST",
                 VERTEX_PREFIX + "/google/models/gemini-2.5-flash:generateContent", False,
                 "gemini-2.5-flash", Tokens(input=1200, cache_read=1024, output=40 + 64, reasoning=64)),
        Scenario("vertex.streamGenerateContent", "google", "streamGenerateContent", "POST",
                 VERTEX_PREFIX + "/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse", True,
                 "gemini-2.5-flash", Tokens(input=18, output=80 + 35, reasoning=35)),
        Scenario("vertex.rawPredict", "google", "messages", "POST",
                 VERTEX_PREFIX + "/anthropic/models/claude-sonnet-4-5@20250929:rawPredict", False,
                 "claude-sonnet-4-5@20250929", Tokens(input=40 + 1000, cache_read=1000, output=30)),
        Scenario("vertex.streamRawPredict", "google", "messages", "POST",
                 VERTEX_PREFIX + "/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict", True,
                 "claude-sonnet-4-5@20250929", Tokens(input=33, output=12)),
        # The recorded Converse call (shared/fixtures/wire/bedrock_converse_nonstream.txt).
        Scenario("bedrock.converse", "bedrock", "converse", "POST",
                 "/model/" + BEDROCK_MODEL_PATH + "/converse", False,
                 BEDROCK_MODEL, Tokens(input=2 + 1322, cache_read=1322, output=5)),
        Scenario("bedrock.converse-stream", "bedrock", "converse-stream", "POST",
                 "/model/" + BEDROCK_MODEL_PATH + "/converse-stream", True,
                 BEDROCK_MODEL, Tokens(input=25 + 300, cache_write_5m=300, output=10)),
        Scenario("bedrock.invoke", "bedrock", "invoke", "POST",
                 "/model/" + BEDROCK_MODEL_PATH + "/invoke", False,
                 BEDROCK_MODEL, Tokens(input=50 + 400, cache_read=400, output=20)),
        Scenario("bedrock.invoke-with-response-stream", "bedrock", "invoke-with-response-stream", "POST",
                 "/model/" + BEDROCK_MODEL_PATH + "/invoke-with-response-stream", True,
                 BEDROCK_MODEL, Tokens(input=60, output=10)),
        Scenario("ollama.chat", "ollama", "chat", "POST", "/api/chat", False, "llama3.2", Tokens(input=26, output=7)),
        Scenario("ollama.chat.stream", "ollama", "chat", "POST", "/api/chat", True, "llama3.2",
                 Tokens(input=31, output=12)),
    )
}


def wire_usage(scenario: str, tokens: Tokens) -> dict[str, Any]:
    """The usage object exactly as the provider puts it on the wire."""
    provider = SCENARIOS[scenario].provider
    endpoint = SCENARIOS[scenario].endpoint
    t = tokens
    if provider == "openai" and endpoint == "chat.completions":
        return {
            "prompt_tokens": t.input,
            "completion_tokens": t.output,
            "total_tokens": t.input + t.output,
            "prompt_tokens_details": {"cached_tokens": t.cache_read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": t.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    if provider == "openai" and endpoint == "responses":
        return {
            "input_tokens": t.input,
            "input_tokens_details": {"cached_tokens": t.cache_read},
            "output_tokens": t.output,
            "output_tokens_details": {"reasoning_tokens": t.reasoning},
            "total_tokens": t.input + t.output,
        }
    if provider == "openai" and endpoint == "embeddings":
        return {"prompt_tokens": t.input, "total_tokens": t.input}
    if provider == "bedrock" and endpoint.startswith("converse"):
        return {
            "inputTokens": t.input - t.cache_read - t.cache_write,  # Converse excludes cache tokens
            "outputTokens": t.output,
            "totalTokens": t.input + t.output,
            "cacheReadInputTokens": t.cache_read,
            "cacheWriteInputTokens": t.cache_write,
        }
    if provider == "anthropic" or endpoint in ("messages", "invoke", "invoke-with-response-stream"):
        return {
            "input_tokens": t.input - t.cache_read - t.cache_write,  # Anthropic excludes cache tokens
            "cache_creation_input_tokens": t.cache_write,
            "cache_read_input_tokens": t.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": t.cache_write_5m,
                "ephemeral_1h_input_tokens": t.cache_write_1h,
            },
            "output_tokens": t.output,
            "service_tier": "standard",
        }
    if provider == "google" and endpoint != "messages":
        meta: dict[str, Any] = {
            "promptTokenCount": t.input,  # includes cachedContentTokenCount
            "candidatesTokenCount": t.visible_output,  # thoughts are counted apart
            "totalTokenCount": t.input + t.output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": t.input}],
        }
        if t.cache_read:
            meta["cachedContentTokenCount"] = t.cache_read
            meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": t.cache_read}]
        if t.reasoning:
            meta["thoughtsTokenCount"] = t.reasoning
        return meta
    if provider == "ollama":
        return {"prompt_eval_count": t.input, "eval_count": t.output}
    raise KeyError(scenario)


def _tokens_for(scenario: str, chunks: int | None, usage: dict[str, int] | None) -> tuple[Tokens | None, int]:
    """(usage to report or None, number of text deltas) for a request."""
    s = SCENARIOS[scenario]
    base = s.tokens or s.chunks_tokens
    assert base is not None
    if usage:
        base = replace(base, **usage)
    if chunks is not None and not (usage and "output" in usage):
        base = replace(base, output=base.reasoning + chunks)
    if base.cache_read + base.cache_write > base.input or base.reasoning > base.output:
        raise ValueError(f"inconsistent token counts {base}: cache tokens are part of input, reasoning of output")
    n = chunks if chunks is not None else base.visible_output
    return (base if s.tokens is not None else None), max(n, 0)


def expected(
    scenario: str,
    *,
    chunks: int | None = None,
    usage: dict[str, int] | None = None,
    request_model: str | None = None,
) -> dict[str, Any]:
    """What one call of ``scenario`` must produce, in row terms (DESIGN.md section 3).

    ``chunks``/``usage``/``request_model`` mirror the x-fake-chunks / x-fake-usage
    knobs and the model a test asked for. Token fields are None when the response
    carries no usage (a chat stream without include_usage).
    """
    s = SCENARIOS[scenario]
    tokens, n = _tokens_for(scenario, chunks, usage)
    req_model = request_model or s.request_model
    out: dict[str, Any] = {
        "provider": s.provider,
        "endpoint": s.endpoint,
        "path": s.path,
        "streaming": s.streaming,
        "request_model": req_model,
        "model": response_model(req_model, s.endpoint),
        "status_code": 200,
        "input_tokens": None,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "output_tokens": None,
        "reasoning_tokens": None,
        "chunks": n if s.streaming else None,
        "wire_usage": None,
    }
    if tokens is not None:
        out.update(
            input_tokens=tokens.input,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
            output_tokens=tokens.output,
            reasoning_tokens=tokens.reasoning,
            wire_usage=wire_usage(scenario, tokens),
        )
    return out


EXPECTED: dict[str, dict[str, Any]] = {name: expected(name) for name in SCENARIOS}

TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")

# --------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------

ENCODINGS = ("gzip", "deflate", "br", "zstd", "identity")
TRANSFERS = ("chunked", "length", "close")
MAX_CHUNKS = 100_000  # a bound so a typo cannot make the server stream forever
MAX_REQUEST_BODY = 64 * 1024 * 1024
USAGE_KEYS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning")


@dataclass(frozen=True, slots=True)
class Knobs:
    status: int | None = None
    encoding: str | None = None
    transfer: str | None = None
    chunks: int | None = None
    usage: dict[str, int] | None = None
    delay_ms: int = 0
    ttft_ms: int = 0
    abort_after: int | None = None


def parse_usage_knob(text: str) -> dict[str, int]:
    """``"input=1200,cache_read=1000,output=50"`` -> dict; unknown keys raise ValueError."""
    out: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in USAGE_KEYS:
            raise ValueError(f"unknown usage key {key!r}; use {', '.join(USAGE_KEYS)}")
        out[key] = int(value)
    return out


def _knobs(headers: Any, query: dict[str, list[str]]) -> Knobs:
    def get(name: str) -> str | None:
        value = headers.get(f"x-fake-{name}")
        if value is None:
            values = query.get("fake_" + name.replace("-", "_"))
            value = values[-1] if values else None
        return value.strip() if value is not None else None

    def num(name: str) -> int | None:
        value = get(name)
        return int(value) if value not in (None, "") else None

    encoding = get("encoding")
    if encoding is not None and encoding.lower() not in ENCODINGS:
        raise ValueError(f"x-fake-encoding must be one of {ENCODINGS}")
    transfer = get("transfer")
    if transfer is not None and transfer.lower() not in TRANSFERS:
        raise ValueError(f"x-fake-transfer must be one of {TRANSFERS}")
    chunks = num("chunks")
    if chunks is not None and not 0 <= chunks <= MAX_CHUNKS:
        raise ValueError(f"x-fake-chunks must be 0..{MAX_CHUNKS}")
    usage = get("usage")
    return Knobs(
        status=num("status"),
        encoding=encoding.lower() if encoding else None,
        transfer=transfer.lower() if transfer else None,
        chunks=chunks,
        usage=parse_usage_knob(usage) if usage else None,
        delay_ms=num("delay-ms") or 0,
        ttft_ms=num("ttft-ms") or 0,
        abort_after=num("abort-after"),
    )


# --------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------

CREATED = 1767225600  # fixed timestamp (2026-01-01T00:00:00Z): bodies are reproducible
WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")


def _text(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode() + b"\n"


def _rid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    pieces: list[bytes]  # one entry per write (an SSE event, or the whole JSON body)
    scenario: str | None = None
    request_id: str | None = None
    model: str | None = None
    tokens: Tokens | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _openai_headers(request_id: str, content_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("x-request-id", request_id),
        ("openai-organization", "user-fake-org"),
        ("openai-processing-ms", "42"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
    ]


def _anthropic_headers(request_id: str, content_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("request-id", request_id),
        ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
    ]


def _google_headers(request_id: str, content_type: str) -> list[tuple[str, str]]:
    return [("Content-Type", content_type), ("x-goog-request-id", request_id), ("Vary", "Origin")]


SSE_TYPE = "text/event-stream; charset=utf-8"
JSON_TYPE = "application/json"


def openai_chat(scenario: str, model: str, tokens: Tokens | None, n: int) -> list[bytes]:
    cid = "chatcmpl-" + uuid.uuid4().hex[:29]
    fp = "fp_f000fake00"
    if not SCENARIOS[scenario].streaming:
        assert tokens is not None
        return [_json({
            "id": cid,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "".join(_text(tokens.visible_output)),
                            "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": wire_usage(scenario, tokens),
            "service_tier": "default",
            "system_fingerprint": fp,
        })]

    def chunk(delta: dict[str, Any], finish: str | None, choices: bool = True, usage: Any = None) -> bytes:
        obj: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "service_tier": "default", "system_fingerprint": fp,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
        }
        if tokens is not None:
            obj["usage"] = usage
        return _sse(obj)

    pieces = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    pieces += [chunk({"content": word}, None) for word in _text(n)]
    pieces.append(chunk({}, "stop"))
    if tokens is not None:
        pieces.append(chunk({}, None, choices=False, usage=wire_usage(scenario, tokens)))
    pieces.append(_sse("[DONE]"))
    return pieces


def _response_object(rid: str, model: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": rid, "object": "response", "created_at": CREATED, "status": status,
        "background": False, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": None, "max_tool_calls": None, "model": model, "output": output,
        "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": {"effort": "medium", "summary": None}, "safety_identifier": None,
        "service_tier": "default", "store": True, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [],
        "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }


def openai_responses(scenario: str, model: str, tokens: Tokens | None, n: int) -> list[bytes]:
    assert tokens is not None
    rid = "resp_" + uuid.uuid4().hex * 2
    rs_id = "rs_" + uuid.uuid4().hex * 2
    msg_id = "msg_" + uuid.uuid4().hex * 2
    words = _text(n if SCENARIOS[scenario].streaming else tokens.visible_output)
    text = "".join(words)
    reasoning_item = {"id": rs_id, "type": "reasoning", "summary": []}
    message_done = {
        "id": msg_id, "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
    }
    usage = wire_usage(scenario, tokens)
    if not SCENARIOS[scenario].streaming:
        return [_json(_response_object(rid, model, "completed", [reasoning_item, message_done], usage))]

    seq = iter(range(1_000_000))

    def ev(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    part_empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    message_start = {"id": msg_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    pieces = [
        ev("response.created", response=_response_object(rid, model, "in_progress", [], None)),
        ev("response.in_progress", response=_response_object(rid, model, "in_progress", [], None)),
        ev("response.output_item.added", output_index=0, item=reasoning_item),
        ev("response.output_item.done", output_index=0, item=reasoning_item),
        ev("response.output_item.added", output_index=1, item=message_start),
        ev("response.content_part.added", item_id=msg_id, output_index=1, content_index=0, part=part_empty),
    ]
    pieces += [
        ev("response.output_text.delta", item_id=msg_id, output_index=1, content_index=0, delta=w, logprobs=[])
        for w in words
    ]
    pieces += [
        ev("response.output_text.done", item_id=msg_id, output_index=1, content_index=0, text=text, logprobs=[]),
        ev("response.content_part.done", item_id=msg_id, output_index=1, content_index=0,
           part={**part_empty, "text": text}),
        ev("response.output_item.done", output_index=1, item=message_done),
        ev("response.completed",
           response=_response_object(rid, model, "completed", [reasoning_item, message_done], usage)),
    ]
    return pieces


EMBEDDING_DIMENSIONS = 1536


def embedding_vector(dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit-ish vector, exactly representable as float32."""
    return [((i * 37) % 101 - 50) / 1024.0 for i in range(dimensions)]


def openai_embeddings(scenario: str, model: str, tokens: Tokens | None, request: dict[str, Any]) -> list[bytes]:
    assert tokens is not None
    inputs = request.get("input", "")
    count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    dims = int(request.get("dimensions") or EMBEDDING_DIMENSIONS)
    vector = embedding_vector(dims)
    if request.get("encoding_format") == "base64":
        embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
    else:
        embedding = vector
    return [_json({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embedding} for i in range(count)],
        "model": model,
        "usage": wire_usage(scenario, tokens),
    })]


def anthropic_messages(scenario: str, model: str, tokens: Tokens | None, n: int) -> list[bytes]:
    assert tokens is not None
    mid = "msg_01" + uuid.uuid4().hex[:22]
    usage = wire_usage(scenario, tokens)
    if not SCENARIOS[scenario].streaming:
        return [_json({
            "id": mid, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "".join(_text(tokens.visible_output))}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": usage,
        })]
    start_usage = {**usage, "output_tokens": 1}  # as recorded: the start carries output_tokens 1
    final_usage = {k: usage[k] for k in
                   ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")}
    pieces = [
        _sse({"type": "message_start", "message": {
            "model": model, "id": mid, "type": "message", "role": "assistant", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    pieces += [
        _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
             "content_block_delta")
        for w in _text(n)
    ]
    pieces += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": final_usage}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return pieces


def gemini(scenario: str, model: str, tokens: Tokens | None, n: int, sse: bool) -> list[bytes]:
    assert tokens is not None
    response_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:15]).decode()

    def candidate(text: str, done: bool) -> dict[str, Any]:
        c: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if done:
            c["finishReason"] = "STOP"
        return c

    if not SCENARIOS[scenario].streaming:
        return [_json({
            "candidates": [candidate("".join(_text(tokens.visible_output)), True)],
            "usageMetadata": wire_usage(scenario, tokens),
            "modelVersion": model, "responseId": response_id,
        })]
    words = _text(n) or [""]
    objs = []
    for i, w in enumerate(words):
        # Every chunk carries cumulative usage; the last one is final.
        partial = replace(tokens, output=tokens.reasoning + (i + 1) * tokens.visible_output // len(words))
        objs.append({"candidates": [candidate(w, i == len(words) - 1)],
                     "usageMetadata": wire_usage(scenario, partial),
                     "modelVersion": model, "responseId": response_id})
    if sse:
        return [_sse(o) for o in objs]
    texts = [json.dumps(o) for o in objs]
    return [("[" if i == 0 else ",\r\n") .encode() + t.encode() for i, t in enumerate(texts)] + [b"]"]


def _eventstream(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only), CRCs included.
    Written out here because this file imports only the standard library."""
    block = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(block) + len(payload), len(block))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + block + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _aws_event(event_type: str, payload: dict[str, Any]) -> bytes:
    # Bedrock pads every payload with a "p" field of varying length.
    body = dict(payload, p="abcdefghijklmnopqrstuvwxyzABCDEF"[: 1 + len(event_type)])
    return _eventstream({":event-type": event_type, ":content-type": "application/json",
                         ":message-type": "event"}, json.dumps(body, separators=(",", ":")).encode())


def bedrock(scenario: str, model: str, tokens: Tokens | None, n: int) -> list[bytes]:
    assert tokens is not None
    endpoint = SCENARIOS[scenario].endpoint
    usage = wire_usage(scenario, tokens)
    if endpoint == "converse":
        return [_json({
            "metrics": {"latencyMs": 1990},
            "output": {"message": {"content": [{"text": "".join(_text(tokens.visible_output))}],
                                   "role": "assistant"}},
            "stopReason": "end_turn",
            "usage": {**usage, "serverToolUsage": {}},
        })]
    if endpoint == "converse-stream":
        pieces = [_aws_event("messageStart", {"role": "assistant"})]
        pieces += [_aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}})
                   for w in _text(n)]
        pieces += [_aws_event("contentBlockStop", {"contentBlockIndex": 0}),
                   _aws_event("messageStop", {"stopReason": "end_turn"}),
                   _aws_event("metadata", {"usage": usage, "metrics": {"latencyMs": 812}})]
        return pieces
    # InvokeModel: the Anthropic Messages body (model: response_model names the vendor's own).
    events = anthropic_messages(scenario, model, tokens, n)
    if endpoint == "invoke":
        body = json.loads(events[0])
        body["usage"] = usage
        return [_json(body)]
    out = []
    for piece in events:
        data = json.loads(piece.decode().split("data: ", 1)[1])
        if data.get("type") == "message_stop":
            data["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": usage["input_tokens"], "outputTokenCount": usage["output_tokens"],
                "invocationLatency": 640, "firstByteLatency": 210}
        if data.get("type") == "ping":
            continue  # Bedrock does not forward Anthropic's pings
        out.append(_aws_event("chunk", {"bytes": base64.b64encode(json.dumps(data).encode()).decode()}))
    return out


def _bedrock_headers(request_id: str, content_type: str, tokens: Tokens | None = None,
                     invoke: bool = False) -> list[tuple[str, str]]:
    headers = [("Content-Type", content_type), ("x-amzn-RequestId", request_id)]
    if invoke and tokens is not None:
        headers += [
            ("X-Amzn-Bedrock-Input-Token-Count", str(tokens.input - tokens.cache_read - tokens.cache_write)),
            ("X-Amzn-Bedrock-Output-Token-Count", str(tokens.output)),
            ("X-Amzn-Bedrock-Cache-Read-Input-Token-Count", str(tokens.cache_read)),
            ("X-Amzn-Bedrock-Cache-Write-Input-Token-Count", str(tokens.cache_write)),
            ("X-Amzn-Bedrock-Invocation-Latency", "640"),
        ]
    return headers


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request (fake provider)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-test-****0000."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden (fake provider)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (fake provider)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (fake provider)."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
}


def ollama_chat(scenario: str, model: str, tokens: Tokens | None, n: int) -> list[bytes]:
    """Ollama's /api/chat: one JSON object, or NDJSON deltas and a final object with the counts."""
    created = "2025-01-01T00:00:00.000000Z"
    final = {"model": model, "created_at": created, "message": {"role": "assistant", "content": ""},
             "done_reason": "stop", "done": True, "total_duration": 123456789, "load_duration": 1234567,
             **(wire_usage(scenario, tokens) if tokens else {}),
             "prompt_eval_duration": 2345678, "eval_duration": 3456789}
    if not SCENARIOS[scenario].streaming:
        final["message"]["content"] = "".join(_text(n))
        return [_json(final)]
    def line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    pieces = [line({"model": model, "created_at": created, "message": {"role": "assistant", "content": text},
                    "done": False}) for text in _text(n)]
    return pieces + [line(final)]


def error_reply(provider: str, status: int, request_id: str) -> Reply:
    if provider == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": f"{kind} (fake provider)"},
                "request_id": request_id}
        headers = _anthropic_headers(request_id, JSON_TYPE)
    elif provider == "bedrock":
        kind = {429: "ThrottlingException", 400: "ValidationException", 403: "AccessDeniedException",
                404: "ResourceNotFoundException"}.get(status, "InternalServerException")
        body = {"message": f"{kind} (fake provider)"}
        headers = _bedrock_headers(request_id, JSON_TYPE) + [("x-amzn-ErrorType", f"{kind}:http://internal.amazon.com/")]
    elif provider == "google":
        body = {"error": {"code": status, "message": "error (fake provider)",
                          "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}}
        headers = _google_headers(request_id, "application/json; charset=UTF-8")
    else:
        kind, code, message = _OPENAI_ERRORS.get(status, ("server_error", None, "error (fake provider)"))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        headers = _openai_headers(request_id, JSON_TYPE)
    return Reply(status, headers, [_json(body)], request_id=request_id, info={"error": True})


# --------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------


def route(method: str, path: str) -> tuple[str, str] | None:
    """(provider, endpoint) for an LLM path, None for anything else."""
    if method != "POST":
        return None
    if path == "/v1/chat/completions":
        return "openai", "chat.completions"
    if path == "/v1/responses":
        return "openai", "responses"
    if path == "/v1/embeddings":
        return "openai", "embeddings"
    if path == "/v1/messages":
        return "anthropic", "messages"
    if path.startswith("/model/"):
        action = path.rsplit("/", 1)[-1]
        if action in ("converse", "converse-stream", "invoke", "invoke-with-response-stream"):
            return "bedrock", action
    if path.startswith("/v1/projects/") and "/publishers/anthropic/models/" in path:
        if path.endswith(":rawPredict"):
            return "vertex-anthropic", "rawPredict"
        if path.endswith(":streamRawPredict"):
            return "vertex-anthropic", "streamRawPredict"
    if path.startswith(("/v1beta/models/", "/v1/models/", "/v1/projects/")):
        if path.endswith(":generateContent"):
            return "google", "generateContent"
        if path.endswith(":streamGenerateContent"):
            return "google", "streamGenerateContent"
    if path == "/api/chat":
        return "ollama", "chat"
    return None


def _has_credentials(provider: str, headers: Any, query: dict[str, list[str]]) -> bool:
    if provider == "bedrock":  # SigV4 (boto3) or a Bedrock API key (bearer)
        return bool(headers.get("authorization"))
    if provider == "vertex-anthropic":
        return (headers.get("authorization") or "").lower().startswith("bearer ")
    if provider == "ollama":
        return True  # a local Ollama asks for no key
    if provider == "anthropic":
        return bool(headers.get("x-api-key") or headers.get("authorization"))
    if provider == "google":
        return bool(headers.get("x-goog-api-key") or query.get("key") or headers.get("authorization"))
    return (headers.get("authorization") or "").lower().startswith("bearer ")


def build_reply(method: str, target: str, headers: Any, body: bytes) -> Reply:
    """The whole answer to one request (pure apart from fresh ids)."""
    url = urlsplit(target)
    query = parse_qs(url.query)
    download = batch_download(method, url.path, headers.get("host") or "localhost")  # GET, fake_batches.py
    if download is not None:
        return Reply(200, download[0], [download[1]], info={"batch_download": True})
    routed = route(method, url.path)
    if routed is None:
        return Reply(200, [("Content-Type", "text/plain; charset=utf-8")], [b"ok\n"], info={"non_llm": True})
    provider, endpoint = routed
    reply = _build_llm_reply(provider, endpoint, url.path, query, headers, body)
    reply.info.update(provider=provider, endpoint=endpoint)
    return reply


def _build_llm_reply(provider: str, endpoint: str, path: str, query: dict[str, list[str]], headers: Any,
                     body: bytes) -> Reply:
    request_id = {"openai": lambda: _rid("req_"), "anthropic": lambda: "req_011C" + uuid.uuid4().hex[:20],
                  "google": lambda: uuid.uuid4().hex, "vertex-anthropic": lambda: uuid.uuid4().hex,
                  "bedrock": lambda: str(uuid.uuid4()), "ollama": lambda: ""}[provider]()
    try:
        knobs = _knobs(headers, query)
        request = json.loads(body) if body.strip() else {}
        if not isinstance(request, dict):
            raise ValueError("request body must be a JSON object")
    except ValueError as exc:
        reply = error_reply(provider, 400, request_id)
        reply.info["reason"] = str(exc)
        return reply
    if knobs.status is not None and knobs.status != 200:
        reply = error_reply(provider, knobs.status, request_id)
        reply.info["knobs"] = asdict(knobs)
        return reply
    if not _has_credentials(provider, headers, query):
        return error_reply(provider, 401, request_id)

    if provider == "google":
        request_model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        family = "vertex" if path.startswith("/v1/projects/") else "gemini"
        scenario = f"{family}.streamGenerateContent" if endpoint == "streamGenerateContent" else f"{family}.generateContent"
    elif provider == "vertex-anthropic":
        request_model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        scenario = "vertex." + endpoint
    elif provider == "bedrock":
        request_model = unquote(path.split("/")[2])
        scenario = "bedrock." + endpoint
    else:
        request_model = str(request.get("model") or SCENARIOS[f"{provider}.{endpoint.split('.')[0]}"].request_model)
        stream = bool(request.get("stream"))
        if endpoint == "chat.completions":
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            scenario = "openai.chat" + ("" if not stream else ".stream" if include_usage else ".stream_no_usage")
        elif endpoint == "responses":
            scenario = "openai.responses" + (".stream" if stream else "")
        elif endpoint == "embeddings":
            scenario = "openai.embeddings"
        elif provider == "ollama":
            stream = request.get("stream") is not False  # Ollama streams by default
            scenario = "ollama.chat" + (".stream" if stream else "")
        else:
            scenario = "anthropic.messages" + (".stream" if stream else "")
    model = response_model(request_model, endpoint)
    try:
        tokens, n = _tokens_for(scenario, knobs.chunks, knobs.usage)
    except ValueError as exc:
        reply = error_reply(provider, 400, request_id)
        reply.info["reason"] = str(exc)
        return reply
    streaming = SCENARIOS[scenario].streaming

    if scenario.startswith("openai.chat"):
        pieces = openai_chat(scenario, model, tokens, n)
    elif scenario.startswith("openai.responses"):
        pieces = openai_responses(scenario, model, tokens, n)
    elif scenario == "openai.embeddings":
        pieces = openai_embeddings(scenario, model, tokens, request)
    elif scenario.startswith("anthropic"):
        pieces = anthropic_messages(scenario, model, tokens, n)
    elif scenario in ("vertex.rawPredict", "vertex.streamRawPredict"):
        # Anthropic on Vertex: the Messages bodies (the model named without "@version").
        pieces = anthropic_messages(scenario, model, tokens, n)
        content_type = SSE_TYPE if SCENARIOS[scenario].streaming else JSON_TYPE
        return Reply(200, _google_headers(request_id, content_type), pieces, scenario, request_id, model, tokens,
                     {"knobs": asdict(knobs), "request_model": request_model, "chunks": n})
    elif provider == "bedrock":
        pieces = bedrock(scenario, model, tokens, n)
        streaming = SCENARIOS[scenario].streaming
        content_type = "application/vnd.amazon.eventstream" if streaming else JSON_TYPE
        return Reply(200, _bedrock_headers(request_id, content_type, tokens, invoke=endpoint == "invoke"), pieces,
                     scenario, request_id, model, tokens,
                     {"knobs": asdict(knobs), "request_model": request_model, "chunks": n})
    elif scenario.startswith("ollama"):
        pieces = ollama_chat(scenario, model, tokens, n)
        content_type = "application/x-ndjson" if streaming else "application/json; charset=utf-8"
        return Reply(200, [("Content-Type", content_type)], pieces, scenario, None, model, tokens,
                     {"knobs": asdict(knobs), "request_model": request_model, "chunks": n})
    else:
        sse = streaming and query.get("alt", [""])[-1] == "sse"
        pieces = gemini(scenario, model, tokens, n, sse)
        content_type = SSE_TYPE if sse else "application/json; charset=UTF-8"
        return Reply(200, _google_headers(request_id, content_type), pieces, scenario, request_id, model, tokens,
                     {"knobs": asdict(knobs), "request_model": request_model, "chunks": n})
    content_type = SSE_TYPE if streaming else JSON_TYPE
    make_headers = _anthropic_headers if provider == "anthropic" else _openai_headers
    return Reply(200, make_headers(request_id, content_type), pieces, scenario, request_id, model, tokens,
                 {"knobs": asdict(knobs), "request_model": request_model, "chunks": n})


# --------------------------------------------------------------------------------------
# Content encodings (streaming-capable: each piece is flushed so a stream stays live)
# --------------------------------------------------------------------------------------


class _Encoder:
    def __init__(self, name: str) -> None:
        self.name = name
        if name in ("gzip", "deflate"):
            self._z = zlib.compressobj(wbits=31 if name == "gzip" else 15)
        elif name == "br":
            import brotli

            self._br = brotli.Compressor()
        elif name == "zstd":
            import zstandard

            self._zs = zstandard.ZstdCompressor().compressobj()

    def feed(self, data: bytes) -> bytes:
        if self.name in ("gzip", "deflate"):
            return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        if self.name == "br":
            return self._br.process(data) + self._br.flush()
        if self.name == "zstd":
            import zstandard

            return self._zs.compress(data) + self._zs.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return data

    def finish(self) -> bytes:
        if self.name in ("gzip", "deflate"):
            return self._z.flush()
        if self.name == "br":
            return self._br.finish()
        if self.name == "zstd":
            return self._zs.flush()
        return b""


def _accepts(accept_encoding: str | None, coding: str) -> bool:
    """Whether an Accept-Encoding header allows ``coding`` (q=0 refuses it)."""
    for item in (accept_encoding or "").split(","):
        name, *params = [x.strip() for x in item.split(";")]
        if name.lower() not in (coding, "*"):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


_REASONS = {529: "Overloaded"}  # not in http.HTTPStatus


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "fake-provider/1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end after this

    server: _TLSServer

    def setup(self) -> None:
        super().setup()
        self.requests_on_connection = 0
        self.connection_id = self.server.next_connection_id()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_REQUEST_BODY:
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        self.requests_on_connection += 1
        started = time.time()
        body = self._read_body()
        reply = build_reply(self.command, self.path, self.headers, body)
        knobs: dict[str, Any] = reply.info.get("knobs") or {}
        streaming = bool(reply.scenario and SCENARIOS[reply.scenario].streaming)
        transfer = knobs.get("transfer") or ("chunked" if streaming else "length")
        coding = knobs.get("encoding") or "identity"
        if coding != "identity" and not _accepts(self.headers.get("Accept-Encoding"), coding):
            coding = "identity"
        if knobs.get("ttft_ms"):
            time.sleep(knobs["ttft_ms"] / 1000)

        self.send_response(reply.status, _REASONS.get(reply.status))
        for name, value in reply.headers:
            self.send_header(name, value)
        if coding != "identity":
            self.send_header("Content-Encoding", coding)
            self.send_header("Vary", "Accept-Encoding")
        encoder = _Encoder(coding)
        abort_after = knobs.get("abort_after")
        delay = (knobs.get("delay_ms") or 0) / 1000

        def record(aborted: bool) -> None:
            # Logged before the response's last bytes leave, so a client that has
            # finished always finds its entry in the log.
            self.server.record({
                "ts_start": started,
                "ts_end": time.time(),
                "method": self.command,
                "path": self.path,
                "status": reply.status,
                "scenario": reply.scenario,
                "request_id": reply.request_id,
                "model": reply.model,
                "tokens": asdict(reply.tokens) if reply.tokens else None,
                "encoding": coding,
                "transfer": transfer,
                "aborted": aborted,
                "client": list(self.client_address[:2]),
                "connection_id": self.connection_id,
                "request_on_connection": self.requests_on_connection,
                **{k: v for k, v in reply.info.items() if k != "knobs"},
            })

        if transfer == "length":
            encoded = b"".join(encoder.feed(p) for p in reply.pieces) + encoder.finish()
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            aborted = abort_after is not None
            if aborted:
                encoded = encoded[: len(encoded) // 2]
                self.close_connection = True
            record(aborted)
            self.wfile.write(encoded)
            return
        if transfer == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        last = len(reply.pieces) - 1
        for i, piece in enumerate(reply.pieces):
            if abort_after is not None and i >= abort_after:
                self.close_connection = True
                record(True)
                return
            if i and delay:
                time.sleep(delay)
            data = self._frame(encoder.feed(piece), transfer)
            if i == last:  # the last event, the encoder's tail and the terminator in one write
                data += self._frame(encoder.finish(), transfer)
                if transfer == "chunked":
                    data += b"0\r\n\r\n"
                record(False)
            if data:
                self.wfile.write(data)

    @staticmethod
    def _frame(data: bytes, transfer: str) -> bytes:
        if not data:
            return b""  # an empty chunk would end a chunked body
        if transfer == "chunked":
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", "3")
        self.end_headers()


class _TLSServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None, verbose: bool = False,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.context = context
        self.verbose = verbose
        self.served: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connections = 0
        self._log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def next_connection_id(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.served.append(entry)
            if self._log:
                self._log.write(json.dumps(entry) + "\n")

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        if self.context is None:  # plain HTTP
            try:
                self.RequestHandlerClass(request, client_address, self)
            except (ConnectionError, TimeoutError):
                pass
            return
        # The TLS handshake runs here, in the connection's own thread, so a slow or
        # broken client never holds up accept().
        try:
            request.settimeout(_Handler.timeout)
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            if tls.selected_alpn_protocol() == "h2":
                _H2Connection(tls, client_address, self).serve()
            else:
                self.RequestHandlerClass(tls, client_address, self)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose:
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        if self._log:
            self._log.close()


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str], *,
                   http2: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    # Without http2 never h2: the clients must speak HTTP/1.1.
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return ctx


# --------------------------------------------------------------------------------------
# HTTP/2 (ALPN h2), on the h2 library
# --------------------------------------------------------------------------------------


class _H2Headers:
    """A request's headers with the case-insensitive ``get`` build_reply expects."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._map = {name.lower(): value for name, value in pairs}

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name.lower(), default)


class _H2Connection:
    """One HTTP/2 connection: a reading loop, and a thread per answered stream.

    The TLS object is only ever used under ``_lock`` (an SSL object must not
    read and write from two threads at once); the reader waits for bytes with
    select() outside it.  A stream thread that runs out of flow-control
    window waits on ``_window`` until the client's WINDOW_UPDATE arrives.
    """

    def __init__(self, tls: ssl.SSLSocket, client_address: Any, server: _TLSServer) -> None:
        import h2.config
        import h2.connection

        self.tls = tls
        self.client_address = client_address
        self.server = server
        self.connection_id = server.next_connection_id()
        self.requests_on_connection = 0
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self._lock = threading.Lock()
        self._window = threading.Condition(self._lock)
        self._closed = False
        self._reset: set[int] = set()
        self._pending: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.tls.sendall(data)

    def serve(self) -> None:
        import select

        import h2.events
        import h2.exceptions

        with self._lock:
            self.conn.initiate_connection()
            self._flush()
        idle_since = time.monotonic()
        try:
            while not self._closed:
                if not self.tls.pending():
                    ready, _, _ = select.select([self.tls], [], [], 0.05)
                    if not ready:
                        if time.monotonic() - idle_since > _Handler.timeout:
                            break
                        continue
                idle_since = time.monotonic()
                with self._lock:
                    try:
                        data = self.tls.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        break
                    try:
                        events = self.conn.receive_data(data)
                    except h2.exceptions.ProtocolError:
                        self._flush()
                        break
                    for event in events:
                        self._on_event(event, h2.events)
                    self._flush()
                    self._window.notify_all()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                self._closed = True
                self._window.notify_all()

    def _on_event(self, event: Any, events: Any) -> None:
        if isinstance(event, events.RequestReceived):
            self._pending[event.stream_id] = (list(event.headers), bytearray())
        elif isinstance(event, events.DataReceived):
            if event.stream_id in self._pending:
                self._pending[event.stream_id][1].extend(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, events.StreamEnded) and event.stream_id in self._pending:
            headers, body = self._pending.pop(event.stream_id)
            self.requests_on_connection += 1
            threading.Thread(target=self._answer, args=(event.stream_id, headers, bytes(body)),
                             name="fake-provider-h2", daemon=True).start()
        elif isinstance(event, events.StreamReset):
            self._reset.add(event.stream_id)
        elif isinstance(event, events.ConnectionTerminated):
            self._closed = True

    def _send(self, stream_id: int, data: bytes, end: bool) -> bool:
        """Send ``data`` on the stream as the window allows; False once it is gone."""
        with self._lock:
            while True:
                if self._closed or stream_id in self._reset:
                    return False
                if not data:
                    if end:
                        self.conn.end_stream(stream_id)
                        self._flush()
                    return True
                n = min(len(data), self.conn.local_flow_control_window(stream_id),
                        self.conn.max_outbound_frame_size)
                if n <= 0:
                    self._window.wait(1.0)
                    continue
                self.conn.send_data(stream_id, data[:n], end_stream=end and n == len(data))
                self._flush()
                data = data[n:]
                if not data:
                    return True

    def _answer(self, stream_id: int, pairs: list[tuple[str, str]], body: bytes) -> None:
        try:
            self._respond(stream_id, pairs, body)
        except (OSError, ssl.SSLError, ValueError, KeyError):
            pass
        except Exception as exc:  # noqa: BLE001 - h2's StreamClosedError and friends: the client went away
            if self.server.verbose:
                print(f"fake provider h2 stream {stream_id}: {exc!r}", file=sys.stderr)

    def _respond(self, stream_id: int, pairs: list[tuple[str, str]], body: bytes) -> None:
        started = time.time()
        headers = _H2Headers(pairs)
        method, target = headers.get(":method") or "GET", headers.get(":path") or "/"
        reply = build_reply(method, target, headers, body)
        knobs: dict[str, Any] = reply.info.get("knobs") or {}
        coding = knobs.get("encoding") or "identity"
        if coding != "identity" and not _accepts(headers.get("accept-encoding"), coding):
            coding = "identity"
        if knobs.get("ttft_ms"):
            time.sleep(knobs["ttft_ms"] / 1000)
        streaming = bool(reply.scenario and SCENARIOS[reply.scenario].streaming)
        encoder = _Encoder(coding)
        out = [(":status", str(reply.status)), ("server", _Handler.server_version)]
        out += [(name.lower(), value) for name, value in reply.headers]
        if coding != "identity":
            out += [("content-encoding", coding), ("vary", "Accept-Encoding")]
        if headers.get("x-fake-h2-never-index"):
            # Never-indexed literals: the HPACK table stays empty (h2_client.py --never-index).
            from hpack import NeverIndexedHeaderTuple

            out = [NeverIndexedHeaderTuple(name, value) for name, value in out]
        abort_after = knobs.get("abort_after")
        delay = (knobs.get("delay_ms") or 0) / 1000

        def record(aborted: bool) -> None:
            self.server.record({
                "ts_start": started, "ts_end": time.time(), "method": method, "path": target,
                "status": reply.status, "scenario": reply.scenario, "request_id": reply.request_id,
                "model": reply.model, "tokens": asdict(reply.tokens) if reply.tokens else None,
                "encoding": coding, "transfer": "h2", "http_version": "2", "aborted": aborted,
                "client": list(self.client_address[:2]), "connection_id": self.connection_id,
                "request_on_connection": self.requests_on_connection, "stream_id": stream_id,
                **{k: v for k, v in reply.info.items() if k != "knobs"},
            })

        if not streaming:
            encoded = b"".join(encoder.feed(p) for p in reply.pieces) + encoder.finish()
            out.append(("content-length", str(len(encoded))))
            with self._lock:
                self.conn.send_headers(stream_id, out)
                self._flush()
            if abort_after is not None:
                record(True)
                self._send(stream_id, encoded[: len(encoded) // 2], False)
                with self._lock:
                    self.conn.reset_stream(stream_id, 2)  # INTERNAL_ERROR
                    self._flush()
                return
            record(False)
            self._send(stream_id, encoded, True)
            return
        with self._lock:
            self.conn.send_headers(stream_id, out)
            self._flush()
        last = len(reply.pieces) - 1
        for i, piece in enumerate(reply.pieces):
            if abort_after is not None and i >= abort_after:
                record(True)
                with self._lock:
                    self.conn.reset_stream(stream_id, 2)
                    self._flush()
                return
            if i and delay:
                time.sleep(delay)
            data = encoder.feed(piece)
            if i == last:
                data += encoder.finish()
                record(False)
            if not self._send(stream_id, data, i == last):
                return


class FakeProvider:
    """The server in this process, on a background thread.

    with FakeProvider(certs.cert, certs.key) as fp:
        fp.url  # https://localhost:PORT
        fp.served  # one dict per answered request
    """

    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 port: int = 0, log_path: str | os.PathLike[str] | None = None, verbose: bool = False,
                 http2: bool = False) -> None:
        self._server = _TLSServer((host, port), server_context(cert, key, http2=http2), verbose, log_path)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def served(self) -> list[dict[str, Any]]:
        return self._server.served

    def start(self) -> FakeProvider:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# As a subprocess
# --------------------------------------------------------------------------------------


class FakeProviderProcess:
    """The server as a child process (what end-to-end tests use): ``pid``, ``port``, ``served()``."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, plain: bool = False) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.log_path = log_path
        self.plain = plain

    @property
    def url(self) -> str:
        if self.plain:
            return f"http://127.0.0.1:{self.port}"
        return f"https://localhost:{self.port}"

    def served(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> FakeProviderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(certs: Any, *, port: int = 0, host: str = "127.0.0.1", workdir: str | os.PathLike[str] | None = None,
          python: str = sys.executable, timeout: float = 20, verbose: bool = False,
          http2: bool = False, plain: bool = False) -> FakeProviderProcess:
    """Start the server as a subprocess and wait until it listens.

    ``certs`` is a ``tests.support.certs.Certs`` (anything with ``.cert`` and ``.key``);
    with ``plain`` it is ignored (may be None) and the server speaks plain HTTP.
    The request log (JSON lines) goes to ``workdir`` (a fresh temp folder by default).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fake-provider-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"ready-{uuid.uuid4().hex[:8]}.txt"
    log_path = workdir / f"served-{uuid.uuid4().hex[:8]}.jsonl"
    argv = [python, str(Path(__file__).resolve()), "--host", host, "--port", str(port),
            "--ready-file", str(ready), "--log", str(log_path)]
    argv += ["--plain"] if plain else ["--cert", str(certs.cert), "--key", str(certs.key)]
    if verbose:
        argv.append("--verbose")
    if http2:
        argv.append("--http2")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            text = ready.read_text().strip()
            if text:
                return FakeProviderProcess(proc, int(text), log_path, plain)
        if proc.poll() is not None:
            raise RuntimeError(f"fake provider exited with {proc.returncode} before listening")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"fake provider did not listen within {timeout}s")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--plain", action="store_true", help="plain HTTP, no TLS (no --cert/--key)")
    parser.add_argument("--ready-file", help="the port is written here once listening")
    parser.add_argument("--log", help="append one JSON line per answered request")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--http2", action="store_true", help="offer h2 in ALPN too (needs the h2 package)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not args.plain and not (args.cert and args.key):
        parser.error("--cert and --key are needed (or --plain)")

    context = None if args.plain else server_context(args.cert, args.key, http2=args.http2)
    server = _TLSServer((args.host, args.port), context, args.verbose, args.log)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    port = server.server_address[1]
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp"
        Path(tmp).write_text(f"{port}\n")
        os.replace(tmp, args.ready_file)
    print(f"fake provider listening on {'http' if args.plain else 'https'}://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
