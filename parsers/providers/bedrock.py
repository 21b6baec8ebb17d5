"""Amazon Bedrock usage: Converse, ConverseStream, InvokeModel and
InvokeModelWithResponseStream.

Converse ``usage.inputTokens`` EXCLUDES ``cacheReadInputTokens`` and
``cacheWriteInputTokens`` (``totalTokens`` = input + output + read + write);
we add them back.  The response names no model: the model id comes from the
URL (``/model/{id}/converse``).

The two streaming APIs answer in the AWS event-stream framing
(``parsers/eventstream.py``).  ``event_objects`` turns one framed message
into the JSON objects a reader takes with ``feed_json``:

- ConverseStream: one event per message (``messageStart``,
  ``contentBlockDelta``, ..., ``metadata``); the ``metadata`` payload
  ``{"usage": ..., "metrics": ...}`` has the usage, read like a whole body;
- InvokeModelWithResponseStream: ``chunk`` events whose payload is
  ``{"bytes": BASE64}``, the base64 of the model vendor's own stream event
  (Anthropic ``message_start``, ``message_delta``...).  Bedrock adds
  ``amazon-bedrock-invocationMetrics`` (``inputTokenCount``,
  ``outputTokenCount``) to the last one.

InvokeModel (not streamed) also reports its counts in the response headers
``x-amzn-bedrock-input-token-count`` / ``-output-token-count`` (and the
cache read/write counts), for every vendor.  The vendor body's own usage
(Anthropic's) is more detailed and wins; the headers and the invocation
metrics count when the body has none we read (Llama, Titan, Mistral ...).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from lumen_agent.parsers.eventstream import EventMessage
from lumen_agent.parsers.providers.anthropic import MessagesReader
from lumen_agent.parsers.providers.base import BaseReader, plus, token_count
from lumen_agent.parsers.usage import Usage

# A chunk whose base64 payload is larger than this is not a stream event.
MAX_CHUNK_BYTES = 4 * 1024 * 1024

_HEADER_COUNTS = (
    ("input", "x-amzn-bedrock-input-token-count"),
    ("output", "x-amzn-bedrock-output-token-count"),
    ("cache_read", "x-amzn-bedrock-cache-read-input-token-count"),
    ("cache_write", "x-amzn-bedrock-cache-write-input-token-count"),
)
_METRIC_COUNTS = (
    ("input", "inputTokenCount"),
    ("output", "outputTokenCount"),
    ("cache_read", "cacheReadInputTokenCount"),
    ("cache_write", "cacheWriteInputTokenCount"),
)


def model_id(raw: str) -> str:
    """The model a Bedrock ``modelId`` names, as far as the id itself says.

    ``arn:aws:bedrock:REGION::foundation-model/ID`` and
    ``arn:aws:bedrock:REGION:ACCOUNT:inference-profile/ID`` name the model
    (or the cross-region profile ``us.anthropic...``) in their last part:
    that id is returned.  An application inference profile
    (``...:application-inference-profile/ID``) is an opaque id that only the
    account can resolve: it is returned unchanged, so a response that names
    its model (InvokeModel bodies do) prices the call, and otherwise an
    ``[aliases]`` entry in the price overrides maps the ARN or its ID to a
    model; without one the call keeps its tokens and is flagged unpriced.
    """
    text = unquote(raw)
    if text.startswith("arn:"):
        resource = text.split(":", 5)[-1]
        kind, _, ident = resource.partition("/")
        if kind in ("foundation-model", "inference-profile") and ident:
            return ident
    return text


# ConverseStream events that never carry usage: not worth decoding (a long
# stream is almost all contentBlockDelta).
_NO_USAGE_EVENTS = frozenset({"messageStart", "contentBlockStart", "contentBlockDelta", "contentBlockStop",
                              "messageStop"})


def event_objects(message: EventMessage) -> Iterator[Any]:
    """The JSON objects one event-stream message carries (none for
    exceptions, events without usage and payloads that are not JSON)."""
    if message.message_type not in (None, "event"):
        return  # "exception" / "error": the stream failed, no usage in it
    if message.event_type in _NO_USAGE_EVENTS:
        return
    try:
        payload = json.loads(message.payload)
    except (ValueError, RecursionError):
        return
    if not isinstance(payload, dict):
        return
    encoded = payload.get("bytes") if message.event_type == "chunk" else None
    if isinstance(encoded, str):
        if len(encoded) > MAX_CHUNK_BYTES:
            return
        try:
            inner = json.loads(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError, RecursionError):
            return
        yield inner
        return
    yield payload


def _first(obj: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if obj.get(key) is not None:
            return obj[key]
    return None


class ConverseReader(BaseReader):
    __slots__ = ()

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        metadata = obj.get("metadata")  # ConverseStream event as SDKs show it
        usage = (metadata if isinstance(metadata, dict) else obj).get("usage")
        if not isinstance(usage, dict):
            return
        self._note("input", usage.get("inputTokens"))
        self._note("output", usage.get("outputTokens"))
        self._note("cache_read", _first(usage, "cacheReadInputTokens", "cacheReadInputTokenCount"))
        self._note(
            "cache_write", _first(usage, "cacheWriteInputTokens", "cacheWriteInputTokenCount")
        )

    def result(self) -> Usage:
        read, write = self._get("cache_read"), self._get("cache_write")
        return self._usage(
            input_tokens=plus(self._get("input"), read, write),
            output_tokens=self._get("output"),
            cache_read_tokens=read,
            cache_write_tokens=write,
        )


class InvokeReader(MessagesReader):
    """InvokeModel and InvokeModelWithResponseStream: the vendor's body
    (Anthropic's is read), with Bedrock's own counts from the response headers
    and the invocation metrics as the fallback."""

    __slots__ = ("_bedrock",)

    def __init__(self, fallback_model: str | None = None) -> None:
        super().__init__(fallback_model)
        self._bedrock: dict[str, int] = {}

    def feed_headers(self, headers: Mapping[str, str]) -> None:
        for key, header in _HEADER_COUNTS:
            value = headers.get(header)
            if isinstance(value, str) and value.strip().isdigit():
                self._keep(key, int(value.strip()))

    def _take(self, obj: Any) -> None:
        super()._take(obj)
        metrics = obj.get("amazon-bedrock-invocationMetrics") if isinstance(obj, dict) else None
        if isinstance(metrics, dict):
            for key, field in _METRIC_COUNTS:
                self._keep(key, metrics.get(field))

    def _keep(self, key: str, value: Any) -> None:
        count = token_count(value)
        if count is not None:
            self._bedrock[key] = count

    def result(self) -> Usage:
        usage = super().result()
        if not usage.usage_missing or not self._bedrock:
            return usage
        # Bedrock's counts exclude the cache parts, as Converse's do.
        read, write = self._bedrock.get("cache_read"), self._bedrock.get("cache_write")
        return self._usage(
            input_tokens=plus(self._bedrock.get("input"), read, write),
            output_tokens=self._bedrock.get("output"),
            cache_read_tokens=read,
            cache_write_tokens=write,
        )
