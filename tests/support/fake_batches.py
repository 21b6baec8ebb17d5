"""Batch results downloads as the fake provider serves them.

``GET /v1/files/{file_id}/content`` returns an OpenAI batch output file and
``GET /v1/messages/batches/{id}/results`` an Anthropic Message Batches
results file: JSONL in the providers' documented line shapes, with fixed
token counts so tests can work the cost out by hand.  Any other file id
(``file-training...``) is served as fine-tuning data, which is not batch
output.  Texts are placeholders.
"""

from __future__ import annotations

import json
import re
from typing import Any

OPENAI_FILE_ID = "file-batchoutput0000000001"
TRAINING_FILE_ID = "file-training00000000000001"
ANTHROPIC_BATCH_ID = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"

_FILE_CONTENT = re.compile(r"^/v1/files/([^/]+)/content$")
_BATCH_RESULTS = re.compile(r"^/v1/messages/batches/([^/]+)/results$")
_BATCH = re.compile(r"^/v1/messages/batches/([^/]+)$")


def _openai_line(line_id: str, custom_id: str, body: dict[str, Any] | None, status: int = 200,
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": line_id, "custom_id": custom_id,
            "response": None if body is None else {"status_code": status, "request_id": "req_" + line_id[-8:],
                                                   "body": body},
            "error": error}


def _chat(model: str, prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {"id": "chatcmpl-" + model[:8], "object": "chat.completion", "created": 1711475054, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "placeholder"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
            "service_tier": "default", "system_fingerprint": None}


OPENAI_LINES = [
    _openai_line("batch_req_00000000aaaa0001", "request-1", _chat("gpt-4o-mini-2024-07-18", 24, 15)),
    _openai_line("batch_req_00000000aaaa0002", "request-2", _chat("gpt-4o-mini-2024-07-18", 1200, 80)),
    _openai_line("batch_req_00000000aaaa0003", "request-3", None,
                 error={"code": "batch_expired", "message": "This request could not be executed before the "
                                                            "completion window expired."}),
    _openai_line("batch_req_00000000aaaa0004", "emb-1", {
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093]}],
        "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}),
]

ANTHROPIC_LINES = [
    {"custom_id": "my-second-request", "result": {"type": "succeeded", "message": {
        "id": "msg_014VwiXbi91y3JMjcpyGBHX5", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "placeholder"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 36, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0, "service_tier": "batch"}}}},
    {"custom_id": "my-first-request", "result": {"type": "errored", "error": {"type": "error", "error": {
        "type": "invalid_request_error", "message": "Validation error"}}}},
    {"custom_id": "late", "result": {"type": "expired"}},
]

TRAINING_LINES = [
    {"messages": [{"role": "user", "content": "placeholder"}, {"role": "assistant", "content": "placeholder"}]},
]


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _message_batch(batch_id: str, host: str) -> dict[str, Any]:
    """The ended batch, as ``GET /v1/messages/batches/{id}`` returns it (the
    anthropic SDK reads ``results_url`` from it before downloading)."""
    return {"id": batch_id, "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 0, "expired": 1},
            "ended_at": "2026-11-29T18:37:24.100435Z", "created_at": "2026-11-29T18:30:00.000000Z",
            "expires_at": "2026-11-30T18:30:00.000000Z", "cancel_initiated_at": None, "archived_at": None,
            "results_url": f"https://{host}/v1/messages/batches/{batch_id}/results"}


def batch_download(method: str, path: str, host: str = "localhost") -> tuple[list[tuple[str, str]], bytes] | None:
    """(headers, body) of a batch results or file download (or of the
    Anthropic batch it belongs to), None for other requests."""
    if method != "GET":
        return None
    if m := _BATCH.match(path):
        return [("Content-Type", "application/json"), ("request-id", "req_011Cretrieve0001")], \
            json.dumps(_message_batch(m.group(1), host)).encode()
    if m := _FILE_CONTENT.match(path):
        lines = TRAINING_LINES if m.group(1) != OPENAI_FILE_ID else OPENAI_LINES
        return [("Content-Type", "application/octet-stream"), ("x-request-id", "req_download0001"),
                ("openai-version", "2020-10-01")], _jsonl(lines)
    if _BATCH_RESULTS.match(path):
        return [("Content-Type", "application/binary"), ("request-id", "req_011Cdownload0001")], \
            _jsonl(ANTHROPIC_LINES)
    return None
