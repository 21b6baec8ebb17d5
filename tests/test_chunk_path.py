"""The short path of a streamed chunk (Exchange.on_response_body for an
identity-coded SSE stream whose content is not kept) gives exactly what the
general path gives: the same usage, the same problem, the same limits."""

from __future__ import annotations

import json

import pytest

from lumen_agent.parsers.http1 import MessageHead
from lumen_agent.pipeline.exchange import MAX_STREAM_EVENTS, Exchange


def sse_chunks(n: int) -> list[bytes]:
    chunks = [b"data: " + json.dumps({"id": "c1", "model": "gpt-4o-mini-2024-07-18",
                                      "choices": [{"delta": {"content": f"t{i}"}}], "usage": None}).encode() + b"\n\n"
              for i in range(n)]
    chunks.append(b"data: " + json.dumps({"id": "c1", "model": "gpt-4o-mini-2024-07-18", "choices": [],
                                          "usage": {"prompt_tokens": 12, "completion_tokens": n,
                                                    "total_tokens": 12 + n}}).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def streamed(pieces: list[bytes], *, capture_content: bool, stream_limit: int | None = None) -> Exchange:
    request = MessageHead("POST", "/v1/chat/completions", None,
                          (("host", "api.openai.com"), ("content-type", "application/json")), "1.1")
    ex = Exchange(pid=1, conn=2, stream_id=1, http_version="1.1", ts_start_ns=1, request=request,
                  capture_content=capture_content)
    ex.on_request_body(json.dumps({"model": "gpt-4o-mini", "stream": True,
                                   "stream_options": {"include_usage": True}}).encode())
    assert ex.on_request_end() is not None
    ex.on_response_head(MessageHead(None, None, 200, (("content-type", "text/event-stream"),), "1.1"), 2)
    assert ex._plain_sse is not capture_content  # content kept: the general path
    if stream_limit is not None:
        ex._stream_limit = stream_limit  # MAX_STREAM_BYTES is 256 MiB: a small one for the test
    for piece in pieces:
        ex.on_response_body(piece)
    ex.on_response_end(3)
    return ex


@pytest.mark.parametrize("split", [None, 7])
def test_short_path_reads_what_the_general_path_reads(split):
    pieces = sse_chunks(20)
    if split:  # pieces cut across lines and events
        whole = b"".join(pieces)
        pieces = [whole[i : i + split] for i in range(0, len(whole), split)]
    short, general = streamed(pieces, capture_content=False), streamed(pieces, capture_content=True)
    # 12 prompt tokens, 20 completion tokens, from the final chunk.
    assert short.usage() == general.usage()
    assert (short.usage().input_tokens, short.usage().output_tokens) == (12, 20)
    assert short.body_problem is None and general.body_problem is None
    assert short.complete and short._stream_finished and general._stream_finished
    assert short._stream_events == general._stream_events == 22


def test_short_path_gives_up_at_the_stream_limit_as_the_general_path_does():
    pieces = sse_chunks(20)
    limit = sum(len(p) for p in pieces[:5])  # five chunks fit, the sixth does not
    short = streamed(pieces, capture_content=False, stream_limit=limit)
    general = streamed(pieces, capture_content=True, stream_limit=limit)
    assert short.body_problem == general.body_problem == "body exceeds its limit"
    assert short._stream_events == general._stream_events == 5
    assert short.usage() == general.usage()
    assert short.usage().usage_missing  # the usage chunk came after the limit


def test_short_path_keeps_max_stream_events(monkeypatch):
    from lumen_agent.pipeline import exchange

    monkeypatch.setattr(exchange, "MAX_STREAM_EVENTS", 10)
    short = streamed(sse_chunks(20), capture_content=False)
    assert short.body_problem == "stream exceeds MAX_STREAM_EVENTS (10) events"
    assert short._stream_events == 11  # the eleventh is counted, then the stream is dropped
    assert short.usage().usage_missing
    assert MAX_STREAM_EVENTS == 500_000
