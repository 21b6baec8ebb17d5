"""Batch results: one download, one billed call per succeeded line.

Both providers hand back a batch's results as a JSONL download:

- OpenAI (``GET /v1/files/{file_id}/content`` of a batch's output file):
  ``{"id": "batch_req_...", "custom_id": ..., "response": {"status_code":
  200, "request_id": ..., "body": {<a chat.completion, response, embeddings
  list or text_completion, with usage>}}, "error": null}``.  The same
  endpoint serves every file (fine-tuning data too), so a download is batch
  output only by its content: lines that parse as such objects.
- Anthropic (``GET /v1/messages/batches/{id}/results``): ``{"custom_id":
  ..., "result": {"type": "succeeded", "message": {<a Message with
  usage>}}}``; ``errored``, ``canceled`` and ``expired`` results cost
  nothing.

Each succeeded line was billed at the provider's batch rate, so its usage is
read by the endpoint's own reader and priced at service tier ``batch``.

The reader is sans-I/O and fed one decoded JSON value per line as the body
streams (the exchange does the line splitting, bounded); it keeps only one
small ``BatchLine`` per billed line, never the line itself.

A line's ``key`` is stable across re-downloads of the same results (OpenAI's
``batch_req_`` id; Anthropic's batch id and ``custom_id``), so the pipeline
can drop a line it has already turned into a row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lumen_agent.parsers.providers.anthropic import MessagesReader
from lumen_agent.parsers.providers.base import BaseReader, name
from lumen_agent.parsers.providers.openai import ChatCompletionsReader, EmbeddingsReader, ResponsesReader
from lumen_agent.parsers.usage import Usage

# Endpoints of the downloads (RequestInfo.endpoint).
OPENAI_FILE_CONTENT = "files.content"
ANTHROPIC_BATCH_RESULTS = "messages.batches.results"
# Retrieving the batch (for its output file id or results_url) comes first,
# often on the same keep-alive connection: it is read too, so that the
# connection is known to carry LLM API traffic (a connection whose first
# request is not an LLM call is dropped), and it never has billed lines.
OPENAI_BATCH_RETRIEVE = "batches.retrieve"
ANTHROPIC_BATCH_RETRIEVE = "messages.batches.retrieve"
OPENAI_BATCH_ENDPOINTS = frozenset({OPENAI_FILE_CONTENT, OPENAI_BATCH_RETRIEVE})
ANTHROPIC_BATCH_ENDPOINTS = frozenset({ANTHROPIC_BATCH_RESULTS, ANTHROPIC_BATCH_RETRIEVE})
BATCH_ENDPOINTS = OPENAI_BATCH_ENDPOINTS | ANTHROPIC_BATCH_ENDPOINTS

# Billed lines kept per download: Anthropic allows 100,000 requests per
# batch, OpenAI 50,000.  Past this a file is not one batch's results.
MAX_BATCH_LINES = 100_000

BATCH_TIER = "batch"

# OpenAI response body "object" -> the endpoint it came from.
_OPENAI_OBJECTS = {
    "chat.completion": "chat.completions",
    "text_completion": "completions",
    "response": "responses",
    "list": "embeddings",
}


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One billed request of a batch."""

    key: str  # stable identity of the line (survives re-downloads)
    endpoint: str  # the endpoint the request called: chat.completions, messages...
    request_id: str | None
    status_code: int | None
    usage: Usage


class BatchResultsReader:
    """Reads a batch results download line by line.

    ``ref``: the id the URL names (OpenAI file id, Anthropic batch id), part of
    a line's key where the line's own id is not unique on its own.
    """

    __slots__ = ("_lines", "_ref", "_vendor", "billed", "not_batch", "over_limit", "unbilled")

    def __init__(self, vendor: str, ref: str | None) -> None:
        self._vendor = vendor  # "openai" or "anthropic": the line format
        self._ref = ref or "?"
        self._lines: list[BatchLine] = []
        self.billed = 0  # succeeded lines with usage (kept)
        self.unbilled = 0  # errored / canceled / expired / failed lines: no cost
        self.not_batch = 0  # valid JSON that is not a batch result line
        self.over_limit = 0  # billed lines past MAX_BATCH_LINES, not kept

    # The UsageReader protocol, so the exchange can feed it like any reader.

    def feed_headers(self, headers: Any) -> None:
        """Nothing about batch usage is in the download's headers."""

    def feed_json(self, body: Any) -> None:
        # A results file of one line may come without a JSONL content type.
        self.feed_ndjson(body)

    def feed_sse(self, event: str | None, data: str) -> None:
        self.not_batch += 1

    def ignores_sse_data(self, raw: bytes) -> bool:
        return False  # every event is counted as not a batch line

    def feed_ndjson(self, obj: Any) -> None:
        line = self._openai_line(obj) if self._vendor == "openai" else self._anthropic_line(obj)
        if line is None:
            return
        if len(self._lines) >= MAX_BATCH_LINES:
            self.over_limit += 1
            return
        self.billed += 1
        self._lines.append(line)

    def result(self) -> Usage:
        """The download itself used no tokens: it is never a row."""
        return Usage(usage_missing=True)

    def lines(self) -> list[BatchLine]:
        return self._lines

    # -- the two line formats --------------------------------------------------

    def _openai_line(self, obj: Any) -> BatchLine | None:
        if not isinstance(obj, dict) or "custom_id" not in obj or "response" not in obj:
            self.not_batch += 1
            return None
        response = obj.get("response")
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if obj.get("error") or not isinstance(status, int) or not 200 <= status < 300 or not isinstance(body, dict):
            self.unbilled += 1  # failed requests are not billed
            return None
        endpoint = _OPENAI_OBJECTS.get(body.get("object"))
        if endpoint is None:
            self.not_batch += 1  # a body we cannot price (moderations...)
            return None
        reader: BaseReader = {"chat.completions": ChatCompletionsReader, "completions": ChatCompletionsReader,
                              "responses": ResponsesReader, "embeddings": EmbeddingsReader}[endpoint]()
        usage = _batch_usage(reader, body)
        if usage is None:
            self.unbilled += 1
            return None
        line_id = name(obj.get("id"))
        key = f"openai:{line_id}" if line_id else f"openai:{self._ref}:{name(obj.get('custom_id'))}"
        return BatchLine(key, endpoint, name(response.get("request_id")), status, usage)

    def _anthropic_line(self, obj: Any) -> BatchLine | None:
        result = obj.get("result") if isinstance(obj, dict) else None
        if not isinstance(result, dict) or "custom_id" not in obj or not isinstance(result.get("type"), str):
            self.not_batch += 1
            return None
        message = result.get("message")
        if result["type"] != "succeeded" or not isinstance(message, dict):
            self.unbilled += 1  # errored, canceled, expired: no cost
            return None
        usage = _batch_usage(MessagesReader(), message)
        if usage is None:
            self.unbilled += 1
            return None
        key = f"anthropic:{self._ref}:{name(obj.get('custom_id'))}"
        return BatchLine(key, "messages", None, None, usage)


def _batch_usage(reader: BaseReader, body: dict) -> Usage | None:
    """The body's usage at the batch tier; None when it reports none."""
    reader.feed_json(body)
    usage = reader.result()
    if usage.usage_missing:
        return None
    return dataclasses.replace(usage, service_tier=BATCH_TIER)
