"""Which LLM API a request calls, from its method, path, host, headers and body.

The path and body shape decide the API first; the host name only names the
provider second.  So gateways, proxies and self-hosted servers (any prefix
before ``/chat/completions``, any host) are recognised, and a known host
gives the provider its proper name:

- OpenAI shape (``.../chat/completions`` + messages, ``.../completions`` +
  prompt, ``.../responses``, ``.../embeddings`` + input): the host's provider,
  ``azure`` for ``/openai/deployments/NAME/...`` paths, else
  ``openai-compatible``;
- Anthropic shape (``.../messages`` with an ``anthropic-version`` header or a
  messages + max_tokens body; Vertex ``publishers/anthropic/...:rawPredict``):
  the host's provider, else ``anthropic``;
- Gemini (``.../models/NAME:generateContent`` / ``:streamGenerateContent``):
  the host's provider, else ``google``;
- Bedrock (``.../model/ID/converse`` and friends): ``bedrock``;
- Ollama native (``/api/chat``, ``/api/generate``, ``/api/embed`` with a
  ``model`` in the body, or an unknown body on port 11434): ``ollama``.

A body that is only partly known (None, or just the ``model`` recovered from a
truncated body) passes the shape checks: the path then decides alone.

Batch results downloads are GETs: ``.../files/ID/content`` (OpenAI-shaped
batch output; any file, so only its lines can tell, parsers/providers/batch.py)
and ``.../messages/batches/ID/results`` (Anthropic).  They are described with
the endpoints ``files.content`` and ``messages.batches.results``; the rows are
the billed lines inside, never the download.  Retrieving the batch first
(``.../batches/batch_ID``, ``.../messages/batches/ID``) is described too
(``batches.retrieve``, ``messages.batches.retrieve``): it has no billed lines,
so no row, but it marks its connection as one that carries LLM traffic.

Everything else (other GET requests, ``/v1/models``, unknown paths) is not an
LLM call: ``identify`` returns None.  It never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from lumen_agent.parsers.providers.base import RequestInfo, name
from lumen_agent.parsers.providers.batch import (
    ANTHROPIC_BATCH_RESULTS,
    ANTHROPIC_BATCH_RETRIEVE,
    OPENAI_BATCH_RETRIEVE,
    OPENAI_FILE_CONTENT,
)
from lumen_agent.parsers.providers.bedrock import model_id as bedrock_model_id

# Ollama's default port; anything listening there is taken to be Ollama.
OLLAMA_PORT = 11434

# (domain, provider): the domain itself or any subdomain of it.
KNOWN_DOMAINS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure"),
    ("cognitiveservices.azure.com", "azure"),
    ("services.ai.azure.com", "azure"),
    ("api.anthropic.com", "anthropic"),
    ("api.mistral.ai", "mistral"),
    ("codestral.mistral.ai", "mistral"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "xai"),
    ("api.groq.com", "groq"),
    ("openrouter.ai", "openrouter"),
    ("generativelanguage.googleapis.com", "google"),
    ("aiplatform.googleapis.com", "google"),
)

# Provider for a recognised API shape when the host is not a known one.
_DEFAULT_PROVIDER = {
    "openai": "openai-compatible",
    "anthropic": "anthropic",
    "gemini": "google",
    "bedrock": "bedrock",
    "ollama": "ollama",
}

_GEMINI_METHODS = ("generateContent", "streamGenerateContent")
_VERTEX_ANTHROPIC_METHODS = ("rawPredict", "streamRawPredict")
_BEDROCK_ACTIONS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")
_BEDROCK_STREAMING = ("converse-stream", "invoke-with-response-stream")
_OLLAMA_ENDPOINTS = ("chat", "generate", "embed")


def identify(
    method: str,
    path: str,
    host: str | None,
    headers: Mapping[str, str],
    body: Any | None,
) -> RequestInfo | None:
    """Describe the LLM API call a request makes, or None when it is not one.

    ``path`` includes the query string (an absolute-form proxy target
    ``http://host/path`` is accepted too); ``headers`` have lowercase names;
    ``body`` is the parsed JSON request body, or None when it could not be
    parsed (truncated, not JSON).
    """
    if isinstance(method, str) and method.upper() == "GET" and isinstance(path, str):
        return _batch_download(path, host, headers)
    if not isinstance(method, str) or method.upper() != "POST" or not isinstance(path, str):
        return None
    segments, url_host = _path_segments(path)
    if not segments:
        return None
    if not isinstance(host, str) or not host:
        host = url_host or _header(headers, "host") or _header(headers, ":authority") or ""
    hostname, port = _authority(host)
    host_provider = _host_provider(hostname, port)

    shape = _shape(segments, headers, body, port, host_provider)
    if shape is None:
        return None
    family, endpoint, path_model, streaming = shape

    deployment = _azure_deployment(segments)
    if deployment is not None:
        provider = "azure"
    else:
        provider = host_provider or _DEFAULT_PROVIDER[family]

    body_model = name(body.get("model")) if isinstance(body, dict) else None
    include_usage = None
    if endpoint in ("chat.completions", "completions") and streaming and isinstance(body, dict):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return RequestInfo(
        provider=provider,
        endpoint=endpoint,
        request_model=body_model or path_model or deployment,
        streaming=streaming,
        include_usage=include_usage,
        host_named=deployment is not None or host_provider is not None,
        search_context_size=_search_context_size(body) if endpoint == "chat.completions" else None,
    )


_SEARCH_CONTEXT_SIZES = ("low", "medium", "high")


def _search_context_size(body: Any) -> str | None:
    """``web_search_options.search_context_size`` of a chat request: None
    without web_search_options, ``medium`` (OpenAI's default) when the
    options leave it out or name no known size."""
    options = body.get("web_search_options") if isinstance(body, dict) else None
    if not isinstance(options, dict):
        return None
    size = options.get("search_context_size")
    return size if size in _SEARCH_CONTEXT_SIZES else "medium"


def _batch_download(path: str, host: str | None, headers: Mapping[str, str]) -> RequestInfo | None:
    """A GET that may download batch results, or None."""
    s, url_host = _path_segments(path)
    if len(s) < 3:
        return None
    if s[-3] == "files" and s[-1] == "content":
        family, endpoint, ref = "openai", OPENAI_FILE_CONTENT, s[-2]
    elif len(s) >= 4 and s[-4:-2] == ["messages", "batches"] and s[-1] == "results":
        family, endpoint, ref = "anthropic", ANTHROPIC_BATCH_RESULTS, s[-2]
    elif s[-3:-1] == ["messages", "batches"]:
        family, endpoint, ref = "anthropic", ANTHROPIC_BATCH_RETRIEVE, s[-1]
    elif s[-2] == "batches" and s[-1].startswith("batch_"):
        family, endpoint, ref = "openai", OPENAI_BATCH_RETRIEVE, s[-1]
    else:
        return None
    if not isinstance(host, str) or not host:
        host = url_host or _header(headers, "host") or _header(headers, ":authority") or ""
    host_provider = _host_provider(*_authority(host))
    return RequestInfo(
        provider=host_provider or _DEFAULT_PROVIDER[family],
        endpoint=endpoint,
        request_model=None,
        streaming=False,
        include_usage=None,
        host_named=host_provider is not None,
        batch_ref=name(unquote(ref)),
    )


def _shape(
    s: list[str],
    headers: Mapping[str, str],
    body: Any,
    port: int | None,
    host_provider: str | None,
) -> tuple[str, str, str | None, bool] | None:
    """(family, endpoint, model named by the path, streaming) or None."""
    last = s[-1]
    asks_stream = isinstance(body, dict) and body.get("stream") is True

    # Gemini API and Vertex AI: .../models/NAME:method
    if len(s) >= 2 and s[-2] in ("models", "tunedModels") and ":" in last:
        model, _, rpc = last.rpartition(":")
        model = name(unquote(model))
        if rpc in _GEMINI_METHODS and _shaped(body, "contents"):
            return "gemini", rpc, model, rpc == "streamGenerateContent"
        if rpc in _VERTEX_ANTHROPIC_METHODS and "anthropic" in s and _shaped(body, "messages"):
            return "anthropic", "messages", model, rpc == "streamRawPredict" or asks_stream
        return None

    # Bedrock runtime: .../model/ID/action
    arn_at = _unencoded_arn(s) if last in _BEDROCK_ACTIONS else None
    if arn_at is not None or (len(s) >= 3 and s[-3] == "model" and last in _BEDROCK_ACTIONS):
        raw = "/".join(s[arn_at:-1]) if arn_at is not None else s[-2]
        model = name(bedrock_model_id(raw))
        if last.startswith("converse"):
            ok = _shaped(body, "messages", "system")
        else:  # InvokeModel bodies are model-specific: need the host or an Anthropic body
            ok = host_provider == "bedrock" or _has(body, "anthropic_version")
        return ("bedrock", last, model, last in _BEDROCK_STREAMING) if ok else None

    # Ollama native: /api/chat, /api/generate, /api/embed
    if len(s) >= 2 and s[-2] == "api" and last in _OLLAMA_ENDPOINTS:
        # Every Ollama request names its model (a web app's own /api/chat rarely does).
        ollama_body = isinstance(body, dict) and isinstance(body.get("model"), str)
        if ollama_body or (body is None and port == OLLAMA_PORT):
            # Ollama streams unless the body says "stream": false.
            streaming = last != "embed" and not (
                isinstance(body, dict) and body.get("stream") is False
            )
            return "ollama", last, None, streaming
        return None

    # OpenAI shape, under any prefix
    if s[-2:] == ["chat", "completions"]:
        return ("openai", "chat.completions", None, asks_stream) if _shaped(body, "messages") else None
    if last == "completions":
        return ("openai", "completions", None, asks_stream) if _shaped(body, "prompt") else None
    if last == "responses":
        keys = ("input", "previous_response_id", "prompt")
        return ("openai", "responses", None, asks_stream) if _shaped(body, *keys) else None
    if last == "embeddings":
        return ("openai", "embeddings", None, False) if _shaped(body, "input") else None

    # Anthropic Messages, on any host
    if last == "messages":
        anthropic = (
            _header(headers, "anthropic-version") is not None
            or (_has(body, "messages") and _has(body, "max_tokens"))
            or host_provider == "anthropic"
        )
        if anthropic and _shaped(body, "messages"):
            return "anthropic", "messages", None, asks_stream
    return None


def _unencoded_arn(s: list[str]) -> int | None:
    """Where a Bedrock model ARN starts when the client left its ``/`` raw
    (``/model/arn:aws:bedrock:...:application-inference-profile/ID/converse``)."""
    for i in range(len(s) - 2, 0, -1):
        if s[i - 1] == "model" and unquote(s[i]).startswith("arn:"):
            return i if i < len(s) - 2 else None
    return None


def _shaped(body: Any, *keys: str) -> bool:
    """The body has one of ``keys``, or is unknown: None (unparseable), or
    only the ``model`` recovered from a truncated body."""
    return body is None or _has(body, "model", *keys)


def _has(body: Any, *keys: str) -> bool:
    return isinstance(body, dict) and any(key in body for key in keys)


def provider_of_host(authority: str | None) -> str | None:
    """The provider a known host (``host[:port]``) belongs to, else None."""
    if not isinstance(authority, str):
        return None
    return _host_provider(*_authority(authority))


def _header(headers: Mapping[str, str], key: str) -> str | None:
    try:
        value = headers.get(key)
    except Exception:  # a caller's odd mapping must not make identify raise
        return None
    return value if isinstance(value, str) else None


def _path_segments(path: str) -> tuple[list[str], str | None]:
    """Non-empty path segments (raw, not yet percent-decoded) and the host of
    an absolute-form target."""
    url_host = None
    if path[:8].lower().startswith(("http://", "https://")):
        try:
            parts = urlsplit(path)
        except ValueError:
            return [], None
        url_host, path = parts.netloc, parts.path
    path = path.partition("?")[0].partition("#")[0]
    return [segment for segment in path.split("/") if segment], url_host


def _authority(host: str) -> tuple[str, int | None]:
    """Lowercase host name (no trailing dot) and port, from ``host[:port]``."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        hostname, rest = (host[1:end], host[end + 1 :]) if end != -1 else (host[1:], "")
    else:
        hostname, colon, rest = host.partition(":")
        rest = colon + rest
    digits = rest[1:]
    port = None
    if rest.startswith(":") and digits.isascii() and digits.isdigit() and len(digits) <= 5:
        port = int(digits)
    return hostname.rstrip("."), port


def _host_provider(hostname: str, port: int | None) -> str | None:
    for domain, provider in KNOWN_DOMAINS:
        if hostname == domain or hostname.endswith("." + domain):
            return provider
    if hostname.endswith("-aiplatform.googleapis.com"):  # regional Vertex AI
        return "google"
    if hostname.endswith((".amazonaws.com", ".amazonaws.com.cn")) and any(
        label.startswith("bedrock-runtime") for label in hostname.split(".")
    ):
        return "bedrock"  # bedrock-runtime[-fips].REGION..., and VPC endpoints
    if port == OLLAMA_PORT:
        return "ollama"
    return None


def _azure_deployment(segments: list[str]) -> str | None:
    """NAME from an Azure OpenAI path ``/openai/deployments/NAME/...``."""
    for i in range(len(segments) - 2):
        if segments[i] == "openai" and segments[i + 1] == "deployments":
            return name(unquote(segments[i + 2]))
    return None

